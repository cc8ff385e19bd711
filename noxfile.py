"""Developer and CI tasks: `nox -s example`, `nox -s tests`, `nox -s lint typecheck docs bench`.

The PostgreSQL sessions use the server in $HARNESS_POSTGRES_URL, or start a throwaway cluster with
`python -m harness.postgres` for the duration of the session.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
from collections.abc import Iterator

import nox

nox.needs_version = ">=2024.3.2"
nox.options.default_venv_backend = "uv|virtualenv"
nox.options.reuse_existing_virtualenvs = True
nox.options.sessions = ["tests", "lint", "typecheck"]

# Compile the installed packages' bytecode once, at install: where PYTHONDONTWRITEBYTECODE is set
# (as on CI machines here), every Python process would otherwise compile SQLAlchemy, pytest and
# the rest from source: 4.5 s per start instead of 1.0 s, paid by each pytester subprocess.
os.environ.setdefault("UV_COMPILE_BYTECODE", "1")

PYPROJECT = nox.project.load_toml("pyproject.toml")


def install(session: nox.Session, *groups: str) -> None:
    requirements = [req for group in groups for req in nox.project.dependency_groups(PYPROJECT, group)]
    session.install("-e", ".[postgres,psycopg]", *requirements)


@contextlib.contextmanager
def postgres_server(session: nox.Session) -> Iterator[str]:
    """The PostgreSQL server URL: $HARNESS_POSTGRES_URL, or a cluster started (and stopped) here."""
    if url := os.environ.get("HARNESS_POSTGRES_URL"):
        yield url
        return
    # harness's own module, from the session's environment. Its progress (an apt install, initdb,
    # the start) shows as it happens; stdout is the URL.
    command = [os.path.join(session.bin, "python"), "-m", "harness.postgres"]
    started = subprocess.run([*command, "start", "--install"], stdout=subprocess.PIPE, text=True, check=False)
    if started.returncode != 0:
        session.error(
            "PostgreSQL is needed for this session and could not be started (its output is above).\n"
            "Start one with `python -m harness.postgres start` and export HARNESS_POSTGRES_URL=<the URL it prints>."
        )
    try:
        yield started.stdout.strip()
    finally:
        subprocess.run([*command, "stop"], check=False)


def database_url(server_url: str, driver: str = "asyncpg") -> str:
    """The URL the suite derives its test databases from (test_harness_…), with ``driver``."""
    server = re.sub(r"^postgres(?:ql)?(?:\+\w+)?://", f"postgresql+{driver}://", server_url)
    return server.rsplit("/", 1)[0] + "/harness"


# The plugin tests' inner runs take 1 to 30 s each and come last: with xdist's default schedule one
# worker was left with the tail while the other idled (256 s a run on SQLite; 180 s with worksteal).
XDIST = ["-n", "2", "-p", "xdist", "--dist", "worksteal"]


def run_suite(session: nox.Session, backend: str, *url_args: str) -> None:
    # The library and plugin tests run in two xdist workers (per-worker databases); the example
    # suite and the documentation's examples are projects of their own, run as a user would.
    session.run("pytest", *XDIST, *url_args, *session.posargs)
    # The example under xdist, as users run it (`nox -s example` runs it in one process).
    summary = f"--harness-summary=.reports/example-{backend}.json"
    session.run("pytest", "tests/example", "-n", "2", "-p", "xdist", summary, *url_args)
    session.run("pytest", "docs/examples", *url_args)


@nox.session
@nox.parametrize("backend", ["sqlite", "postgres", "psycopg"])
def tests(session: nox.Session, backend: str) -> None:
    """The whole test suite on embedded SQLite, or on a real PostgreSQL server through asyncpg
    (``postgres``) or psycopg 3."""
    install(session, "test")
    if backend == "sqlite":
        run_suite(session, backend)
        return
    driver = "psycopg" if backend == "psycopg" else "asyncpg"
    with postgres_server(session) as url:
        run_suite(session, backend, f"--harness-database-url={database_url(url, driver)}")


@nox.session(venv_backend="uv", reuse_venv=False)  # a reused venv keeps newer versions
@nox.parametrize("backend", ["sqlite", "postgres"])
def lowest_versions(session: nox.Session, backend: str) -> None:
    """The unit and plugin tests with the lowest dependency versions that pyproject allows.

    The newest versions are what `tests` sees; this catches a lower bound that no longer holds (an
    import, an API or a fix that only a newer release has). On PostgreSQL it runs asyncpg's floor,
    and psycopg's on the database tests.
    Test-only tools keep their newest release that the floors allow.
    """
    session.install(
        "--resolution=lowest-direct", "-e", ".[postgres,psycopg,time-machine,polyfactory,alembic]"
    )
    frozen = session.run("uv", "pip", "freeze", external=True, silent=True) or ""
    # Not in session.create_tmp(): that moves TMPDIR, and the unix socket tests' paths grow too long.
    constraints = os.path.join(session.virtualenv.location, "lowest-constraints.txt")
    with open(constraints, "w") as out:
        out.writelines(f"{line}\n" for line in frozen.splitlines() if "==" in line)
    session.install("-c", constraints, *nox.project.dependency_groups(PYPROJECT, "test"))
    tests = ["tests/unit", "tests/plugin", *XDIST, *session.posargs]
    if backend == "sqlite":
        session.run("pytest", *tests)
        return
    with postgres_server(session) as url:
        session.run("pytest", *tests, f"--harness-database-url={database_url(url)}")
        # psycopg's floor: the database tests, which cover what differs between the drivers.
        database_tests = ["tests/unit/test_db.py", "tests/unit/test_databases.py", *XDIST]
        session.run("pytest", *database_tests, f"--harness-database-url={database_url(url, 'psycopg')}")


@nox.session
def example(session: nox.Session) -> None:
    """The example suite (tests/example) on the embedded SQLite default, with its run summary."""
    install(session, "test")
    session.run("pytest", "tests/example", "--harness-summary=.reports/example.json", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check."""
    install(session, "lint")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict on the package."""
    install(session, "typecheck")
    session.run("mypy", "harness")


@nox.session
def docs(session: nox.Session) -> None:
    """Check that every page shows its tested code, and build the documentation site; warnings are errors."""
    install(session, "docs")
    session.run("python", os.path.join("docs", "snippets.py"), "--check")  # pages show their tested code
    session.run(
        "mkdocs",
        "build",
        "--strict",
        "-f",
        os.path.join("docs", "mkdocs.yml"),
        "--site-dir",
        os.path.abspath(os.path.join(session.create_tmp(), "site")),
    )


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks, measured side by side in one run; figures go to .bench/results.json."""
    install(session, "test")
    with postgres_server(session) as url:
        for script in (
            "bench_isolation.py",
            "bench_commit_scope.py",
            "bench_factories.py",
            "bench_app.py",
            "bench_timing.py",
            "bench_pytest.py",
        ):
            session.run(
                "python", os.path.join("bench", script), "--postgres-url", database_url(url), *session.posargs
            )
    for script in ("bench_clock.py", "bench_http.py"):  # no database
        session.run("python", os.path.join("bench", script), *session.posargs)
