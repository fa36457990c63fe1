"""Guardian shares: the master secret split into SLIP-39 mnemonics (docs/design.md, "Keys").

The owner picks ``count`` guardians and a ``threshold``; each guardian keeps one
printed share. Any ``threshold`` shares restore the master secret, fewer reveal
nothing about it. The shares are standard SLIP-39 (one group, ``threshold`` of
``count`` members), made and read by the ``shamir-mnemonic`` library, which follows
the SLIP-39 reference implementation, so any SLIP-39 tool can read them too.

What this module adds around the library: input normalisation (case, spacing, line
breaks, the numbers of a printed word grid, words shortened to their first four
letters), one :class:`GuardianShareError` per problem that names the share and the
cause, a cross-check of shares beyond the threshold, and the printable pages.

SLIP-39 has no passphrase check: a wrong passphrase, or a set of shares from a
foreign split that happens to pass every check here, yields a *different* secret
without error. The vault layer must check the recovered secret against the vault
(e.g. derive its keys and open the sealed config) before using it.
"""

from __future__ import annotations

import io
import os
import re
import textwrap
import unicodedata
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import segno
from shamir_mnemonic import (
    EncryptedMasterSecret,
    MnemonicError,
    Share,
    decode_mnemonics,
    generate_mnemonics,
    recover_ems,
)
from shamir_mnemonic.wordlist import WORDLIST

from .errors import GuardianShareError, UsageError

__all__ = [
    "ShareInfo",
    "combine",
    "guardian_text",
    "mnemonic_from_text",
    "render_svg",
    "share_info",
    "split",
    "write_share_files",
]

MAX_SHARES = 16                 # SLIP-39: a member index is 4 bits
MAX_ITERATION_EXPONENT = 15     # SLIP-39: the iteration exponent is 4 bits
_ID_WORDS = 2                   # the first two words carry the set identifier and iteration exponent
_METADATA_WORDS = 7             # id/exponent (2) + share parameters (2) + checksum (3)
_MIN_WORDS = 20                 # 128-bit secret
_WORDS = frozenset(WORDLIST)
# Numbering of a printed grid ("1", "12.", "(3)", "4)"): never a SLIP-39 word, so safe to drop.
_NUMBERING = re.compile(r"\(?\d+[.):]?")
_LEADING_NUMBER = re.compile(r"\d+[.):](?=[^\W\d_])")


# ---------------------------------------------------------------------------------------------
# Splitting and combining


def split(master: bytes, threshold: int, count: int, passphrase: bytes = b"",
          iteration_exponent: int = 1) -> list[str]:
    """Split ``master`` into ``count`` SLIP-39 mnemonics, any ``threshold`` of which restore it.

    One group, member threshold ``threshold`` of ``count``; the i-th mnemonic is member i+1.
    ``passphrase`` (printable ASCII) encrypts the secret before it is split: recovery then
    needs the shares *and* the passphrase. PBKDF2 cost is 10,000 × 2**iteration_exponent.
    """
    if not isinstance(master, bytes | bytearray):
        raise UsageError("the master secret must be bytes")
    master = bytes(master)
    if not (16 <= len(master) <= 32 and len(master) % 2 == 0):
        raise UsageError(f"the master secret must be 16 to 32 bytes of even length (got {len(master)})")
    _check_counts(threshold, count)
    if not (isinstance(iteration_exponent, int) and 0 <= iteration_exponent <= MAX_ITERATION_EXPONENT):
        raise UsageError(f"iteration exponent must be 0..{MAX_ITERATION_EXPONENT} (got {iteration_exponent})")
    _check_passphrase(passphrase)
    try:
        groups = generate_mnemonics(1, [(threshold, count)], master, passphrase,
                                    extendable=True, iteration_exponent=iteration_exponent)
    except (ValueError, MnemonicError) as e:  # all checked above; kept as a boundary
        raise UsageError(f"cannot split the master secret: {e}") from None
    return list(groups[0])


def combine(mnemonics: list[str], passphrase: bytes = b"") -> bytes:
    """Recover the master secret from guardian shares.

    Each item is one share; case, extra spaces, line breaks, the numbers of a printed
    grid and duplicate shares do not matter, and a word may be cut to its first four
    letters. Any problem raises :class:`GuardianShareError` naming it and the share
    (1-based position in ``mnemonics``). Shares beyond the threshold are cross-checked:
    one that disagrees with the others is an error, never silently outvoted.

    Note: SLIP-39 cannot tell a wrong passphrase: it silently yields a *different*
    secret. The caller must verify the result against the vault before trusting it.
    """
    _check_passphrase(passphrase)
    if isinstance(mnemonics, str):
        raise UsageError("give the shares as a list, one string per share")
    parsed: list[_Parsed] = []
    problems: list[str] = []
    for position, text in enumerate(mnemonics, 1):
        if not isinstance(text, str):
            raise UsageError(f"share {position} is not text")
        if not text.strip():
            continue  # blank entries (e.g. between pasted shares) are no shares
        try:
            parsed.append(_parse(text, f"share {position}", position))
        except GuardianShareError as e:
            problems.append(e.message)
    if problems:
        raise GuardianShareError("; ".join(problems))
    if not parsed:
        raise GuardianShareError("no shares given")
    _check_one_set(parsed)

    unique: list[_Parsed] = []
    for p in parsed:
        if all(p.share != q.share for q in unique):
            unique.append(p)
    duplicates = len(parsed) - len(unique)
    _check_distinct_members(unique)

    needed = unique[0].share.member_threshold
    if len(unique) < needed:
        note = ""
        if duplicates:
            note = f" ({duplicates} duplicate{'s' if duplicates > 1 else ''} not counted)"
        raise GuardianShareError(f"{needed} shares needed, {len(unique)} given{note}")

    base = unique[:needed]
    ems = _recover(base)
    for extra in unique[needed:]:
        # Same polynomial or not: swap the extra share in for one of the base shares.
        try:
            agrees = _recover([*base[:needed - 1], extra]).ciphertext == ems.ciphertext
        except GuardianShareError:
            agrees = False
        if not agrees:
            raise GuardianShareError(
                f"share {extra.position} does not agree with {_names(base)}: "
                "one of them is damaged or comes from a different split")
    return ems.decrypt(passphrase)


def mnemonic_from_text(text: str) -> str:
    """The share held in ``text``: a ``guardian-N.txt`` file (its word grid is read, the
    instructions around it are not) or just the words, numbered or not.

    Words are normalised; anything that is no word is kept as typed, so that
    :func:`combine` can name it and suggest the word meant."""
    if _WORDS_HEADING in text:
        text = text.split(_WORDS_HEADING, 1)[1]
        lines = text.splitlines()
        end = next((i for i, line in enumerate(lines) if line.strip().startswith(_DETAILS_START)), len(lines))
        text = "\n".join(lines[:end])
    return " ".join(_resolve(t) or t for t in _tokens(text))


@dataclass(frozen=True)
class ShareInfo:
    """What one share says about itself, for display."""

    identifier: int        # random 15-bit id of the split; every share of one split has it
    member_index: int      # 1-based: "guardian share 2"
    threshold: int         # shares needed to recover
    count: int | None      # shares made: SLIP-39 does not record it in a share, so None
    word_count: int
    prefix: str            # the first two words, the same on every share of one split


def share_info(mnemonic: str) -> ShareInfo:
    """Decode one share's parameters (not its secret part). Problems raise GuardianShareError."""
    if not isinstance(mnemonic, str):
        raise UsageError("a share is text")
    p = _parse(mnemonic, "the share", 1)
    s = p.share
    return ShareInfo(identifier=s.identifier, member_index=s.index + 1, threshold=s.member_threshold,
                     count=None, word_count=len(p.words), prefix=" ".join(p.words[:_ID_WORDS]))


@dataclass(frozen=True)
class _Parsed:
    position: int
    words: tuple[str, ...]
    share: Share


def _parse(text: str, name: str, position: int) -> _Parsed:
    """Normalise and decode one share; every problem becomes one GuardianShareError."""
    tokens = _tokens(text)
    if not tokens:
        raise GuardianShareError(f"{name} is empty")
    words: list[str] = []
    bad: list[str] = []
    for i, token in enumerate(tokens, 1):
        word = _resolve(token)
        if word is None:
            hint = _suggestions(token)
            tail = f"; closest: {', '.join(hint)}" if hint else "; no similar word"
            bad.append(f'word {i} "{token}" is not in the SLIP-39 word list{tail}')
        else:
            words.append(word)
    if bad:
        raise GuardianShareError(f"{name}: " + "; ".join(bad))
    n = len(words)
    if not _valid_length(n):
        raise GuardianShareError(
            f"{name} has {n} words, which no SLIP-39 share has (Freehold shares have 33): "
            "a word is missing or extra")
    mnemonic = " ".join(words)
    try:
        share = Share.from_mnemonic(mnemonic)
    except MnemonicError as e:
        msg = str(e).lower()
        if "checksum" in msg:
            raise GuardianShareError(f"{name} fails its checksum: a word is mistyped or missing") from None
        if "group threshold" in msg:
            raise GuardianShareError(f"{name} has inconsistent threshold parameters: a word is mistyped") \
                from None
        if "padding" in msg:
            raise GuardianShareError(f"{name} is malformed (bad padding): a word is mistyped") from None
        raise GuardianShareError(f"{name} is not a valid SLIP-39 share ({e})") from None
    if share.group_count != 1 or share.group_threshold != 1:
        raise GuardianShareError(
            f"{name} belongs to a multi-group SLIP-39 backup ({share.group_threshold} of "
            f"{share.group_count} groups), which Freehold does not make")
    return _Parsed(position, tuple(words), share)


def _check_one_set(parsed: list[_Parsed]) -> None:
    """All shares must come from one split: same identifier, flag, exponent, length, threshold."""
    sets: dict[tuple[int, bool, int], list[_Parsed]] = {}
    for p in parsed:
        s = p.share
        sets.setdefault((s.identifier, s.extendable, s.iteration_exponent), []).append(p)
    if len(sets) > 1:
        parts = [f'{_names(ps)} {"begin" if len(ps) > 1 else "begins"} "{" ".join(ps[0].words[:_ID_WORDS])}"'
                 for ps in sets.values()]
        raise GuardianShareError("shares come from different vaults or different splits: " + ", ".join(parts))
    lengths = {len(p.words) for p in parsed}
    if len(lengths) > 1:
        parts = []
        for n in sorted(lengths):
            group = [p for p in parsed if len(p.words) == n]
            parts.append(f"{_names(group)} {'have' if len(group) > 1 else 'has'} {n} words")
        raise GuardianShareError("shares come from different vaults or different splits "
                                 "(different secret lengths): " + ", ".join(parts))
    first = parsed[0]
    for p in parsed[1:]:
        if p.share.group_parameters() != first.share.group_parameters():
            raise GuardianShareError(
                f"inconsistent threshold parameters: share {first.position} says "
                f"{first.share.member_threshold} shares are needed, share {p.position} says "
                f"{p.share.member_threshold}: a share is damaged or from a different split")


def _check_distinct_members(unique: list[_Parsed]) -> None:
    seen: dict[int, _Parsed] = {}
    for p in unique:
        other = seen.setdefault(p.share.index, p)
        if other is not p:
            raise GuardianShareError(
                f"shares {other.position} and {p.position} both claim to be guardian share "
                f"{p.share.index + 1} but differ: one is damaged or from a different split")


def _recover(subset: list[_Parsed]) -> EncryptedMasterSecret:
    try:
        return recover_ems(decode_mnemonics(" ".join(p.words) for p in subset))
    except MnemonicError:
        # Shares that pass checksum and parameter checks yet fail the SLIP-39 digest.
        raise GuardianShareError(
            f"{_names(subset)} do not fit together (digest check failed): "
            "one of them is damaged or comes from a different split") from None


def _names(parsed: list[_Parsed]) -> str:
    nums = [str(p.position) for p in parsed]
    if len(nums) == 1:
        return f"share {nums[0]}"
    return "shares " + ", ".join(nums[:-1]) + " and " + nums[-1]


def _check_counts(threshold: int, count: int) -> None:
    if not (isinstance(threshold, int) and isinstance(count, int)):
        raise UsageError("threshold and count must be integers")
    if not (1 <= threshold <= count <= MAX_SHARES):
        raise UsageError(f"need 1 <= threshold <= count <= {MAX_SHARES} (got {threshold} of {count})")
    if threshold == 1 and count > 1:
        raise UsageError(
            f"a threshold of 1 with {count} guardians is not allowed (SLIP-39): every single share "
            "would open the vault; use a threshold of at least 2, or one guardian with a 1-of-1 share")


def _check_passphrase(passphrase: bytes) -> None:
    if not isinstance(passphrase, bytes | bytearray):
        raise UsageError("the share passphrase must be bytes")
    if not all(32 <= c <= 126 for c in passphrase):
        raise UsageError("a SLIP-39 passphrase may hold printable ASCII characters only")


# ---------------------------------------------------------------------------------------------
# Words


def _tokens(text: str) -> list[str]:
    text = unicodedata.normalize("NFKC", text).lower().replace(",", " ")
    out = []
    for token in text.split():
        if _NUMBERING.fullmatch(token):
            continue
        out.append(_LEADING_NUMBER.sub("", token, count=1))
    return out


def _resolve(token: str) -> str | None:
    """The word meant by ``token``: itself, or the one word it is a 4+ letter prefix of."""
    if token in _WORDS:
        return token
    if len(token) >= 4:
        # SLIP-39 words are unique by their first four letters, so a prefix names at most one.
        matches = [w for w in WORDLIST if w.startswith(token)]
        if len(matches) == 1:
            return matches[0]
    return None


def _suggestions(token: str, limit: int = 3) -> list[str]:
    """Closest words: same first four letters first, then by edit distance and shared prefix."""
    scored = []
    for word in WORDLIST:
        same4 = len(token) >= 4 and word[:4] == token[:4]
        dist = _distance(token, word)
        scored.append((not same4, dist, -_common_prefix(token, word), word))
    scored.sort()
    close = [w for far4, dist, _, w in scored if not far4 or dist <= 2]
    if not close:
        close = [w for _, _, neg_prefix, w in scored if neg_prefix <= -2]
    return close[:limit]


def _common_prefix(a: str, b: str) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def _distance(a: str, b: str) -> int:
    """Edit distance counting a swap of two neighbouring letters as one edit."""
    prev2: list[int] = []
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i] + [0] * len(b)
        for j, cb in enumerate(b, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb))
            if i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                cur[j] = min(cur[j], prev2[j - 2] + 1)
        prev2, prev = prev, cur
    return prev[-1]


def _valid_length(n: int) -> bool:
    # The value part is padded to whole 10-bit words; SLIP-39 allows at most 8 padding bits.
    return n >= _MIN_WORDS and (10 * (n - _METADATA_WORDS)) % 16 <= 8


# ---------------------------------------------------------------------------------------------
# Printable shares

_SVG_NS = "http://www.w3.org/2000/svg"
_SANS = "Helvetica, Arial, 'DejaVu Sans', sans-serif"
_MONO = "'DejaVu Sans Mono', Menlo, Consolas, 'Courier New', monospace"
_PAGE_W, _PAGE_H, _MARGIN = 210, 297, 15      # A4 portrait, millimetres
_LABEL_MAX = 48
_WORDS_HEADING = "The words:"       # in guardian-N.txt: the grid follows ...
_DETAILS_START = "SLIP-39 share"    # ... up to the details line


def _instructions(label: str, share_number: int, threshold: int, count: int) -> list[str]:
    """What the guardian must know, as paragraphs (the page and the text file share them)."""
    if count == 1:
        alone = ("This share alone can restore the owner's vault: it is the vault's complete key "
                 "in words (SLIP-39), so guard it like the key to their home.")
        together = ""
    else:
        alone = ("On its own this share reveals nothing about the vault and cannot open it: it is "
                 "one piece of a key split with Shamir's secret sharing (SLIP-39).")
        who = f"All {count}" if threshold == count else f"Any {threshold} of the {count}"
        together = (f"{who} guardians' shares together can restore the owner's vault, so guard it "
                    "like the key to their home.")
    paras = [
        f'This is guardian share {share_number} of {count} for the Freehold backup vault "{label}". '
        + (f"Its owner chose you as one of {count} guardians." if count > 1 else
           "Its owner chose you as their only guardian."),
        alone,
        together,
        "Keep it private and offline: store the paper somewhere safe. Do not photograph or scan it, "
        "type it into a computer or phone, or send it by e-mail or message.",
        "Give it only to the owner, or to their heir, in person and only when they ask for it. "
        "No company, support desk or stranger ever needs it: anyone else asking for it is a warning sign.",
    ]
    return [p for p in paras if p]


def _title(share_number: int, count: int) -> str:
    return f"Freehold guardian share {share_number} of {count}"


def _check_render_args(mnemonic: str, share_number: int, threshold: int, count: int) -> ShareInfo:
    _check_counts(threshold, count)
    if not (isinstance(share_number, int) and 1 <= share_number <= count):
        raise UsageError(f"share number must be 1..{count} (got {share_number})")
    info = share_info(mnemonic)
    if info.threshold != threshold:
        raise UsageError(f"the share says {info.threshold} shares are needed, not {threshold}")
    return info


def _words_of(mnemonic: str) -> list[str]:
    return [w for w in (_resolve(t) for t in _tokens(mnemonic)) if w is not None]


def render_svg(mnemonic: str, *, vault_label: str, share_number: int, threshold: int, count: int) -> str:
    """One self-contained A4 portrait SVG page for one guardian: title, vault label, the
    numbered words, what the guardian must know and a QR code of the share.

    All text goes through ElementTree, which escapes it; control characters are replaced."""
    info = _check_render_args(mnemonic, share_number, threshold, count)
    words = _words_of(mnemonic)
    label = _clean(vault_label)
    if len(label) > _LABEL_MAX:
        label = label[: _LABEL_MAX - 1] + "…"

    root = ET.Element("svg", {
        "xmlns": _SVG_NS, "version": "1.1", "width": f"{_PAGE_W}mm", "height": f"{_PAGE_H}mm",
        "viewBox": f"0 0 {_PAGE_W} {_PAGE_H}",
    })
    _el(root, "title", {}, _title(share_number, count))
    _el(root, "rect", {"x": "0", "y": "0", "width": str(_PAGE_W), "height": str(_PAGE_H), "fill": "#fff"})
    _text(root, _MARGIN, 23, _title(share_number, count), size=9, weight="bold")
    heading = f"Vault: {label}"
    # Shrink a long label to fit the line (0.62 em: a generous mean glyph width).
    _text(root, _MARGIN, 32, heading, size=round(min(5.5, (_PAGE_W - 2 * _MARGIN) / (0.62 * len(heading))), 2))
    if count == 1:
        summary = "This single share restores the vault: keep it as safe as the vault itself."
    else:
        need = "All" if threshold == count else f"Any {threshold}"
        summary = f"{need} of the {count} guardian shares restore the vault. This share alone cannot."
    _text(root, _MARGIN, 39, summary, size=4, fill="#333")
    _el(root, "line", {"x1": str(_MARGIN), "y1": "43", "x2": str(_PAGE_W - _MARGIN), "y2": "43",
                       "stroke": "#000", "stroke-width": "0.4"})

    # Words, numbered, row by row (reading order), 3 columns (4 for unusually long shares).
    cols = 3 if len(words) <= 36 else 4
    col_w = (_PAGE_W - 2 * _MARGIN) / cols
    row_h = 7.8 if cols == 3 else 6.5
    top = 54.0
    rows = -(-len(words) // cols)
    _el(root, "rect", {"x": str(_MARGIN), "y": f"{top - 7:g}", "width": f"{_PAGE_W - 2 * _MARGIN:g}",
                       "height": f"{rows * row_h + 2.5:g}", "rx": "2", "fill": "none",
                       "stroke": "#888", "stroke-width": "0.3"})
    for i, word in enumerate(words):
        r, c = divmod(i, cols)
        x = _MARGIN + c * col_w
        y = top + r * row_h
        _text(root, x + 11, y, f"{i + 1}", size=4.5, family=_MONO, anchor="end", fill="#666")
        _text(root, x + 14, y, word, size=6.5, family=_MONO, weight="bold")

    # What the guardian must know, full width below the words.
    y = top + rows * row_h + 8
    for para in _instructions(label, share_number, threshold, count):
        for line in textwrap.wrap(para, 90):
            _text(root, _MARGIN, y, line, size=3.6)
            y += 4.8
        y += 2

    # QR code of the share, bottom right; its caption and the set details to its left.
    qr_size = 56.0
    qr_x, qr_y = _PAGE_W - _MARGIN + 3 - qr_size, _PAGE_H - 8 - qr_size  # its quiet zone is margin
    root.append(_qr_svg(" ".join(words), qr_x, qr_y, qr_size))
    caption = (f"To restore, the owner types these {len(words)} words in order, or scans this QR "
               "code, which holds the same words. Keep the code as private as the words.")
    cap_y = qr_y + 12
    for line in textwrap.wrap(caption, 52):
        _text(root, _MARGIN, cap_y, line, size=3.6, fill="#333")
        cap_y += 4.8
    details = (f'SLIP-39 share · set "{info.prefix}" · member {info.member_index} · '
               f"{info.threshold} needed · {info.word_count} words")
    _text(root, _MARGIN, _PAGE_H - 16, details, size=3, fill="#666")
    body = ET.tostring(root, encoding="unicode")
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + body + "\n"


def guardian_text(mnemonic: str, *, vault_label: str, share_number: int, threshold: int, count: int) -> str:
    """The same page as plain text: instructions, then the numbered words (row by row)."""
    info = _check_render_args(mnemonic, share_number, threshold, count)
    words = _words_of(mnemonic)
    title = _title(share_number, count)
    out = [title, "=" * len(title), ""]
    for para in _instructions(_clean(vault_label), share_number, threshold, count):
        out += textwrap.wrap(para, 78)
        out.append("")
    out += textwrap.wrap(f"To restore, the owner types these {len(words)} words in order.", 78)
    out.append("")
    out.append(_WORDS_HEADING)
    out.append("")
    for start in range(0, len(words), 3):
        cells = [f"{i + 1:>2}. {w:<10}" for i, w in enumerate(words[start:start + 3], start)]
        out.append("  " + "  ".join(cells).rstrip())
    out += ["", f'{_DETAILS_START}, set "{info.prefix}", member {info.member_index}, '
                f"{info.threshold} needed, {info.word_count} words", ""]
    return "\n".join(out)


def write_share_files(mnemonics: list[str], out_dir: Path, vault_label: str, threshold: int) -> list[Path]:
    """Write ``guardian-N.svg`` and ``guardian-N.txt`` (mode 0600) for each share, N = 1..len.

    The shares must be one split (``count`` is their number). Existing files are never
    overwritten: if any target exists, nothing is written (UsageError)."""
    if isinstance(mnemonics, str) or not mnemonics:
        raise UsageError("give the shares as a non-empty list")
    count = len(mnemonics)
    _check_counts(threshold, count)
    infos = [share_info(m) for m in mnemonics]
    if len({(i.identifier, i.prefix) for i in infos}) > 1:
        raise UsageError("the shares come from different splits")
    if len({i.member_index for i in infos}) != count:
        raise UsageError("the same share is given twice")
    contents: list[tuple[Path, str]] = []
    for n, m in enumerate(mnemonics, 1):
        svg = render_svg(m, vault_label=vault_label, share_number=n, threshold=threshold, count=count)
        txt = guardian_text(m, vault_label=vault_label, share_number=n, threshold=threshold, count=count)
        contents += [(out_dir / f"guardian-{n}.svg", svg), (out_dir / f"guardian-{n}.txt", txt)]
    existing = [str(p) for p, _ in contents if p.exists() or p.is_symlink()]
    if existing:
        raise UsageError(f"refusing to overwrite {', '.join(existing)}")
    try:
        out_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"cannot create {out_dir}: {e.strerror or e}") from None
    written: list[Path] = []
    try:
        for path, text in contents:
            _write_private(path, text.encode())
            written.append(path)
    except FileExistsError as e:
        _remove(written)
        raise UsageError(f"refusing to overwrite {e.filename}") from None
    except OSError as e:
        _remove(written)
        raise UsageError(f"cannot write guardian files in {out_dir}: {e.strerror or e}") from None
    return written


def _write_private(path: Path, data: bytes) -> None:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(path, flags, 0o600)
    try:
        os.fchmod(fd, 0o600)  # whatever the umask
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)


def _remove(paths: list[Path]) -> None:
    for p in paths:
        try:
            p.unlink()
        except OSError:
            pass


def _qr_svg(data: str, x: float, y: float, size: float) -> ET.Element:
    # Upper case: SLIP-39 words and spaces then fit QR's alphanumeric mode, a far smaller
    # code than byte mode; readers of the words ignore case.
    qr = segno.make(data.upper(), error="h", micro=False)
    buf = io.BytesIO()
    qr.save(buf, kind="svg", xmldecl=False, svgns=True, nl=False, omitsize=True, border=4)
    el = ET.fromstring(buf.getvalue())
    for node in el.iter():  # into the page's default namespace (declared once, on the page)
        node.tag = node.tag.rpartition("}")[2]
    el.attrib.update({"x": f"{x:g}", "y": f"{y:g}", "width": f"{size:g}", "height": f"{size:g}",
                      "shape-rendering": "crispEdges"})
    return el


def _el(parent: ET.Element, tag: str, attrs: dict[str, str], text: str | None = None) -> ET.Element:
    el = ET.SubElement(parent, tag, attrs)
    if text is not None:
        el.text = text
    return el


def _text(parent: ET.Element, x: float, y: float, text: str, *, size: float, family: str = _SANS,
          weight: str | None = None, anchor: str | None = None, fill: str = "#000") -> ET.Element:
    attrs = {"x": f"{x:g}", "y": f"{y:g}", "font-family": family, "font-size": f"{size:g}", "fill": fill}
    if weight:
        attrs["font-weight"] = weight
    if anchor:
        attrs["text-anchor"] = anchor
    return _el(parent, "text", attrs, _clean(text))


def _clean(text: str) -> str:
    """Text safe to print in XML and on a terminal: control characters and non-characters go."""
    out = []
    for ch in str(text):
        cat = unicodedata.category(ch)
        if ch in "\t\n\r":
            out.append(" ")
        elif cat in ("Cc", "Cs") or ch in "\ufffe\uffff":
            out.append("\ufffd")
        else:
            out.append(ch)
    return "".join(out)
