"""JSON from outsiders, bounded before it is parsed: size, nesting depth, no NaN or Infinity.

Python's json module recurses once per nesting level, so a few kilobytes of `[[[[...` end in a
RecursionError (a traceback, and on some paths a dropped connection). Every entry point that
parses JSON it did not write (the status page's API, the control socket, MQTT commands) calls
`loads_bounded`, which counts the nesting outside strings first and refuses with one line.
"""

from __future__ import annotations

import itertools
import json
import re
from typing import Any

MAX_DEPTH = 32  # the deepest request any entry point takes is 2 levels; 32 leaves room
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKETS = re.compile(r"[\[\]{}]")


class JSONLimitError(ValueError):
    """Refused JSON; the message is one line saying why."""


def _reject_constant(name: str) -> Any:
    raise JSONLimitError(f"{name} is not JSON")


def nesting_depth(text: str) -> int:
    """The deepest nesting of arrays and objects in `text`, ignoring brackets inside strings."""
    brackets = _BRACKETS.findall(_STRING.sub("", text))
    steps = (1 if b in "[{" else -1 for b in brackets)
    return max(itertools.accumulate(steps, initial=0))


def loads_bounded(data: bytes | str, *, max_bytes: int, max_depth: int = MAX_DEPTH) -> Any:
    """Parse `data` as JSON, refusing (JSONLimitError, one line) what is too large, too deeply nested,
    not UTF-8, not JSON, or uses NaN/Infinity; the size is checked before anything is decoded."""
    if len(data) > max_bytes:
        raise JSONLimitError(f"request of {len(data)} bytes; at most {max_bytes} are accepted")
    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise JSONLimitError("request is not valid JSON (not UTF-8 text)") from None
    else:
        text = data
    depth = nesting_depth(text)
    if depth > max_depth:
        raise JSONLimitError(f"request is nested {depth} levels deep; at most {max_depth} are accepted")
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise JSONLimitError(f"request is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") \
            from None
    except RecursionError:  # cannot happen below max_depth; kept so that no traceback can escape
        raise JSONLimitError("request is nested too deeply") from None
