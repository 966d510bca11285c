"""The pure rule that makes a result say it missed its loudness target."""

from __future__ import annotations

from jobtape.audio import loudness


def test_on_target_within_the_tolerance_says_nothing() -> None:
    for output in (-16.0, -16.99, -15.01, -17.0, -15.0):
        assert loudness.target_report(-16.0, output, duration_sec=10.0, true_peak_db=-1.5) == {}


def test_silence_has_no_loudness_to_compare() -> None:
    assert loudness.target_report(-16.0, None, duration_sec=1.0, true_peak_db=-1.5) == {}


def test_a_short_clip_below_the_target_says_by_how_much_and_why() -> None:
    report = loudness.target_report(-16.0, -18.6, duration_sec=2.6, true_peak_db=-1.5)
    assert report["targetMissedByLu"] == 2.6
    assert report["loudnessNote"] == (
        "came out at -18.60 LUFS, 2.60 LU below the -16 LUFS target (tolerance 1 LU): a clip shorter than 3 s"
        " gets one fixed gain, limited so its peaks stay under -1.5 dBTP"
    )


def test_a_long_input_off_target_states_the_numbers_without_guessing_a_cause() -> None:
    quieter = loudness.target_report(-16.0, -17.25, duration_sec=60.0, true_peak_db=-1.5)
    assert quieter == {
        "targetMissedByLu": 1.25,
        "loudnessNote": "came out at -17.25 LUFS, 1.25 LU below the -16 LUFS target (tolerance 1 LU)",
    }
    louder = loudness.target_report(-23.0, -20.5, duration_sec=2.0, true_peak_db=-1.5)
    assert louder["targetMissedByLu"] == 2.5 and "2.50 LU above the -23 LUFS target" in louder["loudnessNote"]
    assert "shorter than" not in louder["loudnessNote"]
