"""harness.network: while the guard is on, connections beyond loopback fail at once, from any library.

Nothing here reaches the network. Blocked calls are proved by the error type and message, and by
the `fake_network` fixture: a resolver and a `connect` installed below the guard, which record what
got past it and go no further (a host the guard lets through meets ConnectionRefusedError there).
Loopback and Unix-socket traffic goes to servers the tests start.
"""

from __future__ import annotations

import _socket
import asyncio
import contextlib
import errno
import http.server
import ipaddress
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import httpx2
import pytest
import requests

from harness.exceptions import NetworkBlockedError
from harness.network import BlockedConnection, NetworkGuard, block_network

# These tests start and stop guards themselves, from an unguarded process: the plugin's own guard
# around each test would be the outer one, keeping the patches in and the fake network out.
pytestmark = pytest.mark.allow_network()

BLOCKED_API = (
    "harness blocked a connection to 'api.example.com' port 443: tests must not reach the network.\n"
    "Mock the service with a harness.MockApi whose base_url is 'https://api.example.com', "
    'or allow the host with @pytest.mark.allow_network("api.example.com").'
)
ORIGINAL_GETADDRINFO = socket.getaddrinfo
ORIGINAL_METHODS = {
    name: getattr(socket.socket, name) for name in ("connect", "connect_ex", "sendto", "sendmsg")
}


@dataclass
class FakeNetwork:
    hosts: dict[str, str] = field(
        default_factory=lambda: {"db.internal": "192.0.2.7", "example.com": "192.0.2.10"}
    )
    lookups: list[str] = field(default_factory=list)
    connects: list[tuple[Any, ...]] = field(default_factory=list)


@pytest.fixture
def fake_network(monkeypatch: pytest.MonkeyPatch) -> FakeNetwork:
    """A resolver and a connect() under the guard: they record what passed it and never go out."""
    fake = FakeNetwork()

    def getaddrinfo(
        host: Any, port: Any, family: int = 0, type: int = 0, proto: int = 0, flags: int = 0
    ) -> Any:
        name = host.decode() if isinstance(host, bytes) else host
        fake.lookups.append(name)
        address = fake.hosts.get(name, name)
        try:
            version = ipaddress.ip_address(address).version
        except ValueError:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known") from None
        af = socket.AF_INET if version == 4 else socket.AF_INET6
        return [(af, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (address, port))]

    def connect(sock: socket.socket, address: Any) -> None:
        fake.connects.append(address)
        raise ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused (fake network)")

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(socket.socket, "connect", connect)
    return fake


@pytest.fixture
def guard(fake_network: FakeNetwork) -> Iterator[NetworkGuard]:
    """A guard over the fake network, checked to have let nothing through to it."""
    with block_network() as network_guard:
        yield network_guard
    assert fake_network.lookups == []
    assert fake_network.connects == []


class OneConnection:
    """A server callback that echoes a line, or answers an HTTP request; `done` is set when it closes.

    Tests wait for `done` before their loop ends, or the server side of the connection is left open.
    """

    def __init__(self, *, http: bool = False) -> None:
        self.http = http
        self.done = asyncio.Event()

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            if self.http:
                await reader.readuntil(b"\r\n\r\n")
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello")
            else:
                writer.write(await reader.readline())
            await writer.drain()
            writer.close()
            await writer.wait_closed()
        finally:
            self.done.set()


class Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "5")
        self.end_headers()
        self.wfile.write(b"hello")

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def threaded_server() -> Iterator[str]:
    """An HTTP server on 127.0.0.1 in a thread, for sync clients; yields its URL."""
    server = http.server.HTTPServer(("127.0.0.1", 0), Hello)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def lookup(host: str | bytes | None) -> None:
    with contextlib.suppress(socket.gaierror):  # the fake resolver knows few names: it was asked
        socket.getaddrinfo(host, 80)


# -- every client library is stopped before any lookup -------------------------------------------


async def test_httpx_async_client_is_blocked(guard: NetworkGuard) -> None:
    """httpx.AsyncClient fails with NetworkBlockedError naming the host, before any DNS query."""
    async with httpx.AsyncClient() as client:
        with pytest.raises(NetworkBlockedError) as excinfo:
            await client.get("https://api.example.com/v1/users")
    assert excinfo.value.args == (BLOCKED_API,)
    assert guard.blocked == [BlockedConnection("api.example.com", 443, "getaddrinfo")]


def test_httpx_sync_client_is_blocked(guard: NetworkGuard) -> None:
    """httpx.Client fails with NetworkBlockedError naming the host."""
    with httpx.Client() as client, pytest.raises(NetworkBlockedError, match=r"'api.example.com' port 443"):
        client.get("https://api.example.com/v1/users")


def test_httpx_retries_do_not_swallow_the_error(guard: NetworkGuard) -> None:
    """A transport that retries connection errors gives up at the first attempt: the error is not one."""
    transport = httpx.HTTPTransport(retries=3)
    with httpx.Client(transport=transport) as client, pytest.raises(NetworkBlockedError):
        client.get("https://api.example.com/")
    assert len(guard.blocked) == 1


async def test_httpx2_async_client_is_blocked(guard: NetworkGuard) -> None:
    """httpx2.AsyncClient fails with NetworkBlockedError naming the host."""
    async with httpx2.AsyncClient() as client:
        with pytest.raises(NetworkBlockedError, match=r"'api.example.com' port 443"):
            await client.get("https://api.example.com/v1/users")


async def test_aiohttp_session_is_blocked(guard: NetworkGuard) -> None:
    """aiohttp's default (threaded) resolver fails with NetworkBlockedError, not a ClientError."""
    async with aiohttp.ClientSession() as session:
        with pytest.raises(NetworkBlockedError, match=r"'api.example.com' port 443"):
            await session.get("https://api.example.com/v1/users")


async def test_aiohttp_is_blocked_on_an_ip_address(guard: NetworkGuard) -> None:
    """aiohttp connecting to an IP literal fails at connect, with the address in the message."""
    async with aiohttp.ClientSession() as session:
        with pytest.raises(NetworkBlockedError, match=r"'192.0.2.1' port 8080"):
            await session.get("http://192.0.2.1:8080/")
    assert guard.blocked == [BlockedConnection("192.0.2.1", 8080, "connect")]


def test_requests_is_blocked(guard: NetworkGuard) -> None:
    """requests (urllib3) fails with NetworkBlockedError, not a requests.ConnectionError."""
    with pytest.raises(NetworkBlockedError, match=r"'api.example.com' port 443"):
        requests.get("https://api.example.com/v1/users", timeout=5)


def test_raw_socket_is_blocked_on_the_ip_address(guard: NetworkGuard) -> None:
    """socket.create_connection to a public IP literal is refused as an address, before any socket."""
    with pytest.raises(NetworkBlockedError) as excinfo:
        socket.create_connection(("93.184.216.34", 80))
    assert excinfo.value.args[0].startswith(
        "harness blocked a connection to '93.184.216.34' port 80: tests must not reach the network.\n"
        "Mock the service with a harness.MockApi whose base_url is 'http://93.184.216.34', "
    )
    assert guard.blocked == [BlockedConnection("93.184.216.34", 80, "getaddrinfo")]


async def test_asyncio_open_connection_is_blocked(guard: NetworkGuard) -> None:
    """asyncio.open_connection fails in loop.getaddrinfo's executor thread, before any lookup."""
    with pytest.raises(NetworkBlockedError, match=r"'example.com' port 80"):
        await asyncio.open_connection("example.com", 80)
    assert guard.blocked == [BlockedConnection("example.com", 80, "getaddrinfo")]


async def test_asyncio_open_connection_is_blocked_on_an_ip_address(guard: NetworkGuard) -> None:
    """asyncio.open_connection to an IP literal fails in sock_connect, through socket.connect."""
    with pytest.raises(NetworkBlockedError, match=r"'192.0.2.1' port 80"):
        await asyncio.open_connection("192.0.2.1", 80)
    assert guard.blocked == [BlockedConnection("192.0.2.1", 80, "connect")]


async def test_httpx_async_wraps_a_blocked_ip_address_in_an_exception_group(guard: NetworkGuard) -> None:
    """anyio connects to an IP literal inside a task group: the error comes wrapped (a known limit)."""
    async with httpx.AsyncClient() as client:
        with pytest.raises(ExceptionGroup) as excinfo:
            await client.get("http://192.0.2.1/")
    assert excinfo.group_contains(NetworkBlockedError, match=r"'192.0.2.1' port 80")


# -- raw sockets ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "host"),
    [
        (("example.com", 443), "example.com"),
        ((b"192.0.2.1", 443), "192.0.2.1"),
        (("2001:db8::1", 443), "2001:db8::1"),
    ],
)
def test_connect_judges_names_and_addresses(guard: NetworkGuard, address: tuple[Any, int], host: str) -> None:
    """connect() refuses a name without resolving it, a bytes address, and an IPv6 address."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        with pytest.raises(NetworkBlockedError, match=f"'{host}' port 443"):
            sock.connect(address)
        assert sock.fileno() == -1  # closed: callers clean up only after an OSError
    assert guard.blocked == [BlockedConnection(host, 443, "connect")]


def test_connect_ex_is_blocked(guard: NetworkGuard) -> None:
    """connect_ex() raises NetworkBlockedError instead of returning an error number."""
    with socket.socket() as sock, pytest.raises(NetworkBlockedError, match=r"'192.0.2.1' port 80"):
        sock.connect_ex(("192.0.2.1", 80))
    assert guard.blocked == [BlockedConnection("192.0.2.1", 80, "connect")]


def test_malformed_addresses_meet_the_socket_checks() -> None:
    """An address that is not (host, port) passes to socket, which raises its own TypeError."""
    with block_network() as guard:
        with socket.socket() as sock, pytest.raises(TypeError):
            sock.connect("192.0.2.1")
        with socket.socket() as sock, pytest.raises(TypeError):
            sock.connect((1234, 80))
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock, pytest.raises(TypeError):
            sock.sendto(b"no address")  # type: ignore[call-overload]
    assert guard.blocked == []


def test_udp_datagrams_to_other_hosts_are_blocked(guard: NetworkGuard) -> None:
    """sendto() and sendmsg() to a host that is not loopback are refused, whatever the arguments."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        with pytest.raises(NetworkBlockedError, match=r"'192.0.2.1' port 53"):
            sock.sendto(b"query", ("192.0.2.1", 53))
        with pytest.raises(NetworkBlockedError):
            sock.sendto(b"query", 0, ("192.0.2.1", 53))
        with pytest.raises(NetworkBlockedError):
            sock.sendmsg([b"query"], [], 0, ("192.0.2.1", 53))
        assert sock.fileno() != -1
    assert guard.blocked == [BlockedConnection("192.0.2.1", 53, "sendto")] * 3


def test_udp_datagrams_to_loopback_pass() -> None:
    """sendto(), sendmsg() with and without an address reach a loopback UDP socket."""
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as receiver,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender,
        block_network() as guard,
    ):
        receiver.bind(("127.0.0.1", 0))
        receiver.settimeout(5)
        sender.sendto(b"one", receiver.getsockname())
        sender.sendmsg([b"two"], [], 0, receiver.getsockname())
        assert sender.connect_ex(receiver.getsockname()) == 0
        sender.sendmsg([b"three"])
        assert [receiver.recv(16) for _ in range(3)] == [b"one", b"two", b"three"]
    assert guard.blocked == []


# -- what is always allowed ------------------------------------------------------------------------


async def test_loopback_tcp_server_round_trip() -> None:
    """asyncio.start_server on 127.0.0.1 and open_connection to it work under the guard."""
    served = OneConnection()
    with block_network() as guard:
        server = await asyncio.start_server(served, "127.0.0.1", 0)
        async with server:
            port = server.sockets[0].getsockname()[1]
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"ping\n")
            assert await reader.readline() == b"ping\n"
            writer.close()
            await writer.wait_closed()
            await served.done.wait()
    assert guard.blocked == []


async def test_unix_socket_server_round_trip(tmp_path: Path) -> None:
    """A Unix-socket server and client talk under the guard."""
    path = tmp_path / "echo.sock"
    served = OneConnection()
    with block_network() as guard:
        server = await asyncio.start_unix_server(served, path)
        async with server:
            reader, writer = await asyncio.open_unix_connection(path)
            writer.write(b"ping\n")
            assert await reader.readline() == b"ping\n"
            writer.close()
            await writer.wait_closed()
            await served.done.wait()
    assert guard.blocked == []


def test_socketpair_works() -> None:
    """socket.socketpair() (asyncio's self-pipe) works under the guard."""
    with block_network():
        left, right = socket.socketpair()
        with left, right:
            left.sendall(b"ping")
            assert right.recv(4) == b"ping"


async def test_httpx_reaches_a_loopback_server() -> None:
    """An httpx request to a server the test started on 127.0.0.1 gets its answer."""
    served = OneConnection(http=True)
    server = await asyncio.start_server(served, "127.0.0.1", 0)
    async with server, httpx.AsyncClient() as client:
        port = server.sockets[0].getsockname()[1]
        with block_network() as guard:
            response = await client.get(f"http://127.0.0.1:{port}/")
        await served.done.wait()
    assert (response.status_code, response.text) == (200, "hello")
    assert guard.blocked == []


def test_sync_clients_reach_a_loopback_server(threaded_server: str) -> None:
    """requests and httpx.Client reach a server on 127.0.0.1, by address and as `localhost`."""
    with block_network() as guard:
        assert requests.get(threaded_server, timeout=5).text == "hello"
        assert httpx.get(threaded_server.replace("127.0.0.1", "localhost")).text == "hello"
    assert guard.blocked == []


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        "127.8.9.10",
        "::1",
        "::ffff:127.0.0.1",
        "localhost",
        "LOCALHOST.",
        "api.localhost",
        "0.0.0.0",
        "::",
    ],
)
def test_loopback_names_and_addresses_are_looked_up(fake_network: FakeNetwork, host: str) -> None:
    """Loopback addresses, localhost names and (to bind) the unspecified addresses go to the resolver."""
    with block_network() as guard:
        lookup(host)
    assert fake_network.lookups == [host]
    assert guard.blocked == []


@pytest.mark.parametrize("host", [None, "", b"localhost"])
def test_lookups_without_a_name_pass(fake_network: FakeNetwork, host: str | bytes | None) -> None:
    """getaddrinfo with no host (a server's bind) or with bytes for localhost is not judged a name."""
    with block_network() as guard:
        lookup(host)
    assert len(fake_network.lookups) == 1
    assert guard.blocked == []


@pytest.mark.parametrize(
    "host",
    [
        "192.0.2.1",
        "::ffff:192.0.2.1",
        "2001:db8::1",
        "example.com",
        "localhost.example.com",
        "127.0.0.1.nip.io",
        f"{'x' * 64}.example.com",  # no IDNA form (a label too long): compared as written
    ],
)
def test_other_hosts_are_refused_before_the_resolver(guard: NetworkGuard, host: str) -> None:
    """Public addresses and names (even ones that look local) never reach the resolver."""
    with pytest.raises(NetworkBlockedError, match=f"'{host}' port 80"):
        socket.getaddrinfo(host, 80)
    assert guard.blocked == [BlockedConnection(host, 80, "getaddrinfo")]


@pytest.mark.parametrize(
    ("port", "where", "base_url"),
    [
        (443, "'api.example.com' port 443", "https://api.example.com"),
        ("https", "'api.example.com' port 443", "https://api.example.com"),
        (b"80", "'api.example.com' port 80", "http://api.example.com"),
        (8443, "'api.example.com' port 8443", "https://api.example.com:8443"),
        (None, "'api.example.com'", "https://api.example.com"),
        ("gopher", "'api.example.com'", "https://api.example.com"),
    ],
)
def test_message_names_the_port_and_the_base_url(
    guard: NetworkGuard, port: int | str | bytes | None, where: str, base_url: str
) -> None:
    """The message gives the port when known, and a base_url with http only for port 80."""
    with pytest.raises(NetworkBlockedError) as excinfo:
        socket.getaddrinfo("api.example.com", port)
    assert excinfo.value.args == (
        f"harness blocked a connection to {where}: tests must not reach the network.\n"
        f"Mock the service with a harness.MockApi whose base_url is '{base_url}', "
        'or allow the host with @pytest.mark.allow_network("api.example.com").',
    )


def test_message_brackets_ipv6_addresses_in_the_base_url(guard: NetworkGuard) -> None:
    """An IPv6 address appears bracketed in the suggested base_url and in str(BlockedConnection)."""
    with pytest.raises(NetworkBlockedError) as excinfo:
        socket.getaddrinfo("2001:db8::1", 8443)
    assert "whose base_url is 'https://[2001:db8::1]:8443'" in excinfo.value.args[0]
    assert [str(attempt) for attempt in guard.blocked] == ["[2001:db8::1]:8443"]


# -- allow -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("allow", "host"),
    [
        (["192.0.2.0/24"], "192.0.2.1"),
        (["192.0.2.0/24"], "::ffff:192.0.2.9"),
        (["2001:db8::/32"], "2001:db8::1"),
        (["192.0.2.1"], "192.0.2.1"),
        (["DB.Internal"], "db.INTERNAL."),
        (["bücher.example"], "xn--bcher-kva.example"),
        (["bücher.example"], "BÜCHER.example"),
    ],
)
def test_allowed_hosts_reach_the_resolver(fake_network: FakeNetwork, allow: list[str], host: str) -> None:
    """Allowed names match exactly but case-insensitively (IDNA too); addresses match IPs and CIDRs."""
    with block_network(allow=allow) as guard:
        lookup(host)
    assert fake_network.lookups == [host]
    assert guard.blocked == []


@pytest.mark.parametrize(
    ("allow", "host"),
    [
        (["api.example.com"], "eu.api.example.com"),
        (["example.com"], "example.com.evil.test"),
        (["192.0.2.0/24"], "198.51.100.1"),
        (["192.0.2.1"], "192.0.2.2"),
        (["2001:db8::/32"], "192.0.2.1"),
    ],
)
def test_hosts_outside_the_allow_list_are_refused(guard: NetworkGuard, allow: list[str], host: str) -> None:
    """Subdomains of an allowed name and addresses outside an allowed network are refused."""
    with block_network(allow=allow) as inner, pytest.raises(NetworkBlockedError):
        socket.getaddrinfo(host, 80)
    assert inner.blocked == [BlockedConnection(host, 80, "getaddrinfo")]


def test_an_allowed_name_gets_past_the_guard(fake_network: FakeNetwork) -> None:
    """httpx reaches the resolver and connect() for an allowed name: the error is the network's."""
    with block_network(allow=["example.com"]) as guard, pytest.raises(httpx.ConnectError):
        httpx.get("http://example.com/")
    assert fake_network.lookups == ["example.com"]
    assert fake_network.connects == [("192.0.2.10", 80)]
    assert guard.blocked == []


async def test_an_allowed_network_gets_past_the_guard_in_asyncio(fake_network: FakeNetwork) -> None:
    """asyncio.open_connection to an address in an allowed network reaches connect()."""
    with block_network(allow=["192.0.2.0/24"]), pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("192.0.2.1", 80)
    assert fake_network.connects == [("192.0.2.1", 80)]


def test_addresses_of_an_allowed_name_are_allowed_while_its_guard_is_on(fake_network: FakeNetwork) -> None:
    """connect() accepts what an allowed name resolved to, until the guard that allows it stops."""
    with block_network() as outer:
        with block_network(allow=["db.internal"]):
            with pytest.raises(ConnectionRefusedError):
                socket.create_connection(("db.internal", 5432))
            with socket.socket() as sock, pytest.raises(ConnectionRefusedError):
                sock.connect(("192.0.2.7", 5432))
        with socket.socket() as sock, pytest.raises(NetworkBlockedError, match=r"'192.0.2.7' port 5432"):
            sock.connect(("192.0.2.7", 5432))
    assert fake_network.lookups == ["db.internal"]
    assert fake_network.connects == [("192.0.2.7", 5432)] * 2
    assert outer.blocked == [BlockedConnection("192.0.2.7", 5432, "connect")]


def test_admit_allows_a_host_while_the_guard_is_on(fake_network: FakeNetwork) -> None:
    """admit() adds hosts to a running guard (the test database's, known once its URL is); others stay blocked."""
    with block_network() as guard:
        with pytest.raises(NetworkBlockedError):
            socket.getaddrinfo("db.internal", 5432)
        guard.admit("db.internal", "192.0.2.0/24")
        lookup("db.internal")
        with socket.socket() as sock, pytest.raises(ConnectionRefusedError):
            sock.connect(("192.0.2.99", 5432))
        with pytest.raises(NetworkBlockedError):
            socket.getaddrinfo("api.example.com", 443)
    assert guard.allow == ("db.internal", "192.0.2.0/24")
    assert fake_network.lookups == ["db.internal"]
    assert [attempt.host for attempt in guard.blocked] == ["db.internal", "api.example.com"]


def test_a_service_that_is_not_http_is_named_with_what_to_do_instead(guard: NetworkGuard) -> None:
    """Redis' port gets advice a MockApi cannot give: run it on loopback, fake the client, or allow it."""
    with pytest.raises(NetworkBlockedError) as excinfo:
        socket.create_connection(("cache.internal", 6379))
    guard.blocked.clear()
    assert str(excinfo.value) == (
        "harness blocked a connection to 'cache.internal' port 6379 (the Redis port): tests must not reach the "
        "network.\nA harness.MockApi mocks HTTP APIs, not Redis: run Redis for the tests on loopback (127.0.0.1), "
        'replace the client with a fake in the test, or allow the host with @pytest.mark.allow_network("cache.internal").'
    )


@pytest.mark.parametrize(
    "entry",
    [
        "",
        "https://api.example.com",
        "api.example.com:443",
        "*.example.com",
        "exa mple.com",
        "-x.com",
        "1.2.3",
    ],
)
def test_allow_entries_that_are_not_hosts_are_refused(entry: str) -> None:
    """An allow entry that is no host name, IP address or CIDR network is a ValueError naming it."""
    with pytest.raises(ValueError, match="is not a host name") as excinfo:
        block_network(allow=["localhost", entry])
    assert excinfo.value.args == (
        f"{entry!r} is not a host name, an IP address or a CIDR network. Write allow entries as "
        "'api.example.com', '10.0.0.5' or '10.0.0.0/8' (no scheme, no port).",
    )


def test_allow_takes_a_list_not_a_string() -> None:
    """allow="host" (a string, iterable letter by letter) and non-string entries are TypeErrors."""
    with pytest.raises(TypeError) as excinfo:
        block_network(allow="api.example.com")
    assert excinfo.value.args == (
        "allow takes a list of hosts, got the string 'api.example.com': write allow=['api.example.com'].",
    )
    with pytest.raises(TypeError, match="allow entries are strings, got int: 10"):
        block_network(allow=[10])  # type: ignore[list-item]


# -- recording, nesting, restoring -----------------------------------------------------------------


def test_blocked_records_attempts_the_code_swallowed(guard: NetworkGuard) -> None:
    """Errors hidden by `except Exception` stay in guard.blocked; assert_nothing_blocked lists them."""
    for url in ["https://api.example.com/a", "https://api.example.com/b", "http://192.0.2.1/"]:
        with contextlib.suppress(Exception):  # the code under test hides the error
            requests.get(url, timeout=5)
    assert guard.blocked == [
        BlockedConnection("api.example.com", 443, "getaddrinfo"),
        BlockedConnection("api.example.com", 443, "getaddrinfo"),
        BlockedConnection("192.0.2.1", 80, "getaddrinfo"),
    ]
    with pytest.raises(NetworkBlockedError) as excinfo:
        guard.assert_nothing_blocked()
    assert excinfo.value.args == (
        "harness blocked connections that the code under test may have hidden with `except Exception`:\n"
        "- api.example.com:443\n"
        "- 192.0.2.1:80\n"
        "\n"
        "Mock these services with a harness.MockApi, or allow the hosts with "
        '@pytest.mark.allow_network("api.example.com", "192.0.2.1").',
    )


def test_assert_nothing_blocked_passes_when_nothing_was() -> None:
    """A guard that refused nothing has nothing to report."""
    with block_network() as guard:
        socket.getaddrinfo("localhost", 80)
    guard.assert_nothing_blocked()
    assert repr(guard) == "<NetworkGuard allow=[] blocked=0>"


def test_nested_guards_restore_the_patches_exactly() -> None:
    """Patches go in with the outermost guard and come out with it, leaving the original functions."""
    before = dict(socket.socket.__dict__)
    with block_network(allow=["192.0.2.0/24"]) as outer:
        patched = socket.getaddrinfo
        assert patched is not ORIGINAL_GETADDRINFO
        with block_network(allow=["198.51.100.0/24"]) as inner:
            assert socket.getaddrinfo is patched
            with pytest.raises(NetworkBlockedError):
                socket.getaddrinfo("203.0.113.1", 80)
        assert socket.getaddrinfo is patched
        with pytest.raises(NetworkBlockedError):
            socket.getaddrinfo("198.51.100.1", 80)  # the inner guard's allow left with it
    assert inner.blocked == [BlockedConnection("203.0.113.1", 80, "getaddrinfo")]
    assert outer.blocked == [BlockedConnection("198.51.100.1", 80, "getaddrinfo")]
    assert socket.getaddrinfo is ORIGINAL_GETADDRINFO
    assert {name: getattr(socket.socket, name) for name in ORIGINAL_METHODS} == ORIGINAL_METHODS
    assert socket.socket.connect is ORIGINAL_METHODS["connect"]
    assert dict(socket.socket.__dict__) == before


def test_a_guard_can_be_entered_again_while_on() -> None:
    """The same guard nests in itself; the patches stay until its outermost `with` ends."""
    guard = block_network()
    with guard:
        with guard:
            pass
        with pytest.raises(NetworkBlockedError):
            socket.getaddrinfo("example.com", 80)
    guard.__exit__(None, None, None)  # leaving a guard that is off does nothing
    assert socket.getaddrinfo is ORIGINAL_GETADDRINFO
    assert len(guard.blocked) == 1


async def test_guard_works_with_async_with() -> None:
    """`async with block_network()` guards like `with`."""
    async with block_network() as guard:
        with pytest.raises(NetworkBlockedError):
            await asyncio.open_connection("example.com", 80)
    assert socket.socket.connect is ORIGINAL_METHODS["connect"]
    assert len(guard.blocked) == 1


def test_guards_that_stop_out_of_order_keep_the_others() -> None:
    """Guards left out of order (overlapping tasks) remove only themselves."""
    first = block_network(allow=["192.0.2.0/24"]).__enter__()
    second = block_network().__enter__()
    first.__exit__(None, None, None)
    with pytest.raises(NetworkBlockedError):
        socket.getaddrinfo("192.0.2.1", 80)
    second.__exit__(None, None, None)
    assert socket.getaddrinfo is ORIGINAL_GETADDRINFO
    assert second.blocked == [BlockedConnection("192.0.2.1", 80, "getaddrinfo")]


def test_a_patch_put_back_later_does_not_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    """Patches put back after the guard stopped pass through, and the next guard removes them."""
    with block_network():
        guarded_getaddrinfo, guarded_connect = socket.getaddrinfo, socket.socket.connect
        monkeypatch.setattr(socket, "getaddrinfo", ORIGINAL_GETADDRINFO)
        monkeypatch.setattr(socket.socket, "connect", ORIGINAL_METHODS["connect"])
    monkeypatch.undo()  # puts the guarded functions back, after the guard has stopped
    assert (socket.getaddrinfo, socket.socket.connect) == (guarded_getaddrinfo, guarded_connect)
    assert socket.getaddrinfo("localhost", 80)  # off: passes through
    with block_network():
        assert socket.getaddrinfo("localhost", 80)
        with pytest.raises(NetworkBlockedError), socket.socket() as sock:
            sock.connect(("192.0.2.1", 80))
    assert socket.getaddrinfo is ORIGINAL_GETADDRINFO
    assert "connect" not in socket.socket.__dict__


def test_functions_are_the_originals_when_the_guard_is_off() -> None:
    """Without a guard, nothing is patched."""
    assert socket.getaddrinfo is ORIGINAL_GETADDRINFO
    for name in ORIGINAL_METHODS:
        assert name not in socket.socket.__dict__


def test_other_socket_families_are_not_judged() -> None:
    """A Unix datagram socket sends to a path under the guard."""
    with (
        socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as receiver,
        socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sender,
        block_network() as guard,
    ):
        receiver.bind("")  # an abstract address: no file
        sender.sendto(b"ping", receiver.getsockname())
        assert receiver.recv(4) == b"ping"
    assert guard.blocked == []


@pytest.mark.parametrize(
    "connect",
    [
        pytest.param(
            lambda sock, address: _socket.socket.connect(sock, address), id="_socket.socket.connect"
        ),
        pytest.param(lambda sock, address: super(socket.socket, sock).connect(address), id="super().connect"),
        pytest.param(
            lambda sock, address: _socket.socket.connect_ex(sock, address), id="_socket.socket.connect_ex"
        ),
    ],
)
def test_connects_past_the_socket_class_are_refused_too(
    guard: NetworkGuard, connect: Callable[[socket.socket, tuple[str, int]], object]
) -> None:
    """Calls that skip socket.socket's methods meet the same check, where CPython reports them."""
    with socket.socket() as sock, pytest.raises(NetworkBlockedError, match=r"'192.0.2.1' port 80"):
        connect(sock, ("192.0.2.1", 80))
    assert guard.blocked == [BlockedConnection("192.0.2.1", 80, "connect")]
    with socket.socket() as sock, pytest.raises(NetworkBlockedError):
        _socket.socket.sendto(sock, b"x", ("192.0.2.1", 53))


def test_older_name_lookups_are_refused_before_the_resolver(guard: NetworkGuard) -> None:
    """gethostbyname and gethostbyaddr: no DNS query for a host that is not allowed; loopback passes."""
    with pytest.raises(NetworkBlockedError, match=r"'example.com'"):
        socket.gethostbyname("example.com")
    with pytest.raises(NetworkBlockedError, match=r"'192.0.2.1'"):
        socket.gethostbyaddr("192.0.2.1")
    assert socket.gethostbyname("localhost").startswith("127.")
    assert [str(attempt) for attempt in guard.blocked] == ["example.com", "192.0.2.1"]


def test_the_audit_hook_does_nothing_while_no_guard_is_on() -> None:
    """The hook stays in the process for good (CPython cannot remove one); past the guard it passes
    every call, so nothing outside a guard is refused."""
    from harness import network

    with socket.socket() as sock:
        with block_network(), pytest.raises(NetworkBlockedError):
            network._audit("socket.connect", (sock, ("192.0.2.1", 80)))
        assert network._hooked == [True]
        assert network._audit("socket.connect", (sock, ("192.0.2.1", 80))) is None
        assert network._audit("socket.gethostbyname", ("example.com",)) is None
