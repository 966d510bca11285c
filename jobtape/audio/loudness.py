"""Whether a loudness-normalised result reached its target, said in the result (pure).

ffmpeg's ``loudnorm`` does not always reach the integrated loudness it is asked for. Its
second pass runs in one of two modes (``normalization`` in a result; docs/jobs.md):

- ``linear``: one fixed gain for the whole file, so the sound is unchanged except for its
  level. loudnorm takes it when that gain keeps the true peak under the ceiling and the
  input's loudness range is within the LRA target; and always for a clip shorter than
  3 s, whose gain it then caps so the peaks stay under the ceiling, which may leave the
  clip quieter than the target (a 2.6 s speech clip came out at -17.5 LUFS for -16);
- ``dynamic``: otherwise. The gain follows the short-term loudness (3 s windows, smoothed)
  and a true-peak limiter catches the peaks, so quiet passages are lifted more than loud
  ones; it usually lands within a few tenths of an LU of the target.

:func:`target_report` compares the loudness the result reports with the target and, when
they differ by more than :data:`TOLERANCE_LU`, returns the keys that say so.
"""

from __future__ import annotations

from typing import Any

__all__ = ["SHORT_CLIP_S", "TOLERANCE_LU", "target_report"]

#: A result within this many LU of its target counts as on target (EBU R 128 accepts
#: +-1 LU where an exact normalisation is not practical).
TOLERANCE_LU = 1.0
#: loudnorm's dynamic mode needs this much audio (seconds); a shorter clip gets one gain.
SHORT_CLIP_S = 3.0


def target_report(target_lufs: float, output_lufs: float | None, *, duration_sec: float, true_peak_db: float) -> dict[str, Any]:
    """The result keys that say a loudness target was missed; ``{}`` when it was reached.

    Args:
        target_lufs: the integrated loudness asked for, in LUFS.
        output_lufs: the integrated loudness of the output (as the result reports it), in
            LUFS; ``None`` (digital silence, nothing to measure) gives ``{}``.
        duration_sec: the output's duration, in seconds (a clip shorter than
            :data:`SHORT_CLIP_S` gets the short-clip explanation).
        true_peak_db: the true-peak ceiling the normalisation kept to, in dBTP.

    Returns:
        ``{}`` when ``|output - target| <= TOLERANCE_LU``; else ``{"targetMissedByLu":
        <LU, positive, 2 decimals>, "loudnessNote": <one sentence: how far, which way,
        the tolerance and, for a short clip, why>}``.
    """
    if output_lufs is None:
        return {}
    missed_by = round(abs(output_lufs - target_lufs), 2)
    if missed_by <= TOLERANCE_LU:
        return {}
    quieter = output_lufs < target_lufs
    note = (
        f"came out at {output_lufs:.2f} LUFS, {missed_by:.2f} LU {'below' if quieter else 'above'} the"
        f" {target_lufs:g} LUFS target (tolerance {TOLERANCE_LU:g} LU)"
    )
    if quieter and duration_sec < SHORT_CLIP_S:
        note += f": a clip shorter than {SHORT_CLIP_S:g} s gets one fixed gain, limited so its peaks stay under {true_peak_db:g} dBTP"
    return {"targetMissedByLu": missed_by, "loudnessNote": note}
