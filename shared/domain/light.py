"""The LIGHT challenge's colour sequence: drawn by the server for a capture session, shown by
the SDK (the screen fills with each colour in turn), checked by worker/pipeline/light.py.

A sequence is ``count`` saturated colours whose hues are ``count`` evenly spaced hue bins in a
random order, each jittered within its bin (so with the default 6 no two colours share a hue
sector and neighbours never repeat), each shown for a random 250-400 ms. It is stored with the
session as JSON (``capture_sessions.light``) and returned as ``{"colors": ["#ff2020", ...],
"durations_ms": [300, ...]}``.
"""

from __future__ import annotations

import colorsys
import random
import re
import secrets
from dataclasses import dataclass
from typing import Any

from antihack.shared.choices import MAX_COLORS, MIN_COLORS

LIGHT = "LIGHT"
# Saturation of the drawn colours: a little below 1 keeps every channel lit a bit, so the
# camera's response stays linear (no channel is clipped at 0 in the face's reflection).
SATURATION = 0.88
_HEX = re.compile(r"^#[0-9a-f]{6}$")


@dataclass(frozen=True)
class LightSequence:
    """The colours the screen shows, in order, and how long each stays (ms)."""

    colors: tuple[str, ...]
    durations_ms: tuple[int, ...]

    def body(self) -> dict[str, Any]:
        """The JSON form (session response, ``capture_sessions.light``)."""
        return {"colors": list(self.colors), "durations_ms": list(self.durations_ms)}

    @classmethod
    def from_json(cls, value: Any) -> LightSequence | None:
        """The sequence stored with a session, or None when absent or malformed."""
        if not isinstance(value, dict):
            return None
        colors, durations = value.get("colors"), value.get("durations_ms")
        if not isinstance(colors, list) or not isinstance(durations, list):
            return None
        if not colors or len(colors) != len(durations):
            return None
        if not all(isinstance(c, str) and _HEX.match(c) for c in colors):
            return None
        if not all(isinstance(d, int) and 0 < d <= 10_000 for d in durations):
            return None
        return cls(tuple(colors), tuple(durations))

    def rgb(self) -> list[tuple[float, float, float]]:
        """Each colour as linear-ish RGB in [0, 1] (the screen's drive levels)."""
        return [tuple(int(c[i : i + 2], 16) / 255.0 for i in (1, 3, 5)) for c in self.colors]  # type: ignore[misc]


def _hex(rgb: tuple[float, float, float]) -> str:
    return "#" + "".join(f"{round(v * 255):02x}" for v in rgb)


def draw_sequence(
    count: int = 6,
    min_ms: int = 250,
    max_ms: int = 400,
    rng: random.Random | None = None,
) -> LightSequence:
    """A random sequence: ``count`` hue bins shuffled, a hue jittered within each bin, and a
    duration drawn uniformly in [min_ms, max_ms] for each colour."""
    if not MIN_COLORS <= count <= MAX_COLORS:
        raise ValueError(f"a light sequence has {MIN_COLORS} to {MAX_COLORS} colours")
    if not 0 < min_ms <= max_ms:
        raise ValueError("light durations need 0 < min_ms <= max_ms")
    draw = rng or secrets.SystemRandom()
    bins = list(range(count))
    draw.shuffle(bins)
    width = 1.0 / count
    colors = []
    for b in bins:
        # Jitter within the middle half of the bin: neighbouring bins stay >= half a bin apart.
        hue = (b + 0.25 + 0.5 * draw.random()) * width
        colors.append(_hex(colorsys.hsv_to_rgb(hue % 1.0, SATURATION, 1.0)))
    durations = [draw.randint(min_ms, max_ms) for _ in range(count)]
    return LightSequence(tuple(colors), tuple(durations))
