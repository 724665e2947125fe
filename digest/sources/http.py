"""The one HTTP fetcher every source uses: safe against hostile URLs and hostile servers.

- Only http(s). Every host is resolved and refused when any of its addresses is not public
  (private, loopback, link-local (cloud metadata at 169.254.169.254), CGNAT, multicast,
  reserved, unspecified), unless an allowlist entry (CIDR, address or host name) admits it.
  An IPv6 address that carries an IPv4 one (IPv4-mapped, IPv4-compatible, 6to4, NAT64) is
  judged by the IPv4 address it reaches.
- The check runs twice: before each request (a clear error, no traffic) and again inside
  the connection, which connects to the very address it checked. A name that resolves to a
  public address for the check and a private one for the connection (DNS rebinding) is
  therefore still refused.
- Redirects are followed by hand, each hop checked the same way, at most `max_redirects`.
- Environment proxies are ignored (`trust_env = False`): a proxy would connect on our behalf
  and bypass the address check.
- A timeout per socket operation and a deadline for the whole response (headers, body and
  redirects): at the deadline a watchdog shuts the socket down, so a server that drips one
  byte per read (each within the per-read timeout) cannot stall a run. A size cap on the
  decoded body (so a gzip bomb stops at the cap too).
- Conditional GET: ETag / Last-Modified are kept in a cache folder with the body; a 304
  answers from the cache.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import ipaddress
import json
import logging
import socket
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin, urlsplit

from digest import __version__
from digest.errors import SourceError

# requests and urllib3 are imported when the first page is fetched, not with this module: a run
# whose sources are all local files (and `digest send` on them) never needs them (~40 ms).
if TYPE_CHECKING:
    import requests
    from requests.adapters import HTTPAdapter
    from urllib3.connection import HTTPConnection
    from urllib3.connectionpool import HTTPConnectionPool

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 20.0
DEFAULT_MAX_BYTES = 5_000_000
DEFAULT_USER_AGENT = f"digest/{__version__} (newsletter digest; feed reader)"
ACCEPT_FEED = (
    "application/atom+xml, application/rss+xml, application/feed+json, application/json;q=0.9, "
    "application/rdf+xml;q=0.9, application/xml;q=0.8, text/xml;q=0.8, */*;q=0.1"
)
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# IPv6 prefixes whose addresses carry an IPv4 address that the traffic ends up at (besides
# ::ffff:0:0/96 and 6to4's 2002::/16, which `ipaddress` decodes itself).
NAT64_WELL_KNOWN = ipaddress.IPv6Network("64:ff9b::/96")  # RFC 6052: IPv4 in the last 32 bits
IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")  # deprecated (RFC 4291), still routed by some stacks
# RFC 8215 local-use NAT64: the operator picks where the IPv4 address sits, so it cannot be
# decoded; it is a local network by definition (Python 3.11's is_global does not know it yet).
NAT64_LOCAL_USE = ipaddress.IPv6Network("64:ff9b:1::/48")


def embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address that an IPv4-mapped, 6to4, NAT64 or IPv4-compatible address reaches."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in NAT64_WELL_KNOWN or ip in IPV4_COMPATIBLE:
        return ipaddress.IPv4Address(int(ip) & 0xFFFF_FFFF)
    return None


class FetchError(SourceError):
    """A URL could not be fetched (refused, unreachable, too big, bad status).

    Retrying later is safe; retrying at once rarely helps. `url` names the input.
    """

    def __init__(self, url: str, reason: str) -> None:
        self.url = url
        super().__init__(url, reason)


class AddressRefused(FetchError):
    """The URL's host is, or resolves to, an address we do not fetch from (SSRF guard)."""


@dataclass(frozen=True)
class AddressPolicy:
    """Which addresses may be connected to: public ones, plus an explicit allowlist.

    `allow` entries are CIDRs or addresses ("10.1.0.0/16", "127.0.0.1") or exact host
    names ("intranet.example.org"), for a staff intranet or for tests on 127.0.0.1.
    """

    networks: tuple[IPNetwork, ...] = ()
    hosts: frozenset[str] = frozenset()

    @classmethod
    def from_allowlist(cls, allow: Iterable[str]) -> AddressPolicy:
        networks: list[IPNetwork] = []
        hosts: set[str] = set()
        for entry in allow:
            entry = entry.strip()
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                hosts.add(entry.lower().rstrip("."))
        return cls(tuple(networks), frozenset(hosts))

    def address_allowed(self, ip: IPAddress) -> bool:
        # ::ffff:127.0.0.1, ::127.0.0.1, 2002:7f00:1:: and 64:ff9b::7f00:1 all reach 127.0.0.1:
        # the IPv4 address they carry decides, and an allowlisted IPv4 network admits them.
        embedded = embedded_ipv4(ip) if isinstance(ip, ipaddress.IPv6Address) else None
        if any(addr in net for addr in (ip, embedded) if addr is not None for net in self.networks):
            return True
        if ip in NAT64_LOCAL_USE:
            return False
        target = embedded or ip
        return target.is_global and not target.is_multicast

    def resolve(self, host: str, port: int) -> list[tuple[int, str]]:
        """(family, address) pairs for host, or AddressRefused. Never connects."""
        name = host.lower().rstrip(".").strip("[]")
        try:
            infos = socket.getaddrinfo(name, port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError) as err:
            raise FetchError(host, f"cannot resolve host: {err}") from None
        addresses: list[tuple[int, str]] = []
        for family, _type, _proto, _canon, sockaddr in infos:
            literal = str(sockaddr[0]).split("%", 1)[0]
            if (family, literal) not in addresses:
                addresses.append((family, literal))
        if name in self.hosts:
            return addresses
        for _family, literal in addresses:
            ip = ipaddress.ip_address(literal)
            if not self.address_allowed(ip):
                raise AddressRefused(
                    host,
                    f"refused: {host} resolves to {ip}, a non-public address "
                    "(add it to [collect] fetch_allow if this is a trusted intranet)",
                )
        if not addresses:
            raise FetchError(host, "cannot resolve host: no addresses")
        return addresses


class _Deadline:
    """Shuts down the sockets of one `Fetcher.get` when its time is up.

    A socket timeout bounds each read, not a response: a server sending one byte just before
    every timeout keeps a read of 64 KB (or of a header line) going for as long as it likes.
    Shutting the socket down from a timer ends any read in progress, whatever layer
    (http.client, urllib3, TLS) is waiting in it.
    """

    def __init__(self, seconds: float) -> None:
        self.expired = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True
        self._timer.start()

    def watch(self, sock: socket.socket) -> None:
        with self._lock:
            if self.expired:
                _shut(sock)
            elif sock not in self._sockets:
                self._sockets.append(sock)

    def cancel(self) -> None:
        self._timer.cancel()

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            for sock in self._sockets:
                _shut(sock)


def _shut(sock: socket.socket) -> None:
    # OSError: already closed, nothing left to stop.
    with contextlib.suppress(OSError):
        # The plain socket's shutdown, also for a TLS socket: ssl.SSLSocket.shutdown would drop
        # its TLS state under the thread that is reading from it.
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


# The deadline of the `Fetcher.get` running in this thread, for the connections it uses.
_active = threading.local()


def _watch_connection(conn: HTTPConnection) -> None:
    deadline: _Deadline | None = getattr(_active, "deadline", None)
    if deadline is not None and conn.sock is not None:
        deadline.watch(conn.sock)


def _guarded_pools(policy: AddressPolicy) -> dict[str, type[HTTPConnectionPool]]:
    """Connection pools whose connections check and pin the address they connect to."""
    from urllib3.connection import HTTPConnection, HTTPSConnection
    from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
    from urllib3.util import connection as u3connection

    def connect(conn: HTTPConnection) -> socket.socket:
        last: OSError | None = None
        for _family, literal in policy.resolve(conn.host, conn.port):
            try:
                return u3connection.create_connection(
                    (literal, conn.port),
                    conn.timeout,
                    source_address=conn.source_address,
                    socket_options=conn.socket_options,
                )
            except OSError as err:
                last = err
        raise last or OSError(f"cannot connect to {conn.host}")

    # getresponse runs for new and reused (kept-alive) connections alike, before the status
    # line is read: from there on the request's deadline can cut the socket.
    class GuardedHTTPConnection(HTTPConnection):
        def _new_conn(self) -> socket.socket:
            return connect(self)

        def getresponse(self) -> Any:
            _watch_connection(self)
            return super().getresponse()

    class GuardedHTTPSConnection(HTTPSConnection):
        # The TLS layer still uses the host name for SNI and certificate checks.
        def _new_conn(self) -> socket.socket:
            return connect(self)

        def getresponse(self) -> Any:
            _watch_connection(self)
            return super().getresponse()

    class GuardedHTTPPool(HTTPConnectionPool):
        ConnectionCls = GuardedHTTPConnection

    class GuardedHTTPSPool(HTTPSConnectionPool):
        ConnectionCls = GuardedHTTPSConnection

    return {"http": GuardedHTTPPool, "https": GuardedHTTPSPool}


@functools.cache
def _guarded_adapter_class() -> type[HTTPAdapter]:
    """requests' adapter, with pools from `_guarded_pools` (a class made on first use)."""
    from requests.adapters import HTTPAdapter

    class GuardedAdapter(HTTPAdapter):
        def __init__(self, policy: AddressPolicy) -> None:
            self._policy = policy
            super().__init__(max_retries=0)

        def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
            super().init_poolmanager(*args, **kwargs)
            self.poolmanager.pool_classes_by_scheme = _guarded_pools(self._policy)

    return GuardedAdapter


@dataclass(frozen=True)
class FetchResponse:
    url: str  # the final URL, after redirects
    status: int
    body: bytes
    content_type: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)
    from_cache: bool = False


class Fetcher:
    """GET with the safety rules above. One instance per run; share it between sources."""

    def __init__(
        self,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        max_bytes: int = DEFAULT_MAX_BYTES,
        user_agent: str = DEFAULT_USER_AGENT,
        allow: Iterable[str] = (),
        cache_dir: Path | None = None,
        max_redirects: int = 5,
    ) -> None:
        self.timeout = timeout
        self.max_bytes = max_bytes
        self.user_agent = user_agent
        self.policy = AddressPolicy.from_allowlist(allow)
        self.cache_dir = cache_dir
        self.max_redirects = max_redirects

    @functools.cached_property
    def session(self) -> requests.Session:
        """The HTTP session, made on the first fetch (see the imports above)."""
        import requests

        session = requests.Session()
        session.trust_env = False
        adapter = _guarded_adapter_class()(self.policy)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        return session

    def close(self) -> None:
        if "session" in self.__dict__:  # never made: nothing to close
            self.session.close()

    def __enter__(self) -> Fetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def check_url(self, url: str) -> None:
        """Refuse a URL before any traffic: bad scheme, no host, or a non-public address."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https"):
            raise FetchError(url, f"refused: only http and https URLs are fetched, not {parts.scheme!r}")
        if not parts.hostname:
            raise FetchError(url, "refused: the URL has no host")
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            raise FetchError(url, "refused: bad port") from None
        try:
            self.policy.resolve(parts.hostname, port)
        except AddressRefused as err:
            raise AddressRefused(url, err.reason) from None
        except FetchError as err:
            raise FetchError(url, err.reason) from None

    def get(self, url: str, *, accept: str = ACCEPT_FEED, conditional: bool = True) -> FetchResponse:
        """The body of `url` (following safe redirects), or FetchError naming the URL and reason.

        The whole of it, redirects included, takes at most `timeout` seconds (plus a moment).
        """
        outer = getattr(_active, "deadline", None)
        _active.deadline = watchdog = _Deadline(self.timeout)
        try:
            return self._get(url, accept, conditional, watchdog)
        finally:
            watchdog.cancel()
            _active.deadline = outer

    def _get(self, url: str, accept: str, conditional: bool, watchdog: _Deadline) -> FetchResponse:
        cached = self._cache_read(url) if conditional else None
        headers = {"User-Agent": self.user_agent, "Accept": accept, "Accept-Encoding": "gzip, deflate"}
        if cached:
            if cached.get("etag"):
                headers["If-None-Match"] = cached["etag"]
            if cached.get("last_modified"):
                headers["If-Modified-Since"] = cached["last_modified"]
        deadline = time.monotonic() + self.timeout
        current = url
        for _hop in range(self.max_redirects + 1):
            self.check_url(current)
            response = self._request(current, headers, deadline, watchdog)
            try:
                if response.is_redirect:
                    location = response.headers.get("Location", "")
                    if not location:
                        raise FetchError(url, f"HTTP {response.status_code} redirect without Location")
                    current = urljoin(current, location)
                    continue
                if response.status_code == 304 and cached:
                    body = self._cache_body(url)
                    if body is not None:
                        return FetchResponse(
                            url=cached.get("final_url", url),
                            status=200,
                            body=body,
                            content_type=cached.get("content_type", ""),
                            headers=dict(response.headers),
                            from_cache=True,
                        )
                    # The cached body went missing: ask again without validators.
                    return self.get(url, accept=accept, conditional=False)
                if response.status_code >= 400:
                    raise FetchError(url, f"HTTP {response.status_code} {response.reason or ''}".strip())
                body = self._read_body(url, response, deadline, watchdog)
                result = FetchResponse(
                    url=current,
                    status=response.status_code,
                    body=body,
                    content_type=response.headers.get("Content-Type", ""),
                    headers=dict(response.headers),
                )
                if conditional:
                    self._cache_write(url, result)
                return result
            finally:
                response.close()
        raise FetchError(url, f"more than {self.max_redirects} redirects")

    def _request(
        self, url: str, headers: dict[str, str], deadline: float, watchdog: _Deadline
    ) -> requests.Response:
        import requests

        remaining = max(0.1, deadline - time.monotonic())
        try:
            return self.session.get(
                url,
                headers=headers,
                timeout=(min(self.timeout, remaining), min(self.timeout, remaining)),
                allow_redirects=False,
                stream=True,
            )
        except AddressRefused as err:
            raise AddressRefused(url, err.reason) from None
        except FetchError as err:
            raise FetchError(url, err.reason) from None
        except requests.Timeout:
            raise FetchError(url, f"timed out after {self.timeout:g} s") from None
        except (requests.RequestException, OSError) as err:
            if watchdog.expired:
                raise FetchError(url, f"timed out: no complete answer within {self.timeout:g} s") from None
            raise FetchError(url, f"cannot connect: {_short(err)}") from None

    def _read_body(
        self, url: str, response: requests.Response, deadline: float, watchdog: _Deadline
    ) -> bytes:
        import requests

        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            raise FetchError(url, f"too big: {declared} bytes declared, the cap is {self.max_bytes}")
        chunks: list[bytes] = []
        size = 0
        too_slow = f"timed out: the response took more than {self.timeout:g} s"
        try:
            for chunk in response.iter_content(chunk_size=65536):
                size += len(chunk)
                if size > self.max_bytes:
                    raise FetchError(url, f"too big: more than {self.max_bytes} bytes")
                if time.monotonic() > deadline or watchdog.expired:
                    raise FetchError(url, too_slow)
                chunks.append(chunk)
        except (requests.RequestException, OSError) as err:
            if watchdog.expired:
                raise FetchError(url, too_slow) from None
            raise FetchError(url, f"connection failed while reading: {_short(err)}") from None
        if watchdog.expired:
            # Cut off before the end of a body without a length: what we have is not all of it.
            raise FetchError(url, too_slow)
        return b"".join(chunks)

    # --- conditional GET cache ----------------------------------------------------------

    def _cache_paths(self, url: str) -> tuple[Path, Path] | None:
        if self.cache_dir is None:
            return None
        key = hashlib.sha256(url.encode("utf-8")).hexdigest()
        return self.cache_dir / f"{key}.json", self.cache_dir / f"{key}.body"

    def _cache_read(self, url: str) -> dict[str, str] | None:
        paths = self._cache_paths(url)
        if paths is None or not paths[0].is_file():
            return None
        try:
            meta = json.loads(paths[0].read_text("utf-8"))
        except (OSError, ValueError):
            return None
        return meta if isinstance(meta, dict) and meta.get("url") == url else None

    def _cache_body(self, url: str) -> bytes | None:
        paths = self._cache_paths(url)
        try:
            return paths[1].read_bytes() if paths else None
        except OSError:
            return None

    def _cache_write(self, url: str, result: FetchResponse) -> None:
        paths = self._cache_paths(url)
        etag = result.headers.get("ETag", "")
        modified = result.headers.get("Last-Modified", "")
        if paths is None or not (etag or modified):
            return
        meta = {
            "url": url,
            "final_url": result.url,
            "etag": etag,
            "last_modified": modified,
            "content_type": result.content_type,
        }
        try:
            paths[0].parent.mkdir(parents=True, exist_ok=True)
            paths[1].write_bytes(result.body)
            paths[0].write_text(json.dumps(meta), "utf-8")
        except OSError as err:
            # A cache we cannot write only costs a full download next time.
            log.warning("cannot write the HTTP cache in %s: %s", self.cache_dir, err)


def _short(err: Exception) -> str:
    text = str(err)
    return text if len(text) <= 200 else text[:197] + "..."
