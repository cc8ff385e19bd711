"""The quick start, followed to the letter: its project (quickstart/) copied into an empty folder and
run as its users run it, `pytest` and nothing else, on this run's backend."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

PROJECT = Path(__file__).parent / "quickstart"


def test_the_quick_start_passes_in_an_empty_folder(tmp_path, harness_database_url):
    project = tmp_path / "project"
    shutil.copytree(PROJECT, project, ignore=shutil.ignore_patterns("__pycache__"))
    copied = sorted(path.relative_to(project) for path in project.rglob("*"))
    command = [sys.executable, "-m", "pytest", "-p", "no:randomly", "-p", "no:cacheprovider"]
    if harness_database_url:  # PostgreSQL: the quick start's own command, on this run's server
        command.append(f"--harness-database-url={harness_database_url.rsplit('/', 1)[0]}/quickstart")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "HARNESS_", "PYTHONPATH"))}
    result = subprocess.run(
        command, cwd=project, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 passed" in result.stdout
    # Nothing written into the user's project: the test database lives elsewhere.
    left = sorted(path.relative_to(project) for path in project.rglob("*") if "__pycache__" not in path.parts)
    assert left == [path for path in copied if "__pycache__" not in path.parts]
