"""The ``jobtape`` command line (click + rich); see :mod:`jobtape.cli.main` for the group."""

from __future__ import annotations

from jobtape.cli.main import cli, main

__all__ = ["cli", "main"]
