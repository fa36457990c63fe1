"""Printable pages of guardian shares: an A4 SVG (the words, a QR code of them, instructions) and
a text file per share, written mode 0600 (docs/design.md §13b). The web app reuses them."""

from __future__ import annotations

import io
import os
import textwrap
import unicodedata
import xml.etree.ElementTree as ET
from pathlib import Path

import segno

from .errors import UsageError
from .guardians import DETAILS_START, WORDS_HEADING, ShareInfo, check_counts, share_info, words_of

# ---------------------------------------------------------------------------------------------
# Printable shares

_SVG_NS = "http://www.w3.org/2000/svg"
_SANS = "Helvetica, Arial, 'DejaVu Sans', sans-serif"
_MONO = "'DejaVu Sans Mono', Menlo, Consolas, 'Courier New', monospace"
_PAGE_W, _PAGE_H, _MARGIN = 210, 297, 15      # A4 portrait, millimetres
_LABEL_MAX = 48


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
    check_counts(threshold, count)
    if not (isinstance(share_number, int) and 1 <= share_number <= count):
        raise UsageError(f"share number must be 1..{count} (got {share_number})")
    info = share_info(mnemonic)
    if info.threshold != threshold:
        raise UsageError(f"the share says {info.threshold} shares are needed, not {threshold}")
    return info


def render_svg(mnemonic: str, *, vault_label: str, share_number: int, threshold: int, count: int) -> str:
    """One self-contained A4 portrait SVG page for one guardian: title, vault label, the
    numbered words, what the guardian must know and a QR code of the share.

    All text goes through ElementTree, which escapes it; control characters are replaced."""
    info = _check_render_args(mnemonic, share_number, threshold, count)
    words = words_of(mnemonic)
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
    words = words_of(mnemonic)
    title = _title(share_number, count)
    out = [title, "=" * len(title), ""]
    for para in _instructions(_clean(vault_label), share_number, threshold, count):
        out += textwrap.wrap(para, 78)
        out.append("")
    out += textwrap.wrap(f"To restore, the owner types these {len(words)} words in order.", 78)
    out.append("")
    out.append(WORDS_HEADING)
    out.append("")
    for start in range(0, len(words), 3):
        cells = [f"{i + 1:>2}. {w:<10}" for i, w in enumerate(words[start:start + 3], start)]
        out.append("  " + "  ".join(cells).rstrip())
    out += ["", f'{DETAILS_START}, set "{info.prefix}", member {info.member_index}, '
                f"{info.threshold} needed, {info.word_count} words", ""]
    return "\n".join(out)


def write_share_files(mnemonics: list[str], out_dir: Path, vault_label: str, threshold: int) -> list[Path]:
    """Write ``guardian-N.svg`` and ``guardian-N.txt`` (mode 0600) for each share, N = 1..len.

    The shares must be one split (``count`` is their number). Existing files are never
    overwritten: if any target exists, nothing is written (UsageError)."""
    if isinstance(mnemonics, str) or not mnemonics:
        raise UsageError("give the shares as a non-empty list")
    count = len(mnemonics)
    check_counts(threshold, count)
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
