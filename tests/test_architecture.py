"""The layering of docs/design.md §2, checked on the source: data flows one way."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "freehold"

LAYERS: dict[str, int] = {
    "errors": 0,
    "formats": 1, "isal": 1, "filewriter": 1,
    "crypto": 2, "chunking": 2, "erasure": 2, "progress": 2, "placement": 2,
    "providers": 3,
    "testing": 4, "repository": 4, "keys": 4, "guardians": 4,
    "pipeline": 5, "restore": 5,
    "vault": 6,
    "cli": 7,
    "demo": 8,
}
# Which modules may read the process environment (configuration enters at the edges only).
ENVIRON_ALLOWED = {"cli", "vault", "testing"}


def _modules() -> list[tuple[str, Path]]:
    out = []
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC).with_suffix("")
        top = rel.parts[0]
        if top == "__init__":
            continue
        out.append((top, path))
    return out


def _freehold_imports(path: Path) -> set[str]:
    """Top-level freehold modules a file imports (absolute or relative)."""
    tree = ast.parse(path.read_text())
    rel = path.relative_to(SRC)
    depth_pkg = list(rel.parts[:-1])
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = depth_pkg[: len(depth_pkg) - (node.level - 1)]
                parts = base + (node.module.split(".") if node.module else [])
                if parts:
                    found.add(parts[0])
                else:
                    found.update(a.name.split(".")[0] for a in node.names)
            elif node.module and node.module.startswith("freehold."):
                found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("freehold."):
                    found.add(a.name.split(".")[1])
    return found


def test_every_module_has_a_layer() -> None:
    assert {top for top, _ in _modules()} <= set(LAYERS)


def test_imports_only_go_down() -> None:
    bad = []
    for top, path in _modules():
        for dep in _freehold_imports(path) - {top, "__init__"}:
            if dep in LAYERS and LAYERS[dep] >= LAYERS[top]:
                bad.append(f"{path.relative_to(SRC)} imports {dep}")
    assert not bad, bad


def test_environment_is_read_only_at_the_edges() -> None:
    bad = [str(path.relative_to(SRC)) for top, path in _modules()
           if "os.environ" in path.read_text() and top not in ENVIRON_ALLOWED]
    assert not bad, bad
