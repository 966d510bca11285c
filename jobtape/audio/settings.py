"""The audio package's settings: loudness target, ffmpeg pace, URL sources, per-type timeouts.

Split from the engine's :class:`jobtape.config.Settings` (which knows nothing of audio);
read from the same environment variables and the same ``serve``/``worker`` flags as before.
Precedence (highest first): a command-line flag, its environment variable, the default below.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping

from jobtape import config
from jobtape.audio import sources

__all__ = ["AudioSettings"]


@dataclasses.dataclass(frozen=True)
class AudioSettings:
    """Settings of the audio jobs (ingest, preview, save) and their routes.

    Attributes:
        timeout_ingest_s, timeout_preview_s, timeout_save_s: seconds a job of that type may
            run from its claim before its child is terminated and it fails with ``timed out
            after N s`` (a URL ingest's download is bounded by ``timeout_ingest_s`` too). Env
            ``JOBTAPE_TIMEOUT_INGEST`` / ``_PREVIEW`` / ``_SAVE``; defaults 600, 120, 600
            (seed 004's reaper default of 10 minutes).
        target_lufs: integrated loudness of prepared assets, LUFS; default -16.0.
        target_true_peak_db: true-peak ceiling of prepared assets, dBTP; default -1.5.
        ffmpeg_readrate: if set, ffmpeg reads its input at most this many times real time
            (``-readrate``), so a worker sharing a host does not take every core; ``None``
            (the default) reads as fast as it can. Env ``JOBTAPE_FFMPEG_READRATE``.
        allow_private_urls: let URL ingests fetch from loopback, private, link-local and
            other non-public addresses (see :mod:`jobtape.audio.sources`); off by default (SSRF
            guard). Env ``JOBTAPE_ALLOW_PRIVATE_URLS=1``; flag ``--allow-private-urls``.
        allowed_private_networks: narrower than ``allow_private_urls``: non-public networks
            (CIDR, e.g. ``10.1.2.0/24`` for an internal media server) that URL ingests may
            fetch from, every other non-public address still refused; cloud metadata
            addresses never pass. Env ``JOBTAPE_ALLOWED_PRIVATE_NETWORKS`` (comma-separated);
            flag ``--allow-private-network`` (repeatable).
        max_download_bytes: largest media a URL ingest downloads, in bytes; default 500 MB.
            Env ``JOBTAPE_MAX_DOWNLOAD_BYTES``. (The download's time limit is ``timeout_ingest_s``.)

    Raises:
        ValueError: an allowed private network is not a CIDR (the message names it).
    """

    timeout_ingest_s: float = 600.0
    timeout_preview_s: float = 120.0
    timeout_save_s: float = 600.0
    target_lufs: float = -16.0
    target_true_peak_db: float = -1.5
    ffmpeg_readrate: float | None = None
    allow_private_urls: bool = False
    allowed_private_networks: tuple[str, ...] = ()
    max_download_bytes: int = 500 * 1000 * 1000

    def __post_init__(self) -> None:
        sources.parse_networks(self.allowed_private_networks)  # a clear ValueError naming a bad item

    @property
    def private_networks(self) -> tuple[sources.Network, ...]:
        """:attr:`allowed_private_networks` parsed (see :func:`jobtape.audio.sources.parse_networks`)."""
        return sources.parse_networks(self.allowed_private_networks)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> AudioSettings:
        """Build settings from ``JOBTAPE_*`` variables, then apply ``overrides`` (non-``None`` only).

        Raises:
            ValueError: a variable holds a value of the wrong type (the message names it).
        """
        env = os.environ if environ is None else environ
        values = config.env_values(
            env,
            (
                ("timeout_ingest_s", "JOBTAPE_TIMEOUT_INGEST", float),
                ("timeout_preview_s", "JOBTAPE_TIMEOUT_PREVIEW", float),
                ("timeout_save_s", "JOBTAPE_TIMEOUT_SAVE", float),
                ("ffmpeg_readrate", "JOBTAPE_FFMPEG_READRATE", float),
                ("allow_private_urls", "JOBTAPE_ALLOW_PRIVATE_URLS", config.parse_flag),
                ("allowed_private_networks", "JOBTAPE_ALLOWED_PRIVATE_NETWORKS", _networks),
                ("max_download_bytes", "JOBTAPE_MAX_DOWNLOAD_BYTES", int),
            ),
        )
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]

    @classmethod
    def fields(cls) -> frozenset[str]:
        """The field names (the CLI routes its flags' values to this class or the engine's by them)."""
        return frozenset(field.name for field in dataclasses.fields(cls))


def _networks(text: str) -> tuple[str, ...]:
    """``"10.1.2.0/24, fd00::/8"`` -> ``("10.1.2.0/24", "fd00::/8")``, each checked.

    Raises:
        ValueError: an item is not a network in CIDR notation.
    """
    items = tuple(item.strip() for item in text.split(",") if item.strip())
    sources.parse_networks(items)
    return items


_networks.__name__ = "list of networks (CIDR, comma-separated)"
