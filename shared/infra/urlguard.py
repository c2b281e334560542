"""Outbound HTTP that cannot be aimed at us: scheme, address and size checks (SSRF guard).

Used for ``liveness_data_url``, callback URLs and webhook endpoints. The host is resolved once,
every address is checked, and the connection goes to the checked address (TLS still verifies the
name), so a DNS answer that changes between check and connect (rebinding) gains nothing.

Every exchange has one wall-clock deadline, connect to last byte: a server that trickles its
answer (one byte every few seconds restarts any per-read timeout) is cut off when it passes.
"""

from __future__ import annotations

import contextlib
import functools
import http.client
import ipaddress
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

import certifi

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
USER_AGENT = "antihack/0.1"
READ_SIZE = 65536

# Cloud metadata endpoints that are not covered by the link-local range.
METADATA_ADDRESSES = {
    ipaddress.ip_address("fd00:ec2::254"),
    ipaddress.ip_address("100.100.100.200"),
}
# Not global, whatever the running Python's ``is_global`` table says (3.11 calls these global):
# IPv4-compatible IPv6 (deprecated, RFC 4291), site-local (deprecated, RFC 3879) and local-use
# NAT64 (RFC 8215), which translates to whatever the local network decides.
NON_GLOBAL_NETWORKS = (
    ipaddress.ip_network("::/96"),
    ipaddress.ip_network("fec0::/10"),
    ipaddress.ip_network("64:ff9b:1::/48"),
)
# Well-known NAT64 (RFC 6052): the last 32 bits are the IPv4 address it reaches.
NAT64 = ipaddress.ip_network("64:ff9b::/96")


class UrlRefused(Exception):
    """The URL may not be fetched, or fetching it failed; ``reason`` says which."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class UrlUnresolvable(UrlRefused):
    """The host name has no address (now): refused, but not for what it points at."""


class _DeadlinePassed(UrlRefused):
    """The exchange was cut off at its wall-clock deadline."""


class _Failed(UrlRefused):
    """The connection or the HTTP exchange failed."""


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str
    port: int
    path: str
    address: Address


def embedded_ipv4(addr: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address leads to: mapped, 6to4, Teredo, NAT64."""
    found: list[ipaddress.IPv4Address] = []
    if addr.ipv4_mapped is not None:
        found.append(addr.ipv4_mapped)
    if addr.sixtofour is not None:
        found.append(addr.sixtofour)
    if addr.teredo is not None:
        found.extend(addr.teredo)  # the server and the client
    if addr in NAT64:
        found.append(ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF))
    return found


def forbidden(addr: Address) -> bool:
    """True unless ``addr`` is a global unicast address and so is every IPv4 address it embeds.

    An allow-list, not a deny-list: ``is_global`` is false for private, loopback, link-local,
    shared (100.64.0.0/10, carrier-grade NAT), benchmarking, reserved and documentation ranges,
    so a range nobody listed is refused rather than let through.
    """
    if addr in METADATA_ADDRESSES or addr.is_multicast or not addr.is_global:
        return True
    if isinstance(addr, ipaddress.IPv6Address):
        if any(addr in net for net in NON_GLOBAL_NETWORKS):
            return True
        return any(forbidden(v4) for v4 in embedded_ipv4(addr))
    return False


def resolve(url: str, *, allow_private: bool) -> Target:
    """Check the URL's form and resolve it to one permitted address."""
    if len(url) > 2048:
        raise UrlRefused("URL longer than 2048 characters")
    if any(c <= " " or c == "\x7f" for c in url):
        # urlsplit silently drops tabs and line breaks, so the URL checked and contacted would
        # not be the one stored and shown (and CR/LF is how headers get injected).
        raise UrlRefused("URL contains whitespace or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UrlRefused(f"malformed URL: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise UrlRefused("only http and https URLs are allowed")
    if not parts.hostname:
        raise UrlRefused("URL has no host")
    if parts.username or parts.password:
        raise UrlRefused("credentials in URLs are not allowed")
    port = port or (443 if parts.scheme == "https" else 80)
    try:
        infos = socket.getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise UrlUnresolvable(f"cannot resolve {parts.hostname}: {exc}") from None
    try:
        addresses = [ipaddress.ip_address(info[4][0]) for info in infos]
    except ValueError:
        raise UrlRefused(
            f"{parts.hostname} resolves to an address this guard cannot read"
        ) from None
    if not addresses:
        raise UrlUnresolvable(f"cannot resolve {parts.hostname}")
    if not allow_private:
        bad = [str(a) for a in addresses if forbidden(a)]
        if bad:
            raise UrlRefused(
                f"{parts.hostname} resolves to a private or reserved address, one that is not "
                f"global unicast ({bad[0]})"
            )
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return Target(parts.scheme, parts.hostname, port, path, addresses[0])


def _host_header(target: Target) -> str:
    host = target.host if ":" not in target.host else f"[{target.host}]"
    default = 443 if target.scheme == "https" else 80
    return host if target.port == default else f"{host}:{target.port}"


@functools.cache
def _tls_context() -> ssl.SSLContext:
    return ssl.create_default_context(cafile=certifi.where())


class _Deadline:
    """Shuts the connection's socket down when the wall-clock deadline passes.

    A socket timeout bounds one ``recv``; a server that sends a byte just before each timeout
    keeps the exchange alive for ever, in the status line, the headers or the body alike. A
    timer that shuts the socket down makes the blocked read return at the deadline, whatever
    phase it is in (TLS handshake included), without a thread of ours per read.
    """

    def __init__(self, seconds: float) -> None:
        self.at = time.monotonic() + seconds
        self.passed = False
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._cut)
        self._timer.daemon = True

    def remaining(self) -> float:
        left = self.at - time.monotonic()
        if left <= 0:
            self.passed = True
            raise _DeadlinePassed("deadline passed")
        return left

    def watch(self, sock: socket.socket) -> None:
        with self._lock:
            self._sock = sock
            if self.passed:
                self._shutdown()

    def _shutdown(self) -> None:
        if self._sock is not None:
            # socket.socket's own shutdown, not SSLSocket's: that one also drops the TLS
            # object another thread is reading with.
            with contextlib.suppress(OSError):
                socket.socket.shutdown(self._sock, socket.SHUT_RDWR)

    def _cut(self) -> None:
        with self._lock:
            self.passed = True
            self._shutdown()

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        self._timer.start()
        try:
            yield
        finally:
            self._timer.cancel()


def _connect(target: Target, deadline: _Deadline, connect_timeout: float) -> socket.socket:
    sock = socket.create_connection(
        (str(target.address), target.port), timeout=min(connect_timeout, deadline.remaining())
    )
    deadline.watch(sock)
    sock.settimeout(deadline.remaining())
    if target.scheme != "https":
        return sock
    tls = _tls_context().wrap_socket(
        sock, server_hostname=target.host, do_handshake_on_connect=False
    )
    deadline.watch(tls)  # wrap_socket took the descriptor over from ``sock``
    tls.do_handshake()
    return tls


@contextlib.contextmanager
def _exchange(
    target: Target,
    method: str,
    body: bytes | None,
    headers: dict[str, str],
    *,
    seconds: float,
    connect_timeout: float,
) -> Iterator[tuple[http.client.HTTPResponse, _Deadline]]:
    """One request on a fresh connection to the checked address, all of it within ``seconds``."""
    deadline = _Deadline(seconds)
    conn = http.client.HTTPConnection(str(target.address), target.port)
    with deadline.running():
        try:
            conn.sock = _connect(target, deadline, connect_timeout)
            conn.request(
                method,
                target.path,
                body=body,
                headers={
                    **headers,
                    "Host": _host_header(target),
                    "User-Agent": USER_AGENT,
                    "Connection": "close",
                },
            )
            response = conn.getresponse()
            yield response, deadline
            if deadline.passed:  # a shut socket reads as the end of the answer
                raise _DeadlinePassed("deadline passed")
        except (OSError, http.client.HTTPException) as exc:
            if deadline.passed:
                raise _DeadlinePassed("deadline passed") from None
            raise _Failed(f"{type(exc).__name__}: {_brief(exc)}") from None
        finally:
            conn.close()


def fetch(
    url: str,
    *,
    allow_private: bool,
    timeout: float = 10.0,
    connect_timeout: float = 5.0,
    max_bytes: int,
) -> bytes:
    """GET a URL through the guard: no redirects, at most ``max_bytes``, and the whole download
    (connect, headers, body) within ``timeout`` seconds of wall-clock time."""
    target = resolve(url, allow_private=allow_private)
    try:
        with _exchange(
            target, "GET", None, {}, seconds=timeout, connect_timeout=connect_timeout
        ) as (resp, deadline):
            if resp.status != 200:
                raise UrlRefused(f"the server answered HTTP {resp.status}")
            declared = resp.getheader("Content-Length")
            if declared and declared.isdigit() and int(declared) > max_bytes:
                raise UrlRefused(f"the file is larger than {max_bytes} bytes")
            chunks: list[bytes] = []
            total = 0
            while chunk := resp.read1(READ_SIZE):
                total += len(chunk)
                if total > max_bytes:
                    raise UrlRefused(f"the file is larger than {max_bytes} bytes")
                deadline.remaining()
                chunks.append(chunk)
            return b"".join(chunks)
    except _DeadlinePassed:
        raise UrlRefused(f"the download did not finish within its {timeout:g} s deadline") from None
    except _Failed as exc:
        raise UrlRefused(f"download failed: {exc.reason}") from None


@dataclass(frozen=True)
class Answer:
    """What a POST got back: the status, the headers, and at most the first bytes of the body."""

    status: int
    headers: dict[str, str]
    body: bytes


def post(
    url: str,
    body: bytes,
    headers: dict[str, str],
    *,
    allow_private: bool,
    timeout: float = 15.0,
    max_response_bytes: int = 4096,
) -> Answer:
    """POST through the guard: no redirects, ``timeout`` for the whole exchange, and only the
    first ``max_response_bytes`` of the answer are read (a receiver cannot make us buffer more).

    Raises ``UrlRefused`` when the URL is refused or the exchange fails.
    """
    target = resolve(url, allow_private=allow_private)
    try:
        with _exchange(
            target,
            "POST",
            body,
            {**headers, "Content-Length": str(len(body))},
            seconds=timeout,
            connect_timeout=min(5.0, timeout),
        ) as (resp, _deadline):
            head = resp.read(max_response_bytes)
            return Answer(resp.status, {k.lower(): v for k, v in resp.getheaders()}, head)
    except _DeadlinePassed:
        raise UrlRefused(f"request failed: no answer within its {timeout:g} s deadline") from None
    except _Failed as exc:
        raise UrlRefused(f"request failed: {exc.reason}") from None


def _brief(exc: Exception) -> str:
    """An exception's message, short, for a reason or an attempt log."""
    return str(exc)[:200]
