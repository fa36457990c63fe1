"""Test helpers for the people a vault shares with and the IPFS clients that fetch what it
publishes: key pairs as recipients hold them, and a gateway read as a client does it."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from pyrage import x25519

from freehold.unixfs import decode_node
from freehold.unixfs.cids import RAW, split_cid
from freehold.unixfs.dagpb import decode_unixfs


def age_identity(root: Path, name: str = "me") -> tuple[Path, str]:
    """A fresh age identity file ``root/<name>.agekey`` and its recipient (``age1…``)."""
    ident = x25519.Identity.generate()
    path = root / f"{name}.agekey"
    path.write_text(f"# {name}'s age identity\n{ident}\n")
    return path, str(ident.to_public())


def ssh_identity(root: Path, comment: str = "someone@example") -> tuple[Path, str]:
    """A fresh unencrypted OpenSSH ed25519 key ``root/id_ed25519`` and its public key line."""
    key = root / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key), "-C", comment], check=True)
    return key, (root / "id_ed25519.pub").read_text().strip()


def gateway_get(url: str, token: str | None, cid: str, fmt: str) -> tuple[int, bytes]:
    """GET ``/ipfs/<cid>?format=<fmt>`` from a gateway (with its token): (status, body)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    req = urllib.request.Request(f"{url}/ipfs/{cid}?format={fmt}", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def export_file(blocks: dict[bytes, bytes], cid: bytes) -> bytes:
    """A UnixFS file's bytes from its blocks (raw leaves, or File nodes with data and links)."""
    if split_cid(cid)[1] == RAW:
        return blocks[cid]
    data, links = decode_node(blocks[cid])
    msg = decode_unixfs(data)
    return (msg.data or b"") + b"".join(export_file(blocks, link.cid) for link in links)


def start_gateway(env: dict[str, str], *args: str) -> tuple[subprocess.Popen[str], str, str, list[str]]:
    """``freehold gateway --port 0 ARGS`` as a process, once it serves: (process, URL, token ("" with
    --public), its stderr lines up to "Ctrl-C"). Killed, and AssertionError, if it does not start."""
    proc = subprocess.Popen([sys.executable, "-m", "freehold.cli", "gateway", "--port", "0", *args],
                            env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    assert proc.stderr is not None
    lines: list[str] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        lines.append(line.rstrip("\n"))
        if line.startswith("Ctrl-C"):
            break
    url = next((w for line in lines for w in line.split() if w.startswith("http://127.0.0.1:")), "")
    token = next((line.split(": ", 1)[1] for line in lines if line.startswith("Token")), "")
    if not url or (not token and "--public" not in args):
        proc.kill()
        proc.wait(10)
        raise AssertionError(f"freehold gateway did not start: {lines}")
    return proc, url, token, lines
