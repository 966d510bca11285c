"""Signed download URLs for the local storage backend (pure: no I/O, the clock is passed in).

A signed URL lets a client fetch one blob until a deadline without any other credential:

    /api/storage/download?key=<key>&expires=<unix seconds>&signature=<hex>

``signature`` is HMAC-SHA256 (RFC 2104) over ``"<key>\\n<expires>"`` with the server's
secret, as lowercase hex. :func:`verify` recomputes it and compares in constant time
(``hmac.compare_digest``), so a changed key, a changed expiry or a forged signature is
refused, and so is an expiry in the past.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import urllib.parse

from jobtape import errors

__all__ = ["DOWNLOAD_PATH", "MIN_SECRET_BYTES", "URLSigner", "signature_for"]

#: The route that serves signed downloads (``jobtape.http.downloads``).
DOWNLOAD_PATH = "/api/storage/download"
#: Shortest accepted secret, in bytes (HMAC-SHA256 keys shorter than the hash add no strength).
MIN_SECRET_BYTES = 32


def signature_for(secret: bytes, key: str, expires: int) -> str:
    """The lowercase hex HMAC-SHA256 of ``"<key>\\n<expires>"`` under ``secret``.

    Args:
        secret: the signing secret (>= 32 bytes).
        key: the storage key.
        expires: the deadline, in Unix seconds (UTC).
    """
    message = f"{key}\n{int(expires)}".encode()
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


class URLSigner:
    """Issues and checks signed download URLs.

    Args:
        secret: the HMAC key, at least :data:`MIN_SECRET_BYTES` bytes.
        path: the download route's path (default :data:`DOWNLOAD_PATH`).

    Raises:
        ValueError: the secret is too short.
    """

    def __init__(self, secret: bytes, path: str = DOWNLOAD_PATH) -> None:
        if len(secret) < MIN_SECRET_BYTES:
            raise ValueError(f"the signing secret must be at least {MIN_SECRET_BYTES} bytes, got {len(secret)}")
        self._secret = secret
        self.path = path

    def __repr__(self) -> str:
        return f"URLSigner(path={self.path!r})"  # never the secret

    def sign(self, key: str, expires_in_s: float, now_s: float) -> str:
        """A signed URL (path and query, no host) for ``key``, valid ``expires_in_s`` seconds after ``now_s``.

        Args:
            key: the storage key (already validated by the caller).
            expires_in_s: lifetime in seconds (> 0); the deadline is rounded up to a whole second.
            now_s: the current time in Unix seconds.

        Raises:
            ValueError: ``expires_in_s`` <= 0.
        """
        if expires_in_s <= 0:
            raise ValueError(f"expires_in_s must be > 0, got {expires_in_s}")
        expires = math.ceil(now_s + expires_in_s)
        query = urllib.parse.urlencode(
            {"key": key, "expires": expires, "signature": signature_for(self._secret, key, expires)},
            quote_via=urllib.parse.quote,
        )
        return f"{self.path}?{query}"

    def verify(self, key: str, expires: str | int, signature: str, now_s: float) -> None:
        """Check a signed URL's parameters.

        Args:
            key: the ``key`` query parameter.
            expires: the ``expires`` query parameter (Unix seconds as text or int).
            signature: the ``signature`` query parameter (hex).
            now_s: the current time in Unix seconds.

        Raises:
            errors.InvalidSignature: the signature does not match, ``expires`` is not an
                integer, or the deadline has passed (the message says which).
        """
        try:
            deadline = int(expires)
        except (TypeError, ValueError):
            raise errors.InvalidSignature("the download link is malformed (expires is not a number)") from None
        expected = signature_for(self._secret, key, deadline)
        if not hmac.compare_digest(expected, signature.strip().lower()):
            raise errors.InvalidSignature("the download link's signature is not valid; ask for a new link")
        if now_s >= deadline:
            raise errors.InvalidSignature("the download link has expired; poll the job again for a fresh link")
