"""Run yt-dlp with every host name it resolves checked against the SSRF address policy.

Usage: ``python -m jobtape.worker.ytdlp_guard [yt-dlp options] -- URL`` (the same options as
``python -m yt_dlp``). The worker runs this instead of ``-m yt_dlp`` when private URLs are
not allowed: the URL check before the download (:func:`jobtape.sources.check_source_url`)
cannot see the redirects yt-dlp follows, the URLs named inside a page or playlist, or a DNS
answer that changes between the check and the connection. Here, in the child itself,
``socket.getaddrinfo`` refuses any answer holding an address that
:func:`jobtape.sources.classify_address` flags, so every connection yt-dlp's HTTP stack
(urllib, requests/urllib3, websockets) opens goes to a public address.

Not covered: connections opened by other programs yt-dlp starts (ffmpeg for some
streams), and an HTTP proxy configured through ``HTTP(S)_PROXY`` (the proxy's own address
is checked, so a proxy on a private address is refused; the proxy must apply its own
egress policy).
"""

from __future__ import annotations

import socket
import sys
from typing import Any

from jobtape import sources

__all__ = ["REFUSED_MARKER", "guarded_getaddrinfo", "main"]

#: Text in the error yt-dlp reports when the guard refused a host.
REFUSED_MARKER = "jobtape refused to connect"

_original_getaddrinfo = socket.getaddrinfo


def guarded_getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
    """``socket.getaddrinfo``, raising ``socket.gaierror`` when any address is not public.

    Raises:
        socket.gaierror: the name does not resolve, or resolves to a flagged address
            (the message holds :data:`REFUSED_MARKER`, the host, the address and why).
    """
    infos = _original_getaddrinfo(host, port, *args, **kwargs)
    for info in infos:
        address = str(info[4][0])
        reason = sources.classify_address(address)
        if reason is not None:
            raise socket.gaierror(
                socket.EAI_NONAME, f"{REFUSED_MARKER} {host}: it resolves to {address}, a {reason} address"
            )
    return infos


def main() -> None:
    """Install the guard, then run yt-dlp's command line (exits with yt-dlp's status)."""
    socket.getaddrinfo = guarded_getaddrinfo
    import yt_dlp  # type: ignore[import-untyped]

    sys.argv[0] = "yt-dlp"
    yt_dlp.main()


if __name__ == "__main__":
    main()
