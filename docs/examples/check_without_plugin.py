"""The page "Without the pytest plugin": its three examples, run as their users run them, on this
run's backend (HARNESS_DATABASE_URL for the examples, as the plugin's --harness-database-url)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent / "without_plugin"
# Development mode: an unclosed connection or transport would show as a ResourceWarning.
PYTHON = [sys.executable, "-X", "dev"]
RUNS = {
    "conftest.py by hand": (
        [*PYTHON, "-m", "pytest", "-q", "-p", "no:randomly", "-p", "no:cacheprovider"],
        "4 passed",
    ),
    "unittest": ([*PYTHON, "unittest_reminders.py"], "Ran 2 tests"),
    "asyncio script": ([*PYTHON, "script_reminders.py"], "sent 2 reminders; 0 contacts left"),
}


@pytest.mark.parametrize("example", RUNS)
def test_the_example_passes_and_leaves_nothing_behind(example, harness_database_url):
    command, expected = RUNS[example]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "HARNESS_DATABASE_URL"))}
    env["PYTHONPATH"] = str(HERE.parent / "quickstart")  # the quick start's app
    if harness_database_url:
        env["HARNESS_DATABASE_URL"] = harness_database_url
    result = subprocess.run(
        command, cwd=HERE, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert expected in output
    assert "ResourceWarning" not in output
    assert "Traceback" not in output
