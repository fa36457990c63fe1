"""The door for a capability's holder (design §20): ``freehold open cap.txt --identity KEY``.

No vault, no passphrase, no local state: the capability names the providers and the grant
object; the grant object lists the shared blobs' locations and keys. Reads go through the same
store components as the owner's (ranged, hedged, degraded reads; every share checked against
its recorded hash; every blob authenticated under its key), over a store whose only keys are
the granted ones (``crypto.GrantKeys``). The shared node is shown under a virtual root that
holds only it, so ``ls`` lists ``health/…`` and ``restore`` writes ``TARGET/health/…``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from . import caps, formats
from .assembly import Wrap, open_one
from .crypto import GrantKeys
from .door import StoreDoor
from .errors import FreeholdError, UsageError
from .progress import Progress
from .restore import Restore, RestoreOptions, RestoreStats
from .store import Session, Store, grants
from .store.clock import utc_stamp
from .store.files import FileRef, file_pieces

ROOT = b"\x00" * 32  # the virtual root tree's id: never a blob id (keyed hashes are never all zero)
_CHUNKER = formats.Chunker(min=64 * 1024, avg=256 * 1024, max=1024 * 1024)  # unused by reads; attach needs one


class SharedVault(StoreDoor):
    """What one capability grants, opened read-only."""

    def __init__(self, store: Store, cap: formats.Capability, shared: formats.Shared, session: Session) -> None:
        self._store = store
        self.capability = cap
        self.shared = shared
        self._session = session

    @classmethod
    def open(cls, text: str, identity: Path, *, wrap: Wrap | None = None, hedge_after: float = 2.0) -> SharedVault:
        cap = caps.read(text, caps.load_identity(identity))
        if grants.expired(cap.expires, utc_stamp()):
            raise UsageError(f"this capability expired at {cap.expires}")
        providers = {}
        for p in cap.providers:
            try:
                providers[p.id] = open_one(p.id, p.url, "", "", wrap)
            except FreeholdError:  # an unusable provider costs availability only
                continue
        if len(providers) < cap.k:
            raise UsageError(f"only {len(providers)} of the capability's providers can be opened here; "
                             f"{cap.k} are needed")
        store = Store(providers, None)
        keys = GrantKeys.random(cap.structure)
        config = formats.Config(v=cap.structure, vault_id=cap.vault_id, k=cap.k, n=cap.n,
                                chunker=_CHUNKER, pack_size=1024 * 1024, providers=cap.providers)
        session = Session(hedge_after=hedge_after)
        try:
            store.attach(config, keys)
            op = store.operation(session)
            shared = grants.read_shared(op.replicas, cap.key, cap.name, cap.vault_id)
            if grants.expired(shared.expires, utc_stamp()):
                raise UsageError(f"this share expired at {shared.expires}")
            keys.granted.update(shared.keys)
            for rec in shared.packs:
                store.index.add_pack(rec)
        except FreeholdError as exc:
            store.close()
            if isinstance(exc, UsageError):
                raise
            raise type(exc)(f"cannot read the shared content: {exc}") from None
        except BaseException:
            store.close()
            raise
        return cls(store, cap, shared, session)

    def _op(self):  # type: ignore[no-untyped-def]
        op = self._store.operation(Session(hedge_after=self._session.hedge_after))
        op.trees.pinned[ROOT] = formats.Tree(v=formats.FORMAT_VERSION, nodes=[self.shared.node])
        return op

    @property
    def name(self) -> str:
        return os.fsdecode(self.shared.node.name)

    def _snapshot(self) -> formats.Snapshot:
        s = self.shared
        return formats.Snapshot(v=formats.FORMAT_VERSION, time=s.time, host="", paths=[s.path or "/"], tree=ROOT)

    def ls(self, path: str = "") -> list[tuple[str, formats.Node]]:
        """The shared node and everything below it (or below ``path`` inside it)."""
        op = self._op()
        base = path.strip("/")
        if base:
            node = op.trees.find(ROOT, base)
            assert node is not None
            out = [(base, node)]
            if node.type == "dir" and node.subtree is not None:
                out += list(op.trees.walk(node.subtree, base + "/"))
            return out
        return list(op.trees.walk(ROOT))

    def restore(self, target: Path, include: str | None = None, progress: Progress | None = None,
                *, options: RestoreOptions | None = None) -> RestoreStats:
        return Restore(self._op(), progress).run(self._snapshot(), target, options, include)

    def cat(self, path: str) -> Iterator[bytes | memoryview]:
        """A shared file's bytes, chunk by chunk."""
        op = self._op()
        node = op.trees.find(ROOT, path.strip("/") or self.name)
        if node is None or node.type != "file":
            raise UsageError(f"{path!r} is not a file of this share")
        yield from file_pieces(op, FileRef.of(op, node))

    @property
    def warnings(self) -> list[str]:
        return list(self._session.warnings)
