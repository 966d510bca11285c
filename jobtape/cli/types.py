"""Click parameter types of the CLI: durations in seconds with a finite, stated range.

``click.FloatRange`` lets ``nan`` through (every comparison with it is false) and, without a
maximum, ``inf`` or ``1e400``; either would reach ``time.sleep`` or ``datetime`` arithmetic
as a traceback. :class:`Seconds` refuses both with a usage error (exit 2).
"""

from __future__ import annotations

import math
from typing import Any

import click

__all__ = ["DAY_S", "Seconds"]

#: Seconds in a day: the usual upper bound of a duration option.
DAY_S = 86400.0


class Seconds(click.FloatRange):
    """A finite number of seconds from ``min_s`` to ``max_s`` (both included).

    Args:
        min_s: the smallest accepted value, in seconds.
        max_s: the largest accepted value, in seconds (finite).
    """

    name = "seconds"

    def __init__(self, min_s: float, max_s: float) -> None:
        super().__init__(min=min_s, max=max_s)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        """Parse ``value`` as a float and check it is finite and in range.

        Raises:
            click.BadParameter: not a number, not finite, or out of range (exit 2, naming the range).
        """
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number of seconds; use {self._describe_range()}", param, ctx)
        return number
