"""Benchmark: ``bench/throughput.py``'s jobtape runs for two source trees, interleaved in one run.

Each configuration (``P x C``: P real ``jobtape worker`` processes of C slots on one SQLite
file) runs for every tree in turn, in ``--rounds`` rounds, with ``PYTHONPATH`` set to the tree
(so the worker processes import its ``jobtape``); the medians, every round and the lost claims
(% of the claims won) are printed per tree, then the load average. A baseline tree is e.g.
``git archive main | tar -x -C /tmp/main-tree``.

Usage::

    python bench/claims_ab.py --trees before=/tmp/main-tree after=. [--jobs 5000] [--rounds 3]
        [--synchronous FULL NORMAL] [--configs 1x32 2x32 4x32 1x8 2x8 4x8]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import throughput  # bench/ is put on the path just above

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the interleaved rounds and print the table; return 0."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trees", nargs="+", required=True, help="NAME=PATH of a source tree (its jobtape package is imported)")
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--synchronous", nargs="+", default=["FULL", "NORMAL"], choices=["FULL", "NORMAL"])
    parser.add_argument("--configs", nargs="+", default=["1x32", "2x32", "4x32", "1x8", "2x8", "4x8"], help="PROCESSESxCONCURRENCY")
    args = parser.parse_args(argv)
    trees = [tuple(tree.split("=", 1)) for tree in args.trees]
    parent = Path(tempfile.mkdtemp(prefix="jobtape-claims-ab-"))
    print(f"{args.jobs} no-op jobs per run, median of {args.rounds} interleaved rounds; data in {parent}", flush=True)
    runs: dict[tuple[str, str, str], list[throughput.Run]] = {}
    for synchronous in args.synchronous:
        for _ in range(args.rounds):
            for config in args.configs:
                processes, concurrency = (int(part) for part in config.split("x"))
                for name, tree in trees:
                    os.environ["PYTHONPATH"] = str(Path(tree).resolve())
                    run = throughput.run_jobtape(parent, args.jobs, synchronous, processes, concurrency)
                    runs.setdefault((synchronous, config, name), []).append(run)
        print(f"\nsynchronous={synchronous}")
        for config in args.configs:
            for name, _ in trees:
                done = runs[(synchronous, config, name)]
                won, lost = sum(r.won for r in done), sum(r.lost for r in done)
                median = statistics.median(r.rate for r in done)
                alone = runs.get((synchronous, f"1x{config.split('x')[1]}", name))
                versus = f" ({median / statistics.median(r.rate for r in alone):.2f} of 1 process)" if alone else ""
                print(
                    f"  {config:>5} {name:>8}: {median:7,.0f} jobs/s{versus}  rounds {', '.join(f'{r.rate:,.0f}' for r in done)}"
                    f"  lost claims {lost}/{won} = {100 * lost / max(won, 1):.2f}%",
                    flush=True,
                )
    print("\n" + os.popen("uptime").read().strip())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
