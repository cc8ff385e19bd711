"""What the benchmark scripts share: the command line, the results file and the PASS/FAIL lines."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

Targets = dict[str, tuple[str, float]]  # substring of a figure's key -> ("≤" or "≥", bound)


def print_figures(figures: dict[str, Any], targets: Targets, width: int = 45) -> None:
    for key, value in figures.items():
        target = next((t for name, t in targets.items() if name in key), None)
        verdict = ""
        if target:
            sign, bound = target
            ok = value <= bound if sign == "≤" else value >= bound
            verdict = f"  target {sign} {bound:g}: {'PASS' if ok else 'FAIL'}"
        print(f"  {key:{width}} {value:>10}{verdict}")


def command_line(doc: str | None) -> argparse.Namespace:
    """--postgres-url (database benches), --output (the results file), --quick (a smoke run)."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--postgres-url", default=os.environ.get("HARNESS_POSTGRES_URL"))
    parser.add_argument("--output", default=".bench/results.json")
    parser.add_argument("--quick", action="store_true", help="fewer rounds, for a smoke run")
    return parser.parse_args()


def merge_results(output: str, figures: dict[str, Any]) -> None:
    """Merge figures into the JSON results file that every bench script shares."""
    path = Path(output)
    results: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    results.update(figures)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    print(f"\nwritten to {path}")


def run(
    doc: str | None,
    bench_backend: Callable[[str | None, int], Awaitable[dict[str, float]]],
    report: Callable[[str, dict[str, float], dict[str, Any]], None],
    *,
    rounds: int,
    quick_rounds: int,
) -> None:
    """Parse the command line, bench SQLite (and PostgreSQL if given), merge figures into the results file."""
    args = command_line(doc)
    count = quick_rounds if args.quick else rounds
    results: dict[str, Any] = {}
    report("sqlite", asyncio.run(bench_backend("sqlite+aiosqlite://", count)), results)
    if args.postgres_url:
        report("postgres", asyncio.run(bench_backend(args.postgres_url, count)), results)
    else:
        print("\npostgres: skipped (no --postgres-url or HARNESS_POSTGRES_URL)")
    merge_results(args.output, results)
