"""A bijective script shift: the distant-language control.

Every character except whitespace — letters, digits, punctuation — moves by a fixed
offset into the CJK Unified Ideographs block, which no Latin-script text uses. The text
keeps its content, word boundaries and lengths, but shares no character (and so no
subword) with the other side. The map is a formula, so scoring inverts it exactly.
"""

from __future__ import annotations

OFFSET = 0x4E00  # start of CJK Unified Ideographs; the block is 0x5200 code points long
LIMIT = 0x5200  # characters below this code point can be shifted


def shift_script(text: str) -> str:
    out = []
    for c in text:
        if c.isspace():
            out.append(c)
        elif ord(c) < LIMIT:
            out.append(chr(OFFSET + ord(c)))
        else:
            raise ValueError(
                f"cannot shift {c!r} (U+{ord(c):04X}): only code points below U+{LIMIT:04X}"
            )
    return "".join(out)


def unshift_script(text: str) -> str:
    """Inverse of `shift_script`; characters outside the shifted block (e.g. <unk> output)
    are kept as they are."""
    return "".join(chr(ord(c) - OFFSET) if OFFSET <= ord(c) < OFFSET + LIMIT else c for c in text)
