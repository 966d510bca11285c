"""Audit and transfer tooling over the event log (issue 6).

Pure modules (no I/O): :mod:`timeparse` (user times), :mod:`timeline` (a job's attempts,
stages and children), :mod:`asof` (states folded up to a time, queue positions),
:mod:`verify` (log invariants and the hash chain), :mod:`stats` (durations per stage
and job type), :mod:`exchange` (the JSON Lines export format and its checks).
I/O modules: :mod:`transfer` (export and import against a store) and :mod:`retention`
(archive old finished jobs through the recorded delete path).
"""
