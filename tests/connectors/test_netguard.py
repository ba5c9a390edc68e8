"""SSRF guard for callback URLs. An injected resolver keeps these tests off DNS and the network."""

from __future__ import annotations

import socket

import httpcore
import httpx
import pytest

from connectors.netguard import (
    GuardedNetworkBackend,
    UnsafeURL,
    check_url,
    guarded_transport,
)

PUBLIC_V4 = "93.184.216.34"
PUBLIC_V6 = "2606:4700:4700::1111"
DNS = {
    "example.com": [PUBLIC_V4],
    "dual.example": [PUBLIC_V4, PUBLIC_V6],
    "v6.example": [PUBLIC_V6],
    "localhost": ["127.0.0.1", "::1"],
    "internal.example": ["10.0.0.5"],
    "metadata.example": ["169.254.169.254"],
    "cgnat.example": ["100.64.1.1"],
    # One public and one private answer: any refused address refuses the host.
    "mixed.example": [PUBLIC_V4, "127.0.0.1"],
    "zoned.example": ["fe80::1%eth0"],
}


def fake_resolve(host: str, port: int) -> list[str]:
    try:
        return list(DNS[host])
    except KeyError:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known") from None


REFUSED = [
    # loopback, by name and by address in every spelling
    ("http://localhost/", "loopback name"),
    ("http://LOCALHOST./", "loopback name"),
    ("http://api.localhost:8080/", "loopback name"),
    ("http://127.0.0.1/", "loopback"),
    ("http://127.1/", "loopback"),
    ("http://127.0.0.1./", "loopback"),
    ("http://2130706433/", "loopback"),
    ("http://0x7f.1/", "loopback"),
    ("http://0x7f000001/", "loopback"),
    ("http://0177.0.0.1/", "loopback"),
    ("http://017700000001/", "loopback"),
    ("http://[::1]/", "loopback"),
    ("http://[::ffff:127.0.0.1]/", "embeds 127.0.0.1"),
    ("http://[::ffff:7f00:1]/", "embeds 127.0.0.1"),
    ("http://[64:ff9b::7f00:1]/", "embeds 127.0.0.1"),
    ("http://[2002:7f00:1::]/", "embeds 127.0.0.1"),
    ("http://[::127.0.0.1]/", "reserved"),
    # unspecified
    ("http://0.0.0.0/", "unspecified"),
    ("http://0/", "unspecified"),
    ("http://[::]/", "unspecified"),
    # private
    ("http://10.1.2.3/", "private"),
    ("http://172.16.0.1/", "private"),
    ("http://172.31.255.255/", "private"),
    ("https://192.168.1.1:8443/x", "private"),
    ("http://[fc00::1]/", "private"),
    ("http://[fd12:3456::1]/", "private"),
    ("http://[::ffff:10.0.0.1]/", "embeds 10.0.0.1"),
    ("http://internal.example/", "private"),
    # link-local and cloud metadata
    ("http://169.254.169.254/latest/meta-data/", "metadata"),
    ("http://metadata.example/", "metadata"),
    ("http://[::ffff:169.254.169.254]/", "metadata"),
    ("http://169.254.1.1/", "link-local"),
    ("http://[fe80::1]/", "link-local"),
    ("http://[fe80::1%25eth0]/", "link-local"),
    ("http://zoned.example/", "link-local"),
    # shared address space, multicast, reserved, site-local, documentation
    ("http://100.64.0.1/", "shared address space"),
    ("http://100.127.255.254/", "shared address space"),
    ("http://cgnat.example/", "shared address space"),
    ("http://224.0.0.1/", "multicast"),
    ("http://[ff02::1]/", "multicast"),
    ("http://240.0.0.1/", "reserved"),
    # Which label these get varies with Python's ipaddress tables; refused is what counts.
    ("http://255.255.255.255/", "reserved|private|routable"),
    ("http://[fec0::1]/", "site-local"),
    ("http://192.0.2.10/", "reserved|private|routable"),
    # any refused address refuses the host (DNS rebinding round robin)
    ("http://mixed.example/", "resolves to 127.0.0.1"),
    # malformed or ambiguous hosts
    ("http://1.2.3.4.5/", "not a valid IPv4"),
    ("http://256.1.1.1/", "not a valid IPv4"),
    ("http://1.2.3.256/", "not a valid IPv4"),
    ("http://08.1.1.1/", "not a valid IPv4"),
    ("http://0x/", "not a valid IPv4"),
    ("http://4294967296/", "not a valid IPv4"),
    ("http://foo.123/", "not a valid IPv4"),
    ("http://example.com\\@127.0.0.1/", "backslash"),
    ("http://example.com /", "whitespace"),
    ("http://[::1/", "malformed"),
    ("http://example.com:99999/", "malformed"),
    # credentials, scheme, host
    ("https://user:pass@example.com/", "credentials"),
    ("http://user@example.com/", "credentials"),
    ("http://@example.com/", "credentials"),
    ("ftp://example.com/", "scheme"),
    ("file:///etc/passwd", "scheme"),
    ("gopher://example.com:70/", "scheme"),
    ("example.com/hook", "scheme"),
    ("//example.com/hook", "scheme"),
    ("http:///hook", "no host"),
    ("http://:80/hook", "no host"),
    # resolution failure
    ("http://nonexistent.example/", "could not resolve"),
]


@pytest.mark.parametrize("url, reason", REFUSED)
def test_refused(url, reason):
    with pytest.raises(UnsafeURL, match=reason):
        check_url(url, allow_private=False, resolve=fake_resolve)


@pytest.mark.parametrize(
    "url",
    [
        "http://example.com/",
        "https://EXAMPLE.com:8443/hook?x=1#f",
        f"http://{PUBLIC_V4}/",
        f"http://[{PUBLIC_V6}]/",
        "https://v6.example/",
        "https://dual.example/",
        "http://[::ffff:8.8.8.8]/",
        "http://134744072/",  # 8.8.8.8 as one decimal number
    ],
)
def test_public_addresses_are_allowed(url):
    check_url(url, allow_private=False, resolve=fake_resolve)


@pytest.mark.parametrize(
    "url",
    [
        "http://localhost:8000/",
        "http://127.0.0.1/",
        "http://2130706433/",
        "http://[::1]/",
        "http://10.0.0.1/",
        "http://internal.example/",
        "http://169.254.169.254/",
        "http://mixed.example/",
    ],
)
def test_allow_private_lets_local_addresses_through(url):
    check_url(url, allow_private=True, resolve=fake_resolve)


@pytest.mark.parametrize(
    "url",
    ["ftp://localhost/", "http://u:p@localhost/", "http://nonexistent.example/", "http:///"],
)
def test_allow_private_still_requires_a_well_formed_resolvable_url(url):
    with pytest.raises(UnsafeURL):
        check_url(url, allow_private=True, resolve=fake_resolve)


def test_resolver_gets_the_effective_port():
    calls = []

    def resolve(host, port):
        calls.append((host, port))
        return [PUBLIC_V4]

    check_url("https://a.example/", allow_private=False, resolve=resolve)
    check_url("http://a.example/", allow_private=False, resolve=resolve)
    check_url("http://a.example:8080/", allow_private=False, resolve=resolve)
    assert calls == [("a.example", 443), ("a.example", 80), ("a.example", 8080)]


def test_resolver_oddities_are_refused_clearly():
    with pytest.raises(UnsafeURL, match="no addresses"):
        check_url("http://a.example/", allow_private=False, resolve=lambda h, p: [])
    with pytest.raises(UnsafeURL, match="not an IP"):
        check_url("http://a.example/", allow_private=False, resolve=lambda h, p: ["bogus"])


# --- connection-time guard ---


class RecordingBackend(httpcore.NetworkBackend):
    """Answers every connection with a canned 200 and records where it was asked to dial."""

    def __init__(self, fail: set[str] | None = None) -> None:
        self.dialled: list[tuple[str, int]] = []
        self.tls_names: list[str | None] = []
        self._fail = fail or set()

    def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
        self.dialled.append((host, port))
        if host in self._fail:
            raise httpcore.ConnectError(f"refused by {host}")
        backend = self

        class Stream(httpcore.MockStream):
            def start_tls(self, ssl_context, server_hostname=None, timeout=None):
                backend.tls_names.append(server_hostname)
                return self

        return Stream([b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"])

    def connect_unix_socket(self, path, timeout=None, socket_options=None):
        raise AssertionError("not used")

    def sleep(self, seconds):
        pass


def _client(allow_private: bool, resolve, inner: RecordingBackend) -> httpx.Client:
    transport = guarded_transport(allow_private, resolve=resolve, network_backend=inner)
    return httpx.Client(transport=transport)


def test_transport_dials_the_checked_address_and_keeps_the_tls_name():
    inner = RecordingBackend()
    with _client(False, fake_resolve, inner) as client:
        response = client.get("https://example.com/hook")
    assert response.status_code == 200 and response.text == "ok"
    assert inner.dialled == [(PUBLIC_V4, 443)]
    # Certificate verification is still against the URL's host, not the pinned IP.
    assert inner.tls_names == ["example.com"]


def test_transport_refuses_private_targets_without_connecting():
    inner = RecordingBackend()
    with _client(False, fake_resolve, inner) as client:
        for url in (
            "http://internal.example/",
            "http://localhost/",
            "http://0x7f.1/",
            "http://2130706433/",
            "http://[::ffff:127.0.0.1]/",
            "http://169.254.169.254/",
        ):
            with pytest.raises(UnsafeURL):
                client.get(url)
    assert inner.dialled == []


def test_transport_defeats_dns_rebinding_after_the_url_check():
    answers = iter([[PUBLIC_V4], ["127.0.0.1"]])

    def rebinding(host, port):
        return next(answers)

    check_url("http://rebind.example/", allow_private=False, resolve=rebinding)
    inner = RecordingBackend()
    with (
        _client(False, rebinding, inner) as client,
        pytest.raises(UnsafeURL, match=r"127\.0\.0\.1"),
    ):
        client.get("http://rebind.example/")
    assert inner.dialled == []


def test_transport_checks_redirect_targets_too():
    class Redirecting(RecordingBackend):
        def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
            self.dialled.append((host, port))
            return httpcore.MockStream(
                [b"HTTP/1.1 302 Found\r\nLocation: http://10.0.0.1/\r\nContent-Length: 0\r\n\r\n"]
            )

    inner = Redirecting()
    transport = guarded_transport(False, resolve=fake_resolve, network_backend=inner)
    client = httpx.Client(transport=transport, follow_redirects=True)
    with client, pytest.raises(UnsafeURL, match=r"10\.0\.0\.1"):
        client.get("http://example.com/")
    assert inner.dialled == [(PUBLIC_V4, 80)]


def test_transport_falls_back_across_checked_addresses():
    inner = RecordingBackend(fail={PUBLIC_V4})
    with _client(False, fake_resolve, inner) as client:
        assert client.get("http://dual.example/").status_code == 200
    assert inner.dialled == [(PUBLIC_V4, 80), (PUBLIC_V6, 80)]


def test_transport_reports_a_connect_error_when_every_address_fails():
    inner = RecordingBackend(fail={PUBLIC_V4})
    with _client(False, fake_resolve, inner) as client, pytest.raises(httpx.ConnectError):
        client.get("http://example.com/")


def test_transport_allow_private_dials_the_host_unchanged():
    inner = RecordingBackend()
    with _client(True, fake_resolve, inner) as client:
        assert client.get("http://localhost:8000/").status_code == 200
    assert inner.dialled == [("localhost", 8000)]


def test_backend_refuses_unix_sockets():
    backend = GuardedNetworkBackend(allow_private=False, resolve=fake_resolve)
    with pytest.raises(UnsafeURL, match="unix"):
        backend.connect_unix_socket("/var/run/docker.sock")


def test_transport_ignores_proxy_environment(monkeypatch):
    monkeypatch.setenv("HTTP_PROXY", "http://10.0.0.9:3128")
    monkeypatch.setenv("ALL_PROXY", "http://10.0.0.9:3128")
    inner = RecordingBackend()
    with _client(False, fake_resolve, inner) as client:
        client.get("http://example.com/")
    assert inner.dialled == [(PUBLIC_V4, 80)]
