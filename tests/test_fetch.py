"""The one HTTP fetcher: real HTTP on 127.0.0.1; refusals never send traffic anywhere."""

from __future__ import annotations

import gzip
import ipaddress
import shutil
import socket
import ssl
import subprocess
import threading
import time

import collect_fixtures
import pytest
from collect_fixtures import local_fetcher
from werkzeug import Response

from digest.sources.http import AddressPolicy, AddressRefused, Fetcher, FetchError

_local_server_module = collect_fixtures._local_server_module
local_server = collect_fixtures.local_server


def test_get_sends_user_agent_and_accept(local_server):
    local_server.expect_request("/feed.xml").respond_with_data("<rss/>", content_type="application/rss+xml")
    with local_fetcher(user_agent="digest-test/1") as fetcher:
        response = fetcher.get(local_server.url_for("/feed.xml"))
    assert response.body == b"<rss/>"
    assert response.content_type == "application/rss+xml"
    request, _ = local_server.log[0]
    assert request.headers["User-Agent"] == "digest-test/1"
    assert "application/rss+xml" in request.headers["Accept"]


def test_loopback_is_refused_by_default_without_connecting(local_server):
    local_server.expect_request("/feed.xml").respond_with_data("secret")
    with Fetcher() as fetcher, pytest.raises(AddressRefused, match="127.0.0.1"):
        fetcher.get(local_server.url_for("/feed.xml"))
    assert local_server.log == []


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",  # cloud metadata (link-local)
        "http://[fd00:ec2::254]/latest/meta-data/",  # AWS metadata over IPv6 (unique local)
        "http://100.100.100.200/",  # Alibaba metadata (shared address space)
        "http://10.0.0.1/",
        "http://192.168.1.1/",
        "http://172.16.0.1/",
        "http://127.0.0.2:8080/",
        "http://[::1]/",
        "http://[::ffff:127.0.0.1]/",
        # IPv6 forms that carry an IPv4 address to it: the IPv4 address decides.
        "http://[64:ff9b::a9fe:a9fe]/",  # NAT64 (well-known prefix) of the metadata address
        "http://[64:ff9b::10.0.0.1]/",
        "http://[64:ff9b:1::a9fe:a9fe]/",  # NAT64 local-use prefix: never public
        "http://[2002:7f00:1::]/",  # 6to4 of 127.0.0.1
        "http://[2002:a9fe:a9fe::1]/",  # 6to4 of 169.254.169.254
        "http://[::127.0.0.1]/",  # IPv4-compatible
        "http://[::a9fe:a9fe]/",
        "http://0.0.0.0/",
        "http://localhost/",
        "http://224.0.0.1/",
    ],
)
def test_non_public_addresses_are_refused_before_connecting(url, monkeypatch):
    def no_connect(*args, **kwargs):
        raise AssertionError(f"tried to connect for {url}")

    monkeypatch.setattr(socket, "create_connection", no_connect)
    monkeypatch.setattr("urllib3.util.connection.create_connection", no_connect)
    with Fetcher() as fetcher, pytest.raises(AddressRefused) as info:
        fetcher.get(url)
    assert url in str(info.value)
    assert "fetch_allow" in str(info.value)


@pytest.mark.parametrize(
    ("address", "allowed"),
    [
        ("::ffff:8.8.8.8", True),
        ("64:ff9b::8.8.8.8", True),
        ("2002:808:808::1", True),
        ("::8.8.8.8", True),
        ("2001:4860:4860::8888", True),
        ("64:ff9b::127.0.0.1", False),
        ("2002:c0a8:101::", False),  # 6to4 of 192.168.1.1
        ("::ffff:100.100.100.200", False),
        ("64:ff9b:1::808:808", False),
    ],
)
def test_embedded_ipv4_decides_for_ipv6_forms_that_carry_it(address, allowed):
    ip = ipaddress.ip_address(address)
    assert AddressPolicy().address_allowed(ip) is allowed
    # An allowlisted IPv4 network admits its IPv6 spellings too: they reach the same host. The
    # local-use NAT64 prefix cannot be decoded, so only an IPv6 allowlist entry admits it.
    decodable = not address.startswith("64:ff9b:1:")
    assert AddressPolicy.from_allowlist(["0.0.0.0/0"]).address_allowed(ip) is decodable


@pytest.mark.parametrize(
    "url", ["file:///etc/passwd", "ftp://example.org/feed.xml", "gopher://x/", "http:///x"]
)
def test_other_schemes_are_refused(url):
    with Fetcher() as fetcher, pytest.raises(FetchError, match="refused"):
        fetcher.get(url)


def test_allowlist_admits_an_intranet_address(local_server):
    local_server.expect_request("/intranet").respond_with_data("ok")
    with local_fetcher(allow=("127.0.0.0/8",)) as fetcher:
        assert fetcher.get(local_server.url_for("/intranet")).body == b"ok"


def test_allowlist_by_host_name():
    policy = AddressPolicy.from_allowlist(["intranet.example.org", "10.1.0.0/16"])
    assert policy.hosts == frozenset({"intranet.example.org"})
    assert policy.address_allowed(__import__("ipaddress").ip_address("10.1.2.3"))
    assert not policy.address_allowed(__import__("ipaddress").ip_address("10.2.0.1"))


def test_redirect_to_a_local_file_is_refused(local_server):
    local_server.expect_request("/feed").respond_with_response(
        Response(status=302, headers={"Location": "file:///etc/passwd"})
    )
    with local_fetcher() as fetcher, pytest.raises(FetchError, match="only http and https"):
        fetcher.get(local_server.url_for("/feed"))


def test_redirect_to_metadata_address_is_refused(local_server):
    local_server.expect_request("/feed").respond_with_response(
        Response(status=302, headers={"Location": "http://169.254.169.254/latest/meta-data/"})
    )
    with local_fetcher() as fetcher, pytest.raises(AddressRefused, match="169.254.169.254"):
        fetcher.get(local_server.url_for("/feed"))


def test_redirects_within_allowed_hosts_are_followed(local_server):
    local_server.expect_request("/old").respond_with_response(
        Response(status=301, headers={"Location": "/new"})
    )
    local_server.expect_request("/new").respond_with_data("moved")
    with local_fetcher() as fetcher:
        response = fetcher.get(local_server.url_for("/old"))
    assert response.body == b"moved"
    assert response.url.endswith("/new")


def test_redirect_loop_stops(local_server):
    local_server.expect_request("/loop").respond_with_response(
        Response(status=302, headers={"Location": "/loop"})
    )
    with local_fetcher(max_redirects=3) as fetcher, pytest.raises(FetchError, match="more than 3 redirects"):
        fetcher.get(local_server.url_for("/loop"))
    assert len(local_server.log) == 4


def test_dns_rebinding_is_refused_at_connect_time(local_server, monkeypatch):
    """The name looks public when checked, then resolves to loopback: the connection refuses it."""
    real = socket.getaddrinfo
    calls = []

    def rebinding(host, port, *args, **kwargs):
        if host == "rebind.test":
            calls.append(host)
            address = "93.184.216.34" if len(calls) == 1 else "127.0.0.1"
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    url = f"http://rebind.test:{local_server.port}/feed"
    with Fetcher(timeout=2) as fetcher, pytest.raises(AddressRefused, match="127.0.0.1"):
        fetcher.get(url)
    assert len(calls) == 2
    assert local_server.log == []


def test_size_cap_on_declared_length(local_server):
    local_server.expect_request("/big").respond_with_data(b"x" * 5000)
    with local_fetcher(max_bytes=1000) as fetcher, pytest.raises(FetchError, match="too big"):
        fetcher.get(local_server.url_for("/big"))


def test_size_cap_on_streamed_body_without_length(local_server):
    def chunks():
        for _ in range(100):
            yield b"y" * 1000

    local_server.expect_request("/stream").respond_with_response(Response(chunks(), content_type="text/xml"))
    with local_fetcher(max_bytes=10_000) as fetcher, pytest.raises(FetchError, match="too big"):
        fetcher.get(local_server.url_for("/stream"))


def test_size_cap_counts_decompressed_bytes(local_server):
    bomb = gzip.compress(b"\0" * 2_000_000)
    assert len(bomb) < 10_000
    local_server.expect_request("/bomb").respond_with_response(
        Response(bomb, headers={"Content-Encoding": "gzip"}, content_type="text/xml")
    )
    with local_fetcher(max_bytes=100_000) as fetcher, pytest.raises(FetchError, match="too big"):
        fetcher.get(local_server.url_for("/bomb"))


def test_http_error_names_url_and_status(local_server):
    local_server.expect_request("/gone").respond_with_data("nope", status=410)
    url = local_server.url_for("/gone")
    with local_fetcher() as fetcher, pytest.raises(FetchError) as info:
        fetcher.get(url)
    assert url in str(info.value) and "HTTP 410" in str(info.value)


def test_timeout_on_a_server_that_never_answers():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    accepted = []
    thread = threading.Thread(target=lambda: accepted.append(listener.accept()), daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/slow"
        with local_fetcher(timeout=0.3) as fetcher, pytest.raises(FetchError, match="timed out"):
            fetcher.get(url)
    finally:
        thread.join(2)
        for conn, _ in accepted:
            conn.close()
        listener.close()


class _DrippingServer:
    """A raw server on 127.0.0.1 that sends `head` and then one byte of `drip` every 50 ms.

    Each byte arrives well within the per-read timeout, so only a deadline for the whole
    response stops a fetch from it. It stops dripping after `limit` seconds, so that a fetcher
    without such a deadline fails the test instead of hanging it.
    """

    def __init__(
        self, head: bytes, drip: bytes = b"<", limit: float = 8.0, tls: ssl.SSLContext | None = None
    ) -> None:
        self.head, self.drip, self.limit, self.tls = head, drip, limit, tls
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(1)
        scheme = "https" if tls else "http"
        self.url = f"{scheme}://127.0.0.1:{self.listener.getsockname()[1]}/feed.xml"
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.listener.accept()
        with conn:
            end = time.monotonic() + self.limit
            try:
                if self.tls:
                    conn = self.tls.wrap_socket(conn, server_side=True)
                conn.recv(65536)  # the request
                conn.sendall(self.head)
                while time.monotonic() < end:
                    conn.sendall(self.drip)
                    time.sleep(0.05)
            except OSError:
                pass  # the fetcher gave up and closed the connection: what the test wants

    def close(self) -> None:
        self.listener.close()
        self.thread.join(self.limit + 1)


@pytest.mark.parametrize(
    ("head", "drip"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Type: application/rss+xml\r\nConnection: close\r\n\r\n", b"<"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n", b"<"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", b"1\r\n<\r\n"),
        (b"HTTP/1.1 200 OK\r\n", b"X"),  # headers that never end
    ],
    ids=["body-until-close", "body-with-length", "chunked-body", "headers"],
)
def test_a_server_dripping_bytes_is_cut_off_at_the_deadline(head, drip):
    server = _DrippingServer(head, drip)
    started = time.monotonic()
    try:
        with local_fetcher(timeout=1.0) as fetcher, pytest.raises(FetchError, match="timed out") as info:
            fetcher.get(server.url)
        elapsed = time.monotonic() - started
    finally:
        server.close()
    assert server.url in str(info.value)
    # The bound is the deadline plus at most one read timeout, with room for a slow machine;
    # without a deadline the fetch would last as long as the server drips (8 s).
    assert elapsed < 3.5, f"the fetch went on for {elapsed:.1f} s"


@pytest.mark.skipif(
    shutil.which("openssl") is None, reason="needs the openssl command for a test certificate"
)
def test_a_tls_server_dripping_bytes_is_cut_off_at_the_deadline(tmp_path):
    # Over TLS the read waits inside the TLS layer: shutting the socket down must end it too.
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server = _DrippingServer(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n", tls=context)
    started = time.monotonic()
    try:
        with local_fetcher(timeout=1.0) as fetcher, pytest.raises(FetchError, match="timed out"):
            fetcher.session.verify = str(cert)
            fetcher.get(server.url)
        elapsed = time.monotonic() - started
    finally:
        server.close()
    assert elapsed < 3.5, f"the fetch went on for {elapsed:.1f} s"


def test_conditional_get_answers_304_from_cache(local_server, tmp_path):
    local_server.expect_ordered_request("/feed.xml").respond_with_data(
        "<rss>v1</rss>", headers={"ETag": '"abc"', "Last-Modified": "Thu, 06 Nov 2025 12:00:00 GMT"}
    )
    local_server.expect_ordered_request("/feed.xml", headers={"If-None-Match": '"abc"'}).respond_with_data(
        "", status=304
    )
    url = local_server.url_for("/feed.xml")
    with local_fetcher(cache_dir=tmp_path) as fetcher:
        first = fetcher.get(url)
        second = fetcher.get(url)
    assert not first.from_cache
    assert second.from_cache and second.body == b"<rss>v1</rss>"
    request, _ = local_server.log[1]
    assert request.headers["If-Modified-Since"] == "Thu, 06 Nov 2025 12:00:00 GMT"


def test_no_cache_dir_means_no_validators(local_server):
    local_server.expect_request("/feed.xml").respond_with_data("<rss/>", headers={"ETag": '"abc"'})
    with local_fetcher() as fetcher:
        fetcher.get(local_server.url_for("/feed.xml"))
        fetcher.get(local_server.url_for("/feed.xml"))
    assert "If-None-Match" not in local_server.log[1][0].headers


def test_environment_proxy_is_ignored(local_server, monkeypatch):
    # A proxy would connect for us and bypass the address check. The "proxy" is a closed
    # local port, so a regression fails here instead of sending traffic anywhere.
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    closed_port = probe.getsockname()[1]
    probe.close()
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{closed_port}")
    local_server.expect_request("/feed.xml").respond_with_data("direct")
    with local_fetcher() as fetcher:
        assert fetcher.get(local_server.url_for("/feed.xml")).body == b"direct"
