"""`wait_until`: poll a condition until it holds or a deadline passes."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def wait_until(predicate: Callable[[], Any], timeout_s: float = 5.0, *, step_s: float = 0.05,
               message: str | None = None) -> Any:
    """Call `predicate` every `step_s` seconds until it returns a truthy value, and return that value.

    The predicate is always called once more at the deadline, so a slow first call cannot time out
    unchecked. When it never holds: raise `AssertionError(message)` if a message is given, otherwise
    return None, so callers write `assert wait_until(...), details` or `if not wait_until(...)`.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            break
        time.sleep(step_s)
    if message is not None:
        raise AssertionError(message)
    return None
