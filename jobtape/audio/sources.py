"""Which URLs an ingest may fetch: parsing, the YouTube host list, and the SSRF address policy.

A URL ingest makes the server fetch whatever the client names, so an unchecked URL is a
server-side request forgery (SSRF): ``http://169.254.169.254/...`` reads cloud credentials,
``http://127.0.0.1:6379/`` talks to a local service. :func:`check_source_url` refuses, before
anything is fetched:

- a URL that is not ``http``/``https`` (RFC 3986 scheme), has no host, or carries
  ``user:password@`` (a classic way to confuse URL parsers);
- for ``sourceType: "youtube"``, a host that is not YouTube's (:data:`YOUTUBE_HOSTS`);
- a host on the metadata-name list (:data:`METADATA_HOSTS`), or one whose DNS answer
  contains ANY address that :func:`classify_address` flags (loopback, private,
  link-local, unique-local, shared/CGNAT, multicast, reserved, unspecified, cloud
  metadata; IANA special-purpose registries, RFC 6890), unless ``allow_private`` is set.
  Addresses inside an operator's allowlist of networks (``allowed_networks``, e.g. the
  internal media server's ``10.1.2.0/24``; :func:`parse_networks`) pass; cloud metadata
  addresses never do.

It is checked twice: by the API before a job exists, and by the worker right before the
download (DNS may have changed in between: it re-resolves).

yt-dlp resolves the host again itself, follows HTTP redirects and fetches URLs named inside
the page or playlist (``<video src>``, HLS segments); :mod:`jobtape.audio.ytdlp_guard`
applies :func:`classify_address` to those inside the yt-dlp child. The residual risks
(programs yt-dlp starts, proxies) are in docs/jobs.md.

Parsing and classification are pure; DNS resolution is injected (:data:`Resolver`), with
:func:`resolve_host` (``socket.getaddrinfo``) as the production resolver.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import socket
import urllib.parse
from collections.abc import Callable, Iterable, Sequence
from typing import Literal

from jobtape.audio import errors

__all__ = [
    "MAX_URL_LENGTH",
    "METADATA_ADDRESSES",
    "METADATA_HOSTS",
    "REFUSED_MARKER",
    "SOURCE_TYPES",
    "YOUTUBE_HOSTS",
    "CheckedSource",
    "Network",
    "Resolver",
    "SourceType",
    "check_source_url",
    "classify_address",
    "is_youtube_host",
    "parse_networks",
    "parse_source_url",
    "resolve_host",
]

#: Written by the yt-dlp guard (:mod:`jobtape.audio.ytdlp_guard`) when it refuses an address;
#: read back from its stderr by :func:`jobtape.audio.ytdlp.describe_failure`.
REFUSED_MARKER = "jobtape refused to connect"

SourceType = Literal["url", "youtube"]
#: An allowlisted network (``ipaddress.ip_network`` of a CIDR such as ``10.1.2.0/24``).
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
#: The ``sourceType`` values of a JSON ingest.
SOURCE_TYPES: tuple[SourceType, ...] = ("url", "youtube")
#: Longest accepted URL, in characters.
MAX_URL_LENGTH = 2048
#: Hosts accepted for ``sourceType: "youtube"`` (exact names: the list, not their subdomains).
YOUTUBE_HOSTS = frozenset(
    {"youtube.com", "www.youtube.com", "m.youtube.com", "music.youtube.com", "youtu.be", "youtube-nocookie.com", "www.youtube-nocookie.com"}
)
#: Cloud instance-metadata host names, refused by name before any DNS lookup.
METADATA_HOSTS = frozenset(
    {"metadata", "metadata.google.internal", "metadata.goog", "metadata.azure.com", "instance-data", "instance-data.ec2.internal"}
)
#: Cloud instance-metadata addresses (AWS, GCP, Azure, OpenStack: 169.254.169.254; AWS IPv6:
#: fd00:ec2::254; Alibaba: 100.100.100.200; Oracle: 192.0.0.192).
METADATA_ADDRESSES = frozenset(ipaddress.ip_address(a) for a in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200", "192.0.0.192"))

#: ``(host, port) -> addresses`` (textual IPv4/IPv6). Raises ``OSError`` when the name does not resolve.
Resolver = Callable[[str, int], Sequence[str]]

_SHARED_ADDRESS_SPACE = ipaddress.ip_network("100.64.0.0/10")  # RFC 6598 (carrier-grade NAT)


@dataclasses.dataclass(frozen=True)
class CheckedSource:
    """A URL that passed :func:`check_source_url`.

    Attributes:
        url: the URL as given (stripped of surrounding whitespace).
        host: the host name, lowercased, without a trailing dot (IPv6 without brackets).
        port: the port the URL names, or the scheme's default (80, 443).
        addresses: what the host resolved to (empty when the allowance skipped the check).
    """

    url: str
    host: str
    port: int
    addresses: tuple[str, ...] = ()


def parse_source_url(url: str, source_type: SourceType = "url") -> tuple[str, str, int]:
    """Parse and check the form of a source URL (no DNS).

    Args:
        url: the URL from the request.
        source_type: ``"url"`` (any http/https URL) or ``"youtube"`` (a YouTube host).

    Returns:
        ``(url, host, port)``: the stripped URL, its lowercased host and its port.

    Raises:
        errors.SourceUrlRefused: ``malformed``, ``scheme``, ``credentials`` or ``not_youtube``.
    """
    url = url.strip()
    if not url or len(url) > MAX_URL_LENGTH:
        raise errors.SourceUrlRefused(url, "malformed", f"url must be an http(s) URL of 1-{MAX_URL_LENGTH} characters")
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise errors.SourceUrlRefused(url, "malformed", f"url is not a valid URL ({exc}); send an http(s) URL") from exc
    if parts.scheme.lower() not in ("http", "https"):
        shown = f"scheme {parts.scheme!r}" if parts.scheme else "no scheme"
        raise errors.SourceUrlRefused(url, "scheme", f"url has {shown}; only http:// and https:// URLs can be ingested")
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise errors.SourceUrlRefused(url, "malformed", "url has no host name; send a full URL such as https://example.com/a.mp3")
    if parts.username is not None or parts.password is not None:
        raise errors.SourceUrlRefused(url, "credentials", "url must not contain user:password@; remove the credentials")
    if source_type == "youtube" and not is_youtube_host(host):
        raise errors.SourceUrlRefused(
            url,
            "not_youtube",
            f"url host {host!r} is not a YouTube address (youtube.com, youtu.be,"
            ' youtube-nocookie.com); use sourceType "url" for other sites',
        )
    return url, host, port if port is not None else (443 if parts.scheme.lower() == "https" else 80)


def is_youtube_host(host: str) -> bool:
    """``True`` for a host in :data:`YOUTUBE_HOSTS` (case-insensitive, trailing dot ignored)."""
    return host.lower().rstrip(".") in YOUTUBE_HOSTS


def parse_networks(texts: Iterable[str]) -> tuple[Network, ...]:
    """Parse an allowlist of networks in CIDR notation (a bare address is its own /32 or /128).

    Args:
        texts: e.g. ``["10.1.2.0/24", "fd00:1::/64", "192.168.7.20"]``; blank items are skipped.

    Returns:
        The networks, host bits cleared (``10.1.2.7/24`` is ``10.1.2.0/24``).

    Raises:
        ValueError: an item is not an IPv4/IPv6 network (the message names it and shows the form).
    """
    networks = []
    for text in texts:
        item = text.strip()
        if not item:
            continue
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError as exc:
            raise ValueError(f"{item!r} is not an IP network ({exc}); write a CIDR such as 10.1.2.0/24") from None
    return tuple(networks)


def classify_address(address: str, allowed: Sequence[Network] = ()) -> str | None:
    """Why an address must not be fetched from the server, or ``None`` for a public one.

    IPv4-mapped IPv6 addresses (``::ffff:127.0.0.1``) are judged as the IPv4 address.

    Args:
        address: an IPv4 or IPv6 address in text form (an IPv6 zone ``%eth0`` is ignored).
        allowed: networks the operator allows although they are not public
            (``Settings.allowed_private_networks``); an address inside one passes, unless
            it is a cloud metadata address.

    Returns:
        ``"cloud metadata"``, ``"loopback"``, ``"unspecified"``, ``"link-local"``,
        ``"multicast"``, ``"unique-local"``, ``"private"``, ``"shared (carrier-grade NAT)"``,
        ``"reserved"`` or ``"not globally routable"``; ``None`` when the address is global
        or allowlisted.

    Raises:
        ValueError: ``address`` is not an IP address.
    """
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip in METADATA_ADDRESSES:
        return "cloud metadata"
    if any(ip.version == network.version and ip in network for network in allowed):
        return None
    checks = (
        (ip.is_loopback, "loopback"),
        (ip.is_unspecified, "unspecified"),
        (ip.is_link_local, "link-local"),
        (ip.is_multicast, "multicast"),
        (isinstance(ip, ipaddress.IPv6Address) and ip in ipaddress.ip_network("fc00::/7"), "unique-local"),
        (isinstance(ip, ipaddress.IPv4Address) and ip in _SHARED_ADDRESS_SPACE, "shared (carrier-grade NAT)"),
        (ip.is_private, "private"),
        (ip.is_reserved, "reserved"),
        (not ip.is_global, "not globally routable"),
    )
    return next((reason for flagged, reason in checks if flagged), None)


def resolve_host(host: str, port: int) -> list[str]:
    """The production :data:`Resolver`: every address ``socket.getaddrinfo`` gives for TCP.

    Raises:
        OSError: the name does not resolve (``socket.gaierror``).
    """
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def check_source_url(
    url: str,
    source_type: SourceType = "url",
    *,
    allow_private: bool = False,
    allowed_networks: Sequence[Network] = (),
    resolve: Resolver = resolve_host,
) -> CheckedSource:
    """Check a source URL's form and, unless allowed, that its host resolves only to public addresses.

    Args:
        url: the URL from the request or the job's params.
        source_type: ``"url"`` or ``"youtube"``.
        allow_private: skip the address policy (``Settings.allow_private_urls``; tests and
            trusted single-user setups). The form checks still apply.
        allowed_networks: non-public networks that pass anyway (see :func:`classify_address`).
        resolve: the DNS resolver; see :data:`Resolver`.

    Returns:
        The checked URL with the addresses it resolved to.

    Raises:
        errors.SourceUrlRefused: see :func:`parse_source_url`; ``private_address`` when the
            host is a metadata name or ANY resolved address is flagged by
            :func:`classify_address`; ``unresolvable`` when DNS gives no address.
    """
    url, host, port = parse_source_url(url, source_type)
    if allow_private:
        return CheckedSource(url, host, port)
    if host in METADATA_HOSTS:
        raise errors.SourceUrlRefused(
            url, "private_address", f"url host {host!r} is a cloud metadata service; only public addresses can be ingested"
        )
    try:
        addresses = tuple(resolve(host, port))
    except OSError as exc:
        raise errors.SourceUrlRefused(url, "unresolvable", f"url host {host!r} does not resolve ({exc}); check the address") from exc
    if not addresses:
        raise errors.SourceUrlRefused(url, "unresolvable", f"url host {host!r} does not resolve; check the address")
    for address in addresses:
        reason = classify_address(address, allowed_networks)
        if reason is not None:
            raise errors.SourceUrlRefused(
                url,
                "private_address",
                f"url host {host!r} resolves to {address}, a {reason} address;"
                " only public addresses can be ingested (an operator may allow this network with --allow-private-network,"
                " or every address with --allow-private-urls)",
            )
    return CheckedSource(url, host, port, addresses)
