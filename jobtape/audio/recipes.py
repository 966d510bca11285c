"""Edit recipes: the wire shape, validation against an asset, canonical form and hash (pure).

A recipe says how to render an asset: trim to ``[startSec, endSec)``, fade in and out,
apply a gain, optionally re-normalise loudness. The preview cache is keyed by
:func:`recipe_hash`: sha256 over the canonical JSON of the recipe with every default
filled in (``endSec`` = the asset's end), so ``{"assetId": a}`` and
``{"assetId": a, "startSec": 0, "endSec": <duration>}`` are one recipe.

Canonical JSON: keys sorted, no whitespace, times and levels rounded to the millisecond /
millibel (3 decimals), ``targetLufs`` ``null`` when loudness is kept.

Ranges (issue 3): ``gainDb`` in -30..+30 dB, ``targetLufs`` in -40..-5 LUFS, times in
seconds within the asset, fades no longer than the trimmed length. The ranges that do not
depend on the asset are ``msgspec.Meta`` bounds on :class:`Recipe` (so they appear in the
OpenAPI schema and :func:`decode` enforces them); :func:`validate` checks them all again,
with the asset's length, for recipes built in code.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from typing import Annotated, Any

import msgspec

from jobtape.audio import errors

__all__ = [
    "EXAMPLE",
    "GAIN_RANGE_DB",
    "TARGET_LUFS_RANGE",
    "CanonicalRecipe",
    "Recipe",
    "canonical_json",
    "decode",
    "recipe_hash",
    "validate",
]

#: Accepted ``gainDb``, in dB (inclusive).
GAIN_RANGE_DB = (-30.0, 30.0)
#: Accepted ``targetLufs``, in LUFS (inclusive).
TARGET_LUFS_RANGE = (-40.0, -5.0)
#: How far ``endSec`` may pass the asset's stored duration (which is rounded to 1 ms), in seconds.
_END_TOLERANCE_S = 0.0005

_Seconds = Annotated[float, msgspec.Meta(ge=0, description="Seconds from the start of the asset.", examples=[1.5])]
_FadeSeconds = Annotated[float, msgspec.Meta(ge=0, description="Fade length in seconds, at most the trimmed length.")]


class Recipe(msgspec.Struct, rename="camel", kw_only=True, forbid_unknown_fields=True):
    """An edit recipe as clients send it (JSON, camelCase).

    Attributes:
        asset_id: the source asset (``assetId`` of a completed ingest or save job).
        start_sec: where the render starts, in seconds (default 0).
        end_sec: where it ends, in seconds (default: the asset's end); must exceed ``startSec``.
        fade_in_sec: linear fade-in length from the render's start, in seconds (default 0).
        fade_out_sec: fade-out length up to the render's end, in seconds (default 0).
        gain_db: gain applied after the fades, -30..+30 dB (default 0).
        target_lufs: re-normalise the result to this integrated loudness (EBU R128),
            -40..-5 LUFS; ``None`` (default) keeps the loudness.
    """

    asset_id: Annotated[str, msgspec.Meta(description="The asset to edit (32 hex digits).", min_length=1, max_length=64)]
    start_sec: _Seconds = 0.0
    end_sec: _Seconds | None = None
    fade_in_sec: _FadeSeconds = 0.0
    fade_out_sec: _FadeSeconds = 0.0
    gain_db: Annotated[float, msgspec.Meta(ge=GAIN_RANGE_DB[0], le=GAIN_RANGE_DB[1], description="Gain in dB, -30 to +30.")] = 0.0
    target_lufs: (
        Annotated[
            float,
            msgspec.Meta(
                ge=TARGET_LUFS_RANGE[0], le=TARGET_LUFS_RANGE[1], description="Target loudness in LUFS, -40 to -5; null keeps it."
            ),
        ]
        | None
    ) = None


class CanonicalRecipe(msgspec.Struct, frozen=True, kw_only=True):
    """A validated recipe with every default filled in (all times in seconds, rounded to 1 ms).

    Attributes:
        asset_id, start_sec, end_sec, fade_in_sec, fade_out_sec, gain_db, target_lufs:
            as in :class:`Recipe`, with ``end_sec`` never ``None``.
    """

    asset_id: str
    start_sec: float
    end_sec: float
    fade_in_sec: float
    fade_out_sec: float
    gain_db: float
    target_lufs: float | None

    @property
    def length_sec(self) -> float:
        """The render's length, ``end_sec - start_sec``, in seconds."""
        return round(self.end_sec - self.start_sec, 3)

    def to_json_dict(self) -> dict[str, Any]:
        """The camelCase dict that :func:`canonical_json` encodes (and job params carry)."""
        return {
            "assetId": self.asset_id,
            "endSec": self.end_sec,
            "fadeInSec": self.fade_in_sec,
            "fadeOutSec": self.fade_out_sec,
            "gainDb": self.gain_db,
            "startSec": self.start_sec,
            "targetLufs": self.target_lufs,
        }

    @classmethod
    def from_json_dict(cls, values: dict[str, Any]) -> CanonicalRecipe:
        """Rebuild from :meth:`to_json_dict` output (e.g. a job's params); no validation."""
        return cls(
            asset_id=values["assetId"],
            start_sec=float(values["startSec"]),
            end_sec=float(values["endSec"]),
            fade_in_sec=float(values["fadeInSec"]),
            fade_out_sec=float(values["fadeOutSec"]),
            gain_db=float(values["gainDb"]),
            target_lufs=None if values.get("targetLufs") is None else float(values["targetLufs"]),
        )


def _finite(field: str, value: float) -> float:
    if not math.isfinite(value):
        raise errors.InvalidRecipe(field, f"must be a finite number, got {value}")
    return round(float(value), 3)


def _within(field: str, value: float, bounds: tuple[float, float], unit: str) -> float:
    low, high = bounds
    if not low <= value <= high:
        raise errors.InvalidRecipe(field, f"{value:g} {unit} is outside {low:g}..{high:g} {unit}")
    return value


def validate(recipe: Recipe, asset_duration_sec: float) -> CanonicalRecipe:
    """Check a recipe against its asset's length and fill in the defaults.

    Args:
        recipe: the recipe as received.
        asset_duration_sec: the asset's duration in seconds (from the ``assets`` projection).

    Returns:
        The canonical recipe (times rounded to 1 ms, ``end_sec`` filled in).

    Raises:
        errors.InvalidRecipe: naming the field: a negative or non-finite time, ``startSec``
            at or past the asset's end, ``endSec`` <= ``startSec`` or past the asset's end,
            a fade longer than the trimmed length (or both fades together longer than it),
            ``gainDb`` outside -30..+30, ``targetLufs`` outside -40..-5.
    """
    duration = round(float(asset_duration_sec), 3)
    start = _finite("startSec", recipe.start_sec)
    if start < 0:
        raise errors.InvalidRecipe("startSec", f"must be >= 0, got {start:g}")
    if start >= duration:
        raise errors.InvalidRecipe("startSec", f"{start:g} s is at or beyond the asset's end ({duration:g} s)")
    end = duration if recipe.end_sec is None else _finite("endSec", recipe.end_sec)
    if end <= start:
        raise errors.InvalidRecipe("endSec", f"must be greater than startSec ({start:g} s), got {end:g}")
    if end > duration + _END_TOLERANCE_S:
        raise errors.InvalidRecipe("endSec", f"{end:g} s is beyond the asset's end ({duration:g} s)")
    end = min(end, duration)
    length = round(end - start, 3)
    fades = {}
    for field, value in (("fadeInSec", recipe.fade_in_sec), ("fadeOutSec", recipe.fade_out_sec)):
        fades[field] = _finite(field, value)
        if fades[field] < 0:
            raise errors.InvalidRecipe(field, f"must be >= 0, got {fades[field]:g}")
        if fades[field] > length:
            raise errors.InvalidRecipe(field, f"{fades[field]:g} s is longer than the trimmed length ({length:g} s)")
    if fades["fadeInSec"] + fades["fadeOutSec"] > length + 1e-9:
        raise errors.InvalidRecipe(
            "fadeOutSec",
            f"fadeInSec + fadeOutSec ({fades['fadeInSec'] + fades['fadeOutSec']:g} s) is longer than the trimmed length ({length:g} s)",
        )
    gain = _within("gainDb", _finite("gainDb", recipe.gain_db), GAIN_RANGE_DB, "dB")
    target = None
    if recipe.target_lufs is not None:
        target = _within("targetLufs", _finite("targetLufs", recipe.target_lufs), TARGET_LUFS_RANGE, "LUFS")
    return CanonicalRecipe(
        asset_id=recipe.asset_id,
        start_sec=start,
        end_sec=end,
        fade_in_sec=fades["fadeInSec"],
        fade_out_sec=fades["fadeOutSec"],
        gain_db=gain + 0.0,  # -0.0 and 0.0 must hash alike
        target_lufs=target,
    )


#: A recipe as JSON, quoted in error messages.
EXAMPLE = '{"assetId": "<asset id>", "startSec": 1.5, "endSec": 4, "fadeInSec": 0.5, "gainDb": -3}'
_DECODER = msgspec.json.Decoder(Recipe)
_FIELDS = tuple(Recipe.__struct_encode_fields__)
#: What to send for each field, the second half of a decoding error's message.
_WHAT_TO_SEND = {
    "assetId": "the asset's id as a string (the assetId of a completed ingest or save job)",
    "startSec": "a number of seconds >= 0, before the asset's end",
    "endSec": "a number of seconds greater than startSec, or leave it out for the asset's end",
    "fadeInSec": "a number of seconds >= 0, at most the trimmed length",
    "fadeOutSec": "a number of seconds >= 0, at most the trimmed length",
    "gainDb": f"a number of dB from {GAIN_RANGE_DB[0]:g} to {GAIN_RANGE_DB[1]:g}",
    "targetLufs": f"a number of LUFS from {TARGET_LUFS_RANGE[0]:g} to {TARGET_LUFS_RANGE[1]:g}, or null to keep the loudness",
}
_JSON_TYPES = {
    "float": "a number",
    "int": "a number",
    "str": "a string",
    "bool": "a boolean",
    "null": "null",
    "object": "a JSON object",
    "array": "an array",
    "float | null": "a number or null",
}
_AT_PATH = re.compile(r" - at `\$(?:\.(?P<field>\w+))?[^`]*`$")


def decode(body: bytes) -> Recipe:
    """Decode a recipe from JSON, strictly: no unknown fields, no type coercion.

    Enforces the shape, the types and the ranges that do not depend on the asset (the
    ``msgspec.Meta`` bounds on :class:`Recipe`); :func:`validate` does the rest.

    Args:
        body: the request body, UTF-8 JSON.

    Returns:
        The recipe as sent (defaults not yet filled in).

    Raises:
        errors.InvalidRecipe: the JSON is not a recipe: not an object, an unknown field, no
            ``assetId``, a value of the wrong type, or out of its range. ``field`` is the
            camelCase field (``body`` when the JSON is not an object) and the message says
            what to send.
        msgspec.DecodeError: the body is not JSON at all (truncated, empty, a syntax error).
    """
    try:
        return _DECODER.decode(body)
    except msgspec.ValidationError as exc:
        raise _invalid(str(exc)) from None


def _invalid(problem: str) -> errors.InvalidRecipe:
    """Turn a msgspec validation message (e.g. ``Expected `float`, got `str` - at `$.startSec```) into
    an :class:`errors.InvalidRecipe` naming the field and what to send."""
    unknown = re.fullmatch(r"Object contains unknown field `(?P<name>.*)`", problem)
    if unknown:
        name = unknown["name"]
        camel = re.sub(r"_([a-z])", lambda m: m[1].upper(), name)
        hint = f" (did you mean {camel}?)" if camel != name and camel in _FIELDS else ""
        return errors.InvalidRecipe(name, f"unknown field{hint}; a recipe has only {', '.join(_FIELDS)}")
    missing = re.fullmatch(r"Object missing required field `(?P<name>.*)`", problem)
    if missing:
        return errors.InvalidRecipe(missing["name"], f"is required; send {_WHAT_TO_SEND[missing['name']]}")
    at = _AT_PATH.search(problem)
    field = at["field"] if at and at["field"] else None
    text = problem[: at.start()] if at else problem
    text = re.sub(r"`([^`]+)`", lambda m: _JSON_TYPES.get(m[1], m[1]), text)
    text = text[:1].lower() + text[1:]
    if field is None:
        return errors.InvalidRecipe("body", f"{text}; send a recipe object such as {EXAMPLE}")
    return errors.InvalidRecipe(field, f"{text}; send {_WHAT_TO_SEND.get(field, 'a value of the documented type')}")


def canonical_json(recipe: CanonicalRecipe) -> str:
    """The canonical JSON text: sorted keys, no whitespace, e.g.
    ``{"assetId":"ab..","endSec":9.66,"fadeInSec":0.0,...,"targetLufs":null}``."""
    return json.dumps(recipe.to_json_dict(), sort_keys=True, separators=(",", ":"), allow_nan=False)


def recipe_hash(recipe: CanonicalRecipe) -> str:
    """sha256 (lowercase hex, 64 digits) of :func:`canonical_json`; keys the preview cache."""
    return hashlib.sha256(canonical_json(recipe).encode()).hexdigest()
