"""Publishing commands: publish, published, and gateway (serving what was published)."""

from __future__ import annotations

import json
import secrets
import sys
from pathlib import Path
from typing import Annotated

import typer

from ..api import NftInfo
from ..console import progress_for
from ..errors import UsageError
from ..unixfs import DEFAULT_PROFILE, PROFILES
from .common import JsonOpt, PassFileOpt, app, emit, local_time, open_vault, out, size, table

DEFAULT_PORT = 8080


@app.command()
def publish(
    path: Annotated[str, typer.Argument(help="A local file or folder (backed up first), or content the vault "
                                             "holds as SNAPSHOT:PATH (latest:records/x.pdf).")],
    profile: Annotated[str, typer.Option("--profile", help=f"UnixFS profile: {' or '.join(PROFILES)}.")
                       ] = DEFAULT_PROFILE,
    car: Annotated[Path | None, typer.Option("--car", help="Also write the DAG as a CARv1 file (never over an "
                                                          "existing file).", dir_okay=False)] = None,
    nft: Annotated[bool, typer.Option("--nft", help="Also publish ERC-721 metadata JSON naming it as the "
                                                    "image.")] = False,
    name: Annotated[str | None, typer.Option("--name", help="--nft: the token's name (default: the file's "
                                                            "name).")] = None,
    description: Annotated[str | None, typer.Option("--description", help="--nft: its description.")] = None,
    degraded: Annotated[bool, typer.Option("--degraded", help="Proceed when some providers are down, if at "
                                                               "least k+1 take the writes.")] = False,
    passphrase_file: PassFileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Publish a file or folder on IPFS: print its CID, computed from what the vault stores."""
    if profile not in PROFILES:
        raise UsageError(f"unknown profile {profile!r}: use one of {', '.join(PROFILES)}")
    if not nft and (name is not None or description is not None):
        raise UsageError("--name and --description describe an NFT: add --nft")
    if car is not None and (car.exists() or car.is_symlink()):
        raise UsageError(f"{car} exists: choose another --car (a CAR file is never overwritten)")
    info = NftInfo(name=name or "", description=description or "") if nft else None
    with open_vault(passphrase_file) as v, progress_for("publish", as_json) as prog:
        res = v.publish(path, profile=profile, car=car, nft=info, progress=prog, degraded=degraded)
    if as_json:
        emit({"id": res.id, "cid": res.cid, "uri": res.uri, "profile": res.profile, "snapshot": res.snapshot,
              "path": res.path, "kind": res.kind, "size": res.size, "blocks": res.blocks,
              "backed_up": res.backed_up, "car": res.car or None, "car_bytes": res.car_bytes,
              "nft_cid": res.nft_cid or None, "nft_uri": res.nft_uri or None, "nft_json": res.nft_json or None})
        return
    where = f"snapshot {res.snapshot[:12]}" + (" (new)" if res.backed_up else "")
    print(f"Published {res.kind} {res.path or '/'} of {where}, {size(res.size)}, profile {res.profile}, "
          f"as record {res.id[:12]}" + (f"; CAR written to {res.car}" if res.car else ""), file=sys.stderr)
    out.out(res.cid, highlight=False)
    out.out(res.uri, highlight=False)
    if res.nft_cid:
        out.out(f"metadata {res.nft_cid}", highlight=False)
        out.out(res.nft_uri, highlight=False)


@app.command()
def published(passphrase_file: PassFileOpt = None, as_json: JsonOpt = False) -> None:
    """Everything published, oldest first."""
    with open_vault(passphrase_file) as v:
        recs = v.published()
    if as_json:
        emit([{"id": r.id, "time": r.time, "cid": r.cid, "uri": f"ipfs://{r.cid}", "profile": r.profile,
               "snapshot": r.snapshot, "path": r.path, "kind": r.kind, "size": r.size, "name": r.name,
               "description": r.description, "nft_cid": r.nft_cid or None} for r in recs])
        return
    if not recs:
        out.print("Nothing published yet ('freehold publish PATH' publishes a file or folder).")
        return
    table(["id", "time", "cid", "kind", "path", "snapshot", "size", "nft metadata"],
          [[r.id[:12], local_time(r.time), r.cid, r.kind, r.path or "/", r.snapshot[:12], size(r.size), r.nft_cid]
           for r in recs])


@app.command()
def gateway(
    port: Annotated[int, typer.Option("--port", help="TCP port on 127.0.0.1 (0: any free port).")] = DEFAULT_PORT,
    public: Annotated[bool, typer.Option("--public", help="Serve without a token (anyone on this machine "
                                                          "may fetch what was published).")] = False,
    passphrase_file: PassFileOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Once serving, print the URL, token and counts as one "
                                                         "JSON line on standard output.")] = False,
) -> None:
    """Serve what was published as an IPFS trustless gateway on 127.0.0.1 until Ctrl-C. Each record's
    DAG is computed again from the vault and served only if it has the recorded CID."""
    if not 0 <= port <= 65535:
        raise UsageError(f"--port {port}: not a TCP port")
    token = None if public else secrets.token_urlsafe(32)
    with open_vault(passphrase_file) as v:
        source = v.published_blocks()
        print(f"Checking {len(source.records)} published record(s) against the vault's content...",
              file=sys.stderr)
        source.verify_all()
        refused = f" ({len(source.refused)} refused: see the warnings above)" if source.refused else ""

        def ready(url: str) -> None:
            if as_json:
                sys.stdout.write(json.dumps({"url": url, "token": token, "records": len(source.records),
                                             "served": source.served, "refused": source.refused}) + "\n")
                sys.stdout.flush()
                return
            print(f"Serving {len(source.served)} published record(s){refused} at {url}", file=sys.stderr)
            if token is None:
                print("No token (--public): anyone on this machine can fetch them.", file=sys.stderr)
            else:
                print(f"Token (a new one each run): {token}", file=sys.stderr)
                print(f"Clients send it as the header 'Authorization: Bearer {token}', e.g.\n"
                      f"  curl -H 'Authorization: Bearer {token}' '{url}/ipfs/CID?format=car'", file=sys.stderr)
            print("Ctrl-C stops it.", file=sys.stderr)
            sys.stderr.flush()

        from ..gateway import serve  # lazily: the HTTP server's imports are not every command's

        serve(source, port, token, ready)
