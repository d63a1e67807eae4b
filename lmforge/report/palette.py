"""Qualitative colours that stay apart however many categories a plot has.

matplotlib's tab20 cycles after 20 colours (and pairs a dark and a light shade of each hue),
so a data funnel with 24 removal reasons gave five pairs of reasons the same colour. Here
colours are picked greedily from a fine grid of sRGB colours to be as far as possible
(CIELAB distance, the usual "delta E 1976") from each other and from the reserved colours
(the funnel's "kept" green, white background), so any n colours are distinct and the
smallest distance between two of them is as large as the greedy pick can make it.
"""
from __future__ import annotations

import itertools
from functools import lru_cache

KEPT = "#4c9a5b"          # the funnels' "kept" bars
ADDED = "#9fd3a8"         # the SFT funnel's "added by the step"
_RESERVED = (KEPT, ADDED, "#ffffff")


def _hex_rgb(c: str) -> tuple[float, float, float]:
    c = c.lstrip("#")
    return tuple(int(c[i:i + 2], 16) / 255 for i in (0, 2, 4))


def to_lab(rgb) -> tuple[float, float, float]:
    """sRGB in [0, 1] (or '#rrggbb') to CIELAB (D65)."""
    if isinstance(rgb, str):
        rgb = _hex_rgb(rgb)
    lin = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in rgb[:3]]
    x = (0.4124 * lin[0] + 0.3576 * lin[1] + 0.1805 * lin[2]) / 0.95047
    y = 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]
    z = (0.0193 * lin[0] + 0.1192 * lin[1] + 0.9505 * lin[2]) / 1.08883

    def f(t):
        return t ** (1 / 3) if t > 216 / 24389 else (24389 / 27 * t + 16) / 116
    fx, fy, fz = f(x), f(y), f(z)
    return 116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)


def delta_e(a, b) -> float:
    la, lb = to_lab(a), to_lab(b)
    return sum((p - q) ** 2 for p, q in zip(la, lb)) ** 0.5


@lru_cache(maxsize=None)
def distinct(n: int) -> tuple[str, ...]:
    """n colours ('#rrggbb'), each as far as the greedy max-min pick allows from the others
    and from the reserved ones; the first ten are matplotlib's familiar tab10 hues."""
    import matplotlib

    start = [matplotlib.colors.to_hex(c) for c in matplotlib.colormaps["tab10"].colors if
             min(delta_e(matplotlib.colors.to_hex(c), r) for r in _RESERVED) > 35]
    levels = [i / 7 for i in range(8)]
    grid = ["#%02x%02x%02x" % tuple(round(255 * v) for v in c) for c in itertools.product(levels, repeat=3)]
    # too light to see on white, or too dark to tell apart
    grid = [g for g in grid if 25 < to_lab(g)[0] < 88]
    labs = {g: to_lab(g) for g in grid + start + list(_RESERVED)}

    def dist(a, b):
        return sum((p - q) ** 2 for p, q in zip(labs[a], labs[b])) ** 0.5
    chosen = list(start[:n])
    nearest = {g: min(dist(g, c) for c in chosen + list(_RESERVED)) for g in grid}
    while len(chosen) < n:
        best = max(nearest, key=lambda g: (nearest[g], g))
        chosen.append(best)
        nearest.pop(best)
        for g in nearest:
            nearest[g] = min(nearest[g], dist(g, best))
    return tuple(chosen)


def colours_for(names) -> dict[str, str]:
    """A distinct colour per name, in the order given (a name's colour depends on its place)."""
    names = list(dict.fromkeys(names))
    return dict(zip(names, distinct(len(names))))
