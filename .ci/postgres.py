#!/usr/bin/env python3
"""Start and stop a throwaway PostgreSQL cluster on 127.0.0.1 for harness's tests.

    python .ci/postgres.py start          # prints the server URL, e.g. postgresql://postgres@127.0.0.1:41234/postgres
    python .ci/postgres.py url            # prints it again
    python .ci/postgres.py stop           # stops the cluster and deletes its files
    python .ci/postgres.py run -- CMD...  # start, run CMD with HARNESS_POSTGRES_URL set, stop

The cluster listens on loopback only, trusts local connections, runs with fsync=off and lives in a
temporary directory. PostgreSQL refuses to run as root, so under root the cluster runs as a system
user (`harness-pg`) that this script creates. Debian's `postgresql` package is installed with apt
when no server binaries are found and the script runs as root.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

SYSTEM_USER = "harness-pg"
STATE_FILE = Path(__file__).resolve().parent.parent / ".postgres" / "state.json"


def _bindir() -> Path:
    candidates = []
    if shutil.which("pg_config"):
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, check=False)
        candidates.append(out.stdout.strip())
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    for candidate in candidates:
        if candidate and (Path(candidate) / "initdb").exists():
            return Path(candidate)
    if os.geteuid() == 0 and shutil.which("apt-get"):
        _say("no PostgreSQL server found; installing Debian's postgresql with apt (a minute or two)")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        # apt's output goes with the progress, to stderr: stdout is for the URL alone.
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, stdout=sys.stderr)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "postgresql"], check=True, env=env, stdout=sys.stderr
        )
        return _bindir()
    sys.exit(
        "postgres.py: no PostgreSQL server binaries (initdb) found. Install them (Debian: apt-get install postgresql) and run again."
    )


def _say(line: str) -> None:
    # Progress goes to stderr: stdout carries only the URL, for scripts to read.
    print(f"postgres.py: {line}", file=sys.stderr, flush=True)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _as_cluster_user(argv: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return argv
    if subprocess.run(["id", "-u", SYSTEM_USER], capture_output=True, check=False).returncode != 0:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SYSTEM_USER],
            check=True,
        )
    return ["runuser", "-u", SYSTEM_USER, "--", *argv]


def _read_state() -> dict[str, str] | None:
    if not STATE_FILE.exists():
        return None
    state: dict[str, str] = json.loads(STATE_FILE.read_text())
    return state


def _is_running(state: dict[str, str]) -> bool:
    pg_ctl = str(Path(state["bindir"]) / "pg_ctl")
    argv = _as_cluster_user([pg_ctl, "-D", state["datadir"], "status"])
    return subprocess.run(argv, capture_output=True, check=False).returncode == 0


def start() -> str:
    state = _read_state()
    if state and Path(state["datadir"]).exists() and _is_running(state):
        return state["url"]
    bindir = _bindir()
    root = Path(tempfile.mkdtemp(prefix="harness-pg-"))
    datadir = root / "data"
    if os.geteuid() == 0:
        _as_cluster_user(["true"])  # creates the system user
        shutil.chown(root, user=SYSTEM_USER)
    root.chmod(0o700)
    initdb = [
        str(bindir / "initdb"),
        "-D",
        str(datadir),
        "-U",
        "postgres",
        "-A",
        "trust",
        "-E",
        "UTF8",
        "--locale=C",
        "--no-sync",
    ]
    _say(f"creating a throwaway cluster in {root} ({bindir})")
    subprocess.run(_as_cluster_user(initdb), check=True, capture_output=True)
    port = _free_port()
    _say(f"starting the server on 127.0.0.1:{port}")
    options = f"-h 127.0.0.1 -p {port} -k {root} -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
    pg_ctl = [
        str(bindir / "pg_ctl"),
        "-D",
        str(datadir),
        "-l",
        str(root / "server.log"),
        "-o",
        options,
        "-w",
        "-t",
        "60",
        "start",
    ]
    result = subprocess.run(_as_cluster_user(pg_ctl), capture_output=True, text=True, check=False)
    if result.returncode != 0:
        log = (root / "server.log").read_text() if (root / "server.log").exists() else ""
        sys.exit(f"postgres.py: the server did not start:\n{result.stdout}{result.stderr}{log}")
    url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
    _say(f"ready: {url} (`python .ci/postgres.py stop` stops it and deletes its files)")
    STATE_FILE.parent.mkdir(exist_ok=True)
    STATE_FILE.write_text(
        json.dumps({"url": url, "datadir": str(datadir), "root": str(root), "bindir": str(bindir)})
    )
    return url


def stop() -> None:
    state = _read_state()
    if state is None:
        return
    if Path(state["datadir"]).exists():
        pg_ctl = [
            str(Path(state["bindir"]) / "pg_ctl"),
            "-D",
            state["datadir"],
            "-m",
            "immediate",
            "-w",
            "stop",
        ]
        subprocess.run(_as_cluster_user(pg_ctl), capture_output=True, check=False)
    shutil.rmtree(state["root"], ignore_errors=True)
    STATE_FILE.unlink(missing_ok=True)


def main(argv: list[str]) -> int:
    command = argv[0] if argv else ""
    if command == "start":
        print(start())
    elif command == "url":
        state = _read_state()
        if state is None:
            sys.exit("postgres.py: no cluster is running; start one with: python .ci/postgres.py start")
        print(state["url"])
    elif command == "stop":
        stop()
    elif command == "run" and "--" in argv:
        url = start()
        try:
            cmd = argv[argv.index("--") + 1 :]
            return subprocess.run(
                cmd, env={**os.environ, "HARNESS_POSTGRES_URL": url}, check=False
            ).returncode
        finally:
            stop()
    else:
        sys.exit(__doc__)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
