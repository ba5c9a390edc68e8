"""SSRF protection for tenant-supplied callback URLs.

A tenant chooses where we POST, so without a guard a callback URL could make our workers
reach internal services or the cloud metadata endpoint (169.254.169.254). Two layers:

- `check_url` when the URL is saved (and before use): scheme, host, no userinfo, and every
  address the host resolves to must be public. Gives the tenant a clear error early.
- `guarded_transport` for the httpx client that sends: it resolves and checks the host at
  connection time and connects to exactly the address it checked. A DNS answer that
  changes between the two (rebinding) therefore cannot steer a connection inward, and the
  check applies to what httpx actually dials, whatever its URL parser made of the host.
  Redirects, if a caller enables them, pass through the same transport.

Numeric hosts that browsers and `inet_aton` accept (`2130706433`, `0x7f.1`, `127.1`,
`0177.0.0.1`) are decoded here the way the system resolver would, so they are checked as
the address they really name rather than passed to DNS.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Callable, Iterable
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from urllib.parse import urlsplit

import httpcore
import httpx

Resolver = Callable[[str, int], list[str]]
IPAddress = IPv4Address | IPv6Address

_SHARED_ADDRESS_SPACE = IPv4Network("100.64.0.0/10")  # RFC 6598 carrier-grade NAT
_CLOUD_METADATA = IPv4Address("169.254.169.254")
_NAT64 = IPv6Network("64:ff9b::/96")  # embeds an IPv4 address in its low 32 bits
_NUMERIC_LABEL = re.compile(r"0[xX][0-9a-fA-F]*|[0-9]+")
_DEFAULT_PORTS = {"http": 80, "https": 443}
# Characters urllib tolerates in a netloc but other parsers read differently.
_AMBIGUOUS_CHARS = re.compile(r"[\\\s\x00-\x1f\x7f]")


class UnsafeURL(ValueError):
    """A callback URL we refuse to send to; the message says why."""


def check_url(url: str, *, allow_private: bool, resolve: Resolver | None = None) -> None:
    """Raise `UnsafeURL` unless `url` is an http(s) URL whose host is publicly routable.

    `allow_private` (development only) lets non-public addresses through; the URL must
    still be well formed and its host must resolve. `resolve(host, port)` returns address
    strings; it defaults to `socket.getaddrinfo`, and tests inject their own.
    """
    if _AMBIGUOUS_CHARS.search(url):
        raise UnsafeURL("URL contains whitespace, control characters or a backslash")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UnsafeURL(f"URL is malformed: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise UnsafeURL(f"URL scheme must be http or https, not {parts.scheme or 'missing'!r}")
    # `user:pass@` hides the real host from people reading the URL, and parsers disagree on
    # where userinfo ends; callbacks authenticate with the signature instead.
    if "@" in parts.netloc:
        raise UnsafeURL("URL must not contain credentials (user:password@)")
    host = parts.hostname
    if not host:
        raise UnsafeURL("URL has no host")
    resolved_addresses(
        host,
        port or _DEFAULT_PORTS[scheme],
        allow_private=allow_private,
        resolve=resolve or system_resolve,
    )


def resolved_addresses(
    host: str, port: int, *, allow_private: bool, resolve: Resolver
) -> list[str]:
    """The addresses `host` names, each checked; raises `UnsafeURL` if any is refused.

    All of them must pass, not just the first: the client may use any of them.
    """
    addresses = _addresses(host, port, allow_private=allow_private, resolve=resolve)
    if not allow_private:
        for address in addresses:
            reason = refusal_reason(address)
            if reason:
                raise UnsafeURL(
                    f"host {host!r} resolves to {address}, {reason}; callback URLs must "
                    "point to a public address"
                )
    return list(dict.fromkeys(str(a) for a in addresses))


def refusal_reason(address: IPAddress) -> str | None:
    """Why `address` is not a safe callback destination, or None if it is public."""
    embedded = _embedded_ipv4(address) if isinstance(address, IPv6Address) else None
    if embedded is not None:
        reason = refusal_reason(embedded)
        return f"which embeds {embedded}, {reason}" if reason else None
    if address == _CLOUD_METADATA:
        return "the cloud metadata endpoint"
    checks: Iterable[tuple[bool, str]] = (
        (address.is_loopback, "a loopback address"),
        (address.is_unspecified, "the unspecified address"),
        (address.is_link_local, "a link-local address"),
        (isinstance(address, IPv4Address) and address in _SHARED_ADDRESS_SPACE,
         "in the shared address space 100.64.0.0/10"),
        (address.is_multicast, "a multicast address"),
        (address.is_reserved, "a reserved address"),
        (address.is_private, "a private address"),
        (isinstance(address, IPv6Address) and address.is_site_local,
         "a site-local address"),
        # Catches the rest ipaddress knows to be non-routable (documentation, benchmarking).
        (not address.is_global, "not a globally routable address"),
    )  # fmt: skip
    return next((reason for refused, reason in checks if refused), None)


def system_resolve(host: str, port: int) -> list[str]:
    return [info[4][0] for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)]


class GuardedNetworkBackend(httpcore.NetworkBackend):
    """Resolves and checks each host at connect time, then dials the checked address.

    TLS still verifies the certificate against the URL's host name: httpcore takes the
    SNI/verification name from the request, not from the address we connect to.
    """

    def __init__(
        self,
        *,
        allow_private: bool,
        resolve: Resolver | None = None,
        inner: httpcore.NetworkBackend | None = None,
    ) -> None:
        self._allow_private = allow_private
        self._resolve = resolve or system_resolve
        self._inner = inner or httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        if self._allow_private:
            return self._inner.connect_tcp(host, port, timeout, local_address, socket_options)
        addresses = resolved_addresses(host, port, allow_private=False, resolve=self._resolve)
        # Try each checked address in turn, as socket.create_connection would; the last
        # one's error is the one reported.
        for address in addresses[:-1]:
            try:
                return self._inner.connect_tcp(
                    address, port, timeout, local_address, socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout):
                continue
        return self._inner.connect_tcp(addresses[-1], port, timeout, local_address, socket_options)

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        raise UnsafeURL("unix sockets are not allowed for callbacks")

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


class _GuardedTransport(httpx.HTTPTransport):
    def __init__(self, backend: httpcore.NetworkBackend) -> None:
        ssl_context = httpx.create_ssl_context()
        limits = httpx.Limits(max_connections=100, max_keepalive_connections=20)
        super().__init__(verify=ssl_context, trust_env=False, limits=limits)
        # HTTPTransport has no network-backend option, so the pool it built is replaced by
        # an equivalent one (no proxy, HTTP/1.1) that dials through the guard. A test sends
        # a request through it, so an httpx change that bypasses this fails loudly.
        self._pool = httpcore.ConnectionPool(
            ssl_context=ssl_context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=backend,
        )


def guarded_transport(
    allow_private: bool,
    *,
    resolve: Resolver | None = None,
    network_backend: httpcore.NetworkBackend | None = None,
) -> httpx.HTTPTransport:
    """An httpx transport whose every new connection goes through `GuardedNetworkBackend`.

    Use it as `httpx.Client(transport=guarded_transport(False))`. Passing a transport also
    stops httpx from picking up proxy settings from the environment, which would otherwise
    dial the proxy instead of the checked address. Do not add `mounts=` or `proxy=` to
    that client: those routes would bypass the guard. Refusals raise `UnsafeURL` out of
    the request call (it is not an `httpx.HTTPError`). `network_backend` is what opens
    the sockets (tests pass a fake).
    """
    return _GuardedTransport(
        GuardedNetworkBackend(allow_private=allow_private, resolve=resolve, inner=network_backend)
    )


def _addresses(host: str, port: int, *, allow_private: bool, resolve: Resolver) -> list[IPAddress]:
    host = host.strip("[]").lower()
    literal = _literal_address(host)
    if literal is not None:
        return [literal]
    name = host.rstrip(".")
    # RFC 6761: these names are loopback by definition, whatever a resolver says.
    if not allow_private and (name == "localhost" or name.endswith(".localhost")):
        raise UnsafeURL(f"host {host!r} is a loopback name")
    try:
        raw = resolve(host, port)
    except (OSError, UnicodeError) as exc:
        raise UnsafeURL(f"could not resolve host {host!r}: {exc}") from None
    if not raw:
        raise UnsafeURL(f"could not resolve host {host!r}: no addresses")
    addresses = []
    for item in raw:
        try:
            addresses.append(ipaddress.ip_address(item.split("%", 1)[0]))
        except ValueError:
            raise UnsafeURL(f"resolver returned {item!r} for {host!r}, not an IP") from None
    return addresses


def _literal_address(host: str) -> IPAddress | None:
    # An IPv6 zone id (`%25eth0` in URLs) says which interface, not which address.
    bare = host.split("%", 1)[0]
    try:
        return ipaddress.ip_address(bare)
    except ValueError:
        pass
    return _legacy_ipv4(host)


def _legacy_ipv4(host: str) -> IPv4Address | None:
    """Decode inet_aton-style IPv4 (1-4 parts, decimal/0x hex/0-prefixed octal)."""
    labels = host.split(".")
    if len(labels) > 1 and labels[-1] == "":
        labels.pop()
    if not _NUMERIC_LABEL.fullmatch(labels[-1]):
        return None  # a DNS name
    # Ends in a number but is not a valid address: resolvers and browsers disagree about
    # such hosts, so refuse rather than guess (the WHATWG URL standard refuses too).
    invalid = UnsafeURL(f"host {host!r} looks numeric but is not a valid IPv4 address")
    if len(labels) > 4:
        raise invalid
    values = []
    for label in labels:
        if not _NUMERIC_LABEL.fullmatch(label):
            raise invalid
        try:
            if label[:2].lower() == "0x":
                values.append(int(label[2:], 16))
            elif len(label) > 1 and label.startswith("0"):
                values.append(int(label[1:], 8))
            else:
                values.append(int(label, 10))
        except ValueError:
            raise invalid from None
    # Leading parts are one byte each; the last fills the remaining bytes.
    *head, last = values
    if any(v > 0xFF for v in head) or last >= 256 ** (4 - len(head)):
        raise invalid
    number = last
    for index, value in enumerate(head):
        number |= value << (8 * (3 - index))
    return IPv4Address(number)


def _embedded_ipv4(address: IPv6Address) -> IPv4Address | None:
    # Forms that route to an IPv4 host: checked as that host, so ::ffff:127.0.0.1 is
    # loopback and ::ffff:8.8.8.8 is public.
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in _NAT64:
        return IPv4Address(int(address) & 0xFFFFFFFF)
    if address.sixtofour is not None:
        return address.sixtofour
    # Teredo (2001::/32) is left to the checks on the IPv6 address itself, which refuse it.
    return None
