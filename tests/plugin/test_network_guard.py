"""The network guard under the plugin: on for every test, the allow_network marker, the ini switch."""

from __future__ import annotations

import pytest

# pytester runs the inner session in this process: the outer test's guard would stay on around it.
pytestmark = pytest.mark.allow_network

TESTS = """
    import httpx
    import pytest

    def test_blocked():
        httpx.get("https://api.example.com/v1/ping")

    def test_swallowed():
        try:
            httpx.get("https://api.example.com/v1/ping")
        except Exception:
            pass

    @pytest.mark.allow_network
    def test_guard_off():
        import socket
        assert socket.getaddrinfo.__module__ == "socket"

    @pytest.mark.allow_network("api.example.com")
    def test_allowed_host():
        from harness import NetworkBlockedError
        try:
            httpx.get("https://api.example.com/v1/ping", timeout=0.2)
        except NetworkBlockedError:
            raise
        except Exception:
            pass  # no network in this sandbox: what matters is that the guard let it through
"""


def test_every_test_runs_behind_the_guard(harness_pytester: pytest.Pytester) -> None:
    """Blocked at once with the host and the fix; a swallowed attempt still fails; the marker opens it."""
    harness_pytester.makepyfile(TESTS)
    result = harness_pytester.runpytest("-p", "no:randomly")
    result.assert_outcomes(passed=2, failed=2)
    result.stdout.fnmatch_lines(
        [
            "*NetworkBlockedError: harness blocked a connection to 'api.example.com' port 443: tests must "
            "not reach the network.",
            "E  *Mock the service with a harness.MockApi whose base_url is 'https://api.example.com', or allow "
            'the host with @pytest.mark.allow_network("api.example.com").',
        ]
    )
    result.stdout.fnmatch_lines(
        [
            "*NetworkBlockedError: harness blocked connections that the code under test may have hidden "
            "with `except Exception`:",
            "E  *- api.example.com:443*",
        ]
    )


def test_the_ini_switch_turns_the_guard_off(harness_pytester: pytest.Pytester) -> None:
    """harness_block_network = false: no test is guarded."""
    harness_pytester.makepyfile(
        """
        import socket

        def test_unpatched():
            assert socket.getaddrinfo.__module__ == "socket"
        """
    )
    result = harness_pytester.runpytest("-p", "no:randomly", "-o", "harness_block_network=false")
    result.assert_outcomes(passed=1)


def test_a_bad_allow_network_entry_is_a_usage_error(harness_pytester: pytest.Pytester) -> None:
    """A URL instead of a host is refused with the expected form."""
    harness_pytester.makepyfile(
        """
        import pytest

        @pytest.mark.allow_network("https://api.example.com")
        def test_x():
            pass
        """
    )
    result = harness_pytester.runpytest("-p", "no:randomly")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            "ERROR: test_a_bad_allow_network_entry_is_a_usage_error.py::test_x: @pytest.mark.allow_network: "
            "'https://api.example.com' is not a host name, an IP address or a CIDR network.*"
        ]
    )


def test_an_attempt_swallowed_in_a_fixture_teardown_is_reported(harness_pytester: pytest.Pytester) -> None:
    """The call's check comes before fixtures are torn down; what they try after it fails the
    teardown, once, with a note saying when."""
    harness_pytester.makepyfile(
        """
        import httpx
        import pytest

        @pytest.fixture
        def reporter():
            yield
            try:
                httpx.post("https://metrics.example.com/flush")
            except Exception:
                pass  # "best effort"

        def test_uses_it(reporter):
            try:
                httpx.get("https://api.example.com/v1/ping")
            except Exception:
                pass
        """
    )
    result = harness_pytester.runpytest("-p", "no:randomly")
    result.assert_outcomes(failed=1, errors=1)
    # The teardown's error names only what came after the call; the call's is the call's.
    teardown = result.stdout.str().split("ERROR at teardown of test_uses_it")[1].split("= FAILURES =")[0]
    assert "metrics.example.com:443" in teardown
    assert "api.example.com" not in teardown
    result.stdout.fnmatch_lines(
        [
            "*ERROR at teardown of test_uses_it*",
            "*- metrics.example.com:443",
            "*harness: these were attempted while fixtures were torn down, after the test ran.",
        ]
    )


@pytest.mark.parametrize("remote", [False, True])
def test_the_database_host_is_let_through_only_when_remote_databases_are_allowed(
    harness_pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, remote: bool
) -> None:
    """A database URL names a host; unless harness_allow_remote_database is on, that host is no
    exception to the guard (harness refuses such a database anyway)."""
    monkeypatch.setenv("HARNESS_DATABASE_URL", "postgresql://me@db.internal:5432/app")
    if remote:
        ini = harness_pytester.path / "tox.ini"
        ini.write_text(ini.read_text().rstrip() + "\nharness_allow_remote_database = true\n")
    harness_pytester.makepyfile(
        """
        import socket

        def test_reach_the_database_host_on_another_port():
            try:
                socket.getaddrinfo("db.internal", 8080)
            except OSError:
                pass  # no such host in this sandbox: the resolver answered, so the guard let it through
        """
    )
    result = harness_pytester.runpytest("-p", "no:randomly")
    if remote:
        result.assert_outcomes(passed=1)
    else:
        result.assert_outcomes(failed=1)
        result.stdout.fnmatch_lines(
            ["E*NetworkBlockedError: harness blocked a connection to 'db.internal' port 8080*"]
        )
