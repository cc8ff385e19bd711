"""Keep tests off the network: a connection to anything but loopback fails at once.

    with block_network(allow=["10.0.0.0/8"]) as guard:
        httpx.get("https://api.example.com")        # NetworkBlockedError, before any DNS query
        await asyncio.open_connection("127.0.0.1", port)   # loopback: allowed
    guard.assert_nothing_blocked()                  # fails if the code under test swallowed an error

While a guard is on, `socket.getaddrinfo` (and `gethostbyname`, `gethostbyaddr`) refuses host
names that are not allowed before any DNS query, and `socket.socket.connect`/`connect_ex`, `sendto`
and `sendmsg` refuse IP addresses that are not, also when called past the `socket.socket` class
(`_socket.socket.connect`, `super()`: an audit hook checks them where CPython reports them), so the failure is immediate (no DNS lookup, no SYN, no timeout) whichever library made
the call: httpx and httpx2 (sync, and async through anyio), aiohttp (with its default threaded
resolver), requests/urllib3, raw sockets, and asyncio streams, whose `loop.getaddrinfo` runs
`socket.getaddrinfo` in an executor and whose `sock_connect` calls `sock.connect`.
The error is a `NetworkBlockedError`, which is not an `OSError`: retry loops that catch connection
errors (`OSError`, `httpx.TransportError`, `aiohttp.ClientError`) let it through. Each refused
attempt is also recorded in `guard.blocked`, for code that swallows it with `except Exception`.

Always allowed: Unix sockets (and every family but IPv4 and IPv6), loopback addresses
(127.0.0.0/8, ::1, ::ffff:127.0.0.0/104), the names `localhost` and `*.localhost`, and looking
up the unspecified addresses `0.0.0.0` and `::` (or no host) to bind a server.

Limitations:

* The patches are process-global: a guard blocks every thread while it is on.
* uvloop's event loop connects in C without `socket.socket.connect`: only host names (through
  `socket.getaddrinfo`) are refused there, not connections to IP addresses.
* aiodns (c-ares) resolves names without `socket.getaddrinfo`: such a name is refused at connect
  time, by its IP address, after the DNS query.
* `socket.getnameinfo` is not guarded.
* Child processes (`subprocess`, `multiprocessing`) are not guarded: the guard lives in this
  process. Run what they reach on loopback, or mock it in the child.
* anyio (under httpx.AsyncClient) connects to an IP address inside a task group, so a refused IP
  literal surfaces as an `ExceptionGroup` holding the `NetworkBlockedError`; names are refused
  before that and raise the error itself.
* A refused `connect` closes the socket: callers such as `socket.create_connection` only clean up
  after an `OSError`, and would leak it.
* Replacing `socket.getaddrinfo` or a `socket.socket` method while a guard is on (a fake resolver
  installed with monkeypatch, say) sets the guard's check aside for that function until it is undone.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, NoReturn

from harness._guards import GuardStack
from harness.exceptions import NetworkBlockedError

if TYPE_CHECKING:
    from typing import Self

__all__ = ["BlockedConnection", "NetworkGuard", "block_network"]

Call = Literal["connect", "getaddrinfo", "sendto"]
_Address = ipaddress.IPv4Address | ipaddress.IPv6Address
_Network = ipaddress.IPv4Network | ipaddress.IPv6Network

_LABEL = r"(?!-)[a-z0-9_-]{1,63}(?<!-)"  # underscores: container names such as "my_db" resolve
_HOSTNAME = re.compile(rf"{_LABEL}(\.{_LABEL})*", re.IGNORECASE)
_SERVICES = {"http": 80, "https": 443}
_METHODS = ("connect", "connect_ex", "sendto", "sendmsg")
_MISSING = object()

_real: dict[str, Callable[..., Any]] = {}  # what the patches call through to
_saved: dict[str, object] = {}  # the socket.socket.__dict__ entries the patches replaced, or _MISSING


@dataclass(frozen=True)
class BlockedConnection:
    """One attempt the guard refused: the host (a name or an IP address), the port, and the call.

    `call` is "getaddrinfo" for a host name, "connect" for `connect` and `connect_ex`, and "sendto"
    for `sendto` and `sendmsg`. `port` is None when the caller gave none, or a service name other
    than "http" and "https".

    Usage:

    ```python
    with block_network() as guard:
        ...
    assert [str(attempt) for attempt in guard.blocked] == ["api.example.com:443"]
    ```
    """

    host: str
    port: int | None
    call: Call

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port is None else f"{host}:{self.port}"


class NetworkGuard:
    """Refuses connections to hosts that are not loopback or allowed while it is on; see `block_network`.

    Guards nest (a guard may also be entered again while it is on): an inner guard adds its `allow`
    entries to the outer ones', and leaving it restores the outer rules. The socket patches go in
    when the outermost guard starts and come out when it stops. A refused attempt is recorded in the
    `blocked` list of the innermost guard only, so a test that expects a refusal under an outer
    guard (the plugin's) opens a guard of its own and leaves the outer one clean.

    Usage:

    ```python
    with block_network(allow=["db.internal"]) as guard:
        await service.sync()
    guard.assert_nothing_blocked()
    ```
    """

    def __init__(self, allow: Iterable[str] = ()) -> None:
        if isinstance(allow, str | bytes):
            msg = f"allow takes a list of hosts, got the string {allow!r}: write allow=[{allow!r}]."
            raise TypeError(msg)
        self.allow: tuple[str, ...] = ()
        self.blocked: list[BlockedConnection] = []
        self._names: frozenset[str] = frozenset()
        self._networks: tuple[_Network, ...] = ()
        self._resolved: set[_Address] = set()  # what allowed names resolved to: connect() sees these
        self.admit(*allow)

    def __repr__(self) -> str:
        return f"<NetworkGuard allow={list(self.allow)!r} blocked={len(self.blocked)}>"

    def admit(self, *entries: str) -> None:
        """Allow more hosts, IP addresses or CIDR networks, from now on (the guard may be on).

        Usage:

        ```python
        guard.admit("db.internal")   # the test database's server, known once its URL is
        ```
        """
        rules = [_parse_rule(entry) for entry in entries]
        self._names |= {rule for rule in rules if isinstance(rule, str)}
        self._networks += tuple(rule for rule in rules if not isinstance(rule, str))
        self.allow += entries

    def assert_nothing_blocked(self) -> None:
        """Raise NetworkBlockedError listing the attempts this guard refused, if there were any.

        Code under test that catches `Exception` hides the error the guard raised; this brings it
        back, one `- host:port` line per destination.

        Usage:

        ```python
        with block_network() as guard:
            await service.sync()   # says "offline mode" instead of raising
        guard.assert_nothing_blocked()
        ```
        """
        __tracebackhide__ = True
        if not self.blocked:
            return
        attempts = list(dict.fromkeys(str(attempt) for attempt in self.blocked))
        hosts = ", ".join(f'"{host}"' for host in dict.fromkeys(attempt.host for attempt in self.blocked))
        bullets = "\n".join(f"- {attempt}" for attempt in attempts)
        msg = (
            "harness blocked connections that the code under test may have hidden with "
            f"`except Exception`:\n{bullets}\n\n"
            "Mock these services with a harness.MockApi, or allow the hosts with "
            f"@pytest.mark.allow_network({hosts})."
        )
        raise NetworkBlockedError(msg)

    def __enter__(self) -> Self:
        _guards.push(self)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        _guards.pop(self)

    async def __aenter__(self) -> Self:
        return self.__enter__()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.__exit__(exc_type, exc, tb)

    def _admits(self, address: _Address) -> bool:
        mapped = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else None
        return address in self._resolved or any(
            address in network or (mapped is not None and mapped in network) for network in self._networks
        )


def block_network(*, allow: Iterable[str] = ()) -> NetworkGuard:
    """A guard that makes connections to hosts other than loopback fail at once while it is on.

    Use it with `with` (in sync or async code) or `async with`. `allow` adds hosts the code may
    reach: host names (exact, case-insensitive: "api.example.com" does not allow
    "eu.api.example.com"), IP addresses ("10.0.0.5", "::1") and CIDR networks ("10.0.0.0/8").
    Entries take no port and no scheme: an allowed host is allowed on every port.

    Usage:

    ```python
    with block_network(allow=["db.internal", "10.0.0.0/8"]):
        requests.get("https://api.example.com")   # raises NetworkBlockedError
    ```
    """
    return NetworkGuard(allow)


# -- allow entries ---------------------------------------------------------------------------------


def _parse_rule(entry: object) -> str | _Network:
    if not isinstance(entry, str):
        msg = f"allow entries are strings, got {type(entry).__name__}: {entry!r}."
        raise TypeError(msg)
    try:
        return ipaddress.ip_network(entry, strict=False)  # an address is a network of one
    except ValueError:
        pass
    name = _name(entry)
    labels = name.split(".")
    if not _HOSTNAME.fullmatch(name) or len(name) > 253 or labels[-1].isdigit():
        msg = (
            f"{entry!r} is not a host name, an IP address or a CIDR network. Write allow entries as "
            "'api.example.com', '10.0.0.5' or '10.0.0.0/8' (no scheme, no port)."
        )
        raise ValueError(msg)
    return name


def _name(host: str) -> str:
    """The form names are compared in: lower case, no root dot, IDNA-encoded (as anyio sends them)."""
    name = host.lower().removesuffix(".")
    try:
        return name.encode("idna").decode("ascii")
    except UnicodeError:
        return name


# -- judging a destination -------------------------------------------------------------------------


def _ip(host: str) -> _Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _is_loopback(address: _Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback  # ::ffff:127.0.0.1 (not loopback to ipaddress on 3.11)
    return address.is_loopback


def is_loopback_ip(host: str) -> bool:
    """Whether `host` is a loopback IP address (brackets of a URL's IPv6 host allowed)."""
    address = _ip(host.strip("[]"))
    return address is not None and _is_loopback(address)


def is_loopback_host(host: str) -> bool:
    """Whether `host` is always local: a loopback IP address, `localhost` or a `*.localhost` name."""
    name = _name(host)
    return name == "localhost" or name.endswith(".localhost") or is_loopback_ip(host)


def _allowed(guards: tuple[NetworkGuard, ...], host: str, *, lookup: bool) -> bool:
    address = _ip(host)
    if address is None:
        return is_loopback_host(host) or any(_name(host) in g._names for g in guards)
    if _is_loopback(address) or (lookup and address.is_unspecified):
        return True
    return any(guard._admits(address) for guard in guards)


def _port(port: object) -> int | None:
    if isinstance(port, bytes):
        port = port.decode("ascii", "replace")
    if isinstance(port, int):
        return port
    if isinstance(port, str):
        if port.isdigit():
            return int(port)
        return _SERVICES.get(port.lower())
    return None


# Well-known ports of services that do not speak HTTP: a MockApi cannot stand in for them.
_NOT_HTTP = {
    5432: "PostgreSQL",
    3306: "MySQL",
    6379: "Redis",
    11211: "memcached",
    27017: "MongoDB",
    5672: "RabbitMQ",
    9092: "Kafka",
    25: "SMTP",
    587: "SMTP",
    465: "SMTP",
    2181: "ZooKeeper",
}


def _message(attempt: BlockedConnection) -> str:
    where = repr(attempt.host) if attempt.port is None else f"{attempt.host!r} port {attempt.port}"
    if attempt.port in _NOT_HTTP:
        service = _NOT_HTTP[attempt.port]
        return (
            f"harness blocked a connection to {where} (the {service} port): tests must not reach the network.\n"
            f"A harness.MockApi mocks HTTP APIs, not {service}: run {service} for the tests on loopback "
            f"(127.0.0.1), replace the client with a fake in the test, or allow the host with "
            f'@pytest.mark.allow_network("{attempt.host}").'
        )
    scheme = "http" if attempt.port == 80 else "https"
    host = f"[{attempt.host}]" if ":" in attempt.host else attempt.host
    netloc = host if attempt.port in (None, 80, 443) else f"{host}:{attempt.port}"
    return (
        f"harness blocked a connection to {where}: tests must not reach the network.\n"
        f"Mock the service with a harness.MockApi whose base_url is '{scheme}://{netloc}', "
        f'or allow the host with @pytest.mark.allow_network("{attempt.host}").'
    )


def _block(guards: tuple[NetworkGuard, ...], host: str, port: object, call: Call) -> NoReturn:
    attempt = BlockedConnection(host, _port(port), call)
    with _guards.lock:
        guards[-1].blocked.append(attempt)
    raise NetworkBlockedError(_message(attempt))


def _check_address(sock: socket.socket, address: object, call: Call) -> None:
    guards = _guards.active
    if not guards or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return  # Unix sockets, netlink, ...
    if not isinstance(address, tuple) or len(address) < 2:
        return  # not an IP address: socket itself rejects it
    host, port = address[0], address[1]
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    if not isinstance(host, str) or _allowed(guards, host, lookup=False):
        return
    if call == "connect":
        sock.close()  # callers (socket.create_connection, urllib3) only close it after an OSError
    _block(guards, host, port, call)


# -- the patches -----------------------------------------------------------------------------------


def _guarded_getaddrinfo(host: object, port: object, *args: Any, **kwargs: Any) -> Any:
    guards = _guards.active
    text = host.decode("ascii", "replace") if isinstance(host, bytes) else host
    if not guards or not isinstance(text, str) or text == "":
        return _real["getaddrinfo"](host, port, *args, **kwargs)  # None and "": no lookup, binding
    if not _allowed(guards, text, lookup=True):
        _block(guards, text, port, "getaddrinfo")
    infos = _real["getaddrinfo"](host, port, *args, **kwargs)
    listing = [guard for guard in guards if _name(text) in guard._names]
    if listing:  # connect() will see the addresses, not the name
        addresses = {address for *_, sockaddr in infos if (address := _ip(str(sockaddr[0]))) is not None}
        with _guards.lock:
            for guard in listing:
                guard._resolved.update(addresses)
    return infos


def _guarded_connect(self: socket.socket, address: Any, /) -> None:
    _check_address(self, address, "connect")
    _real["connect"](self, address)


def _guarded_connect_ex(self: socket.socket, address: Any, /) -> int:
    _check_address(self, address, "connect")
    result: int = _real["connect_ex"](self, address)
    return result


def _guarded_sendto(self: socket.socket, *args: Any) -> int:
    if len(args) >= 2:  # sendto(data, address) or sendto(data, flags, address)
        _check_address(self, args[-1], "sendto")
    result: int = _real["sendto"](self, *args)
    return result


def _guarded_sendmsg(self: socket.socket, *args: Any) -> int:
    if len(args) >= 4 and args[3] is not None:  # sendmsg(buffers, ancdata, flags, address)
        _check_address(self, args[3], "sendto")
    result: int = _real["sendmsg"](self, *args)
    return result


_PATCHES: dict[str, Callable[..., Any]] = {
    "connect": _guarded_connect,
    "connect_ex": _guarded_connect_ex,
    "sendto": _guarded_sendto,
    "sendmsg": _guarded_sendmsg,
}


def _audit(event: str, args: tuple[Any, ...]) -> None:
    """The same checks where CPython's socket module itself reports a call (an audit event), so code
    that reaches past the patched methods (`_socket.socket.connect(sock, ...)`,
    `super(socket.socket, sock).connect(...)`) is refused too, as are `gethostbyname` and
    `gethostbyaddr`. Added once, as audit hooks cannot be removed; it does nothing while no guard is on.
    """
    if not event.startswith("socket.") or not (guards := _guards.active):
        return
    if event == "socket.connect":
        _check_address(args[0], args[1], "connect")
    elif event in ("socket.sendto", "socket.sendmsg"):
        _check_address(args[0], args[1], "sendto")
    elif (
        event in ("socket.gethostbyname", "socket.gethostbyaddr")
        and isinstance(args[0], str)
        and not _allowed(guards, args[0], lookup=True)
    ):
        _block(guards, args[0], None, "getaddrinfo")


_hooked: list[bool] = []  # whether _audit is in (once per process)


def _install() -> None:
    if not _hooked:
        sys.addaudithook(_audit)
        _hooked.append(True)
    # A patch someone put back after the guard stopped (monkeypatch undoing a change it made while
    # the guard was on) must not become its own original: keep the originals from last time.
    if socket.getaddrinfo is not _guarded_getaddrinfo:
        _real["getaddrinfo"] = socket.getaddrinfo
    for name in _METHODS:
        current = socket.socket.__dict__.get(name, _MISSING)  # _MISSING: inherited from _socket.socket
        if current is not _PATCHES[name]:
            _real[name], _saved[name] = getattr(socket.socket, name), current
    socket.getaddrinfo = _guarded_getaddrinfo
    for name in _METHODS:
        setattr(socket.socket, name, _PATCHES[name])


def _uninstall() -> None:
    socket.getaddrinfo = _real["getaddrinfo"]
    for name in _METHODS:
        if _saved[name] is _MISSING:
            delattr(socket.socket, name)
        else:
            setattr(socket.socket, name, _saved[name])


_guards: GuardStack[NetworkGuard] = GuardStack(_install, _uninstall)
