"""Outbound HTTP that cannot be aimed at us: scheme, address and size checks (SSRF guard).

Used for ``liveness_data_url`` now and for callback/webhook URLs. The host is resolved once, every
address is checked, and the connection goes to the checked address (TLS still verifies the
name), so a DNS answer that changes between check and connect (rebinding) gains nothing.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import certifi
import urllib3

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
USER_AGENT = "antihack/0.1"

# Cloud metadata endpoints that are not covered by the link-local range.
METADATA_ADDRESSES = {
    ipaddress.ip_address("fd00:ec2::254"),
    ipaddress.ip_address("100.100.100.200"),
}


class UrlRefused(Exception):
    """The URL may not be fetched, or fetching it failed; ``reason`` says which."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class UrlUnresolvable(UrlRefused):
    """The host name has no address (now): refused, but not for what it points at."""


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str
    port: int
    path: str
    address: Address


def _forbidden(addr: Address) -> bool:
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return _forbidden(addr.ipv4_mapped)
    return (
        addr.is_private
        or addr.is_loopback
        or addr.is_link_local
        or addr.is_multicast
        or addr.is_reserved
        or addr.is_unspecified
        or addr in METADATA_ADDRESSES
    )


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
    addresses = [ipaddress.ip_address(info[4][0]) for info in infos]
    if not addresses:
        raise UrlUnresolvable(f"cannot resolve {parts.hostname}")
    if not allow_private:
        bad = [str(a) for a in addresses if _forbidden(a)]
        if bad:
            raise UrlRefused(
                f"{parts.hostname} resolves to a private or reserved address ({bad[0]})"
            )
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return Target(parts.scheme, parts.hostname, port, path, addresses[0])


def _pool(target: Target, timeout: urllib3.Timeout) -> urllib3.HTTPConnectionPool:
    """A one-connection pool aimed at the checked address (TLS still verifies the host name)."""
    if target.scheme == "https":
        return urllib3.HTTPSConnectionPool(
            str(target.address),
            target.port,
            timeout=timeout,
            retries=False,
            server_hostname=target.host,
            assert_hostname=target.host,
            cert_reqs="CERT_REQUIRED",
            ca_certs=certifi.where(),
        )
    return urllib3.HTTPConnectionPool(
        str(target.address), target.port, timeout=timeout, retries=False
    )


def _host_header(target: Target) -> str:
    host = target.host if ":" not in target.host else f"[{target.host}]"
    default = 443 if target.scheme == "https" else 80
    return host if target.port == default else f"{host}:{target.port}"


def fetch(
    url: str,
    *,
    allow_private: bool,
    connect_timeout: float = 5.0,
    read_timeout: float = 10.0,
    max_bytes: int,
) -> bytes:
    """GET a URL through the guard: no redirects, at most ``max_bytes``, a total deadline."""
    target = resolve(url, allow_private=allow_private)
    pool = _pool(target, urllib3.Timeout(connect=connect_timeout, read=read_timeout))
    deadline = time.monotonic() + connect_timeout + read_timeout
    try:
        resp = pool.urlopen(
            "GET",
            target.path,
            headers={"Host": _host_header(target), "User-Agent": USER_AGENT},
            redirect=False,
            preload_content=False,
        )
        try:
            if resp.status != 200:
                raise UrlRefused(f"the server answered HTTP {resp.status}")
            declared = resp.headers.get("Content-Length")
            if declared and declared.isdigit() and int(declared) > max_bytes:
                raise UrlRefused(f"the file is larger than {max_bytes} bytes")
            chunks: list[bytes] = []
            total = 0
            for chunk in resp.stream(65536):
                total += len(chunk)
                if total > max_bytes:
                    raise UrlRefused(f"the file is larger than {max_bytes} bytes")
                if time.monotonic() > deadline:
                    raise UrlRefused("the download took too long")
                chunks.append(chunk)
            return b"".join(chunks)
        finally:
            resp.release_conn()
    except urllib3.exceptions.HTTPError as exc:
        raise UrlRefused(f"download failed: {type(exc).__name__}") from None
    finally:
        pool.close()


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
    pool = _pool(target, urllib3.Timeout(total=timeout, connect=min(5.0, timeout)))
    try:
        resp = pool.urlopen(
            "POST",
            target.path,
            body=body,
            headers={
                **headers,
                "Host": _host_header(target),
                "User-Agent": USER_AGENT,
                "Content-Length": str(len(body)),
            },
            redirect=False,
            preload_content=False,
        )
        try:
            head = resp.read(max_response_bytes, decode_content=False)
        finally:
            resp.close()
        return Answer(resp.status, {k.lower(): v for k, v in resp.headers.items()}, head)
    except urllib3.exceptions.HTTPError as exc:
        raise UrlRefused(f"request failed: {type(exc).__name__}: {_brief(exc)}") from None
    finally:
        pool.close()


def _brief(exc: Exception) -> str:
    """urllib3's message without the connection repr before it, for an attempt log."""
    return str(exc).split(": ", 1)[-1][:200]
