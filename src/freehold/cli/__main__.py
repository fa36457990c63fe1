"""``python -m freehold.cli``."""

from . import main

main()
