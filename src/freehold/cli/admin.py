"""The administrative commands: providers, policy, keys, passphrase, guardians, recover."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text

from .. import formats, placement
from ..console import progress_for
from ..errors import UsageError
from ..vault import ProviderSpec, Vault
from .common import (
    AllowOpt,
    JsonOpt,
    MaxOpOpt,
    MinJurOpt,
    PassFileOpt,
    app,
    emit,
    kdf_from_env,
    local_time,
    make_policy,
    missed,
    new_passphrase,
    open_vault,
    out,
    read_passphrase,
    report,
    size,
    table,
    write_private,
)
from .data import repair_summary

provider_app = typer.Typer(help="Add, list, drain, remove and replace the vault's providers.", no_args_is_help=True)
policy_app = typer.Typer(help="Where shares may live: jurisdictions and operators.", no_args_is_help=True)
app.add_typer(provider_app, name="provider")
app.add_typer(policy_app, name="policy")


@provider_app.command("add")
def provider_add(
    name: Annotated[str, typer.Argument(help="A short name for the provider.")],
    url: Annotated[str, typer.Argument(help="file:///abs/path or s3://bucket/prefix?endpoint=...")],
    jurisdiction: Annotated[str, typer.Option("--jurisdiction", help="ISO 3166 code, e.g. DE.")] = "",
    operator: Annotated[str, typer.Option("--operator", help="Who runs it, e.g. hetzner.")] = "",
    price: Annotated[float, typer.Option("--price-per-tb-month", min=0,
                                         help="What it charges per TB-month, for 'freehold stats'.")] = 0.0,
    passphrase_file: PassFileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Add a provider; it receives copies of keys, index and snapshots at once."""
    with open_vault(passphrase_file) as v:
        entry = v.add_provider(ProviderSpec(url, jurisdiction, operator, name))
        if price:
            v.set_price(entry.id, price)
            entry = next(p for p in v.info().providers if p.id == entry.id)
    report(as_json, formats.encode_json(entry),
            f"Added provider {entry.id} ({entry.url}); new packs may now be placed on it.")


@provider_app.command("list")
def provider_list(passphrase_file: PassFileOpt = None, as_json: JsonOpt = False) -> None:
    """Providers with health, jurisdiction, operator and bytes held."""
    with open_vault(passphrase_file) as v:
        rows = v.provider_status()
    if as_json:
        emit([dataclasses.asdict(r) for r in rows])
        return
    table(["name", "health", "jurisdiction", "operator", "shares", "bytes", "url"],
          [[r.id, Text("ok", "green") if r.healthy else Text.assemble(("down", "red"), f" ({r.error})"),
            r.jurisdiction or "-", r.operator or "-", str(r.shares), size(r.bytes), r.url] for r in rows])
    if not all(r.healthy for r in rows):
        raise typer.Exit(1)


@provider_app.command("drain")
def provider_drain(
    name: Annotated[str, typer.Argument(help="The provider to empty.")],
    passphrase_file: PassFileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Move every share off a provider (it gets no new ones); rerun to finish an interrupted drain."""
    with open_vault(passphrase_file) as v, progress_for("drain", as_json) as prog:
        rep = v.drain_provider(name, progress=prog)
        left = v.holding(name)
    repair_summary(rep, as_json, {"provider": name, "packs_left": left})
    if not as_json:
        out.print(f"Provider {name} holds no share the index lists; 'freehold provider remove {name}' removes it."
                  if not left else f"{left} pack(s) still have shares on {name}; run the drain again.",
                  markup=False)
    if left or rep.exit_code:
        raise typer.Exit(rep.exit_code or 1)


@provider_app.command("remove")
def provider_remove(
    name: Annotated[str, typer.Argument(help="The provider to remove (drained first).")],
    passphrase_file: PassFileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Remove a provider that holds no share the index lists (see 'provider drain')."""
    with open_vault(passphrase_file) as v:
        change = v.remove_provider(name)
    report(as_json, {"removed": change.removed, "missed": change.outcome.missed},
           f"Removed provider {name}; objects left on it are no longer used." + missed(change.outcome.missed))


@provider_app.command("replace")
def provider_replace(
    old: Annotated[str, typer.Argument(help="The provider to replace.")],
    url: Annotated[str, typer.Argument(help="The new provider's URL.")],
    name: Annotated[str, typer.Option("--name", help="A short name for the new provider.")] = "",
    jurisdiction: Annotated[str, typer.Option("--jurisdiction", help="ISO 3166 code, e.g. DE.")] = "",
    operator: Annotated[str, typer.Option("--operator", help="Who runs it, e.g. hetzner.")] = "",
    passphrase_file: PassFileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Add a new provider, drain the old one onto the others, remove it; rerun to finish."""
    with open_vault(passphrase_file) as v, progress_for("replace", as_json) as prog:
        change = v.replace_provider(old, ProviderSpec(url, jurisdiction, operator, name), progress=prog)
    done = change.removed == old
    extra = {"added": change.added, "removed": change.removed, "done": done}
    if change.repair is not None:
        repair_summary(change.repair, as_json, extra)
    elif as_json:
        emit(extra)
    if not as_json:
        out.print(f"Replaced provider {old} by {change.added}." if done else
                  f"Provider {change.added} added; {old} still holds shares: run the same command again.",
                  markup=False)
    if not done:
        raise typer.Exit(change.repair.exit_code if change.repair and change.repair.exit_code else 1)


@policy_app.command("set")
def policy_set(
    allow: AllowOpt = None,
    min_jurisdictions: MinJurOpt = 1,
    max_per_operator: MaxOpOpt = 0,
    passphrase_file: PassFileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Set the placement policy; refused, with the reason, if the providers cannot satisfy it."""
    policy = make_policy(allow, min_jurisdictions, max_per_operator)
    with open_vault(passphrase_file) as v:
        misplaced = v.set_policy(policy)
    if as_json:
        emit({"policy": formats.encode_json(policy), "packs_placed_otherwise": misplaced})
        return
    out.print(f"Policy set: {placement.describe(policy)}.")
    if misplaced:
        out.print(f"{misplaced} existing pack(s) were placed under the old policy and stay where they are.")


@policy_app.command("show")
def policy_show(passphrase_file: PassFileOpt = None, as_json: JsonOpt = False) -> None:
    """Show the placement policy."""
    with open_vault(passphrase_file) as v:
        policy = v.info().policy
    report(as_json, formats.encode_json(policy), placement.describe(policy))


keys_app = typer.Typer(help="Passphrases that open the vault (key objects).", no_args_is_help=True)
passphrase_app = typer.Typer(help="Change the passphrase.", no_args_is_help=True)
guardians_app = typer.Typer(help="Guardians: SLIP-39 shares of the vault key for people you trust.",
                            no_args_is_help=True)
app.add_typer(keys_app, name="keys")
app.add_typer(passphrase_app, name="passphrase")
app.add_typer(guardians_app, name="guardians")


NewPassOpt = Annotated[Path | None, typer.Option("--new-passphrase-file", help="Read the new passphrase from FILE.",
                                                 dir_okay=False)]


@keys_app.command("list")
def keys_list(passphrase_file: PassFileOpt = None, as_json: JsonOpt = False) -> None:
    """Key objects (one per passphrase), with their Argon2id parameters."""
    with open_vault(passphrase_file) as v:
        rows = v.key_objects()
    data = [{"id": r.id, "created": r.created, "kdf": "argon2id", "t": r.t, "memory_kib": r.m, "p": r.p,
             "current": r.current} for r in rows]
    if as_json:
        emit(data)
        return
    table(["id", "created", "kdf", ""],
          [[str(r["id"])[:12], local_time(str(r["created"])), f"argon2id t={r['t']} m={r['memory_kib']} KiB p={r['p']}",
            "(this passphrase)" if r["current"] else ""] for r in data])


@keys_app.command("add")
def keys_add(new_passphrase_file: NewPassOpt = None, passphrase_file: PassFileOpt = None,
             write_only: Annotated[bool, typer.Option(
                 "--write-only", help="A key for a machine: it can back up, never read (format-2 vaults); "
                                      "written to --out, sealed under the new passphrase.")] = False,
             label: Annotated[str, typer.Option("--label", help="--write-only: the machine's name.")] = "",
             out_file: Annotated[Path | None, typer.Option("--out", help="--write-only: the key file to write.",
                                                           dir_okay=False)] = None,
             as_json: JsonOpt = False) -> None:
    """Add another passphrase that opens the vault (or, --write-only, a key for a machine)."""
    if write_only:
        if not label or out_file is None:
            raise UsageError("--write-only needs --label NAME and --out FILE")
        if out_file.exists() or out_file.is_symlink():
            raise UsageError(f"{out_file} exists: choose another --out")
        with open_vault(passphrase_file) as v:
            blob = v.add_writer(label, new_passphrase(new_passphrase_file), kdf_from_env())
        write_private(out_file, blob)
        report(as_json, {"writer": label, "key_file": str(out_file)},
               f"Wrote the write-only key {label!r} to {out_file}. On the machine: 'freehold init --write-key "
               f"{out_file.name}' with its passphrase; it can back up and read nothing.")
        return
    with open_vault(passphrase_file) as v:
        change = v.add_key(new_passphrase(new_passphrase_file), kdf_from_env())
    report(as_json, {"id": change.id, "missed": change.outcome.missed},
            f"Added key {change.id[:12]}; the new passphrase opens this vault too." + missed(change.outcome.missed))


@keys_app.command("remove")
def keys_remove(key_id: Annotated[str, typer.Argument(help="Key id (or a unique prefix).")],
                passphrase_file: PassFileOpt = None, as_json: JsonOpt = False) -> None:
    """Revoke a passphrase: its key object is deleted from every provider."""
    with open_vault(passphrase_file) as v:
        change = v.remove_key(key_id)
    pending = (f" Providers {', '.join(change.pending)} were not reachable: their copy will be deleted when "
               "they are back, and it is refused either way." if change.pending else "")
    report(as_json, {"removed": change.id, "pending": change.pending, "missed": change.outcome.missed},
            f"Revoked key {change.id[:12]}: it no longer opens the vault." + pending + missed(change.outcome.missed))


@passphrase_app.command("change")
def passphrase_change(new_passphrase_file: NewPassOpt = None, passphrase_file: PassFileOpt = None,
                      as_json: JsonOpt = False) -> None:
    """Change the passphrase: only key objects are rewritten, never data."""
    with open_vault(passphrase_file) as v:
        change = v.change_passphrase(new_passphrase(new_passphrase_file), kdf_from_env())
    report(as_json, {"id": change.id, "pending": change.pending, "missed": change.outcome.missed},
            "Passphrase changed; the old one no longer opens the vault." + missed(change.outcome.missed))


@guardians_app.command("create")
def guardians_create(
    threshold: Annotated[int, typer.Option("--threshold", help="Shares needed to recover.")] = 3,
    shares: Annotated[int, typer.Option("--shares", help="Shares to make, one per guardian.")] = 5,
    out_dir: Annotated[Path | None, typer.Option("--out", help="Write printable shares (SVG + text) here.")] = None,
    guardian_passphrase_file: Annotated[Path | None, typer.Option(
        "--guardian-passphrase-file", help="Protect the shares with this extra passphrase.")] = None,
    label: Annotated[str, typer.Option("--label", help="Vault name printed on each share.")] = "",
    passphrase_file: PassFileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Split the vault key into SLIP-39 shares for guardians; any THRESHOLD of them recover it."""
    from .. import guardian_pages

    gpass = read_passphrase(guardian_passphrase_file) if guardian_passphrase_file else ""
    with open_vault(passphrase_file) as v:
        mnemonics = v.guardian_shares(threshold, shares, gpass)
        vid = v.info().vault_id
    files: list[Path] = []
    if out_dir is not None:
        files = guardian_pages.write_share_files(mnemonics, out_dir, label or f"Freehold vault {vid[:12]}", threshold)
    if as_json:
        emit({"threshold": threshold, "shares": mnemonics if out_dir is None else len(mnemonics),
               "files": [str(f) for f in files]})
        return
    if files:
        out.print(f"Wrote {len(mnemonics)} guardian shares to {out_dir} (one SVG page and one text file each). "
                  f"Any {threshold} of them recover the vault; give each to a different person.")
    else:
        for i, m in enumerate(mnemonics, 1):
            out.print(f"Share {i} of {shares} (any {threshold} recover the vault):\n  {m}\n", markup=False)


@app.command()
def recover(
    from_: Annotated[list[str], typer.Option("--from", help="URL of a surviving provider (repeatable).")],
    share_file: Annotated[list[Path] | None, typer.Option(
        "--share-file", help="A guardian share (text file with its words); repeat for each.")] = None,
    guardian_passphrase_file: Annotated[Path | None, typer.Option(
        "--guardian-passphrase-file", help="The passphrase protecting the guardian shares, if any.")] = None,
    new_passphrase_file: NewPassOpt = None,
    passphrase_file: PassFileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Rebuild this machine's vault configuration from any one provider and a passphrase or guardian shares.

    With guardian shares, a new passphrase for everyday use is set as well ($FREEHOLD_NEW_PASSPHRASE,
    --new-passphrase-file, or asked)."""
    from .. import guardians

    new_pass = None
    if share_file:
        new_pass = new_passphrase(new_passphrase_file)
        words = []
        for f in share_file:
            try:
                words.append(guardians.mnemonic_from_text(f.read_text()))
            except OSError as exc:
                raise UsageError(f"cannot read share file {f}: {exc.strerror}") from None
        gpass = read_passphrase(guardian_passphrase_file) if guardian_passphrase_file else ""
        v = Vault.recover(from_, shares=words, share_passphrase=gpass, new_passphrase=new_pass,
                          kdf=kdf_from_env())
    else:
        v = Vault.recover(from_, passphrase=read_passphrase(passphrase_file))
    with v:
        snaps = v.snapshots()
        info = v.info()
    if as_json:
        emit({"vault_id": info.vault_id, "providers": [p.id for p in info.providers], "snapshots": len(snaps),
               "home": str(v.home)})
        return
    out.print(f"Recovered vault {info.vault_id[:12]} ({info.k}-of-{info.n}, {len(info.providers)} providers, "
              f"{len(snaps)} snapshots) into {v.home}.")
    if share_file:
        out.print("Unlocked by guardian shares; the new passphrase now opens the vault.")
