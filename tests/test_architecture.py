"""The layering of docs/design.md §2, checked on the source: data flows one way, interfaces
use only the Vault's door, nobody reaches into another object's private parts, and modules
stay small enough to hold one job."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "freehold"

LAYERS: dict[str, float] = {
    "errors": 0,
    "formats": 1, "isal": 1, "filewriter": 1, "targetfs": 1.5,
    "crypto": 2, "chunking": 2, "erasure": 2, "progress": 2, "placement": 2,
    "providers": 3, "keys": 3, "guardians": 3, "guardian_pages": 3.5,
    "store": 4, "state": 4, "api": 4,
    "selection": 2, "sources": 4.5, "walker": 4.5,   # the backup's selection, sources and walk (pipeline)
    "restore_files": 4.5, "restore_select": 4.5,
    "testing": 5, "pipeline": 5, "restore": 5, "checker": 5, "assembly": 5, "reports": 5,
    "jobs": 5, "door": 5.4, "vault_integrity": 5.5, "vault_upkeep": 5.5,   # the door's mixins, over the jobs
    "vault_sharing": 5.5, "vault_writers": 5.5, "vault_publishing": 5.5,
    "vault_writer": 5.8,                            # the door of a machine with a write-only key
    "caps": 3,                                      # capability files: pyrage over formats
    "vault_shared": 6,                              # the door of a capability's holder (no vault)
    "retention": 2,
    "unixfs": 2,                                    # pure: dag-pb, UnixFS DAGs, CIDs and CAR files
    "gateway_dag": 2.5,                             # pure: block lookup, paths and DAG walks of the gateway
    "vault": 6,
    "console": 7, "gateway": 7, "cli": 7.5,
    "demo": 8,
}
# Interfaces talk to the Vault and its result types only.
INTERFACES = {"cli", "demo", "gateway"}
INTERFACE_MAY_IMPORT = {"vault", "vault_shared", "api", "errors", "progress", "cli", "demo", "__init__", "__version__",
                        # value types the CLI builds from its options or prints
                        "formats", "keys", "placement", "guardians", "guardian_pages", "console",
                        "selection",  # pure: the CLI parses --exclude-larger-than sizes with it
                        "retention",  # pure: the CLI builds forget's keep rules with it
                        "unixfs", "gateway_dag",  # pure: the gateway parses CIDs and walks DAGs with them
                        "gateway"}  # the CLI's `gateway` command serves with it
# Which modules may read the process environment (configuration enters at the edges only).
ENVIRON_ALLOWED = {"cli", "vault", "vault_writer", "testing"}
ENV_NAMES = ("environ", "getenv", "environb", "putenv")
MAX_LINES = 600


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


def test_interfaces_use_only_the_vault() -> None:
    bad = [f"{path.relative_to(SRC)} imports {dep}" for top, path in _modules() if top in INTERFACES
           for dep in _freehold_imports(path) - INTERFACE_MAY_IMPORT]
    assert not bad, bad


def _reach_through(path: Path) -> list[str]:
    """Attribute access to another object's private names (``x._y`` where x is not self or
    cls), and to ``.repo`` anywhere."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.Attribute):
            continue
        name = node.attr
        owner = node.value
        if name == "repo":
            found.append(f"{path.relative_to(SRC)}:{node.lineno} .repo")
        elif name.startswith("_") and not name.startswith("__"):
            if isinstance(owner, ast.Name) and owner.id in ("self", "cls"):
                continue
            if isinstance(owner, ast.Call) and isinstance(owner.func, ast.Name) and owner.func.id == "super":
                continue  # a subclass extending its own base's method
            if isinstance(owner, ast.Name) and owner.id in ("os", "sys", "ctypes", "msgspec", "socket"):
                continue  # the standard library's own underscore names (os._exit, sys._getframe)
            found.append(f"{path.relative_to(SRC)}:{node.lineno} .{name}")
    return found


def test_no_reach_through_to_private_names() -> None:
    bad = [hit for _, path in _modules() for hit in _reach_through(path)]
    assert not bad, bad


def _reads_environment(path: Path) -> bool:
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and node.attr in ENV_NAMES
                and isinstance(node.value, ast.Name) and node.value.id == "os"):
            return True
        if (isinstance(node, ast.ImportFrom) and node.module == "os"
                and any(a.name in ENV_NAMES for a in node.names)):
            return True
    return False


def test_environment_is_read_only_at_the_edges() -> None:
    bad = [str(path.relative_to(SRC)) for top, path in _modules()
           if _reads_environment(path) and top not in ENVIRON_ALLOWED]
    assert not bad, bad


def test_the_environment_check_sees_every_spelling(tmp_path: Path) -> None:
    for text in ("import os\nos.environ['X']\n", "import os\nos.getenv('X')\n", "from os import environ\n",
                 "from os import getenv as g\n"):
        f = tmp_path / "m.py"
        f.write_text(text)
        assert _reads_environment(f), text
    (tmp_path / "m.py").write_text("import os\nos.path.join('a')\n")
    assert not _reads_environment(tmp_path / "m.py")


def test_the_reach_through_check_sees_it(tmp_path: Path) -> None:
    f = SRC / "_probe_tmp.py"
    try:
        f.write_text("def f(v, self):\n    v.repo.x\n    v._master\n    self._ok\n")
        assert len(_reach_through(f)) == 2
    finally:
        f.unlink()


def test_no_module_is_over_the_budget() -> None:
    big = {str(path.relative_to(SRC)): n for _, path in _modules()
           if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert not big, big
