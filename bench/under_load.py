"""Run a command repeatedly while the machine is kept busy with a varying load (bench_timing's).

    python bench/under_load.py --runs 10 [--postgres-url URL] -- pytest -q docs/examples

Stops at the first run that fails; prints each run's exit status and time, and the load.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

from bench_timing import load


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--postgres-url", default=os.environ.get("HARNESS_POSTGRES_URL"))
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the command to run after --")
    with load(args.postgres_url) as running:
        print(f"load: {', '.join(running.described)}; {os.cpu_count()} cores", flush=True)
        for run in range(1, args.runs + 1):
            started = time.perf_counter()
            status = subprocess.call(command)
            print(
                f"run {run}/{args.runs}: exit status {status} in {time.perf_counter() - started:.0f} s",
                flush=True,
            )
            if status:
                return status
            running.check(f"during run {run}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
