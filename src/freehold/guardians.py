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

import re
import unicodedata
from dataclasses import dataclass

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
    "mnemonic_from_text",
    "share_info",
    "split",
]

MAX_SHARES = 16                 # SLIP-39: a member index is 4 bits
MAX_ITERATION_EXPONENT = 15     # SLIP-39: the iteration exponent is 4 bits
_ID_WORDS = 2                   # the first two words carry the set identifier and iteration exponent
_METADATA_WORDS = 7             # id/exponent (2) + share parameters (2) + checksum (3)
_MIN_WORDS = 20                 # 128-bit secret
_WORDS = frozenset(WORDLIST)
DETAILS_START = "SLIP-39 share"    # ... up to the details line
WORDS_HEADING = "The words:"       # in guardian-N.txt: the grid follows ...
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
    check_counts(threshold, count)
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
    if WORDS_HEADING in text:
        text = text.split(WORDS_HEADING, 1)[1]
        lines = text.splitlines()
        end = next((i for i, line in enumerate(lines) if line.strip().startswith(DETAILS_START)), len(lines))
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


def check_counts(threshold: int, count: int) -> None:
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


def words_of(mnemonic: str) -> list[str]:
    """The share's words, normalised (unknown tokens dropped)."""
    return [w for w in (_resolve(t) for t in _tokens(mnemonic)) if w is not None]
