"""Guardian shares (SLIP-39): recovery properties, errors users can act on, printable pages."""

from __future__ import annotations

import re
import stat
import string
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import segno
import shamir_mnemonic
from hypothesis import given, settings
from hypothesis import strategies as st
from shamir_mnemonic.wordlist import WORDLIST

from freehold import guardian_pages, guardians
from freehold.errors import GuardianShareError, UsageError

SVG = "{http://www.w3.org/2000/svg}"
FAST = 0  # iteration exponent: PBKDF2 at its SLIP-39 minimum (10,000 rounds) keeps tests quick


def _split(secret: bytes, t: int, n: int, passphrase: bytes = b"") -> list[str]:
    return guardians.split(secret, t, n, passphrase=passphrase, iteration_exponent=FAST)


@pytest.fixture(scope="module")
def secret() -> bytes:
    return bytes(range(32))


@pytest.fixture(scope="module")
def shares(secret: bytes) -> list[str]:
    return _split(secret, 3, 5)


# ------------------------------------------------------------------------------------------------
# Recovery


@settings(max_examples=25, deadline=None)
@given(secret=st.binary(min_size=32, max_size=32), data=st.data())
def test_any_threshold_subset_recovers_and_fewer_never_do(secret: bytes, data: st.DataObject) -> None:
    count = data.draw(st.integers(2, 6), label="count")
    threshold = data.draw(st.integers(2, count), label="threshold")
    shares = _split(secret, threshold, count)
    assert len(shares) == count
    for _ in range(2):
        picked = data.draw(st.lists(st.sampled_from(range(count)), min_size=threshold, max_size=count,
                                    unique=True), label="subset")
        assert guardians.combine([shares[i] for i in picked]) == secret
    few = data.draw(st.lists(st.sampled_from(range(count)), min_size=1, max_size=threshold - 1,
                             unique=True), label="too few")
    with pytest.raises(GuardianShareError, match=f"{threshold} shares needed, {len(few)} given"):
        guardians.combine([shares[i] for i in few])


def test_passphrase_right_recovers_wrong_gives_a_different_secret(secret: bytes) -> None:
    shares = _split(secret, 2, 3, passphrase=b"correct horse")
    assert guardians.combine(shares[1:], passphrase=b"correct horse") == secret
    # SLIP-39 has no passphrase check: the vault layer must verify what comes back.
    wrong = guardians.combine(shares[1:], passphrase=b"wrong horse")
    assert wrong != secret and len(wrong) == len(secret)
    assert guardians.combine(shares[:2]) != secret


def test_input_is_normalised(secret: bytes, shares: list[str]) -> None:
    messy = [
        "  " + shares[0].upper().replace(" ", "\n\n   ") + "\n",
        shares[2].replace(" ", "  \t"),
        " ".join(w[:4] for w in shares[4].split()),  # SLIP-39 words are unique by four letters
    ]
    assert guardians.combine(messy) == secret
    # The word grid of the text file, pasted as is, numbers and all.
    texts = [guardian_pages.guardian_text(s, vault_label="v", share_number=i + 1, threshold=3, count=5)
             for i, s in enumerate(shares[:3])]
    grids = [t.split("The words:")[1].split("SLIP-39 share")[0] for t in texts]
    assert guardians.combine(grids) == secret
    # A whole text file, as the CLI reads it: instructions and details around the grid are skipped.
    assert [guardians.mnemonic_from_text(t) for t in texts] == shares[:3]
    assert guardians.mnemonic_from_text("1. " + shares[0].upper().replace(" ", "\n")) == shares[0]
    typo = guardians.mnemonic_from_text(re.sub(r"33\. [a-z]+", "33. qqqq", texts[0]))
    with pytest.raises(GuardianShareError, match="share 1: word 33 \"qqqq\""):
        guardians.combine([typo, *shares[1:3]])


def test_duplicates_do_not_count_twice(secret: bytes, shares: list[str]) -> None:
    with pytest.raises(GuardianShareError, match=r"3 shares needed, 2 given \(2 duplicates not counted\)"):
        guardians.combine([shares[0], shares[0], shares[1], shares[0].upper()])
    assert guardians.combine([shares[0], shares[1], shares[0], shares[3]]) == secret


def test_shares_beyond_the_threshold_are_cross_checked(secret: bytes, shares: list[str]) -> None:
    assert guardians.combine(shares) == secret
    # A share of another split that carries the same identifier and threshold: only the
    # cross-check (or SLIP-39's digest) can tell; it must never be outvoted silently.
    forged = _same_id_split(shares[0], bytes(32), 3, 5)
    with pytest.raises(GuardianShareError, match="share 4 does not agree"):
        guardians.combine([*shares[:3], forged[3]])
    with pytest.raises(GuardianShareError, match="do not fit together"):
        guardians.combine([shares[0], shares[1], forged[2]])


def test_inconsistent_thresholds(shares: list[str]) -> None:
    other = _same_id_split(shares[0], bytes(32), 2, 5)
    with pytest.raises(GuardianShareError, match="inconsistent threshold parameters: share 1 says 3"):
        guardians.combine([shares[0], other[1], shares[2]])


def test_shares_of_different_splits_are_refused(secret: bytes, shares: list[str]) -> None:
    other = _split(secret, 3, 5)
    with pytest.raises(GuardianShareError, match="different vaults or different splits") as e:
        guardians.combine([shares[0], other[1], shares[2]])
    assert "share 2 begins" in str(e.value)
    short = _split(secret[:16], 3, 5)
    if short[0].split()[:2] == shares[0].split()[:2]:  # pragma: no cover - 1 in 32768
        return
    with pytest.raises(GuardianShareError, match="different"):
        guardians.combine([shares[0], short[1], shares[2]])


# ------------------------------------------------------------------------------------------------
# Errors that name the share and the problem


def test_a_valid_but_wrong_word_fails_the_checksum(shares: list[str]) -> None:
    words = shares[1].split()
    words[9] = "academic" if words[9] != "academic" else "acid"
    with pytest.raises(GuardianShareError, match=r"^share 2 fails its checksum: a word is mistyped or missing$"):
        guardians.combine([shares[0], " ".join(words), shares[2]])


def test_a_non_word_is_named_with_suggestions(shares: list[str]) -> None:
    words = shares[1].split()
    original = words[9]
    typo = _one_letter_off(original)
    words[9] = typo
    with pytest.raises(GuardianShareError) as e:
        guardians.combine([shares[0], " ".join(words), shares[2]])
    msg = str(e.value)
    assert msg.startswith(f'share 2: word 10 "{typo}" is not in the SLIP-39 word list; closest: ')
    assert original in msg.split("closest: ")[1].split(", ")
    with pytest.raises(GuardianShareError, match=r'share 1: word 3 "xqzv" .* no similar word'):
        guardians.combine([" ".join(_replaced(shares[0].split(), 2, "xqzv"))])


@settings(max_examples=40, deadline=None)
@given(word=st.sampled_from(WORDLIST), data=st.data())
def test_one_letter_typos_suggest_the_word(word: str, data: st.DataObject) -> None:
    i = data.draw(st.integers(0, len(word) - 1))
    letter = data.draw(st.sampled_from(string.ascii_lowercase).filter(lambda c: c != word[i]))
    typo = word[:i] + letter + word[i + 1:]
    if guardians._resolve(typo) is not None:  # another word (or its prefix): the checksum's job
        return
    assert word in guardians._suggestions(typo)


def test_wrong_number_of_words(shares: list[str]) -> None:
    words = shares[2].split()
    with pytest.raises(GuardianShareError, match=r"share 3 has 32 words.*missing or extra"):
        guardians.combine([shares[0], shares[1], " ".join(words[:20] + words[21:])])
    with pytest.raises(GuardianShareError, match=r"share 1 is empty|no shares given"):
        guardians.combine(["", "  \n "])
    with pytest.raises(GuardianShareError, match="no shares given"):
        guardians.combine([])


def test_several_bad_shares_are_all_reported(shares: list[str]) -> None:
    a = " ".join(_replaced(shares[0].split(), 4, "qqqq"))
    b = " ".join(shares[1].split()[:-1])
    with pytest.raises(GuardianShareError) as e:
        guardians.combine([a, b, shares[2]])
    assert "share 1: word 5" in str(e.value) and "share 2 has 32 words" in str(e.value)


def test_bad_arguments_are_usage_errors() -> None:
    key = bytes(32)
    with pytest.raises(UsageError, match="threshold of 1 with 3 guardians is not allowed"):
        guardians.split(key, 1, 3)
    for t, n in [(0, 3), (4, 3), (2, 17)]:
        with pytest.raises(UsageError, match="threshold <= count"):
            guardians.split(key, t, n)
    for bad in (bytes(15), bytes(31), bytes(34)):
        with pytest.raises(UsageError, match="16 to 32 bytes"):
            guardians.split(bad, 2, 3)
    with pytest.raises(UsageError, match="iteration exponent"):
        guardians.split(key, 2, 3, iteration_exponent=16)
    with pytest.raises(UsageError, match="printable ASCII"):
        guardians.split(key, 2, 3, passphrase="é".encode())
    with pytest.raises(UsageError, match="list"):
        guardians.combine("a single string")  # type: ignore[arg-type]
    assert len(guardians.split(key, 1, 1, iteration_exponent=FAST)) == 1


def test_share_info(shares: list[str]) -> None:
    info = guardians.share_info(shares[3])
    assert (info.member_index, info.threshold, info.count, info.word_count) == (4, 3, None, 33)
    assert info.prefix == " ".join(shares[3].split()[:2])
    assert info.identifier == guardians.share_info(shares[0]).identifier
    with pytest.raises(GuardianShareError, match="the share fails its checksum"):
        guardians.share_info(" ".join(reversed(shares[0].split())))


# ------------------------------------------------------------------------------------------------
# Interoperability with the SLIP-39 reference implementation


def test_shares_are_standard_slip39(secret: bytes) -> None:
    ours = _split(secret, 2, 4, passphrase=b"TREZOR")
    assert shamir_mnemonic.combine_mnemonics(ours[2:], b"TREZOR") == secret
    theirs = shamir_mnemonic.generate_mnemonics(1, [(3, 5)], secret, b"", iteration_exponent=FAST)[0]
    assert guardians.combine(theirs[1:4]) == secret


# ------------------------------------------------------------------------------------------------
# Printable pages

LABEL = 'Ann\'s <photos> & "docs"'


def test_svg_page(shares: list[str]) -> None:
    page = guardian_pages.render_svg(shares[1], vault_label=LABEL, share_number=2, threshold=3, count=5)
    root = ET.fromstring(page)
    assert root.tag == f"{SVG}svg"
    assert root.get("viewBox") == "0 0 210 297"
    assert (root.get("width"), root.get("height")) == ("210mm", "297mm")
    texts = ["".join(t.itertext()) for t in root.iter(f"{SVG}text")]
    assert "Freehold guardian share 2 of 5" in texts
    assert f"Vault: {LABEL}" in texts
    for word in shares[1].split():
        assert word in texts
    body = " ".join(texts)
    for needed in ("reveals nothing", "cannot open it", "Any 3 of the 5", "private and offline",
                   "only to the owner", "heir", "in person"):
        assert needed in body
    assert "&lt;photos&gt; &amp;" in page and "<photos>" not in page
    # The QR: segno's own SVG, nested; its modules are exactly segno's code of the share.
    qrs = [el for el in root.iter(f"{SVG}svg") if el.get("class") == "segno"]
    assert len(qrs) == 1
    paths = [p for p in qrs[0].iter(f"{SVG}path") if p.get("class") == "qrline"]
    assert len(paths) == 1
    want = segno.make(shares[1].upper(), error="h", micro=False)
    assert want.error == "H"
    assert _modules(paths[0].get("d", ""), border=4) == _dark(want)


def test_svg_escapes_and_cleans_labels(shares: list[str]) -> None:
    nasty = "<script>alert('x')</script> & ]]> \x00\x1b[31m\ud800"
    page = guardian_pages.render_svg(shares[0], vault_label=nasty, share_number=1, threshold=3, count=5)
    root = ET.fromstring(page.encode("utf-8", "strict"))
    assert not list(root.iter(f"{SVG}script")) and not list(root.iter("script"))
    assert "\x00" not in page and "\x1b" not in page


def test_svg_and_text_check_their_arguments(shares: list[str]) -> None:
    with pytest.raises(UsageError, match="share number"):
        guardian_pages.render_svg(shares[0], vault_label="v", share_number=6, threshold=3, count=5)
    with pytest.raises(UsageError, match="says 3 shares are needed, not 2"):
        guardian_pages.guardian_text(shares[0], vault_label="v", share_number=1, threshold=2, count=5)
    with pytest.raises(GuardianShareError):
        guardian_pages.render_svg("not a share", vault_label="v", share_number=1, threshold=3, count=5)


def test_text_page(shares: list[str]) -> None:
    text = guardian_pages.guardian_text(shares[4], vault_label=LABEL, share_number=5, threshold=3, count=5)
    assert text.startswith("Freehold guardian share 5 of 5\n")
    flat = " ".join(text.split())
    assert LABEL in flat and "in person" in flat and "reveals nothing" in flat
    for n, word in enumerate(shares[4].split(), 1):
        assert f"{n:>2}. {word}" in text


def test_single_guardian_pages_say_the_share_alone_opens_the_vault() -> None:
    (only,) = _split(bytes(32), 1, 1)
    text = " ".join(guardian_pages.guardian_text(only, vault_label="Solo", share_number=1, threshold=1,
                                            count=1).split())
    assert 'guardian share 1 of 1 for the Freehold backup vault "Solo"' in text
    assert "only guardian" in text and "alone can restore" in text and "reveals nothing" not in text
    page = guardian_pages.render_svg(only, vault_label="Solo", share_number=1, threshold=1, count=1)
    assert "This single share restores the vault" in page


def test_write_share_files(tmp_path: Path, shares: list[str]) -> None:
    out = tmp_path / "guardians"
    paths = guardian_pages.write_share_files(shares, out, LABEL, 3)
    assert [p.name for p in paths] == [f"guardian-{n}.{ext}" for n in range(1, 6) for ext in ("svg", "txt")]
    for p in paths:
        assert stat.S_IMODE(p.stat().st_mode) == 0o600
    ET.fromstring(paths[0].read_text())
    assert shares[2].split()[5] in (out / "guardian-3.txt").read_text()
    before = {p: p.read_bytes() for p in paths}
    with pytest.raises(UsageError, match="refusing to overwrite"):
        guardian_pages.write_share_files(shares, out, "another", 3)
    assert {p: p.read_bytes() for p in paths} == before

    # One existing target means nothing at all is written.
    other = tmp_path / "other"
    other.mkdir()
    (other / "guardian-4.txt").write_text("mine")
    with pytest.raises(UsageError, match=r"guardian-4\.txt"):
        guardian_pages.write_share_files(shares, other, LABEL, 3)
    assert sorted(p.name for p in other.iterdir()) == ["guardian-4.txt"]

    with pytest.raises(UsageError, match="not 2"):
        guardian_pages.write_share_files(shares, tmp_path / "x", LABEL, 2)
    with pytest.raises(UsageError, match="twice"):
        guardian_pages.write_share_files([shares[0], shares[0]], tmp_path / "y", LABEL, 2)


# ------------------------------------------------------------------------------------------------
# Helpers


def _same_id_split(like: str, secret: bytes, t: int, n: int) -> list[str]:
    """A split of ``secret`` that carries the same identifier as the share ``like``."""
    info = guardians.share_info(like)
    ems = shamir_mnemonic.EncryptedMasterSecret.from_master_secret(secret, b"", info.identifier, True, FAST)
    return [s.mnemonic() for s in shamir_mnemonic.split_ems(1, [(t, n)], ems)[0]]


def _replaced(words: list[str], i: int, word: str) -> list[str]:
    return [*words[:i], word, *words[i + 1:]]


def _one_letter_off(word: str) -> str:
    """A misspelling of ``word`` that is no word and no word's prefix (so it must be reported)."""
    for i in reversed(range(len(word))):
        for c in string.ascii_lowercase:
            typo = word[:i] + c + word[i + 1:]
            if c != word[i] and guardians._resolve(typo) is None:
                return typo
    raise AssertionError(word)


def _modules(d: str, border: int) -> set[tuple[int, int]]:
    """Dark modules drawn by a segno SVG path: 'M x y', relative 'm dx dy', horizontal 'h n'."""
    tokens = re.findall(r"[Mmh]|-?\d+(?:\.\d+)?", d)
    x = y = 0.0
    dark: set[tuple[int, int]] = set()
    i = 0
    while i < len(tokens):
        cmd = tokens[i]
        if cmd == "M":
            x, y = float(tokens[i + 1]), float(tokens[i + 2])
            i += 3
        elif cmd == "m":
            x, y = x + float(tokens[i + 1]), y + float(tokens[i + 2])
            i += 3
        elif cmd == "h":
            length = int(float(tokens[i + 1]))
            row = int(y - 0.5) - border
            dark.update((row, int(x) - border + k) for k in range(length))
            x += length
            i += 2
        else:  # pragma: no cover
            raise AssertionError(f"unexpected path command {cmd!r}")
    return dark


def _dark(qr: segno.QRCode) -> set[tuple[int, int]]:
    return {(r, c) for r, row in enumerate(qr.matrix) for c, v in enumerate(row) if v}
