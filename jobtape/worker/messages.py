"""Messages a worker records for clients: a failure's text without this server's file paths (pure)."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence

__all__ = ["scrub_paths"]

_ABSOLUTE_PATH = re.compile(r"(?<![\w:/.~>-])/(?:[^\s/'\"(),;:]+/)+([^\s/'\"(),;:]*)")


def scrub_paths(text: str, roots: Sequence[tuple[str | os.PathLike[str], str]] = ()) -> str:
    """Remove this server's file paths from a message meant for clients (pure).

    Each root (a job's work folder, the data dir) is replaced by its placeholder first, so
    ``/tmp/jobtape-ab12-x/input.wav`` reads ``<workdir>/input.wav``; any other absolute
    path (a tool's own, a temp file) is cut to its last segment. URLs are left alone.

    Args:
        text: the message (an error with ffmpeg's or yt-dlp's stderr tail, say).
        roots: ``(folder, placeholder)`` pairs, e.g. ``(workdir, "<workdir>")``; longer
            folders are replaced first.

    Returns:
        ``text`` without absolute server paths.
    """
    for root, placeholder in sorted(((os.fspath(r), p) for r, p in roots), key=lambda item: -len(item[0])):
        for form in {root.rstrip("/"), os.path.realpath(root).rstrip("/")}:
            if form:
                text = text.replace(form, placeholder)
    return _ABSOLUTE_PATH.sub(lambda match: match.group(1) or "/", text)
