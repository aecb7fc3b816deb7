"""Helpers shared by the test modules (not tests themselves; pytest collects nothing here).

`wait_until` is the one polling helper every test uses instead of fixed sleeps.
"""

from tests.support.waiting import wait_until

__all__ = ["wait_until"]
