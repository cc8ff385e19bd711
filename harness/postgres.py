"""A throwaway PostgreSQL server for tests: its own cluster, on 127.0.0.1, gone when stopped.

    python -m harness.postgres start            # prints the server URL: postgresql://postgres:<password>@127.0.0.1:41234/postgres
    python -m harness.postgres url              # prints it again
    python -m harness.postgres stop             # stops the server and deletes its files
    python -m harness.postgres run -- pytest    # start, run the command with $HARNESS_DATABASE_URL set, stop

or ``pytest --harness-start-postgres`` (``harness_start_postgres = true``) for one run.

The cluster is made with the PostgreSQL server binaries on the machine (``initdb``, ``pg_ctl``:
``pg_config --bindir``, Debian's ``/usr/lib/postgresql/*/bin``, or ``$PATH``). It listens on
loopback only, runs with fsync off and lives in a temporary directory. Its superuser has a random
password, in the URL: other users of a shared machine reach 127.0.0.1 too.
PostgreSQL refuses to run as root, so under root the server runs as a system user (``harness-pg``)
that harness creates.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from harness.exceptions import DatabaseUnavailableError

__all__ = ["ThrowawayPostgres", "main"]

SYSTEM_USER = "harness-pg"


class ThrowawayPostgres:
    """A PostgreSQL cluster harness creates for tests, started and stopped on demand.

    ``state`` is the file that remembers a running server between commands (by default one per
    working directory, in the temporary directory); ``say`` receives progress lines.
    """

    def __init__(
        self, *, state: str | os.PathLike[str] | None = None, say: Callable[[str], object] | None = None
    ) -> None:
        self.state_file = Path(state) if state is not None else _default_state_file()
        self._say: Callable[[str], object] = say or (lambda _line: None)

    @property
    def url(self) -> str | None:
        """The running server's URL (its ``postgres`` database), or None."""
        state = self._state()
        return state["url"] if state and self._running(state) else None

    def start(self, *, install: bool = False) -> str:
        """Start a server unless one is running; return its URL. ``install`` lets harness install
        Debian's postgresql package with apt when no server binaries are found (root only)."""
        if (url := self.url) is not None:
            return url
        bindir = find_bindir(install=install, say=self._say)
        root = Path(tempfile.mkdtemp(prefix="harness-pg-"))
        datadir = root / "data"
        password, password_file = secrets.token_urlsafe(18), root / "password"
        password_file.write_text(password)
        password_file.chmod(0o600)
        if _is_root():
            _create_system_user()
            shutil.chown(root, user=SYSTEM_USER)
            shutil.chown(password_file, user=SYSTEM_USER)
        root.chmod(0o700)
        self._say(f"creating a throwaway cluster in {root} ({bindir})")
        initdb = [
            str(bindir / "initdb"),
            "-D",
            str(datadir),
            "-U",
            "postgres",
            "-A",
            "scram-sha-256",
            "-E",
            "UTF8",
        ]
        result = _run([*initdb, f"--pwfile={password_file}", "--locale=C", "--no-sync"])
        password_file.unlink()
        if result.returncode != 0:
            shutil.rmtree(root, ignore_errors=True)
            msg = f"initdb failed:\n{result.stdout}{result.stderr}"
            raise DatabaseUnavailableError(msg)
        port = _free_port()
        self._say(f"starting the server on 127.0.0.1:{port}")
        settings = "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        log = root / "server.log"
        pg_ctl = [str(bindir / "pg_ctl"), "-D", str(datadir), "-l", str(log), "-w", "-t", "60"]
        result = _run([*pg_ctl, "-o", f"-h 127.0.0.1 -p {port} -k {root} {settings}", "start"])
        if result.returncode != 0:
            server_log = log.read_text() if log.exists() else ""
            _run(
                [str(bindir / "pg_ctl"), "-D", str(datadir), "-m", "immediate", "-w", "stop"]
            )  # if it came up late
            shutil.rmtree(root, ignore_errors=True)
            msg = (
                f"The throwaway PostgreSQL server did not start:\n{result.stdout}{result.stderr}{server_log}"
            )
            raise DatabaseUnavailableError(msg)
        url = f"postgresql://postgres:{password}@127.0.0.1:{port}/postgres"
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        self.state_file.touch(mode=0o600)  # it holds the password
        self.state_file.write_text(
            json.dumps({"url": url, "datadir": str(datadir), "root": str(root), "bindir": str(bindir)})
        )
        self._say(f"ready on 127.0.0.1:{port}")
        return url

    def stop(self) -> None:
        """Stop the server (if one runs) and delete its files."""
        state = self._state()
        if state is None:
            return
        if Path(state["datadir"]).exists():
            _run(
                [
                    str(Path(state["bindir"]) / "pg_ctl"),
                    "-D",
                    state["datadir"],
                    "-m",
                    "immediate",
                    "-w",
                    "stop",
                ]
            )
        shutil.rmtree(state["root"], ignore_errors=True)
        self.state_file.unlink(missing_ok=True)
        self._say("stopped; its files are deleted")

    def _state(self) -> dict[str, str] | None:
        if not self.state_file.exists():
            return None
        state: dict[str, str] = json.loads(self.state_file.read_text())
        return state

    def _running(self, state: dict[str, str]) -> bool:
        if not Path(state["datadir"]).exists():
            return False
        return _run([str(Path(state["bindir"]) / "pg_ctl"), "-D", state["datadir"], "status"]).returncode == 0


def find_bindir(*, install: bool = False, say: Callable[[str], object] | None = None) -> Path:
    """The folder of the PostgreSQL server binaries (initdb, pg_ctl); DatabaseUnavailableError if none."""
    candidates = []
    if shutil.which("pg_config"):
        result = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, check=False)
        candidates.append(result.stdout.strip())
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    if initdb := shutil.which("initdb"):
        candidates.append(str(Path(initdb).parent))
    for candidate in candidates:
        if candidate and (Path(candidate) / "initdb").exists() and (Path(candidate) / "pg_ctl").exists():
            return Path(candidate)
    if install and _is_root() and shutil.which("apt-get"):
        if say is not None:
            say("no PostgreSQL server found; installing Debian's postgresql with apt (a minute or two)")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, stdout=sys.stderr)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "postgresql"], check=True, env=env, stdout=sys.stderr
        )
        return find_bindir()
    msg = (
        "No PostgreSQL server binaries (initdb, pg_ctl) were found: not through pg_config, in "
        "/usr/lib/postgresql/*/bin, nor on $PATH. Install the server (Debian: apt-get install postgresql; "
        "macOS: brew install postgresql), or give harness the URL of a server you run."
    )
    raise DatabaseUnavailableError(msg)


def _default_state_file() -> Path:
    where = hashlib.sha256(os.getcwd().encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"harness-postgres-{getattr(os, 'getuid', lambda: 0)()}-{where}.json"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _create_system_user() -> None:
    if subprocess.run(["id", "-u", SYSTEM_USER], capture_output=True, check=False).returncode != 0:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SYSTEM_USER],
            check=True,
        )


def _is_root() -> bool:
    return bool(getattr(os, "geteuid", lambda: 1)() == 0)  # Windows has no geteuid


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    if _is_root():  # PostgreSQL refuses root
        argv = ["runuser", "-u", SYSTEM_USER, "--", *argv]
    return subprocess.run(argv, capture_output=True, text=True, check=False)


def main(argv: list[str] | None = None) -> int:
    """The command line: start, url, stop, run -- CMD (see the module's docstring)."""
    args = sys.argv[1:] if argv is None else argv
    server = ThrowawayPostgres(
        say=lambda line: print(f"harness.postgres: {line}", file=sys.stderr, flush=True)
    )
    command = args[0] if args else ""
    try:
        if command == "start":
            print(server.start(install="--install" in args))  # stdout carries the URL alone, for scripts
        elif command == "url":
            if server.url is None:
                print(
                    "harness.postgres: no server is running; start one with: python -m harness.postgres start",
                    file=sys.stderr,
                )
                return 1
            print(server.url)
        elif command == "stop":
            server.stop()
        elif command == "run" and "--" in args:
            url = server.start(install="--install" in args[: args.index("--")])
            try:
                env = {**os.environ, "HARNESS_DATABASE_URL": url}
                return subprocess.run(args[args.index("--") + 1 :], env=env, check=False).returncode
            finally:
                server.stop()
        else:
            print(__doc__, file=sys.stderr)
            return 2
    except DatabaseUnavailableError as error:
        print(f"harness.postgres: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
