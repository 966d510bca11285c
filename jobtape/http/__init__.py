"""The HTTP API (Litestar): wires the job repository and blob storage to routes.

Build it with :func:`create_app`; see :mod:`jobtape.http.app` for the route list.
"""

from __future__ import annotations

from jobtape.http.app import create_app

__all__ = ["create_app"]
