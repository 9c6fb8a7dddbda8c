"""Reliability figures: alerts produced / received / lost / duplicated under injected faults.

    python -m benchmarks.bench_reliability                         # every scenario, appended to RESULTS.md
    python -m benchmarks.bench_reliability --scenarios broker_sigkill disk_full --no-append

Runs the scenarios of testbed/fault_scenarios.py (the same code tests/faults/ asserts on) against a real
local mosquitto, real SQLite and, for the disk-full and freed-disk scenarios, a real 1 MiB tmpfs (needs
root; reported as skipped otherwise). "received" counts distinct alert_ids that arrived; "redelivered" counts
deliveries beyond the first, which the subscriber's de-duplication by alert_id removes; "duplicated
after dedup" counts alerts the subscriber kept twice (must be 0). Prints a table and appends it.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import add_results_args, command_line, publish, section_header
from testbed.fault_scenarios import SCENARIOS  # the fault tests' own scenarios (tests/faults/)

HEADER = ("| scenario | produced | received | lost | redelivered (removed by dedup) | duplicated after dedup "
          "| details | time, s |\n|---|---|---|---|---|---|---|---|\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scenarios", nargs="+", choices=sorted(SCENARIOS), default=list(SCENARIOS),
                   metavar="NAME", help=f"scenarios to run, of: {', '.join(SCENARIOS)} (default: all)")
    add_results_args(p)
    args = p.parse_args(argv)
    rows, failures = [], 0
    for name in args.scenarios:
        with tempfile.TemporaryDirectory(prefix=f"bench-rel-{name}-") as tmp:
            t0 = time.perf_counter()
            try:
                tally = SCENARIOS[name](Path(tmp))
            except PermissionError as exc:
                rows.append(f"| {name} | - | - | - | - | - | skipped: {exc} | - |")
                continue
            elapsed = time.perf_counter() - t0
        rows.append(f"{tally.row()} {elapsed:.1f} |")
        accounted = tally.lost == tally.notes.get("reported_lost", 0)
        failures += tally.duplicated_after_dedup > 0 or tally.foreign > 0 or not accounted
        print(rows[-1], flush=True)
    notes = ["mosquitto 127.0.0.1 on the same machine; small keep-alives/back-offs (testbed/fault_scenarios.py). "
             "Rows whose bytes were destroyed (corrupt / truncated outbox, damaged payloads) are lost and "
             "reported: lost = reported_lost; every other "
             "scenario must show lost = 0. A run fails on any unreported loss, foreign alert or duplicate "
             "after de-duplication."]
    header = section_header("Reliability under faults (bench_reliability.py)", command_line(__file__, argv), notes)
    publish(header + HEADER + "\n".join(rows) + "\n", args)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
