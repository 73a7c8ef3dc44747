"""Fetch an image by http(s) URL without becoming a server-side request forgery tool.

A URL is parsed first, strictly (``split_url``): one that does not parse is ``invalid_url``, the
sender's mistake, whatever the policy; one that parses but is not fetched is ``forbidden_url``.
Every hop (the first request and each redirect) is checked the same way: http/https only, no user
info, no numeric host in a non-canonical form, the host resolved ONCE and every address it resolves
to checked against the private/loopback/link-local/multicast/reserved ban (``allowed_networks``
exempts ranges), and then the socket is connected to exactly that checked address; the name is only
sent as the Host header and TLS SNI. One deadline covers DNS, connect, TLS and every read, so a
server that trickles one byte a second is still cut off on time; the body is framed by end of
stream (we send ``Connection: close``) and cut at the byte cap whatever Content-Length claims.
"""

from __future__ import annotations

import functools
import http.client
import ipaddress
import math
import re
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import SplitResult, quote, unquote, urljoin, urlsplit

from vizdex.core.errors import ImageRejectedError
from vizdex.imaging.settings import ImageInputSettings, IPNetwork, format_bytes

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer, WriteableBuffer

__all__ = ["fetch_url"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_MAX_URL_LENGTH = 8192
_READ_CHUNK = 256 * 1024
_REDIRECTS = frozenset({301, 302, 303, 307, 308})

# Ranges refused on top of what ``ipaddress`` flags, so the ban does not depend on the stdlib's
# tables (which have changed between patch releases). Transition ranges that embed an IPv4 address
# (NAT64, 6to4, Teredo) are refused outright rather than decoded.
_BLOCKED = tuple(
    ipaddress.ip_network(cidr)
    for cidr in (
        "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
        "172.16.0.0/12", "192.0.0.0/24", "192.0.2.0/24", "192.88.99.0/24", "192.168.0.0/16",
        "198.18.0.0/15", "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4",
        "::/96", "::ffff:0:0/96", "64:ff9b::/96", "64:ff9b:1::/48", "100::/64", "2001::/23",
        "2001:db8::/32", "2002::/16", "fc00::/7", "fe80::/10", "fec0::/10", "ff00::/8",
    )
)  # fmt: skip


@dataclass(frozen=True)
class _Target:
    scheme: str
    host: str  # IDNA-encoded name or IP literal without brackets
    port: int
    path: str  # path and query, as sent in the request line
    ip: IPAddress | None  # set when the host is an IP literal


@dataclass(frozen=True)
class _Redirect:
    location: str


def fetch_url(url: str, settings: ImageInputSettings) -> bytes:
    """Download ``url`` (http/https) within the limits of ``settings``; at most the byte cap."""
    split_url(url)  # a malformed URL is the sender's mistake (invalid_url) whatever the policy
    if not settings.allow_urls:
        raise _forbidden("image URLs are not accepted by this server; send the image data instead")
    deadline = time.monotonic() + settings.url_timeout_s
    networks = settings.networks()
    current = url
    for hop in range(settings.max_redirects + 1):
        target = _parse_url(current) if hop == 0 else _redirect_target(current)
        addresses = _resolve_checked(target, networks, deadline, settings)
        result = _request(target, addresses, deadline, settings)
        if isinstance(result, bytes):
            return result
        try:
            current = urljoin(current, result.location)
        except ValueError:
            raise _malformed_redirect() from None
    raise ImageRejectedError(
        f"the URL redirected more than {settings.max_redirects} times", code="fetch_failed"
    )


def _redirect_target(url: str) -> _Target:
    try:
        return _parse_url(url)
    except ImageRejectedError as error:
        if error.code == "invalid_url":  # the URL given was valid; the server's answer is not
            raise _malformed_redirect() from None
        raise


def _malformed_redirect() -> ImageRejectedError:
    return _forbidden("the server redirected to a malformed URL")


# --- URL syntax: invalid_url ------------------------------------------------------------------
# A URL that does not parse is the sender's syntax error (422 invalid_url); one that parses but
# is not fetched by policy (scheme, user info, spelling of the host, its address) is forbidden_url.

# RFC 3986 userinfo: unreserved, sub-delims, ":" and %-escapes; non-ASCII as in IRIs.
_USERINFO = re.compile(r"(?:[A-Za-z0-9\-._~!$&'()*+,;=:]|%[0-9A-Fa-f]{2}|[^\x00-\x7f])*")
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
_LABEL = re.compile(r"[a-z0-9_-]{1,63}")
_MAX_NAME_LENGTH = 253  # DNS, without the final dot
# WHATWG: a host whose last label is a number is IPv4, in 1-4 decimal, octal or hex parts.
_NUMERIC_LABEL = re.compile(r"[0-9]+|0x[0-9a-f]*")
_IPV4_PART = re.compile(r"0x(?P<hex>[0-9a-f]*)|(?P<octal>0[0-7]+)|(?P<decimal>0|[1-9][0-9]*)")


@dataclass(frozen=True)
class _Host:
    written: str  # as in the URL, without brackets
    name: str  # what is looked up or connected to: ASCII (IDNA) name, or the address
    escaped: bool = False  # the name was written with %-escapes
    ipv6: ipaddress.IPv6Address | None = None
    zone: bool = False  # an IPv6 zone id ("%25eth0") followed the address
    ipv4: ipaddress.IPv4Address | None = None  # a numeric host, however it was spelled


def split_url(url: str) -> SplitResult:
    """``url`` in parts, or ``invalid_url``: every URL vizdex is given is parsed here first."""
    return _split(url)[0]


def _split(url: str) -> tuple[SplitResult, _Host | None]:
    if len(url) > _MAX_URL_LENGTH:
        raise _invalid_url(f"the URL is longer than {_MAX_URL_LENGTH:,} characters")
    if any(ch <= " " or ch == "\x7f" for ch in url):
        raise _invalid_url(f"{_shown(url)} contains spaces or control characters")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (parsed on access: raises for "a:99999" or "a:x")
        return parts, _authority(parts)
    except ValueError as error:  # urlsplit's (an unclosed "[", a bad port) or _authority's
        raise _invalid_url(f"{_shown(url)} is not a valid URL ({error})") from None


def _authority(parts: SplitResult) -> _Host | None:
    """The host of ``user@host:port``, checked where urlsplit is lenient; ValueError says why."""
    userinfo, at, hostport = parts.netloc.rpartition("@")
    if at and not _USERINFO.fullmatch(userinfo):
        raise ValueError("characters a user name or password cannot have")
    if hostport.startswith("["):
        end = hostport.find("]")
        written, rest = hostport[: end + 1], hostport[end + 1 :]
        if end < 0 or (rest and not rest.startswith(":")):  # urlsplit drops what follows "]"
            raise ValueError("text after the IPv6 address")
        port = rest[1:]
    else:
        written, _, port = hostport.partition(":")
    if port and not (port.isascii() and port.isdigit() and int(port) <= 65535):
        raise ValueError(f"the port {port!r}")
    if written.startswith("["):
        return _ipv6_host(written[1:-1])
    if written:
        return _name_host(written)
    if parts.scheme.lower() in ("http", "https"):
        raise ValueError("no host name")
    return None  # refused for its scheme


def _ipv6_host(text: str) -> _Host:
    address, percent, zone = text.partition("%")
    try:
        ipv6 = ipaddress.IPv6Address(address)
    except ValueError:
        raise ValueError(f"[{text}] is not an IPv6 address") from None
    if percent and zone in ("", "25"):
        raise ValueError(f"[{text}] has an empty zone id")
    return _Host(text, address.lower(), ipv6=ipv6, zone=bool(percent))


def _name_host(written: str) -> _Host:
    name = _ascii_host(_unescaped(written))
    return _Host(written, name, escaped="%" in written, ipv4=_ipv4(name))


def _unescaped(host: str) -> str:
    if "%" not in host:
        return host
    if _BAD_ESCAPE.search(host):
        raise ValueError(f"the host {host!r} has a '%' that starts no escape")
    try:
        return unquote(host, errors="strict")
    except UnicodeDecodeError:
        raise ValueError(f"the host {host!r} has escapes that are not UTF-8") from None


def _ascii_host(host: str) -> str:
    """``host`` in ASCII (IDNA); ValueError when no DNS name or IPv4 address is written so."""
    try:
        ascii_host = host.encode("idna").decode("ascii").lower()
    except UnicodeError:
        raise ValueError(f"the host {host!r} {_label_problem(host)}") from None
    name = ascii_host.removesuffix(".")
    if len(name) > _MAX_NAME_LENGTH:
        raise ValueError(f"the host name is longer than {_MAX_NAME_LENGTH} characters")
    for label in name.split("."):
        if not _LABEL.fullmatch(label):
            raise ValueError(f"the host {host!r} {_label_problem(label)}")
        if label.startswith("xn--"):
            try:
                label.encode("ascii").decode("idna")
            except UnicodeError:
                raise ValueError(f"the host label {label!r} is not valid punycode") from None
    return ascii_host


def _label_problem(text: str) -> str:
    labels = re.split("[.\u3002\uff0e\uff61]", text.removesuffix("."))  # IDNA's dots
    if "" in labels:
        return "has an empty label"
    if any(len(label) > 63 for label in labels):
        return "has a label longer than 63 characters"
    if not text.isascii():
        return "is not a valid international name"
    return "has characters other than letters, digits, '-' and '_'"


def _ipv4(name: str) -> ipaddress.IPv4Address | None:
    """The address when the host is numeric (WHATWG's "ends in a number"), else None."""
    parts = name.removesuffix(".").split(".")
    if not _NUMERIC_LABEL.fullmatch(parts[-1]):
        return None
    numbers = [_ipv4_part(part) for part in parts]
    if None in numbers or len(numbers) > 4:
        raise ValueError(f"the host {name!r} ends in a number but is no IPv4 address")
    *high, low = [number for number in numbers if number is not None]
    if any(number > 255 for number in high) or low >= 256 ** (4 - len(high)):
        raise ValueError(f"the IPv4 address {name!r} has a part that is too large")
    value = low + sum(number << (8 * (3 - position)) for position, number in enumerate(high))
    return ipaddress.IPv4Address(value)


def _ipv4_part(part: str) -> int | None:
    match = _IPV4_PART.fullmatch(part)
    if match is None:
        return None
    if match["hex"] is not None:
        return int(match["hex"] or "0", 16)
    if match["octal"] is not None:
        return int(match["octal"], 8)
    return int(part)


def _shown(url: str) -> str:
    return repr(url if len(url) <= 100 else url[:97] + "...")


def _invalid_url(message: str) -> ImageRejectedError:
    return ImageRejectedError(message, code="invalid_url")


# --- URL policy: forbidden_url ----------------------------------------------------------------


def _forbidden(message: str) -> ImageRejectedError:
    return ImageRejectedError(message, code="forbidden_url")


def _failed(message: str) -> ImageRejectedError:
    return ImageRejectedError(message, code="fetch_failed")


def _parse_url(url: str) -> _Target:
    parts, host = _split(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        shown = f"{scheme}:" if scheme else "a URL without a scheme"
        raise _forbidden(f"only http and https image URLs are accepted, not {shown}")
    assert host is not None  # an http(s) URL without one is invalid_url
    if "@" in parts.netloc:
        raise _forbidden("URLs with a user name or password are not accepted")
    port = parts.port
    if port == 0:
        raise _forbidden("the URL has port 0")
    if port is None:
        port = 443 if scheme == "https" else 80
    path = quote(parts.path or "/", safe="/%:@!$&'()*+,;=-._~")
    if parts.query:
        path += "?" + quote(parts.query, safe="/%:@!$&'()*+,;=-._~?")
    return _Target(scheme=scheme, host=host.name, port=port, path=path, ip=_address(host))


def _address(host: _Host) -> IPAddress | None:
    """The address of an IP host written canonically; other spellings of a host are refused."""
    if host.zone:
        raise _forbidden("IPv6 addresses with a zone id are not accepted")
    if host.ipv6 is not None:
        return host.ipv6
    if host.escaped:
        raise _forbidden(f"{host.written!r} is written with %-escapes; write the host name plainly")
    if host.ipv4 is not None and host.name != str(host.ipv4):
        raise _forbidden(
            f"{host.written!r} is a numeric host in a non-standard form (here {host.ipv4}); "
            "write IPv4 addresses as a.b.c.d"
        )
    return host.ipv4


def _address_problem(ip: IPAddress, networks: tuple[IPNetwork, ...]) -> str | None:
    """Why ``ip`` may not be fetched from, or None when it may (public, or explicitly allowed)."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if any(ip.version == net.version and ip in net for net in networks):
        return None
    for kind, flagged in (
        ("unspecified", ip.is_unspecified),
        ("loopback", ip.is_loopback),
        ("link-local", ip.is_link_local),
        ("multicast", ip.is_multicast),
        ("private", ip.is_private),
        ("reserved", ip.is_reserved),
    ):
        if flagged:
            return kind
    if not ip.is_global or any(ip.version == net.version and ip in net for net in _BLOCKED):
        return "non-public"
    return None


def _connectable(ip: IPAddress) -> IPAddress:
    """IPv4-mapped IPv6 is connected to as plain IPv4: that is where it would go anyway."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _resolve_checked(
    target: _Target,
    networks: tuple[IPNetwork, ...],
    deadline: float,
    settings: ImageInputSettings,
) -> list[IPAddress]:
    """Resolve once and check every answer: one bad address refuses the host (no mixed answers)."""
    addresses = [target.ip] if target.ip is not None else _lookup(target, deadline, settings)
    for ip in addresses:
        problem = _address_problem(ip, networks)
        if problem is not None:
            article = "an" if problem[0] in "aeiou" else "a"  # an unspecified, a loopback
            what = f"{article} {problem} address; fetching from it is not allowed"
            if target.ip is None:
                raise _forbidden(f"{target.host} resolves to {ip}, {what}")
            raise _forbidden(f"{ip} is {what}")
    return [_connectable(ip) for ip in addresses]


def _lookup(target: _Target, deadline: float, settings: ImageInputSettings) -> list[IPAddress]:
    name = target.host.lower().rstrip(".")
    if name == "localhost" or name.endswith(".localhost"):
        # RFC 6761: always loopback, whatever a resolver (or its absence) would say.
        return [ipaddress.IPv4Address("127.0.0.1")]
    try:
        infos = _getaddrinfo_until(target.host, target.port, deadline)
    except TimeoutError:
        raise _failed(
            f"looking up {target.host} took longer than {settings.url_timeout_s:g} s"
        ) from None
    except (OSError, ValueError):  # gaierror, or a name the resolver's IDNA step rejects
        raise _failed(f"could not find the host {target.host}") from None
    addresses: list[IPAddress] = []
    for text in infos:
        ip = ipaddress.ip_address(text)
        if ip not in addresses:
            addresses.append(ip)
    if not addresses:
        raise _failed(f"could not find the host {target.host}")
    return addresses


def _getaddrinfo_until(host: str, port: int, deadline: float) -> list[str]:
    """``getaddrinfo`` has no timeout: run it on a daemon thread, stop waiting at the deadline."""
    outcome: list[list[str] | Exception] = []
    done = threading.Event()

    def run() -> None:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            outcome.append([str(info[4][0]) for info in infos])
        except Exception as exc:  # handed to the caller; a thread must not die with it
            outcome.append(exc)
        finally:
            done.set()

    threading.Thread(target=run, name="vizdex-dns", daemon=True).start()
    if not done.wait(max(0.0, deadline - time.monotonic())):
        raise TimeoutError
    result = outcome[0]
    if isinstance(result, Exception):
        raise result
    return result


# --- Connection with one deadline -------------------------------------------------------------


def _remaining(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("deadline passed")
    return left


class _DeadlineSocket(socket.socket):
    """Each blocking call may wait only until the shared deadline: a per-read timeout alone
    would let a server trickle one byte just inside it forever."""

    deadline: float = math.inf

    def connect(self, address: object, /) -> None:
        self.settimeout(_remaining(self.deadline))
        super().connect(address)  # type: ignore[arg-type]

    def recv(self, bufsize: int, flags: int = 0, /) -> bytes:
        self.settimeout(_remaining(self.deadline))
        return super().recv(bufsize, flags)

    def recv_into(self, buffer: WriteableBuffer, nbytes: int = 0, flags: int = 0, /) -> int:
        self.settimeout(_remaining(self.deadline))
        return super().recv_into(buffer, nbytes, flags)

    def sendall(self, data: ReadableBuffer, flags: int = 0, /) -> None:
        self.settimeout(_remaining(self.deadline))
        super().sendall(data, flags)


class _DeadlineSSLSocket(ssl.SSLSocket):
    """The TLS twin of ``_DeadlineSocket`` (handshake, reads and writes share the deadline)."""

    deadline: float = math.inf

    def do_handshake(self, block: bool = False) -> None:
        self.settimeout(_remaining(self.deadline))
        super().do_handshake(block)

    def recv(self, buflen: int = 1024, flags: int = 0) -> bytes:
        self.settimeout(_remaining(self.deadline))
        return super().recv(buflen, flags)

    def recv_into(self, buffer: WriteableBuffer, nbytes: int | None = None, flags: int = 0) -> int:
        self.settimeout(_remaining(self.deadline))
        return super().recv_into(buffer, nbytes, flags)

    def sendall(self, data: ReadableBuffer, flags: int = 0) -> None:
        self.settimeout(_remaining(self.deadline))
        super().sendall(data, flags)


@functools.cache
def _tls_context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.sslsocket_class = _DeadlineSSLSocket
    return context


def _connect(target: _Target, addresses: list[IPAddress], deadline: float) -> socket.socket:
    """Connect to one of the already-checked addresses (never to the name), then TLS if https."""
    last_error: OSError | None = None
    for ip in addresses:
        family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
        sock = _DeadlineSocket(family, socket.SOCK_STREAM)
        sock.deadline = deadline
        try:
            sock.connect((str(ip), target.port))
        except OSError as exc:
            sock.close()
            last_error = exc
            continue
        return _start_tls(sock, target, deadline) if target.scheme == "https" else sock
    if isinstance(last_error, TimeoutError):
        raise last_error
    raise _failed(f"could not connect to {target.host}:{target.port}")


def _start_tls(sock: socket.socket, target: _Target, deadline: float) -> socket.socket:
    try:
        tls = _tls_context().wrap_socket(
            sock, server_hostname=target.host, do_handshake_on_connect=False
        )
    except BaseException:
        sock.close()
        raise
    assert isinstance(tls, _DeadlineSSLSocket)
    tls.deadline = deadline
    try:
        tls.do_handshake()
    except BaseException:
        tls.close()
        raise
    return tls


# --- Request and body -------------------------------------------------------------------------


def _host_header(target: _Target) -> str:
    host = f"[{target.host}]" if ":" in target.host else target.host
    default_port = 443 if target.scheme == "https" else 80
    return host if target.port == default_port else f"{host}:{target.port}"


def _request(
    target: _Target, addresses: list[IPAddress], deadline: float, settings: ImageInputSettings
) -> bytes | _Redirect:
    where = f"{target.scheme}://{_host_header(target)}"
    conn = http.client.HTTPConnection(target.host, target.port)
    response: http.client.HTTPResponse | None = None
    try:
        conn.sock = _connect(target, addresses, deadline)  # pinned: http.client never resolves
        conn.putrequest("GET", target.path, skip_host=True, skip_accept_encoding=True)
        for name, value in (
            ("Host", _host_header(target)),
            ("User-Agent", "vizdex-image-fetch"),
            ("Accept", "image/*"),
            ("Accept-Encoding", "identity"),
            ("Connection", "close"),
        ):
            conn.putheader(name, value)
        conn.endheaders()
        response = conn.getresponse()
        return _handle_response(response, where, settings)
    except TimeoutError:
        raise _failed(
            f"{where} did not send the image within {settings.url_timeout_s:g} s"
        ) from None
    except ssl.SSLError as exc:
        raise _failed(f"the secure connection to {where} failed ({exc.reason})") from None
    except (OSError, http.client.HTTPException) as exc:
        raise _failed(f"fetching from {where} failed ({type(exc).__name__})") from None
    finally:
        if response is not None:
            response.close()  # with Connection: close the response owns the socket
        conn.close()


def _handle_response(
    response: http.client.HTTPResponse, where: str, settings: ImageInputSettings
) -> bytes | _Redirect:
    if response.status in _REDIRECTS:
        location = response.getheader("Location")
        if not location:
            raise _failed(f"{where} answered a redirect without a Location")
        return _Redirect(location.strip())
    if response.status != 200:
        raise _failed(f"{where} answered {response.status} {response.reason}".rstrip())
    declared = _declared_length(response)
    if declared is not None and declared > settings.max_bytes:
        raise ImageRejectedError(
            f"the image at {where} is {format_bytes(declared)}; "
            f"the limit is {format_bytes(settings.max_bytes)}",
            code="too_large",
        )
    if not response.chunked:
        # Frame by end of stream (we sent Connection: close) so that a Content-Length that
        # understates the body can neither hide the excess nor truncate the image silently.
        response.length = None
    body = _read_capped(response, where, settings.max_bytes)
    if declared is not None and len(body) != declared:
        raise _failed(f"{where} announced {declared:,} bytes but sent {len(body):,}")
    return body


def _declared_length(response: http.client.HTTPResponse) -> int | None:
    if response.chunked:
        return None
    value = response.getheader("Content-Length")
    if value is None:
        return None
    try:
        length = int(value.strip())
    except ValueError:
        return None
    return length if length >= 0 else None


def _read_capped(response: http.client.HTTPResponse, where: str, max_bytes: int) -> bytes:
    body = bytearray()
    while chunk := response.read1(_READ_CHUNK):
        body += chunk
        if len(body) > max_bytes:
            raise ImageRejectedError(
                f"the image at {where} is larger than the limit of {format_bytes(max_bytes)}",
                code="too_large",
            )
    return bytes(body)
