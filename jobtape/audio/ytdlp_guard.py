"""Run yt-dlp with every host name it resolves checked against the SSRF address policy.

Usage: ``python -m jobtape.audio.ytdlp_guard [--allow-network CIDR]... [yt-dlp options] -- URL``
(after the guard's own leading ``--allow-network`` options, the same options as
``python -m yt_dlp``; each CIDR is an allowlisted network, ``Settings.allowed_private_networks``). The worker runs this instead of ``-m yt_dlp`` when private URLs are
not allowed: the URL check before the download (:func:`jobtape.audio.sources.check_source_url`)
cannot see the redirects yt-dlp follows, the URLs named inside a page or playlist, or a DNS
answer that changes between the check and the connection. Here, in the child itself,
``socket.getaddrinfo`` refuses any answer holding an address that
:func:`jobtape.audio.sources.classify_address` flags, so every connection yt-dlp's HTTP stack
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

from jobtape.audio import sources

__all__ = ["REFUSED_MARKER", "guarded_getaddrinfo", "main", "split_allowed"]

#: Text in the error yt-dlp reports when the guard refused a host.
REFUSED_MARKER = sources.REFUSED_MARKER

_original_getaddrinfo = socket.getaddrinfo


#: Networks that pass although not public; set by :func:`main` from ``--allow-network``.
_allowed: tuple[sources.Network, ...] = ()


def guarded_getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
    """``socket.getaddrinfo``, raising ``socket.gaierror`` when any address is not public
    (and not in an allowlisted network).

    Raises:
        socket.gaierror: the name does not resolve, or resolves to a flagged address
            (the message holds :data:`REFUSED_MARKER`, the host, the address and why).
    """
    infos = _original_getaddrinfo(host, port, *args, **kwargs)
    for info in infos:
        address = str(info[4][0])
        reason = sources.classify_address(address, _allowed)
        if reason is not None:
            raise socket.gaierror(socket.EAI_NONAME, f"{REFUSED_MARKER} {host}: it resolves to {address}, a {reason} address")
    return infos


def split_allowed(argv: list[str]) -> tuple[list[str], list[str]]:
    """Split the guard's leading ``--allow-network CIDR`` pairs off a command line.

    Returns:
        ``(cidrs, rest)``: the allowlisted networks and yt-dlp's own arguments.

    Raises:
        SystemExit: ``--allow-network`` without a value (exit status 1, with the message).
    """
    cidrs: list[str] = []
    rest = list(argv)
    while rest and rest[0] == "--allow-network":
        if len(rest) < 2:
            sys.exit("ytdlp_guard: --allow-network needs a network (CIDR)")
        cidrs.append(rest[1])
        rest = rest[2:]
    return cidrs, rest


def main() -> None:
    """Install the guard, then run yt-dlp's command line (exits with yt-dlp's status)."""
    global _allowed
    cidrs, rest = split_allowed(sys.argv[1:])
    _allowed = sources.parse_networks(cidrs)
    socket.getaddrinfo = guarded_getaddrinfo
    import yt_dlp

    sys.argv[1:] = rest
    sys.argv[0] = "yt-dlp"
    yt_dlp.main()


if __name__ == "__main__":
    main()
