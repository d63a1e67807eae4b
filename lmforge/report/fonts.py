"""A CJK font for the report's plots and page, so Chinese never shows as boxes.

The font is Noto Sans CJK SC (SIL Open Font License 1.1), shipped by the PyPI package
`noto-cjk-sans-otc` (pinned in pyproject.toml; an OpenType collection of the SC/TC/JP/KR/HK
faces, ~19 MB, installed offline from the registry like any dependency). Without it, a
system CJK font that matplotlib finds is used instead, and failing that the report says so.

- Plots: the collection is registered with matplotlib and put after DejaVu Sans in the
  family list; matplotlib (>= 3.6) falls back per glyph, so Latin text keeps DejaVu Sans and
  only CJK characters come from Noto.
- Page: the SC face is subset (fontTools, a matplotlib dependency) to exactly the CJK
  characters the page holds and embedded as a base64 @font-face, so report.html shows Chinese
  on a machine with no CJK font, and stays one file. OFL 1.1 allows subsets and embedding;
  its Reserved Font Name is "Source", which this font does not carry.
"""
from __future__ import annotations

import base64
import io
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

FAMILY = "Noto Sans CJK SC"     # the face used: simplified Chinese forms, the corpus's main CJK
CSS_FAMILY = "lmforge CJK"      # the name the page's @font-face gives the embedded subset
# CJK radicals .. Hangul, CJK compatibility, half/full-width forms: the characters DejaVu lacks
_RANGES = ((0x2E80, 0x9FFF), (0xA960, 0xA97F), (0xAC00, 0xD7FF), (0xF900, 0xFAFF), (0xFE30, 0xFE4F),
           (0xFF00, 0xFFEF))
_CJK = re.compile("[" + "".join(f"{chr(a)}-{chr(b)}" for a, b in _RANGES) + "]")
_SYSTEM = ("Noto Sans CJK SC", "Noto Sans CJK", "Source Han Sans", "WenQuanYi", "Droid Sans Fallback",
           "AR PL", "Microsoft YaHei", "SimHei", "PingFang")


@dataclass(frozen=True)
class CJKFont:
    path: Path
    family: str          # the family name matplotlib knows it by
    index: int           # face index inside a collection (.ttc), 0 for a single font
    source: str          # "noto-cjk-sans-otc" or "system"


def _face_index(path: Path, family: str) -> int | None:
    from fontTools.ttLib import TTCollection, TTFont

    if path.suffix.lower() in (".ttc", ".otc"):
        fonts = TTCollection(str(path), lazy=True).fonts
    else:
        fonts = [TTFont(str(path), lazy=True)]
    for i, f in enumerate(fonts):
        if f["name"].getDebugName(1) == family:
            return i
    return None


@lru_cache(maxsize=1)
def find() -> CJKFont | None:
    """The CJK font: the pinned package's Noto Sans CJK SC, else a system CJK font, else None."""
    try:
        import noto_cjk_sans_otc
        path = Path(str(noto_cjk_sans_otc.FONT_PATH))
        index = _face_index(path, FAMILY) if path.is_file() else None
        if index is not None:
            return CJKFont(path, FAMILY, index, "noto-cjk-sans-otc")
    except ImportError:
        pass
    from matplotlib import font_manager

    for want in _SYSTEM:
        for f in font_manager.fontManager.ttflist:
            if f.name.startswith(want) and Path(f.fname).is_file():
                index = _face_index(Path(f.fname), f.name)
                return CJKFont(Path(f.fname), f.name, index or 0, "system")
    return None


@lru_cache(maxsize=1)
def use_in_matplotlib() -> CJKFont | None:
    """Register the CJK font and make it matplotlib's fallback after DejaVu Sans (once per
    process); returns the font, or None when there is none (Chinese then draws as boxes)."""
    import matplotlib
    from matplotlib import font_manager

    font = find()
    if font is None:
        return None
    if font.source != "system":
        font_manager.fontManager.addfont(str(font.path))
    matplotlib.rcParams["font.family"] = ["DejaVu Sans", font.family]
    return font


def missing_note() -> str | None:
    """A line for the report's problems when no CJK font exists, else None."""
    if find() is None:
        return ("no CJK font found (pip install noto-cjk-sans-otc==0.0.1, a dependency of lmforge): Chinese "
                "text in plots shows as boxes")
    return None


def cjk_chars(text: str) -> str:
    return "".join(sorted(set(_CJK.findall(text))))


def font_face_css(text: str) -> str:
    """An @font-face rule embedding the CJK font subset to the CJK characters of `text`
    ('' when the text has none, or no font exists)."""
    chars = cjk_chars(text)
    font = find()
    if not chars or font is None:
        return ""
    data = subset(font, chars)
    b64 = base64.b64encode(data).decode("ascii")
    # unicode-range: the browser takes only CJK characters from it, whatever its place in the
    # family list; listed first, it is the primary font for them. (Listed after the Latin
    # families without a range, headless Chromium drew the page's first CJK text run as boxes.)
    ranges = ",".join(f"U+{a:04X}-{b:04X}" for a, b in _RANGES)
    return (f'@font-face{{font-family:"{CSS_FAMILY}";src:url(data:font/otf;base64,{b64}) format("opentype");'
            f'unicode-range:{ranges}}}')


def subset(font: CJKFont, chars: str) -> bytes:
    """The font's face reduced to `chars` (OpenType bytes; hinting dropped, layout kept)."""
    from fontTools import subset as ftsubset
    from fontTools.ttLib import TTCollection, TTFont

    if font.path.suffix.lower() in (".ttc", ".otc"):
        face = TTCollection(str(font.path)).fonts[font.index]
    else:
        face = TTFont(str(font.path))
    opts = ftsubset.Options()
    opts.hinting = False
    opts.notdef_outline = True
    opts.name_IDs = ["*"]          # keep the copyright and licence records (OFL 1.1)
    opts.name_languages = ["*"]
    sub = ftsubset.Subsetter(opts)
    sub.populate(text=chars)
    sub.subset(face)
    buf = io.BytesIO()
    face.save(buf)
    return buf.getvalue()
