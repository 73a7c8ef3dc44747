"""URL fetching through the image door, against local servers only.

Every socket ``connect`` in these tests goes through a guard that records the address and refuses
anything that is not loopback before a packet could leave; tests that must be refused before any
connection assert that the guard saw no attempt at all. Name lookups are guarded the same way.
"""

from __future__ import annotations

import http.server
import ipaddress
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.support import image_corpus as corpus
from vizdex.core.errors import ImageRejectedError
from vizdex.imaging import ImageInputSettings, load_image, read_input
from vizdex.imaging.fetch import fetch_url, split_url

IMAGE = corpus.encode(corpus.solid("RGB", (6, 4), corpus.RED), "PNG")
LOOPBACK_ONLY = ("127.0.0.1/32",)


# --- Guards -----------------------------------------------------------------------------------


@dataclass
class NetworkGuard:
    connects: list[tuple[str, int]] = field(default_factory=list)
    lookups: list[str] = field(default_factory=list)


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


@pytest.fixture(autouse=True)
def guard(monkeypatch: pytest.MonkeyPatch) -> NetworkGuard:
    seen = NetworkGuard()
    real_connect = socket.socket.connect
    real_getaddrinfo = socket.getaddrinfo

    def connect(self: socket.socket, address: Any) -> None:
        host, port = str(address[0]), int(address[1])
        seen.connects.append((host, port))
        if not _is_loopback(host):
            raise AssertionError(f"test tried to connect to {host}:{port}")
        real_connect(self, address)

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        seen.lookups.append(str(host))
        if str(host).lower().rstrip(".") != "localhost" and not _is_loopback(str(host)):
            raise AssertionError(f"test tried to look up {host!r}")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", lambda *a: pytest.fail("connect_ex used"))
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return seen


# --- Local servers ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Answered:
    """How one request ended on the server's side: what it sent, and whether the client left."""

    path: str
    sent: int  # bytes the route wrote after the status line
    hung_up: bool  # a write failed: the client closed the connection first


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, host: str) -> None:
        super().__init__((host, 0), Handler)
        self.host = host
        self.hits: list[str] = []
        self.hosts: list[str] = []
        self.answered: list[Answered] = []
        self.lock = threading.Condition()
        self.stopping = threading.Event()

    @property
    def base(self) -> str:
        return f"http://{self.host}:{self.server_address[1]}"

    def wait_answered(self, path: str) -> Answered:
        """The end of the request for ``path``, once its handler has returned."""
        with self.lock:
            assert self.lock.wait_for(lambda: any(a.path == path for a in self.answered), 60)
            return next(a for a in self.answered if a.path == path)


class Handler(http.server.BaseHTTPRequestHandler):
    server: Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        with self.server.lock:
            self.server.hits.append(self.path)
            self.server.hosts.append(self.headers.get("Host", ""))
        parts = urlsplit(self.path)
        route = ROUTES.get(parts.path.split("/")[1] if "/" in parts.path else "", _not_found)
        self.sent = 0
        hung_up = False
        # The client hanging up (byte cap or deadline) is what several tests are about.
        try:
            route(self, parts.path, parse_qs(parts.query))
        except (BrokenPipeError, ConnectionResetError):
            hung_up = True
            self.close_connection = True
        with self.server.lock:
            self.server.answered.append(Answered(self.path, self.sent, hung_up))
            self.server.lock.notify_all()

    def send(self, data: bytes) -> None:
        """Write to the client now (unbuffered), counting what got out."""
        self.wfile.write(data)
        self.wfile.flush()
        self.sent += len(data)

    def head(self, status: int, headers: dict[str, str]) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()


Route = Callable[[Handler, str, dict[str, list[str]]], None]
LYING_BYTES = 100_000_000  # what /lying sends after announcing 10 bytes, unless cut off
TRICKLE_BYTES = 30  # what the slow routes send, one byte a second, unless cut off


def _image(h: Handler, path: str, query: dict[str, list[str]]) -> None:
    h.head(200, {"Content-Type": "image/png", "Content-Length": str(len(IMAGE))})
    h.wfile.write(IMAGE)


def _chunked(h: Handler, path: str, query: dict[str, list[str]]) -> None:
    h.head(200, {"Content-Type": "image/png", "Transfer-Encoding": "chunked"})
    for start in range(0, len(IMAGE), 10):
        piece = IMAGE[start : start + 10]
        h.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
    h.wfile.write(b"0\r\n\r\n")


def _unframed(h: Handler, path: str, query: dict[str, list[str]]) -> None:
    h.head(200, {"Content-Type": "image/png", "Connection": "close"})
    h.wfile.write(IMAGE)
    h.close_connection = True


def _redirect(h: Handler, path: str, query: dict[str, list[str]]) -> None:
    h.head(302, {"Location": query["to"][0], "Content-Length": "0"})


def _hop(h: Handler, path: str, query: dict[str, list[str]]) -> None:
    left = int(path.rsplit("/", 1)[1])  # /hop/N answers N redirects in a row
    target = "/image.png" if left <= 1 else f"/hop/{left - 1}"
    h.head(301, {"Location": target, "Content-Length": "0"})


def _loop(h: Handler, path: str, query: dict[str, list[str]]) -> None:
    h.head(307, {"Location": "/loop", "Content-Length": "0"})


def _lying(h: Handler, path: str, query: dict[str, list[str]]) -> None:
    """Says 10 bytes, then sends up to 100 MB (a valid PNG start so it is not just junk)."""
    h.head(200, {"Content-Type": "image/png", "Content-Length": "10"})
    h.send(IMAGE)
    block = b"\x00" * 65536
    for _ in range(LYING_BYTES // len(block)):
        if h.server.stopping.is_set():
            break
        h.send(block)


def _huge_declared(h: Handler, path: str, query: dict[str, list[str]]) -> None:
    h.head(200, {"Content-Type": "image/png", "Content-Length": str(10**12)})
    h.wfile.write(IMAGE)


def _short(h: Handler, path: str, query: dict[str, list[str]]) -> None:
    h.head(200, {"Content-Type": "image/png", "Content-Length": str(len(IMAGE) + 100)})
    h.wfile.write(IMAGE)
    h.close_connection = True


def _slow(h: Handler, path: str, query: dict[str, list[str]]) -> None:
    """One byte a second: each read succeeds, only a total deadline can stop it."""
    h.head(200, {"Content-Type": "image/png", "Content-Length": str(TRICKLE_BYTES)})
    for _ in range(TRICKLE_BYTES):
        h.send(b"x")
        if h.server.stopping.wait(1.0):
            break


def _slow_headers(h: Handler, path: str, query: dict[str, list[str]]) -> None:
    h.wfile.write(b"HTTP/1.1 200 OK\r\n")
    for _ in range(TRICKLE_BYTES):
        h.send(b"X")
        if h.server.stopping.wait(1.0):
            break


def _not_found(h: Handler, path: str, query: dict[str, list[str]]) -> None:
    h.head(404, {"Content-Length": "0"})


ROUTES: dict[str, Route] = {
    "image.png": _image,
    "chunked.png": _chunked,
    "unframed.png": _unframed,
    "redirect": _redirect,
    "hop": _hop,
    "loop": _loop,
    "lying": _lying,
    "huge": _huge_declared,
    "short": _short,
    "slow": _slow,
    "slow-headers": _slow_headers,
}


def _serve(host: str) -> Iterator[Server]:
    server = Server(host)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield server
    finally:
        server.stopping.set()
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def server() -> Iterator[Server]:
    yield from _serve("127.0.0.1")


@pytest.fixture
def canary() -> Iterator[Server]:
    """A second server on another loopback address that is NOT allowed; it must stay silent."""
    try:
        yield from _serve("127.0.0.2")
    except OSError:  # pragma: no cover - 127.0.0.2 is bindable on Linux
        pytest.skip("cannot bind 127.0.0.2")


@dataclass
class SilentServer:
    host: str
    port: int
    held: list[socket.socket]  # the accepted connections, kept open and never written to
    accepted: threading.Event  # set once the first connection is in ``held``


@pytest.fixture
def silent_tcp() -> Iterator[SilentServer]:
    """Accepts connections and never says a word (a TLS handshake that never completes)."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.1)
    stop = threading.Event()
    held: list[socket.socket] = []
    accepted = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
                accepted.set()
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept)
    thread.start()
    try:
        yield SilentServer("127.0.0.1", listener.getsockname()[1], held, accepted)
    finally:
        stop.set()
        thread.join(5)
        for conn in held:
            conn.close()
        listener.close()


def allowing(*networks: str, **kwargs: Any) -> ImageInputSettings:
    return ImageInputSettings(allow_urls=True, allowed_networks=networks, **kwargs)


def refused(url: str, settings: ImageInputSettings, code: str) -> ImageRejectedError:
    with pytest.raises(ImageRejectedError) as caught:
        fetch_url(url, settings)
    assert caught.value.code == code, caught.value.message
    return caught.value


# --- Off by default ---------------------------------------------------------------------------


def test_urls_are_off_by_default(server: Server, guard: NetworkGuard) -> None:
    url = server.base + "/image.png"
    for attempt in (
        lambda: fetch_url(url, ImageInputSettings()),
        lambda: read_input(url, ImageInputSettings()),
        lambda: load_image({"url": url}, ImageInputSettings()),
    ):
        with pytest.raises(ImageRejectedError) as caught:
            attempt()
        assert caught.value.code == "forbidden_url"
    assert server.hits == [] and guard.connects == [] and guard.lookups == []


# --- Addresses refused before any connection --------------------------------------------------

FORBIDDEN_HOSTS = [
    "127.0.0.1",
    "127.0.0.2",
    "localhost",
    "LOCALHOST.",
    "images.localhost",
    "0.0.0.0",
    "[::]",
    "[::1]",
    "[::ffff:127.0.0.1]",
    "[::ffff:7f00:1]",
    "[0:0:0:0:0:ffff:7f00:1]",
    "169.254.169.254",
    "[::ffff:169.254.169.254]",
    "[fd00:ec2::254]",
    "10.0.0.1",
    "172.16.0.1",
    "192.168.1.1",
    "100.64.0.1",
    "198.18.0.1",
    "224.0.0.1",
    "240.0.0.1",
    "255.255.255.255",
    "[fe80::1]",
    "[ff02::1]",
    "[64:ff9b::a9fe:a9fe]",
    "[2002:a9fe:a9fe::]",
    # numeric spellings a resolver would accept for loopback or the metadata endpoint
    "2130706433",
    "0177.0.0.1",
    "0x7f.1",
    "0x7f000001",
    "127.1",
    "017700000001",
    "2852039166",
    "0xa9.0xfe.0xa9.0xfe",
    "127.0.0.1.",
]


@pytest.mark.parametrize("host", FORBIDDEN_HOSTS)
def test_forbidden_addresses_are_refused_before_connecting(
    host: str, server: Server, guard: NetworkGuard
) -> None:
    port = server.server_address[1]
    refused(f"http://{host}:{port}/image.png", allowing(), "forbidden_url")
    assert guard.connects == []
    assert server.hits == []


def test_metadata_endpoint_message(guard: NetworkGuard) -> None:
    error = refused("http://169.254.169.254/latest/meta-data/", allowing(), "forbidden_url")
    assert "169.254.169.254" in error.message and "link-local" in error.message
    assert guard.connects == []


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "ftp://127.0.0.1/image.png",
        "gopher://127.0.0.1:70/_GET",
        "javascript:alert(1)",
        "dict://127.0.0.1:11211/stat",
        "//127.0.0.1/image.png",
        "http://user:pw@127.0.0.1/image.png",
        "http://@127.0.0.1/image.png",
        "http://127.0.0.1:0/",
        "http://%31%32%37.0.0.1/",
        "http://%6c%6f%63%61%6c%68%6f%73%74/",
        "http://a%2etest/",
        "http://[fe80::1%25eth0]/",
        "http://[fe80::1%eth0]/",
        "http://0x/",
    ],
)
def test_other_schemes_and_forbidden_urls(url: str, guard: NetworkGuard) -> None:
    """Well-formed URLs that are not fetched by policy: 403, not the sender's syntax error."""
    refused(url, allowing(*LOOPBACK_ONLY), "forbidden_url")
    assert guard.connects == []


@pytest.mark.parametrize(
    "url",
    [
        "http://[::1/",
        "http://[::1",
        "https://[zz::1]/",
        "http://127.0.0.1:99999/",
        "http://127.0.0.1:x/",
        "http://127.0.0.1/a b",
        "http://127.0.0.1/\x00",
        "http://a.test/" + "a" * 9000,
        # hosts: empty labels, too long, bad escapes, characters no host name has
        "http://a..b/",
        "http://.a.test/",
        "http://./",
        "http://" + "a" * 64 + ".test/",
        "http://" + ".".join(["a" * 63] * 4) + "/",
        "http://%zz/",
        "http://a%2/",
        "http://%c3.test/",
        "http://a!b.test/",
        "http://a\\b/",
        "http://a\u00a0b.test/",
        "http://\u00ad.test/",
        "http://xn--zz.test/",
        "http://xn--/",
        "http:///image.png",
        "http:/a.test/",
        "http://:80/",
        # numeric hosts that are no IPv4 address (WHATWG: a failure, not another spelling)
        "http://1.2.3.4.5/",
        "http://256.1.1.1/",
        "http://4294967296/",
        "http://1.2.3.08/",
        "http://a.1/",
        # brackets: junk after them, not IPv6 inside them, an empty zone
        "http://[::1]x/",
        "http://[::1]]/",
        "http://[::1]x:80/",
        "http://[v1.x]/",
        "http://[127.0.0.1]/",
        "http://[::1%25]/",
        "http://a]b/",
        # ports and user info
        "http://127.0.0.1:80x/",
        "http://127.0.0.1:80:90/",
        "http://127.0.0.1:+80/",
        "http://127.0.0.1:-1/",
        "http://127.0.0.1:65536/",
        "http://127.0.0.1:\u0668\u0660/",
        "http://a:b@c@127.0.0.1/",
        "http://a[b@127.0.0.1/",
        "http://127.0.0.1\t/",
        "http://127.0.0.1\u0085/",
    ],
)
def test_malformed_urls_are_invalid_url(url: str, guard: NetworkGuard) -> None:
    refused(url, allowing(*LOOPBACK_ONLY), "invalid_url")
    with pytest.raises(ImageRejectedError) as caught:
        split_url(url)
    assert caught.value.code == "invalid_url"
    # Syntax before policy: with URLs off, a malformed one is still the sender's mistake.
    refused(url, ImageInputSettings(), "invalid_url")
    assert guard.connects == [] and guard.lookups == []


@pytest.mark.parametrize(
    "url",
    ["http://a.test./x.png", "http://a.b:/x.png", "http://A.Test:0080/", "http://\u00e4.test/"],
)
def test_unusual_but_valid_urls_parse(url: str) -> None:
    assert split_url(url).hostname


@pytest.mark.parametrize(
    "url", ["file:///etc/passwd", "ftp://x/y.png", "gopher://x/", "javascript:alert(1)"]
)
def test_read_input_refuses_other_schemes(url: str, guard: NetworkGuard) -> None:
    for item in (url, {"url": url}):
        with pytest.raises(ImageRejectedError) as caught:
            read_input(item, allowing(*LOOPBACK_ONLY))
        assert caught.value.code == "forbidden_url"
    assert guard.connects == []


# --- Allowed fetches --------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/image.png", "/chunked.png", "/unframed.png"])
def test_allowed_network_fetches(path: str, server: Server, guard: NetworkGuard) -> None:
    assert fetch_url(server.base + path, allowing(*LOOPBACK_ONLY)) == IMAGE
    assert server.hits == [path]
    assert guard.connects == [("127.0.0.1", server.server_address[1])]


def test_mapped_ipv6_form_of_an_allowed_address_connects_over_ipv4(
    server: Server, guard: NetworkGuard
) -> None:
    url = f"http://[::ffff:127.0.0.1]:{server.server_address[1]}/image.png"
    assert fetch_url(url, allowing(*LOOPBACK_ONLY)) == IMAGE
    assert guard.connects == [("127.0.0.1", server.server_address[1])]


def test_load_image_and_read_input_fetch(server: Server) -> None:
    settings = allowing(*LOOPBACK_ONLY)
    assert read_input(server.base + "/image.png", settings) == IMAGE
    decoded = load_image({"url": server.base + "/image.png"}, settings)
    assert decoded.image.size == (6, 4) and decoded.format == "PNG"


def test_http_errors_are_fetch_failures(server: Server) -> None:
    error = refused(server.base + "/missing", allowing(*LOOPBACK_ONLY), "fetch_failed")
    assert "404" in error.message


def test_https_to_a_plain_http_server_fails_cleanly(server: Server) -> None:
    url = f"https://127.0.0.1:{server.server_address[1]}/image.png"
    refused(url, allowing(*LOOPBACK_ONLY), "fetch_failed")


# --- Redirects --------------------------------------------------------------------------------


def test_redirect_to_a_forbidden_address_is_not_followed(
    server: Server, canary: Server, guard: NetworkGuard
) -> None:
    url = f"{server.base}/redirect?to={canary.base}/image.png"
    error = refused(url, allowing(*LOOPBACK_ONLY), "forbidden_url")
    assert "127.0.0.2" in error.message
    assert canary.hits == []
    assert guard.connects == [("127.0.0.1", server.server_address[1])]


@pytest.mark.parametrize(
    "target",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/",
        "http://2130706433/",
        "http://[::ffff:169.254.169.254]/",
        "file:///etc/passwd",
        "gopher://127.0.0.1/",
    ],
)
def test_every_redirect_hop_is_checked(target: str, server: Server, guard: NetworkGuard) -> None:
    refused(f"{server.base}/redirect?to={target}", allowing(*LOOPBACK_ONLY), "forbidden_url")
    assert guard.connects == [("127.0.0.1", server.server_address[1])]


@pytest.mark.parametrize(
    "location", ["http://[::1/", "http://a..b/", "http://[::1]x/", "http://%zz/"]
)
def test_a_malformed_redirect_is_refused(
    location: str, server: Server, guard: NetworkGuard
) -> None:
    """The URL given was valid: the server's answer is what is refused."""
    error = refused(
        f"{server.base}/redirect?to={location}", allowing(*LOOPBACK_ONLY), "forbidden_url"
    )
    assert error.message == "the server redirected to a malformed URL"
    assert guard.connects == [("127.0.0.1", server.server_address[1])]


def test_relative_redirect_is_followed(server: Server) -> None:
    assert fetch_url(f"{server.base}/redirect?to=/image.png", allowing(*LOOPBACK_ONLY)) == IMAGE
    assert server.hits == ["/redirect?to=/image.png", "/image.png"]


def test_three_redirects_are_followed(server: Server) -> None:
    assert fetch_url(f"{server.base}/hop/3", allowing(*LOOPBACK_ONLY)) == IMAGE
    assert server.hits == ["/hop/3", "/hop/2", "/hop/1", "/image.png"]


def test_more_than_three_redirects_fail(server: Server) -> None:
    error = refused(f"{server.base}/hop/4", allowing(*LOOPBACK_ONLY), "fetch_failed")
    assert "redirected more than 3 times" in error.message
    assert server.hits == ["/hop/4", "/hop/3", "/hop/2", "/hop/1"]


def test_redirect_loop_is_bounded(server: Server) -> None:
    refused(f"{server.base}/loop", allowing(*LOOPBACK_ONLY), "fetch_failed")
    assert len(server.hits) == 4


def test_max_redirects_setting(server: Server) -> None:
    refused(f"{server.base}/hop/1", allowing(*LOOPBACK_ONLY, max_redirects=0), "fetch_failed")
    assert server.hits == ["/hop/1"]


# --- Size and time limits ---------------------------------------------------------------------


def test_lying_content_length_is_cut_at_the_cap(server: Server) -> None:
    settings = allowing(*LOOPBACK_ONLY, max_bytes=1_000_000)
    error = refused(server.base + "/lying", settings, "too_large")
    assert "1 MB" in error.message
    # The client hung up past the cap instead of reading on: the server got out about the cap
    # plus what the kernel's socket buffers hold, a small part of its 100 MB.
    answered = server.wait_answered("/lying")
    assert answered.hung_up and answered.sent < LYING_BYTES // 4, answered


def test_declared_length_over_the_cap_is_refused_without_reading(server: Server) -> None:
    error = refused(server.base + "/huge", allowing(*LOOPBACK_ONLY), "too_large")
    assert "1,000 GB" in error.message and "50 MB" in error.message


def test_body_shorter_than_announced_fails(server: Server) -> None:
    refused(server.base + "/short", allowing(*LOOPBACK_ONLY), "fetch_failed")


@pytest.mark.parametrize("path", ["/slow", "/slow-headers"])
def test_trickling_server_is_cut_at_the_total_deadline(path: str, server: Server) -> None:
    settings = allowing(*LOOPBACK_ONLY, url_timeout_s=1.5)
    error = refused(server.base + path, settings, "fetch_failed")
    assert error.message.endswith("did not send the image within 1.5 s"), error.message
    # Every read succeeded within a second, so only the total deadline stops this: the client
    # left while the server still had bytes to send (its next write found the socket closed).
    answered = server.wait_answered(path)
    assert answered.hung_up and answered.sent < TRICKLE_BYTES, answered


def test_tls_handshake_that_never_completes_hits_the_deadline(silent_tcp: SilentServer) -> None:
    settings = allowing(*LOOPBACK_ONLY, url_timeout_s=1.0)
    url = f"https://{silent_tcp.host}:{silent_tcp.port}/image.png"
    error = refused(url, settings, "fetch_failed")
    assert error.message.endswith("did not send the image within 1 s"), error.message
    # The client sent its hello, heard nothing, and closed the connection at the deadline.
    silent_tcp.accepted.wait(30)  # the accepting thread polls; the connection may queue a bit
    assert len(silent_tcp.held) == 1
    conn = silent_tcp.held[0]
    conn.settimeout(30)  # the close happened before fetch_url returned: this reads at once
    received = b""
    while chunk := conn.recv(65536):
        received += chunk
    assert received[:1] == b"\x16"  # a TLS handshake record (the ClientHello), then EOF


# --- DNS: resolved once, checked, and the checked address is the one connected to ----------


@pytest.fixture
def fake_dns(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """Answers from a table; counts calls; can hang (released at teardown)."""
    state: dict[str, Any] = {"answers": [], "calls": 0, "returned": 0, "hang": False}
    release = threading.Event()

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        state["calls"] += 1
        if state["hang"]:
            release.wait(60)
        state["returned"] += 1
        answers = state["answers"]
        if not answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        # A rebinding resolver: a different answer every time it is asked.
        answer = answers[min(state["calls"] - 1, len(answers) - 1)]
        family = socket.AF_INET6 if ":" in answer[0] else socket.AF_INET
        return [(family, socket.SOCK_STREAM, 6, "", (ip, port)) for ip in answer]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    yield state
    release.set()


def test_name_is_resolved_once_and_the_checked_address_is_used(
    fake_dns: dict[str, Any], server: Server, guard: NetworkGuard
) -> None:
    fake_dns["answers"] = [["127.0.0.1"], ["169.254.169.254"]]
    port = server.server_address[1]
    assert fetch_url(f"http://images.test:{port}/image.png", allowing(*LOOPBACK_ONLY)) == IMAGE
    assert fake_dns["calls"] == 1
    assert guard.connects == [("127.0.0.1", port)]
    assert server.hosts == [f"images.test:{port}"]  # the name travels as the Host header


def test_rebinding_between_redirect_hops_is_caught(
    fake_dns: dict[str, Any], server: Server, guard: NetworkGuard
) -> None:
    fake_dns["answers"] = [["127.0.0.1"], ["169.254.169.254"]]
    port = server.server_address[1]
    url = f"http://images.test:{port}/redirect?to=http://images.test:{port}/image.png"
    refused(url, allowing(*LOOPBACK_ONLY), "forbidden_url")
    assert fake_dns["calls"] == 2
    assert guard.connects == [("127.0.0.1", port)]


@pytest.mark.parametrize(
    "answer", [["169.254.169.254"], ["127.0.0.1", "10.0.0.5"], ["::1"], ["::ffff:10.0.0.1"]]
)
def test_any_forbidden_answer_refuses_the_name(
    answer: list[str], fake_dns: dict[str, Any], guard: NetworkGuard
) -> None:
    fake_dns["answers"] = [answer]
    error = refused("http://images.test/x.png", allowing(*LOOPBACK_ONLY), "forbidden_url")
    assert "images.test resolves to" in error.message
    assert guard.connects == []


def test_unknown_name_fails(fake_dns: dict[str, Any], guard: NetworkGuard) -> None:
    refused("http://nothing.test/x.png", allowing(), "fetch_failed")
    assert guard.connects == []


def test_slow_dns_hits_the_deadline(fake_dns: dict[str, Any], guard: NetworkGuard) -> None:
    fake_dns["hang"] = True
    error = refused("http://slow.test/x.png", allowing(url_timeout_s=1.0), "fetch_failed")
    assert error.message == "looking up slow.test took longer than 1 s"
    # Refused while the lookup still hung (it is released at teardown): nobody waited for it.
    assert fake_dns["calls"] == 1 and fake_dns["returned"] == 0
    assert guard.connects == []


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (
            "http://127.0.0.1/a.png",
            "127.0.0.1 is a loopback address; fetching from it is not allowed",
        ),
        (
            "http://0.0.0.0/a.png",
            "0.0.0.0 is an unspecified address; fetching from it is not allowed",
        ),
        (
            "http://localhost/a.png",
            "localhost resolves to 127.0.0.1, a loopback address; fetching from it is not allowed",
        ),
    ],
)
def test_refusals_read_as_sentences(url: str, message: str, guard: NetworkGuard) -> None:
    assert refused(url, allowing(), "forbidden_url").message == message
