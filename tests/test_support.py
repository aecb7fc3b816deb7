"""`tests.support.wait_until`, the polling helper every test uses."""

from __future__ import annotations

import time

import pytest

from tests.support import wait_until


def test_returns_the_first_truthy_value() -> None:
    calls = iter([0, None, "", {"session_id": "s-1"}])
    assert wait_until(lambda: next(calls), 2, step_s=0.001) == {"session_id": "s-1"}


def test_returns_none_at_the_deadline_after_one_last_look() -> None:
    calls: list[float] = []
    began = time.monotonic()
    assert wait_until(lambda: calls.append(time.monotonic()), 0.1, step_s=0.02) is None
    assert calls[-1] - began >= 0.1 and len(calls) >= 3


def test_raises_with_the_message_when_given_one() -> None:
    with pytest.raises(AssertionError, match="never came"):
        wait_until(lambda: False, 0.05, step_s=0.01, message="never came")
    assert wait_until(lambda: 7, 0.05, message="unused") == 7
