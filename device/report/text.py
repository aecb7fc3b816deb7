"""Text of the report: the one escaping helper, number/time/metadata formatting, small HTML pieces.

`_esc` is the only escaping function of the report: the SVG and HTML fragments built in Python
pass every text node and attribute value through it, and the Jinja2 template (autoescaping on)
finalizes each `{{ value }}` through it too, so the page escapes one way everywhere.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from device.labels import LABEL_COLOURS, OTHER_COLOUR

MODALITY_NAMES = {"face": "face", "speech": "voice"}
DASH = "\u2014"
MIDDOT = " \u00b7 "
NUM = ' class="num"'


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _finite(value: Any) -> float | None:
    """`value` as a finite float, or None (None, bools, strings, NaN and infinities give None)."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        return None
    x = float(value)
    return x if math.isfinite(x) else None


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def clock(seconds: float | None) -> str:
    """Seconds as mm:ss (minutes keep counting past 59: one hour is 60:00); a dash for None."""
    s = _finite(seconds)
    if s is None:
        return DASH
    total = round(s)
    sign = "-" if total < 0 else ""
    minutes, secs = divmod(abs(total), 60)
    return f"{sign}{minutes:02d}:{secs:02d}"


def _fmt(value: Any, spec: str = ".2f") -> str:
    x = _finite(value)
    return DASH if x is None else format(x, spec)


def _pct(value: Any) -> str:
    x = _finite(value)
    return DASH if x is None else f"{100 * x:.0f}%"


def _plain(value: Any) -> str:
    """Generic metadata value as text (not yet escaped)."""
    if value is None:
        return DASH
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return format(value, "g") if math.isfinite(value) else str(value)
    if isinstance(value, list | tuple | dict):
        return json.dumps(value, default=str, ensure_ascii=False)
    return str(value)


def _human(key: Any) -> str:
    text = str(key).replace("_", " ").strip()
    return text[:1].upper() + text[1:]


def _swatch(colour: str, line: bool = False) -> str:
    cls = "swatch line" if line else "swatch"
    return f'<span class="{cls}" style="background:{_esc(colour)}" aria-hidden="true"></span>'


def _label_colour(label: Any) -> str:
    return LABEL_COLOURS.get(str(label), OTHER_COLOUR)


def _legend(items: Iterable[tuple[str, str]], chart: str, line: bool = False) -> str:
    lis = "".join(f"<li>{_swatch(colour, line)}{_esc(name)}</li>" for name, colour in items)
    return f'<ul class="legend" data-chart="{_esc(chart)}">{lis}</ul>'


def _empty(message: str) -> str:
    return f'<div class="empty" role="note">{_esc(message)}</div>'


def _figure(caption: str, body: str, note: str = "") -> str:
    extra = f' <span class="note">{_esc(note)}</span>' if note else ""
    return f"<figure><figcaption>{_esc(caption)}{extra}</figcaption>{body}</figure>"
