"""The run summary: a JSON report of a pytest run, by test category, with regressions against a previous run.

Tests are put in categories with ``@pytest.mark.category("validation", ...)``; ``--harness-summary``
writes the report at the end of the run, and ``--harness-summary-compare`` names an earlier report
whose passing tests must still pass. Under pytest-xdist the controller writes it, from the reports
the workers send.
"""

from __future__ import annotations

import collections
import datetime as dt
import difflib
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from harness._realtime import RealClock
from harness.settings import setting

__all__ = ["CATEGORIES", "RunSummary", "categories_of", "record_categories"]

#: The built-in categories, with what each holds. The harness_categories ini key adds more.
CATEGORIES = {
    "end-to-end": "complete flows, from the API to the database and back",
    "backward-compatibility": "data written by earlier versions (rows without newer columns)",
    "validation": "constraints and invalid input refused with a clear error",
    "null-handling": "optional fields, None and NULL",
    "edge-cases": "boundaries: max lengths, empty input, limits",
    "performance": "timing and query budgets",
}
_PROPERTY = "harness_categories"
_FAILED = ("failed", "error")
# Exit statuses of a run that ran its tests: it can be compared with an earlier one.
_COMPLETED = (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED, pytest.ExitCode.NO_TESTS_COLLECTED)


def _normalize(name: str) -> str:
    return "-".join(str(name).lower().replace("_", " ").replace("-", " ").split())


def known_categories(config: pytest.Config) -> list[str]:
    """The built-in categories and the ones the ``harness_categories`` ini key adds."""
    extra = [_normalize(name) for name in setting(config, "harness_categories")]
    return [*CATEGORIES, *(name for name in extra if name not in CATEGORIES)]


def categories_of(item: pytest.Item) -> list[str]:
    """The categories of ``item``'s ``category`` markers (the test's, its class's and module's).

    Raises `pytest.UsageError` for a category that is not known, naming the close ones.
    """
    known = known_categories(item.config)
    found: list[str] = []
    for marker in item.iter_markers("category"):
        if not marker.args:
            msg = f"{item.nodeid}: @pytest.mark.category() needs at least one category, e.g. @pytest.mark.category('validation'). Known: {', '.join(known)}."
            raise pytest.UsageError(msg)
        for name in marker.args:
            category = _normalize(name)
            if category not in known:
                close = difflib.get_close_matches(category, known, n=1)
                hint = f" Did you mean {close[0]!r}?" if close else ""
                msg = (
                    f"{item.nodeid}: unknown test category {name!r} in @pytest.mark.category.{hint} Known categories: "
                    f"{', '.join(known)}; add your own with the harness_categories ini key."
                )
                raise pytest.UsageError(msg)
            if category not in found:
                found.append(category)
    return found


def _outcome(report: pytest.TestReport) -> str | None:
    """The test's outcome as far as this report tells; None when the report adds nothing."""
    if hasattr(report, "wasxfail"):
        return "xfailed" if report.skipped else "xpassed"
    if report.failed:
        return "failed" if report.when == "call" else "error"
    if report.skipped:
        return "skipped"
    return "passed" if report.when == "call" else None


class RunSummary:
    """A pytest plugin object that collects the run's outcomes and writes the JSON summary.

    The harness plugin registers one when ``--harness-summary=PATH`` is given; the path is checked
    (and its folder made) at start-up, so a run never ends unable to write its report.
    """

    def __init__(
        self, path: str | os.PathLike[str], compare_with: str | os.PathLike[str] | None = None
    ) -> None:
        self.path = Path(path)
        self.compare_with = Path(compare_with) if compare_with else None
        self.previous = self._read_previous() if self.compare_with else None
        self._check_writable()
        self.outcomes: dict[str, str] = {}
        self.failures: dict[str, dict[str, Any]] = {}
        self.categories: dict[str, list[str]] = {}
        self.started = RealClock.time()  # a clock a test left running must not date the run
        self._started_in = Path.cwd()  # locations are shown relative to it, as pytest's are

    def _check_writable(self) -> None:
        try:
            if self.path.is_dir():
                raise IsADirectoryError(21, "it is a directory")
            self.path.parent.mkdir(parents=True, exist_ok=True)
            existed = self.path.exists()
            with self.path.open("a"):
                pass
            if not existed:
                self.path.unlink()
        except OSError as error:
            msg = (
                f"Cannot write the run summary to {str(self.path)!r}: {error.strerror or error}. "
                "Pass --harness-summary a file path in a folder you can write to, e.g. --harness-summary=reports/summary.json."
            )
            raise pytest.UsageError(msg) from None

    def _read_previous(self) -> dict[str, Any]:
        assert self.compare_with is not None
        try:
            previous = json.loads(self.compare_with.read_text())
            outcomes = previous["outcomes"]
            if not isinstance(outcomes, dict):
                raise TypeError
        except (OSError, ValueError, KeyError, TypeError) as error:
            reason = (
                error.strerror
                if isinstance(error, OSError)
                else "it is not a summary written by --harness-summary"
            )
            msg = f"Cannot compare with the previous run summary {str(self.compare_with)!r}: {reason}."
            raise pytest.UsageError(msg) from None
        result: dict[str, Any] = previous
        return result

    # -- pytest hooks ----------------------------------------------------------------------------

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        outcome = _outcome(report)
        if report.when == "setup":
            for name, value in report.user_properties:
                if name == _PROPERTY:
                    self.categories[report.nodeid] = list(value)  # type: ignore[call-overload]
        if outcome is None:
            return
        current = self.outcomes.get(report.nodeid)
        # A teardown error after a pass makes the test an error; nothing overrides a failure.
        if current is None or current == "passed" or (current == "skipped" and outcome in _FAILED):
            self.outcomes[report.nodeid] = outcome
            if outcome in _FAILED and (failure := _failure(report, self._started_in)) is not None:
                self.failures[report.nodeid] = failure

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        self.path.write_text(json.dumps(self.build(int(exitstatus)), indent=2) + "\n")

    def pytest_terminal_summary(self, terminalreporter: Any, exitstatus: int) -> None:
        regressions = self._regressions()
        if self.compare_with is None:
            note = "not compared with a previous run"
        elif exitstatus not in _COMPLETED:
            note = f"the run stopped early (exit status {int(exitstatus)}), so it was not compared with {self.compare_with}"
        elif regressions:
            note = f"{len(regressions)} regression(s): {', '.join(regressions)} against {self.compare_with}"
        else:
            note = f"no regressions against {self.compare_with}"
        terminalreporter.write_line(f"harness: run summary written to {self.path} ({note})")

    # -- the report ------------------------------------------------------------------------------

    def _regressions(self) -> list[str]:
        if self.previous is None:
            return []
        before: dict[str, str] = self.previous["outcomes"]
        return sorted(
            nodeid
            for nodeid, outcome in self.outcomes.items()
            if outcome in _FAILED and before.get(nodeid) == "passed"
        )

    def build(self, exitstatus: int = 0) -> dict[str, Any]:
        """The summary as a dict: what `pytest_sessionfinish` writes."""
        counts = collections.Counter(self.outcomes.values())
        by_category: dict[str, list[str]] = {}
        for nodeid in sorted(self.outcomes):
            for category in self.categories.get(nodeid, ()):
                by_category.setdefault(category, []).append(nodeid)
        regressions = self._regressions()
        failed = counts["failed"] + counts["error"] + counts["xpassed"]
        all_passed = failed == 0 and exitstatus in (0, pytest.ExitCode.NO_TESTS_COLLECTED)
        return {
            "execution_status": {
                "status": "SUCCESS" if all_passed else "FAILURE",
                "tests_written": len(self.outcomes),
                "tests_passed": counts["passed"] + counts["xfailed"],
                "tests_failed": failed,
                "tests_skipped": counts["skipped"],
            },
            "deliverables": {
                "test_files": sorted({nodeid.split("::", 1)[0] for nodeid in self.outcomes}),
                "test_categories_covered": list(_ordered(by_category)),
                "test_functions": sorted(self.outcomes),
                "tests_by_category": {c: by_category[c] for c in _ordered(by_category)},
                "uncategorized": sorted(n for n in self.outcomes if not self.categories.get(n)),
                "all_tests_passed": all_passed,
            },
            "test_execution_summary": {
                "compared_with": str(self.compare_with) if self.compare_with else None,
                # None: not compared (no earlier summary, or a run that stopped before its tests ran)
                "regressions_detected": (
                    bool(regressions) if self.compare_with and exitstatus in _COMPLETED else None
                ),
                "regressions": regressions,
                "exit_status": exitstatus,
                "duration_seconds": round(RealClock.time() - self.started, 3),
                "finished_at": dt.datetime.fromtimestamp(RealClock.time(), dt.UTC).isoformat(
                    timespec="seconds"
                ),
            },
            "outcomes": dict(sorted(self.outcomes.items())),
            "failures": dict(sorted(self.failures.items())),
        }


def _failure(report: pytest.TestReport, started_in: Path) -> dict[str, Any] | None:
    """What failed, and where: the exception's type and message, and the line that raised it."""
    crash = getattr(report.longrepr, "reprcrash", None)
    if crash is None:
        text = str(report.longrepr or "").strip()
        return {
            "phase": report.when,
            "type": None,
            "message": text.splitlines()[-1][:500] if text else "",
            "location": None,
        }
    kind, _, message = str(crash.message).partition(": ")
    if not message or " " in kind:  # "assert 1 == 2": pytest's rewritten assertion, an AssertionError
        kind, message = ("AssertionError", str(crash.message))
    return {
        "phase": report.when,
        "type": kind.rsplit(".", 1)[-1],
        "message": message.strip()[:500],
        "location": f"{str(crash.path).removeprefix(f'{started_in}{os.sep}')}:{crash.lineno}",
    }


def _ordered(categories: Iterable[str]) -> list[str]:
    builtin = list(CATEGORIES)
    return sorted(categories, key=lambda c: (builtin.index(c) if c in builtin else len(builtin), c))


def record_categories(item: pytest.Item) -> None:
    """Attach ``item``'s categories to its reports, so an xdist controller sees them."""
    if categories := categories_of(item):
        item.user_properties.append((_PROPERTY, categories))
