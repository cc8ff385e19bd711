"""Every plugin setting is an option, an environment variable and an ini key, with one precedence:
the option, then the environment variable, then the ini key, then the default."""

from __future__ import annotations

from typing import Any

import pytest

from harness.settings import SETTINGS, Setting, setting, setting_source


def _values(each: Setting, layer: int) -> tuple[Any, list[str], str, str]:
    """Layer 0 (ini), 1 (environment) or 2 (option): the value expected, and how each layer spells it
    (option arguments, environment text, ini text)."""
    if each.kind == "flag":
        value = (not each.default) if layer != 1 else bool(each.default)
        option = [each.option if value else each.off_option]
        return value, option, "1" if value else "0", "true" if value else "false"
    if each.kind == "number":
        return layer + 1, [f"{each.option}={layer + 1}"], str(layer + 1), str(layer + 1)
    if each.kind == "list":
        items = [f"{each.name}_{layer}_a", f"{each.name}_{layer}_b"]
        return items, [f"{each.option}={item}" for item in items], ", ".join(items), "\n    ".join(items)
    text = f"{each.name}-{layer}"
    return text, [f"{each.option}={text}"], text, text


def test_every_setting_takes_the_option_then_the_environment_then_the_ini_key(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Checked layer by layer for all settings at once: each layer added on top wins over the last."""
    for each in SETTINGS:
        monkeypatch.delenv(each.variable, raising=False)
    ini = pytester.path / "settings.ini"
    ini.write_text("[pytest]\n")
    config = pytester.parseconfig("-c", str(ini))
    for each in SETTINGS:
        assert (setting(config, each.name), setting_source(config, each.name)) == (each.default, None), (
            each.name
        )

    ini.write_text("[pytest]\n" + "".join(f"{each.name} = {_values(each, 0)[3]}\n" for each in SETTINGS))
    config = pytester.parseconfig("-c", str(ini))
    for each in SETTINGS:
        assert setting(config, each.name) == _values(each, 0)[0], each.name
        assert setting_source(config, each.name) == f"{each.name} in settings.ini"

    for each in SETTINGS:
        monkeypatch.setenv(each.variable, _values(each, 1)[2])
    config = pytester.parseconfig("-c", str(ini))
    for each in SETTINGS:
        assert setting(config, each.name) == _values(each, 1)[0], each.name
        assert setting_source(config, each.name) == f"${each.variable}"

    options = [argument for each in SETTINGS for argument in _values(each, 2)[1]]
    config = pytester.parseconfig("-c", str(ini), *options)
    for each in SETTINGS:
        assert setting(config, each.name) == _values(each, 2)[0], each.name
        assert setting_source(config, each.name) == _values(each, 2)[1][0].split("=")[0]  # --no-x too


def test_a_flag_or_number_the_environment_cannot_mean_is_refused(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No guessing: text that is not a flag or a number names the variable and what it takes."""
    monkeypatch.setenv("HARNESS_BLOCK_NETWORK", "maybe")
    monkeypatch.setenv("HARNESS_SEED", "12a")
    config = pytester.parseconfig()
    with pytest.raises(pytest.UsageError) as excinfo:
        setting(config, "harness_block_network")
    assert str(excinfo.value) == (
        "$HARNESS_BLOCK_NETWORK is 'maybe': a flag is 1/true/yes/on or 0/false/no/off."
    )
    with pytest.raises(pytest.UsageError) as excinfo:
        setting(config, "harness_seed")
    assert str(excinfo.value) == "$HARNESS_SEED is '12a': it takes a whole number."


def test_an_ini_number_that_is_not_one_names_the_file(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HARNESS_SEED", raising=False)
    ini = pytester.path / "settings.ini"
    ini.write_text("[pytest]\nharness_seed = 12a\n")
    config = pytester.parseconfig("-c", str(ini))
    with pytest.raises(pytest.UsageError) as excinfo:
        setting(config, "harness_seed")
    assert str(excinfo.value) == "harness_seed in settings.ini is '12a': it takes a whole number."


def test_a_bad_environment_value_stops_the_run_before_any_test(
    harness_pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Checked at start-up, not when a test first reads the setting."""
    monkeypatch.setenv("HARNESS_REUSE_DB", "sometimes")
    harness_pytester.makepyfile("def test_nothing(): pass")
    result = harness_pytester.runpytest_subprocess()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*$HARNESS_REUSE_DB is 'sometimes': a flag is 1/true/yes/on or 0/false/no/off."]
    )


def test_settings_reach_the_run_from_each_layer(
    harness_pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """End to end: the network guard turned off by the environment over the ini key, on again by the
    option; the timing slack from the ini key reaches harness.timing, which reads the environment."""
    monkeypatch.delenv("HARNESS_TIMING_SLACK", raising=False)
    ini = harness_pytester.path / "tox.ini"
    ini.write_text(ini.read_text().rstrip() + "\nharness_block_network = true\nharness_timing_slack = 2.5\n")
    harness_pytester.makepyfile(
        """
        import socket

        from harness.timing import slack

        def test_guard_and_slack():
            # The guard patches the socket class while it is on.
            on = getattr(socket.socket.connect, "__module__", None) == "harness.network"
            print("guard on:", on, "slack:", slack())
        """
    )
    monkeypatch.setenv("HARNESS_BLOCK_NETWORK", "off")
    result = harness_pytester.runpytest_subprocess("-s", "-p", "no:randomly")
    result.stdout.fnmatch_lines(["*guard on: False slack: 2.5*"])
    result = harness_pytester.runpytest_subprocess("-s", "-p", "no:randomly", "--harness-block-network")
    result.stdout.fnmatch_lines(["*guard on: True slack: 2.5*"])
