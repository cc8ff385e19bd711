"""The run summary (--harness-summary) and the category marker, run through pytester."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

TESTS = """
    import pytest

    @pytest.mark.category("end-to-end")
    def test_flow():
        pass

    @pytest.mark.category("validation", "edge_cases")
    @pytest.mark.parametrize("n", [1, 2])
    def test_limits(n):
        assert n < 2

    @pytest.mark.category("null handling")
    class TestNulls:
        def test_none(self):
            pass

        @pytest.mark.skip(reason="later")
        def test_skipped(self):
            pass

    def test_plain():
        pass

    @pytest.fixture
    def broken():
        raise RuntimeError("setup broke")

    def test_setup_error(broken):
        pass
"""


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest("-p", "no:randomly", *args)


def read(path: Path) -> dict[str, Any]:
    summary: dict[str, Any] = json.loads(path.read_text())
    return summary


@pytest.mark.parametrize("workers", [[], ["-n", "2", "-p", "xdist"]], ids=["serial", "xdist"])
def test_summary_counts_outcomes_and_groups_tests_by_category(
    harness_pytester: pytest.Pytester, workers: list[str]
) -> None:
    """The JSON has the seeds' shape: counts, categories covered, tests per category, outcomes."""
    harness_pytester.makepyfile(test_app=TESTS)
    result = run(harness_pytester, "--harness-summary=out/summary.json", *workers)
    result.assert_outcomes(passed=4, failed=1, skipped=1, errors=1)
    result.stdout.fnmatch_lines(
        ["harness: run summary written to out/summary.json (not compared with a previous run)"]
    )
    summary = read(harness_pytester.path / "out" / "summary.json")
    assert summary["execution_status"] == {
        "status": "FAILURE",
        "tests_written": 7,
        "tests_passed": 4,
        "tests_failed": 2,
        "tests_skipped": 1,
    }
    deliverables = summary["deliverables"]
    assert deliverables["test_categories_covered"] == [
        "end-to-end",
        "validation",
        "null-handling",
        "edge-cases",
    ]
    assert deliverables["tests_by_category"]["validation"] == [
        "test_app.py::test_limits[1]",
        "test_app.py::test_limits[2]",
    ]
    assert deliverables["tests_by_category"]["null-handling"] == [
        "test_app.py::TestNulls::test_none",
        "test_app.py::TestNulls::test_skipped",
    ]
    assert deliverables["uncategorized"] == ["test_app.py::test_plain", "test_app.py::test_setup_error"]
    assert deliverables["test_files"] == ["test_app.py"]
    assert deliverables["all_tests_passed"] is False
    assert summary["outcomes"]["test_app.py::test_setup_error"] == "error"
    assert summary["outcomes"]["test_app.py::test_limits[2]"] == "failed"
    assert summary["test_execution_summary"]["regressions_detected"] is None  # nothing to compare with
    here = "test_app.py"  # relative to where pytest runs, as node ids are
    assert summary["failures"] == {
        "test_app.py::test_limits[2]": {
            "phase": "call",
            "type": "AssertionError",
            "message": "assert 2 < 2",
            "location": f"{here}:10",
        },
        "test_app.py::test_setup_error": {
            "phase": "setup",
            "type": "RuntimeError",
            "message": "setup broke",
            "location": f"{here}:26",
        },
    }


def test_a_previously_passing_test_that_fails_is_a_regression(harness_pytester: pytest.Pytester) -> None:
    """Compared with an earlier summary, a test that passed there and fails now is listed."""
    harness_pytester.makepyfile(test_app="def test_stable():\n    pass\n\ndef test_changes():\n    pass\n")
    run(harness_pytester, "--harness-summary=before.json").assert_outcomes(passed=2)
    assert read(harness_pytester.path / "before.json")["execution_status"]["status"] == "SUCCESS"
    harness_pytester.makepyfile(
        test_app="def test_stable():\n    pass\n\ndef test_changes():\n    assert False\n\ndef test_new():\n    assert False\n"
    )
    result = run(harness_pytester, "--harness-summary=after.json", "--harness-summary-compare=before.json")
    result.stdout.fnmatch_lines(
        [
            "harness: run summary written to after.json (1 regression(s): test_app.py::test_changes against before.json)"
        ]
    )
    summary = read(harness_pytester.path / "after.json")["test_execution_summary"]
    assert summary["regressions_detected"] is True
    assert summary["regressions"] == ["test_app.py::test_changes"]  # test_new never passed
    assert summary["compared_with"] == "before.json"


def test_an_unknown_category_names_the_close_one(harness_pytester: pytest.Pytester) -> None:
    """A typo in a category stops the run at collection, suggesting the known name."""
    harness_pytester.makepyfile(
        """
        import pytest

        @pytest.mark.category("validaton")
        def test_one():
            pass
        """
    )
    result = run(harness_pytester)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            "ERROR: test_an_unknown_category_names_the_close_one.py::test_one: unknown test category 'validaton' in "
            "@pytest.mark.category. Did you mean 'validation'? Known categories: end-to-end, backward-compatibility, "
            "validation, null-handling, edge-cases, performance; add your own with the harness_categories ini key."
        ]
    )


def test_categories_can_be_added_in_the_ini(harness_pytester: pytest.Pytester) -> None:
    """harness_categories adds categories of the project's own."""
    harness_pytester.path.joinpath("tox.ini").write_text(
        harness_pytester.path.joinpath("tox.ini").read_text() + "\nharness_categories =\n    security\n"
    )
    harness_pytester.makepyfile(
        """
        import pytest

        @pytest.mark.category("security")
        def test_one():
            pass
        """
    )
    run(harness_pytester, "--harness-summary=s.json").assert_outcomes(passed=1)
    assert read(harness_pytester.path / "s.json")["deliverables"]["test_categories_covered"] == ["security"]


@pytest.mark.parametrize(
    ("make", "args", "message"),
    [
        (
            lambda path: path.joinpath("taken").mkdir(),
            ["--harness-summary=taken"],
            "ERROR: Cannot write the run summary to 'taken': it is a directory. Pass --harness-summary a file path "
            "in a folder you can write to, e.g. --harness-summary=reports/summary.json.",
        ),
        (
            lambda path: path.joinpath("file").write_text(""),
            ["--harness-summary=file/summary.json"],
            "ERROR: Cannot write the run summary to 'file/summary.json': *",
        ),
        (
            lambda path: path.joinpath("old.json").write_text("[1, 2]"),
            ["--harness-summary=s.json", "--harness-summary-compare=old.json"],
            "ERROR: Cannot compare with the previous run summary 'old.json': it is not a summary written by "
            "--harness-summary.",
        ),
        (
            lambda path: None,
            ["--harness-summary-compare=old.json"],
            "ERROR: --harness-summary-compare needs --harness-summary=PATH: the summary it compares is this run's.",
        ),
    ],
    ids=["directory", "parent-is-a-file", "not-a-summary", "compare-alone"],
)
def test_a_summary_that_cannot_be_written_stops_the_run_at_start(
    harness_pytester: pytest.Pytester, make: Any, args: list[str], message: str
) -> None:
    """Bad summary paths are usage errors before any test runs, each naming the fix."""
    make(harness_pytester.path)
    harness_pytester.makepyfile("def test_one():\n    pass\n")
    result = run(harness_pytester, *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])


def test_an_unknown_category_under_xdist_fails_its_tests_with_the_message(
    harness_pytester: pytest.Pytester,
) -> None:
    """An xdist worker cannot stop the run: the test errors with the same message."""
    harness_pytester.makepyfile(
        """
        import pytest

        pytestmark = pytest.mark.category("validaton")

        def test_one():
            pass
        """
    )
    result = run(harness_pytester, "-n", "2", "-p", "xdist")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        ["*unknown test category 'validaton' in @pytest.mark.category. Did you mean 'validation'?*"]
    )


def test_a_category_marker_without_a_category_is_refused(harness_pytester: pytest.Pytester) -> None:
    """@pytest.mark.category() with no name stops the run and lists the known categories."""
    harness_pytester.makepyfile("import pytest\n\n@pytest.mark.category()\ndef test_one():\n    pass\n")
    result = run(harness_pytester)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            "ERROR: *::test_one: @pytest.mark.category() needs at least one category, e.g. "
            "@pytest.mark.category('validation'). Known: end-to-end, *"
        ]
    )
