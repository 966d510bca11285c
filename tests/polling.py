"""Waiting in tests without sleeping blindly: poll a condition until a deadline.

``tests/`` is on ``sys.path`` (pytest inserts the folder of the root conftest), so test
modules import this as ``from polling import wait_for``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

__all__ = ["wait_for"]


def wait_for(predicate: Callable[[], Any], timeout_s: float = 60.0, what: str = "condition", interval_s: float = 0.02) -> Any:
    """Poll ``predicate`` every ``interval_s`` seconds until it returns a truthy value, and return that value.

    Raises:
        AssertionError: still falsy after ``timeout_s`` seconds (the message names ``what``).
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
