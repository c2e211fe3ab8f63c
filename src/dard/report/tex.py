"""Text in ``results.tex``: a record's text (a run name, a title, an attack label) as literal LaTeX in plain ASCII.

A plain ``pdflatex`` with its default OT1 fonts and no ``inputenc`` reads only ASCII safely: a UTF-8 ``→`` or ``中``
stops it ("Unicode character not set up for use with LaTeX"), and an older LaTeX prints the bytes as other glyphs.
So every character outside ASCII is written as a LaTeX command: an accented Latin letter as its accent command
(``é`` -> ``\\'{e}``, ``ü`` -> ``\\"{u}``), ``ß``, ``æ``, ``ø``, ``ł`` and the like as theirs, dashes, quotes and
a few symbols (arrows, ``±``, ``×``, Greek letters) as text or math commands, a compatibility form by its plain one
(``𝛼`` -> ``α``), and anything else (CJK, emoji) as its code point, ``[U+4E2D]``, which compiles everywhere and
keeps two names apart.
"""

from __future__ import annotations

import unicodedata
from typing import Any

from dard.errors import one_line

__all__ = ["tex_escape"]

# LaTeX's special characters, and those its default (OT1) fonts show as other glyphs: < > | as ¡ ¿ —, ` as ‘
_SPECIAL = {c: "\\" + c for c in "&%$#_{}"} | {
    "\\": r"\textbackslash{}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "<": r"\textless{}",
    ">": r"\textgreater{}",
    "|": r"\textbar{}",
    "`": r"\textasciigrave{}",
}
# combining marks (of a letter's canonical decomposition) -> the text-mode accent command OT1 has
_ACCENTS = {
    "\u0300": "`",
    "\u0301": "'",
    "\u0302": "^",
    "\u0303": "~",
    "\u0304": "=",
    "\u0306": "u",
    "\u0307": ".",
    "\u0308": '"',
    "\u030a": "r",
    "\u030b": "H",
    "\u030c": "v",
    "\u0323": "d",
    "\u0327": "c",
    "\u0331": "b",
}
_LETTERS = {
    "ß": r"\ss{}",
    "æ": r"\ae{}",
    "Æ": r"\AE{}",
    "œ": r"\oe{}",
    "Œ": r"\OE{}",
    "ø": r"\o{}",
    "Ø": r"\O{}",
    "ł": r"\l{}",
    "Ł": r"\L{}",
    "ı": r"\i{}",
    "ȷ": r"\j{}",
    "\u00a0": "~",  # a no-break space is TeX's tie
    "–": "--",
    "—": "---",
    "‘": "`",
    "’": "'",
    "“": "``",
    "”": "''",
    "…": r"\ldots{}",
    "¡": "!`",
    "¿": "?`",
    "§": r"\S{}",
    "¶": r"\P{}",
    "©": r"\copyright{}",
    "†": r"\dag{}",
    "‡": r"\ddag{}",
    "ο": "o",  # omicron: Latin o in math too
}
# symbols and Greek letters as math (OT1 has none of them)
_MATH = dict(
    zip(
        "°¹²³±×÷·•→←↔⇒⇐⇔≤≥≠≈∞µ",
        r"^{\circ} ^{1} ^{2} ^{3} \pm \times \div \cdot \bullet \rightarrow \leftarrow \leftrightarrow \Rightarrow "
        r"\Leftarrow \Leftrightarrow \leq \geq \neq \approx \infty \mu".split(),
    )
)
_GREEK = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi o pi rho varsigma sigma tau"
_MATH |= {chr(0x3B1 + i): "\\" + name for i, name in enumerate(f"{_GREEK} upsilon phi chi psi omega".split())}
_MATH |= {
    c: "\\" + name
    for c, name in zip("ΓΔΘΛΞΠΣΥΦΨΩ", "Gamma Delta Theta Lambda Xi Pi Sigma Upsilon Phi Psi Omega".split())
}
_LETTERS |= {c: f"${cmd}$" for c, cmd in _MATH.items() if c not in _LETTERS}
# pairs of characters that OT1's fonts join into another glyph (-- a dash, `` a quote, !` an inverted !): kept apart
_LIGATURES = {("-", "-"), ("`", "`"), ("'", "'"), ("!", "`"), ("?", "`")}


def _letter(c: str) -> str | None:
    """``c`` in ASCII LaTeX, or None: ASCII itself, a listed letter or symbol, a base letter and its accents."""
    if c.isascii():
        return _SPECIAL.get(c, c)
    if c in _LETTERS:
        return _LETTERS[c]
    decomposed = unicodedata.normalize("NFD", c)
    base, marks = decomposed[0], decomposed[1:]
    if not marks or not base.isascii() or not base.isalpha() or any(m not in _ACCENTS for m in marks):
        return None
    out = {"i": r"\i{}", "j": r"\j{}"}.get(base, base) if marks[0] not in "\u0323\u0327\u0331" else base
    for m in marks:
        out = f"\\{_ACCENTS[m]}{{{out}}}"
    return out


def _ascii(c: str) -> str:
    """One character of a record's text as ASCII LaTeX (:func:`_letter`, else its compatibility form's, else its
    code point)."""
    text = _letter(c)
    if text is None and (plain := unicodedata.normalize("NFKC", c)) != c:
        parts = [_letter(p) for p in plain]
        text = "".join(p for p in parts if p is not None) if all(p is not None for p in parts) else None
    return text if text is not None else f"[U+{ord(c):04X}]"


def tex_escape(text: Any) -> str:
    """``text`` as literal text in a LaTeX table or comment, in ASCII: one line (a line break ended a ``%`` comment
    and a blank line a ``tabular``), LaTeX's special characters escaped, every other character as ASCII LaTeX
    (:func:`_ascii`), ``--`` kept as two hyphens (not a dash), and a leading ``[`` or ``*`` kept from the ``\\\\``
    before its row (its optional argument and star form)."""
    line = unicodedata.normalize("NFC", one_line(text))  # a letter and its combining accent as one character
    out = ""
    for part in map(_ascii, line):
        out += "{}" if out and part and (out[-1], part[0]) in _LIGATURES else ""
        out += part
    return "{}" + out if out.startswith(("[", "*")) else out
