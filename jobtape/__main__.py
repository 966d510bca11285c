"""``python -m jobtape``: the same command line as the ``jobtape`` console script."""

from __future__ import annotations

from jobtape import cli

__all__: list[str] = []

if __name__ == "__main__":
    cli.main()
