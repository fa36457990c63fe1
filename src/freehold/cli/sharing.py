"""Sharing commands: share, shares list|revoke, and open (the recipient's side)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from ..api import RestoreOptions
from ..console import progress_for
from ..errors import UsageError
from ..vault_shared import SharedVault
from .common import JsonOpt, PassFileOpt, app, emit, local_time, open_vault, out, size, table, write_private
from .data import mode_str

shares_app = typer.Typer(help="Grants of read access made with 'share': list and revoke them.", no_args_is_help=True)
app.add_typer(shares_app, name="shares")


@app.command()
def share(
    path: Annotated[str, typer.Argument(help="File or folder to share: as 'ls' names it, or the absolute "
                                             "path that was backed up.")],
    to: Annotated[list[str], typer.Option("--to", help="Recipient: an age public key (age1…), an SSH public "
                                                       "key ('ssh-ed25519 …'), or a file of them (repeatable).")],
    out_file: Annotated[Path, typer.Option("--out", help="Where to write the capability file ('-': stdout).")],
    snapshot: Annotated[str, typer.Option("--snapshot", help="Snapshot id (or prefix, or 'latest').")] = "latest",
    live: Annotated[bool, typer.Option("--live", help="Also grant this path in every later snapshot, "
                                                      "until revoked.")] = False,
    expires: Annotated[str | None, typer.Option("--expires", help="End the grant after this long "
                                                                  "(30d, 12h, 1y).")] = None,
    label: Annotated[str, typer.Option("--label", help="A note for 'shares list'.")] = "",
    degraded: Annotated[bool, typer.Option("--degraded", help="Proceed when some providers are down, if at "
                                                               "least k+1 take the grant.")] = False,
    passphrase_file: PassFileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Grant people read access to one file or folder, encrypted to their public keys."""
    if str(out_file) != "-" and (out_file.exists() or out_file.is_symlink()):
        raise UsageError(f"{out_file} exists: choose another --out (a capability is never overwritten)")
    with open_vault(passphrase_file) as v:
        res = v.share(path, to, snapshot=snapshot, live=live, expires=expires, label=label, degraded=degraded)
    if str(out_file) == "-":
        sys.stdout.write(res.capability)
        sys.stdout.flush()
    else:
        write_private(out_file, res.capability)
    data = {"id": res.id, "path": res.path, "snapshot": res.snapshot, "to": list(res.to), "blobs": res.blobs,
            "bytes": res.bytes, "live": res.live, "expires": res.expires or None,
            "capability": None if str(out_file) == "-" else str(out_file)}
    if as_json:
        emit(data)
        return
    where = "written to standard output" if str(out_file) == "-" else f"written to {out_file}"
    until = f", until {local_time(res.expires)}" if res.expires else ""
    kind = "live grant (later snapshots too)" if res.live else f"snapshot {res.snapshot[:12]}"
    print(f"Shared {res.path} ({size(res.bytes)}, {kind}{until}) with {len(res.to)} recipient(s) as grant "
          f"{res.id[:12]}; the capability is {where}. Send it to them; 'freehold shares revoke {res.id[:12]}' "
          "ends it.", file=sys.stderr)


@shares_app.command("list")
def shares_list(passphrase_file: PassFileOpt = None, as_json: JsonOpt = False) -> None:
    """Every grant made, with its state (active, live, expired, revoked)."""
    with open_vault(passphrase_file) as v:
        grants = v.shares()
    if as_json:
        emit([{"id": g.id, "path": g.path, "snapshot": g.snapshot, "to": list(g.to), "created": g.created,
               "live": g.live, "expires": g.expires or None, "revoked": g.revoked or None, "state": g.state,
               "label": g.label} for g in grants])
        return
    if not grants:
        out.print("No grants yet ('freehold share PATH --to KEY --out cap.txt' makes one).")
        return
    table(["id", "state", "path", "snapshot", "recipients", "created", "label"],
          [[g.id[:12], g.state, g.path or "/", g.snapshot[:12], ", ".join(t[:24] for t in g.to),
            local_time(g.created), g.label] for g in grants])


@shares_app.command("revoke")
def shares_revoke(grant: Annotated[str, typer.Argument(help="Grant id (or a unique prefix).")],
                  passphrase_file: PassFileOpt = None, as_json: JsonOpt = False) -> None:
    """End a grant: its object is deleted from every provider and nothing later is shared with it."""
    with open_vault(passphrase_file) as v:
        g = v.revoke_share(grant)
    if as_json:
        emit({"id": g.id, "revoked": g.revoked, "path": g.path})
        return
    out.print(f"Revoked grant {g.id[:12]} ({g.path or '/'}). What its holders already read or copied cannot be "
              "taken back; nothing written from now on is shared with them.", markup=False)


ACTIONS = ("ls", "restore", "cat")


@app.command("open")
def open_capability(
    capability: Annotated[Path, typer.Argument(help="The capability file you were sent.", dir_okay=False)],
    action: Annotated[str, typer.Argument(help="ls (list), restore (into --target) or cat (one file to "
                                               "standard output).")],
    path: Annotated[str, typer.Argument(help="Path inside the share (ls, cat).")] = "",
    identity: Annotated[Path | None, typer.Option("--identity", "-i", help="Your private key: an age identity "
                                                  "file or an OpenSSH private key.")] = None,
    target: Annotated[Path | None, typer.Option("--target", help="restore: the directory to restore into.")] = None,
    include: Annotated[list[str] | None, typer.Option("--include", help="restore: only this path "
                                                      "(repeatable).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Read what a capability file grants (the recipient's side; no vault needed):
    freehold open CAP --identity KEY ls|restore|cat [PATH]."""
    if action not in ACTIONS:
        raise UsageError(f"unknown action {action!r}: use one of {', '.join(ACTIONS)}")
    if identity is None:
        raise UsageError("give your private key with --identity (an age identity file or an OpenSSH key)")
    if action == "restore" and target is None:
        raise UsageError("restore needs --target DIR")
    try:
        text = capability.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read capability {capability}: {getattr(exc, 'strerror', None) or exc}") from None
    with SharedVault.open(text, identity) as sv:
        if action == "ls":
            _ls(sv, path, as_json)
        elif action == "cat":
            stream = sys.stdout.buffer
            for piece in sv.cat(path):
                stream.write(piece)
            stream.flush()
        else:
            assert target is not None
            _restore(sv, target, include, as_json)


def _ls(sv: SharedVault, path: str, as_json: bool) -> None:
    entries = sv.ls(path)
    if as_json:
        emit([{"path": p, "type": nd.type, "mode": nd.mode, "size": nd.size, "mtime_ns": nd.mtime}
              for p, nd in entries])
        return
    for p, nd in entries:
        out.out(f"{mode_str(nd.type, nd.mode)} {nd.size:>12} {local_time(nd.mtime)}  {p}", highlight=False)


def _restore(sv: SharedVault, target: Path, include: list[str] | None, as_json: bool) -> None:
    with progress_for("restore", as_json) as prog:
        st = sv.restore(target, progress=prog, options=RestoreOptions(includes=tuple(include or ())))
    if as_json:
        emit({"files": st.files, "dirs": st.dirs, "size": st.size, "target": str(target),
              "failed": [{"path": p, "reason": r} for p, r in st.failed]})
    else:
        out.print(f"Restored {st.files} files, {st.dirs} directories ({size(st.size)}) into {target}", markup=False)
        for p, r in st.failed:
            out.print(f"{p}: {r}", markup=False)
    if st.failed:
        raise typer.Exit(3)
