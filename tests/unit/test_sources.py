"""The URL policy of URL/YouTube ingest: form checks, YouTube hosts, the SSRF address classes (no network)."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from jobtape.audio import errors as audio_errors
from jobtape.audio import sources


def resolver(table: dict[str, Sequence[str]]) -> sources.Resolver:
    """A DNS resolver answering from ``table``; unknown names fail like getaddrinfo does."""

    def resolve(host: str, port: int) -> Sequence[str]:
        if host not in table:
            raise OSError(f"[Errno -2] Name or service not known: {host!r}")
        return table[host]

    return resolve


PUBLIC = resolver({"media.example": ["93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c"]})


@pytest.mark.parametrize(
    ("url", "reason", "message"),
    [
        ("ftp://media.example/a.mp3", "scheme", "only http:// and https:// URLs"),
        ("file:///etc/passwd", "scheme", "scheme 'file'"),
        ("media.example/a.mp3", "scheme", "no scheme"),
        ("http:///a.mp3", "malformed", "no host name"),
        ("http://[::1/a", "malformed", "not a valid URL"),
        ("http://media.example:99999/a", "malformed", "not a valid URL"),
        ("https://user:pw@media.example/a.mp3", "credentials", "user:password@"),
        ("", "malformed", "1-2048 characters"),
        ("https://media.example/" + "a" * 2048, "malformed", "1-2048 characters"),
    ],
)
def test_malformed_urls_are_refused_with_the_fix(url: str, reason: str, message: str) -> None:
    with pytest.raises(audio_errors.SourceUrlRefused) as refused:
        sources.check_source_url(url, resolve=PUBLIC)
    assert refused.value.reason == reason
    assert message in refused.value.message


@pytest.mark.parametrize(
    "url",
    [
        "https://www.youtube.com/watch?v=dQw4w9WgXcQ",
        "https://youtube.com/watch?v=x",
        "https://m.youtube.com/watch?v=x",
        "https://music.youtube.com/watch?v=x",
        "https://youtu.be/x",
        "https://www.youtube-nocookie.com/embed/x",
        "HTTPS://WWW.YOUTUBE.COM./watch?v=x",
    ],
)
def test_youtube_hosts_are_accepted(url: str) -> None:
    checked = sources.check_source_url(url, "youtube", allow_private=True)
    assert sources.is_youtube_host(checked.host)


@pytest.mark.parametrize("url", ["https://youtube.com.evil.example/x", "https://notyoutube.com/x", "https://vimeo.com/1"])
def test_youtube_source_with_another_host_is_refused(url: str) -> None:
    with pytest.raises(audio_errors.SourceUrlRefused, match="is not a YouTube address") as refused:
        sources.check_source_url(url, "youtube", allow_private=True)
    assert refused.value.reason == "not_youtube"


def test_public_host_passes_with_its_addresses() -> None:
    checked = sources.check_source_url(" https://media.example/talk.mp3 ", resolve=PUBLIC)
    assert (checked.url, checked.host, checked.port) == ("https://media.example/talk.mp3", "media.example", 443)
    assert len(checked.addresses) == 2


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("127.8.9.10", "loopback"),
        ("::1", "loopback"),
        ("0.0.0.0", "unspecified"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("169.254.169.254", "cloud metadata"),
        ("fd00:ec2::254", "cloud metadata"),
        ("100.100.100.200", "cloud metadata"),
        ("169.254.1.1", "link-local"),
        ("fe80::1%eth0", "link-local"),
        ("fd12:3456::1", "unique-local"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("100.64.0.1", "shared (carrier-grade NAT)"),
        ("240.0.0.1", "private"),
        ("::ffff:127.0.0.1", "loopback"),
        ("::ffff:10.0.0.1", "private"),
        ("192.0.2.10", "private"),
    ],
)
def test_non_public_addresses_are_classified(address: str, reason: str) -> None:
    assert sources.classify_address(address) == reason


@pytest.mark.parametrize("address", ["93.184.215.14", "8.8.8.8", "2606:4700:4700::1111", "::ffff:8.8.8.8"])
def test_public_addresses_are_not_flagged(address: str) -> None:
    assert sources.classify_address(address) is None


@pytest.mark.parametrize(
    ("url", "table"),
    [
        ("http://127.0.0.1:8000/a.mp3", {"127.0.0.1": ["127.0.0.1"]}),
        ("http://[::1]/a.mp3", {"::1": ["::1"]}),
        ("http://169.254.169.254/latest/meta-data/", {"169.254.169.254": ["169.254.169.254"]}),
        ("http://internal.example/a.mp3", {"internal.example": ["10.0.0.7"]}),
        # one bad address among good ones is enough: the downloader may pick any of them
        ("http://rebind.example/a.mp3", {"rebind.example": ["93.184.215.14", "127.0.0.1"]}),
    ],
)
def test_hosts_resolving_inside_the_network_are_refused(url: str, table: dict[str, Sequence[str]]) -> None:
    with pytest.raises(audio_errors.SourceUrlRefused, match="only public addresses can be ingested") as refused:
        sources.check_source_url(url, resolve=resolver(table))
    assert refused.value.reason == "private_address"


@pytest.mark.parametrize("host", ["metadata.google.internal", "METADATA.GOOGLE.INTERNAL.", "metadata"])
def test_metadata_names_are_refused_without_a_lookup(host: str) -> None:
    with pytest.raises(audio_errors.SourceUrlRefused, match="cloud metadata service"):
        sources.check_source_url(f"http://{host}/computeMetadata/v1/", resolve=resolver({}))


def test_allowance_skips_the_address_policy_but_not_the_form() -> None:
    checked = sources.check_source_url("http://127.0.0.1:8000/a.mp3", allow_private=True, resolve=resolver({}))
    assert (checked.host, checked.port, checked.addresses) == ("127.0.0.1", 8000, ())
    with pytest.raises(audio_errors.SourceUrlRefused, match="only http"):
        sources.check_source_url("gopher://127.0.0.1/", allow_private=True)


def test_unresolvable_host_is_refused_as_such() -> None:
    with pytest.raises(audio_errors.SourceUrlRefused, match="does not resolve") as refused:
        sources.check_source_url("https://no-such-host.example/a.mp3", resolve=resolver({}))
    assert refused.value.reason == "unresolvable"


def test_an_allowlisted_network_passes_but_metadata_never_does() -> None:
    allowed = sources.parse_networks(["10.1.2.0/24", " fd00:1::/64 ", "", "169.254.0.0/16", "192.168.7.20"])
    assert [str(n) for n in allowed] == ["10.1.2.0/24", "fd00:1::/64", "169.254.0.0/16", "192.168.7.20/32"]
    assert sources.classify_address("10.1.2.99", allowed) is None
    assert sources.classify_address("::ffff:10.1.2.99", allowed) is None  # IPv4-mapped: judged as IPv4
    assert sources.classify_address("fd00:1::5", allowed) is None
    assert sources.classify_address("192.168.7.20", allowed) is None
    assert sources.classify_address("10.1.3.1", allowed) == "private"  # a neighbour stays refused
    assert sources.classify_address("192.168.7.21", allowed) == "private"
    assert sources.classify_address("169.254.169.254", allowed) == "cloud metadata"  # inside an allowed network


def test_check_source_url_applies_the_allowlist_to_every_address() -> None:
    allowed = sources.parse_networks(["10.1.2.0/24"])
    inside = sources.check_source_url("http://media.internal/a.mp3", allowed_networks=allowed, resolve=lambda host, port: ["10.1.2.5"])
    assert inside.addresses == ("10.1.2.5",)
    with pytest.raises(audio_errors.SourceUrlRefused, match="10.9.9.9, a private address") as caught:
        sources.check_source_url(
            "http://media.internal/a.mp3", allowed_networks=allowed, resolve=lambda host, port: ["10.1.2.5", "10.9.9.9"]
        )
    assert caught.value.reason == "private_address"


@pytest.mark.parametrize("text", ["10.0.0.0/33", "media.internal", "10.0.0.0/8/1"])
def test_a_bad_network_is_named(text: str) -> None:
    with pytest.raises(ValueError, match=f"'{text}' is not an IP network .*a CIDR such as 10.1.2.0/24"):
        sources.parse_networks([text])


def test_settings_read_the_allowlist_from_the_environment() -> None:
    from jobtape.audio.settings import AudioSettings

    settings = AudioSettings.from_env({"JOBTAPE_ALLOWED_PRIVATE_NETWORKS": "10.1.2.0/24, fd00::/8,"})
    assert settings.allowed_private_networks == ("10.1.2.0/24", "fd00::/8")
    assert [str(n) for n in settings.private_networks] == ["10.1.2.0/24", "fd00::/8"]
    with pytest.raises(ValueError, match="JOBTAPE_ALLOWED_PRIVATE_NETWORKS='10.1.2.0/24, intranet'"):
        AudioSettings.from_env({"JOBTAPE_ALLOWED_PRIVATE_NETWORKS": "10.1.2.0/24, intranet"})
    with pytest.raises(ValueError, match="'intranet' is not an IP network"):
        AudioSettings(allowed_private_networks=("intranet",))
