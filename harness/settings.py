"""The pytest plugin's settings. Each one is an option, an environment variable and an ini key, of one
name: ``--harness-reuse-db``, ``$HARNESS_REUSE_DB``, ``harness_reuse_db``. Where several are set,
the option wins, then the environment variable, then the ini key (pytest-django's order): the ini
file is the project's, the environment one machine's or one CI job's, the option one run's.

A flag's option turns it on (``--harness-reuse-db``) or off (``--no-harness-block-network``); in the
environment it is 1/true/yes/on or 0/false/no/off. A list is one item per line in the ini file, and
comma-separated in the environment; its option may be given more than once. An empty environment
variable counts as unset.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from typing import Any, Literal

import pytest

__all__ = ["SETTINGS", "Setting", "add_settings", "export", "setting", "setting_source"]

Kind = Literal["text", "flag", "number", "list"]
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


@dataclass(frozen=True)
class Setting:
    """One setting: its name (the ini key), what it does, its kind and its default."""

    name: str
    help: str
    kind: Kind = "text"
    default: Any = None
    metavar: str | None = None

    @property
    def option(self) -> str:
        """The command-line option: ``--harness-x``."""
        return "--" + self.name.replace("_", "-")

    @property
    def off_option(self) -> str:
        """The option that turns a flag off: ``--no-harness-x``."""
        return "--no-" + self.option.removeprefix("--")

    @property
    def variable(self) -> str:
        """The environment variable: ``HARNESS_X``."""
        return self.name.upper()

    def parse(self, raw: str, where: str) -> Any:
        """``raw`` text from ``where`` (the environment) as this setting's value."""
        if self.kind == "flag":
            if raw.strip().lower() in _TRUE + _FALSE:
                return raw.strip().lower() in _TRUE
            accepted = "/".join(_TRUE) + " or " + "/".join(_FALSE)
            msg = f"{where} is {raw!r}: a flag is {accepted}."
            raise pytest.UsageError(msg)
        if self.kind == "number":
            try:
                return int(raw)
            except ValueError:
                msg = f"{where} is {raw!r}: it takes a whole number."
                raise pytest.UsageError(msg) from None
        if self.kind == "list":
            return [item.strip() for item in raw.split(",") if item.strip()]
        return raw


SETTINGS = (
    Setting(
        "harness_database_url",
        "Server (PostgreSQL) or file (SQLite) URL the test database is derived from. Default: a SQLite file "
        "per worker.",
        metavar="URL",
    ),
    Setting(
        "harness_start_postgres",
        "Start a throwaway PostgreSQL server for the run (harness.postgres: initdb on 127.0.0.1, deleted at "
        "the end) and derive the test database from it.",
        "flag",
        False,
    ),
    Setting(
        "harness_reuse_db",
        "Keep the template after the run, and reuse the built schema next time if it is unchanged (each run "
        "still starts from a fresh copy of it).",
        "flag",
        False,
    ),
    Setting(
        "harness_create_db", "Rebuild the schema even when harness_reuse_db would reuse it.", "flag", False
    ),
    Setting(
        "harness_seed",
        "Seed of factory-boy and Faker randomness; each test is reseeded from it and its node id, so a failure "
        "replays with the same random values. Default: a new seed per run, shown in the header.",
        "number",
        metavar="N",
    ),
    Setting(
        "harness_summary",
        "Write a JSON summary of the run to PATH: outcomes, tests per @pytest.mark.category, regressions.",
        metavar="PATH",
    ),
    Setting(
        "harness_summary_compare",
        "A summary of an earlier run: tests that passed there and fail now are reported as regressions.",
        metavar="PREVIOUS",
    ),
    Setting(
        "harness_database_name",
        "Test database name (test_ is prepended). Default: from the URL or rootdir.",
        metavar="NAME",
    ),
    Setting(
        "harness_allow_remote_database",
        "Allow a database server that is not on a loopback address.",
        "flag",
        False,
    ),
    Setting(
        "harness_block_network",
        "Refuse connections to hosts other than loopback while tests run (default: on).",
        "flag",
        True,
    ),
    Setting(
        "harness_block_databases",
        "Refuse connections to databases harness did not create while tests run (default: on).",
        "flag",
        True,
    ),
    Setting(
        "harness_engines",
        "The app's AsyncEngines to adopt, as module:attribute paths (app.db:engine): they work on the test "
        "database and join each test's transaction.",
        "list",
        [],
        metavar="MODULE:ATTRIBUTE",
    ),
    Setting(
        "harness_categories",
        "Test categories for @pytest.mark.category, in addition to the built-in ones.",
        "list",
        [],
        metavar="CATEGORY",
    ),
    Setting(
        "harness_clock_backend",
        "Backend of the clock fixture: freezegun (default) or time-machine.",
        metavar="BACKEND",
    ),
    Setting(
        "harness_app_lifespan",
        "How app_client runs the app's lifespan: shared (once per event loop of async fixtures, for the tests "
        "that share it; default), test (a start-up and shut-down per test), off.",
        default="shared",
        metavar="MODE",
    ),
    # harness.timing reads these from the environment (it works without pytest too); the plugin puts
    # an option's or ini key's value there for the run (`export`).
    Setting(
        "harness_timing_slack",
        "A factor of at least 1 every timing budget is multiplied by (default 1): room for a slow machine.",
        metavar="FACTOR",
    ),
    Setting(
        "harness_timing_undecided",
        "pass (with a warning; default) or fail: the outcome of a timing assertion the machine was too noisy "
        "to decide.",
        metavar="OUTCOME",
    ),
)
_BY_NAME = {each.name: each for each in SETTINGS}


def add_settings(parser: pytest.Parser) -> None:
    """Register every setting as an option and an ini key."""
    group = parser.getgroup("harness", "harness: async integration tests")
    for each in SETTINGS:
        help = f"{each.help} Also ${each.variable} or the {each.name} ini key."
        if each.kind == "flag":
            negative = each.off_option
            help = f"{each.help} {negative} turns it off. Also ${each.variable} (1 or 0) or the {each.name} ini key."
            group.addoption(
                each.option, action="store_const", const=True, dest=each.name, default=None, help=help
            )
            group.addoption(
                negative, action="store_const", const=False, dest=each.name, help=argparse.SUPPRESS
            )
        else:
            group.addoption(
                each.option,
                dest=each.name,
                default=None,
                metavar=each.metavar,
                type=int if each.kind == "number" else str,
                action="append" if each.kind == "list" else "store",
                help=help,
            )
        ini_type = {"flag": "bool", "list": "linelist"}.get(each.kind, "string")
        parser.addini(each.name, each.help, type=ini_type, default=None)  # type: ignore[arg-type]


def setting(config: pytest.Config, name: str) -> Any:
    """The value of setting ``name``: the option, else the environment variable, else the ini key,
    else the default."""
    return _resolve(config, _BY_NAME[name])[0]


def setting_source(config: pytest.Config, name: str) -> str | None:
    """Where setting ``name`` came from (``--harness-x``, ``$HARNESS_X``, ``harness_x in pytest.ini``),
    or None for its default."""
    return _resolve(config, _BY_NAME[name])[1]


def export(config: pytest.Config, name: str) -> None:
    """Put setting ``name``'s value in its environment variable for the run (and for the xdist
    workers it starts), where the option or the ini key gave it; the variable is restored after."""
    value, source = _resolve(config, _BY_NAME[name])
    variable = _BY_NAME[name].variable
    if source is None or source == f"${variable}":
        return
    previous = os.environ.get(variable)
    os.environ[variable] = str(value)

    def restore() -> None:
        if previous is None:
            os.environ.pop(variable, None)
        else:
            os.environ[variable] = previous

    config.add_cleanup(restore)


def _resolve(config: pytest.Config, each: Setting) -> tuple[Any, str | None]:
    if (value := config.getoption(each.name, None)) is not None:
        return value, each.option if value is not False else each.off_option
    if raw := os.environ.get(each.variable, ""):
        where = f"${each.variable}"
        return each.parse(raw, where), where
    if (value := config.getini(each.name)) is not None:
        if each.kind == "number":
            value = each.parse(str(value), f"{each.name} in {_ini_file(config)}")
        return value, f"{each.name} in {_ini_file(config)}"
    return each.default, None


def _ini_file(config: pytest.Config) -> str:
    return config.inipath.name if config.inipath else "the ini file"
