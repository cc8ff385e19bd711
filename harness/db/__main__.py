"""``python -m harness.db [URL or folder] [--drop] [--templates]``: the test databases harness made
on a PostgreSQL server (or the SQLite files in a folder), which run holds each, and, with
``--drop``, the clean-up of those that killed runs left. A database a live run holds, or one
harness did not make, is never dropped."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
from pathlib import Path

from harness.db.leases import left_behind, sqlite_left_behind
from harness.exceptions import HarnessError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.db", description=__doc__)
    parser.add_argument(
        "where",
        nargs="?",
        default=os.environ.get("HARNESS_DATABASE_URL") or str(Path(tempfile.gettempdir()) / "harness"),
        help="a PostgreSQL server URL, or a folder of SQLite test files "
        "(default: $HARNESS_DATABASE_URL, else harness's SQLite folder in the temporary directory)",
    )
    parser.add_argument("--drop", action="store_true", help="drop the databases no live run holds")
    parser.add_argument(
        "--templates", action="store_true", help="with --drop, drop templates too (rebuilt next run)"
    )
    parser.add_argument(
        "--allow-remote", action="store_true", help="allow a server that is not on this machine"
    )
    args = parser.parse_args(argv)
    try:
        if args.where.startswith("postgres"):  # postgres:// and postgresql://
            found = asyncio.run(
                left_behind(
                    args.where, drop=args.drop, templates=args.templates, allow_remote=args.allow_remote
                )
            )
        else:
            folder = Path(args.where.split("///", 1)[-1])  # a sqlite URL names a file in the folder
            found = sqlite_left_behind(
                folder if folder.is_dir() else folder.parent, drop=args.drop, templates=args.templates
            )
    except HarnessError as exc:
        print(f"harness.db: {exc}", file=sys.stderr)
        return 2
    width = max((len(each.name) for each in found), default=0)
    for each in found:
        print(f"{each.name:<{width}}  {each.state}")
    if not found:
        print("harness.db: no test databases of harness's here")
    return 0


if __name__ == "__main__":
    sys.exit(main())
