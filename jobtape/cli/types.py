"""Click parameter types of the CLI: finite numbers with a stated range (seconds, rates).

``click.FloatRange`` lets ``nan`` through (every comparison with it is false) and, without a
maximum, ``inf`` or ``1e400``; either would reach ``time.sleep`` or ``datetime`` arithmetic
as a traceback. :class:`Finite` and :class:`Seconds` refuse both with a usage error (exit 2).
"""

from __future__ import annotations

import math
from typing import Any

import click

__all__ = ["DAY_S", "Finite", "Seconds"]

#: Seconds in a day: the usual upper bound of a duration option.
DAY_S = 86400.0


class Finite(click.FloatRange):
    """A finite number from ``low`` to ``high`` (both included).

    Args:
        low: the smallest accepted value.
        high: the largest accepted value (finite).
    """

    name = "number"

    def __init__(self, low: float, high: float) -> None:
        super().__init__(min=low, max=high)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        """Parse ``value`` as a float and check it is finite and in range.

        Raises:
            click.BadParameter: not a number, not finite, or out of range (exit 2, naming the range).
        """
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite {self.name}; use {self._describe_range()}", param, ctx)
        return number


class Seconds(Finite):
    """A finite number of seconds from ``low`` to ``high`` (both included)."""

    name = "number of seconds"
