"""laionprep's own image fetcher, installed in img2dataset's download workers in place of its urllib download.

img2dataset's ``download_shard`` fetches every URL with ``download_image_with_retry(row, timeout, retries,
user_agent_token, disallowed_header_directives) -> (key, BytesIO | None, error message | None)``.  The download
child (:mod:`laionprep.ingest.img2dataset_runner`) makes img2dataset build a
:class:`~laionprep.ingest.safe_downloader.SafeDownloader`, which puts
:func:`download_image_with_retry` of this module there in each worker process, with the limits of
:class:`FetchOptions`.  Per URL it:

* accepts only ``http`` and ``https`` URLs, at every redirect hop (a tombstone, ``folders.tombstone``, is refused
  with its own reason: a row ``laionprep remove`` took out is never fetched again);
* resolves the host once, refuses it unless every address is public (loopback, private, link-local such as the
  cloud metadata endpoint 169.254.169.254, CGNAT, multicast, reserved... are refused unless
  ``allow_private_addresses``), then connects to the checked address itself, so DNS cannot answer differently
  between the check and the connection;
* follows redirects itself (at most ``max_redirects`` hops, loops detected), re-checking scheme and address;
* holds one deadline per attempt (``timeout`` seconds for connect, headers and body together): a watchdog shuts
  the socket at the deadline, so a slow-drip body or a stalled connection ends as ``timeout``;
* refuses a body over ``max_image_bytes`` (from Content-Length, and while reading) and one shorter than its
  Content-Length;
* keeps img2dataset's X-Robots-Tag rule (its own ``is_disallowed``);
* reads the image header (Pillow reads only the header) and refuses more than ``max_image_pixels`` before
  anything decodes it, and refuses what is not an image or is a truncated JPEG/PNG;
* retries, up to ``retries`` times, only what may succeed later (timeouts, connection errors, HTTP 5xx/429/408).

Every failure is a message ``"<reason> (<detail>)"``; :func:`reason_of` maps it back to the stable reason the
download accounting groups by (``refused: loopback address``, ``HTTP Error 404: Not Found``, ``timeout``...).
"""
from __future__ import annotations

import dataclasses
import functools
import heapq
import http
import http.client
import io
import ipaddress
import itertools
import os
import re
import socket
import ssl
import threading
import time
import urllib.parse
import warnings
from typing import Optional

from laionprep.folders import tombstone
from laionprep.ingest import fetch_progress

# The limits' defaults (also the CLI's): a 48-megapixel camera image passes; decoding the largest image allowed
# takes about 150 MB (RGB, 8 bit) in the worker.
DEFAULT_MAX_IMAGE_BYTES = 32 * 1024 * 1024
DEFAULT_MAX_IMAGE_PIXELS = 50_000_000
DEFAULT_MAX_REDIRECTS = 5
_CHUNK = 64 * 1024
_REDIRECTS = (301, 302, 303, 307, 308)
_TRANSIENT_HTTP = (408, 429, 500, 502, 503, 504)


@dataclasses.dataclass(frozen=True)
class FetchOptions:
    """The limits of :func:`fetch` (the timeout, retries and robots rules come from img2dataset's arguments)."""

    allow_private_addresses: bool = False
    max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
    max_redirects: int = DEFAULT_MAX_REDIRECTS
    # Networks allowed even when private addresses are refused (Python API only, e.g. an internal mirror).
    allowed_networks: tuple[str, ...] = ()

    @functools.cached_property
    def networks(self) -> tuple:
        """``allowed_networks`` parsed (once per options object, not per URL)."""
        return tuple(ipaddress.ip_network(n, strict=False) for n in self.allowed_networks)


class FetchError(Exception):
    """One URL's failure: ``reason`` is stable (the accounting groups by it), ``detail`` names the specifics."""

    def __init__(self, reason: str, detail: str = "", transient: bool = False):
        self.reason, self.detail, self.transient = reason, detail, transient
        super().__init__(f"{reason} ({detail})" if detail else reason)


# Reasons with a variable part in the middle; every other reason of this module is a fixed string.
_REASON_PATTERNS = (
    r"refused: scheme \S+ not allowed",
    r"refused: (?:loopback|private|link-local|multicast|unspecified|reserved|non-public) address",
    r"HTTP Error \d{3}: [^()]*",
    r"body over \d+ bytes",
    r"image over \d+ pixels",
)
_FIXED_REASONS = ("bad url", "dns error", "connection failed", "tls error", "protocol error", "timeout",
                  "redirect loop", "too many redirects", "redirect without location", "incomplete body",
                  "empty body", "not an image", "truncated image",
                  "Use of image disallowed by X-Robots-Tag directive", tombstone.REASON)
_REASON_RE = re.compile(r"^(" + "|".join(list(_REASON_PATTERNS) + [re.escape(r) for r in _FIXED_REASONS])
                        + r")(?: \(.*\))?$", re.S)


def reason_of(message: str) -> Optional[str]:
    """The stable reason of a message made by this module (details dropped), or None for any other message."""
    m = _REASON_RE.match(message.strip())
    return m.group(1).strip() if m else None


# ------------------------------------------------------------------------------------------------ addresses
def address_problem(address: str, opts: FetchOptions) -> Optional[str]:
    """None when ``address`` (an IP literal) may be fetched, else the kind of address refused."""
    if opts.allow_private_addresses:
        return None
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if any(ip in n for n in opts.networks):
        return None
    for kind, flag in (("loopback", ip.is_loopback), ("link-local", ip.is_link_local),
                       ("unspecified", ip.is_unspecified), ("multicast", ip.is_multicast),
                       ("private", ip.is_private), ("reserved", ip.is_reserved)):
        if flag:
            return kind
    return None if ip.is_global else "non-public"


def check_url(url: str) -> urllib.parse.SplitResult:
    """Parse ``url``; refuse every scheme but http(s) and URLs without a usable host or port.  A tombstone (a row
    ``laionprep remove`` took out, ``folders.tombstone``) is refused first, with its own reason."""
    ident = tombstone.ident_of(url)
    if ident is not None:
        raise FetchError(tombstone.REASON, ident[:64])
    try:
        parts = urllib.parse.urlsplit(url.strip())
    except ValueError as e:
        raise FetchError("bad url", str(e)) from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise FetchError(f"refused: scheme {scheme or 'none'} not allowed", url[:200])
    try:
        parts.port
    except ValueError as e:
        raise FetchError("bad url", str(e)) from None
    if not parts.hostname:
        raise FetchError("bad url", "no host")
    return parts


def resolve(host: str, port: int, opts: FetchOptions) -> list:
    """Every ``(family, sockaddr)`` of ``host``; refused unless every one of them passes :func:`address_problem`."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as e:
        raise FetchError("dns error", f"{host}: {e}", transient=True) from None
    out = []
    for family, _, _, _, sockaddr in infos:
        if family not in (socket.AF_INET, socket.AF_INET6):
            continue
        kind = address_problem(sockaddr[0], opts)
        if kind:
            raise FetchError(f"refused: {kind} address",
                             sockaddr[0] if host == sockaddr[0] else f"{host} -> {sockaddr[0]}")
        if (family, sockaddr) not in out:
            out.append((family, sockaddr))
    if not out:
        raise FetchError("dns error", f"{host}: no IPv4/IPv6 address", transient=True)
    return out


# ------------------------------------------------------------------------------------------------ deadlines
class _Watchdog:
    """One thread per process that shuts a socket down when its URL's deadline passes: every blocking call on it
    (connect, TLS handshake, headers, body) returns at once, however slowly the server drips bytes."""

    def __init__(self):
        self._heap: list = []
        self._cv = threading.Condition()
        self._seq = itertools.count()
        self._pid = None

    def watch(self, entry: "_Watch") -> None:
        with self._cv:
            if self._pid != os.getpid():  # first use in this process (workers are spawned or forked)
                self._heap, self._pid = [], os.getpid()
                threading.Thread(target=self._run, name="laionprep-fetch-watchdog", daemon=True).start()
            heapq.heappush(self._heap, (entry.deadline, next(self._seq), entry))
            if self._heap[0][2] is entry:  # sooner than the thread's next wake-up (rare: deadlines grow)
                self._cv.notify()

    def _run(self) -> None:
        with self._cv:
            while True:
                now = time.monotonic()
                while self._heap and (self._heap[0][2].done or self._heap[0][0] <= now):
                    _, _, e = heapq.heappop(self._heap)
                    if not e.done:
                        e.expire()
                self._cv.wait(timeout=(self._heap[0][0] - now) if self._heap else None)


_WATCHDOG = _Watchdog()


class _Watch:
    def __init__(self, deadline: float):
        self.deadline, self.sock, self.done, self.fired = deadline, None, False, False
        self._lock = threading.Lock()

    def set_socket(self, sock) -> None:
        with self._lock:
            self.sock = sock
            if self.fired:
                _shutdown(sock)

    def expire(self) -> None:
        with self._lock:
            self.fired = True
            if self.sock is not None:
                _shutdown(self.sock)

    def remaining(self) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0 or self.fired:
            raise FetchError("timeout", "deadline passed", transient=True)
        return left


def _shutdown(sock) -> None:
    try:
        socket.socket.shutdown(sock, socket.SHUT_RDWR)  # the base method: also for an SSLSocket, from any thread
    except OSError:
        pass


# ------------------------------------------------------------------------------------------------ fetching
def user_agent(token: Optional[str]) -> str:
    """img2dataset's User-Agent string."""
    ua = "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:72.0) Gecko/20100101 Firefox/72.0"
    if token:
        ua += f" (compatible; {token}; +https://github.com/rom1504/img2dataset)"
    return ua


_PRINTABLE = "".join(chr(c) for c in range(0x21, 0x7F))


def _target(parts: urllib.parse.SplitResult) -> str:
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    # spaces, control and non-ASCII characters are percent-encoded (http.client refuses them in a request line)
    return urllib.parse.quote(target, safe=_PRINTABLE)


def fetch(url: str, timeout: float, opts: FetchOptions, user_agent_token: Optional[str] = None,
          disallowed_header_directives=None) -> bytes:
    """One attempt at ``url`` within ``timeout`` seconds, redirects included: the checked body, or FetchError."""
    from img2dataset.downloader import is_disallowed  # img2dataset's own X-Robots-Tag rule (imported before the clock)

    watch = _Watch(time.monotonic() + timeout)
    _WATCHDOG.watch(watch)
    seen = set()
    try:
        for hop in itertools.count():
            parts = check_url(url)
            if url in seen:
                raise FetchError("redirect loop", f"back to {url[:200]} after {hop} redirects")
            seen.add(url)
            resp, conn = _request(parts, watch, opts, user_agent_token)
            try:
                if resp.status in _REDIRECTS:
                    location = resp.getheader("Location")
                    if not location:
                        raise FetchError("redirect without location", f"HTTP {resp.status}")
                    if hop >= opts.max_redirects:
                        raise FetchError("too many redirects", f"more than {opts.max_redirects}")
                    url = urllib.parse.urljoin(url, location.strip())
                    continue
                if resp.status >= 300 or resp.status < 200:
                    phrase = _phrase(resp.status)
                    raise FetchError(f"HTTP Error {resp.status}: {phrase}", transient=resp.status in _TRANSIENT_HTTP)
                if disallowed_header_directives:
                    if is_disallowed(resp.headers, user_agent_token, disallowed_header_directives):
                        raise FetchError("Use of image disallowed by X-Robots-Tag directive",
                                         "; ".join(resp.headers.get_all("X-Robots-Tag", []))[:200])
                data = _read_body(resp, watch, opts)
            finally:
                conn.close()
            check_image(data, opts)
            return data
    except FetchError:
        raise
    except Exception as e:  # noqa: BLE001  (socket, TLS and protocol errors of any kind)
        if watch.fired or time.monotonic() >= watch.deadline:
            raise FetchError("timeout", f"no complete answer within {timeout:g} s", transient=True) from None
        if isinstance(e, socket.timeout):
            raise FetchError("timeout", str(e) or "socket timeout", transient=True) from None
        if isinstance(e, ssl.SSLError) or isinstance(e, ssl.CertificateError):
            raise FetchError("tls error", str(e)[:200], transient=False) from None
        if isinstance(e, http.client.IncompleteRead):
            raise FetchError("incomplete body", str(e)[:200], transient=True) from None
        if isinstance(e, http.client.HTTPException):
            raise FetchError("protocol error", f"{type(e).__name__}: {e}"[:200], transient=True) from None
        raise FetchError("connection failed", f"{type(e).__name__}: {e}"[:200], transient=True) from None
    finally:
        watch.done = True


def _phrase(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


@functools.lru_cache(maxsize=4)
def _tls_context(cafile, capath) -> ssl.SSLContext:
    """The default TLS context (certificate and host-name checks) for the trust store the environment names.
    Building one reads the whole CA store (~25 ms of CPU), so it is made once per store, not once per URL; one
    context serves every thread."""
    return ssl.create_default_context()


def _request(parts, watch: _Watch, opts: FetchOptions, user_agent_token):
    https = parts.scheme.lower() == "https"
    host, port = parts.hostname, parts.port or (443 if https else 80)
    addresses = resolve(host, port, opts)
    sock, last = None, None
    for family, sockaddr in addresses:  # the checked addresses only: no second lookup by name
        s = socket.socket(family, socket.SOCK_STREAM)
        watch.set_socket(s)
        try:
            s.settimeout(watch.remaining())
            s.connect(sockaddr)
            sock = s
            break
        except OSError as e:
            last = e
            s.close()
            if watch.fired:
                break
    if sock is None:
        if watch.fired or isinstance(last, socket.timeout):
            raise FetchError("timeout", f"connecting to {host}", transient=True)
        raise FetchError("connection failed", f"{host}: {last}", transient=True)
    try:
        if https:
            ctx = _tls_context(os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))
            sock = ctx.wrap_socket(sock, server_hostname=host)
            watch.set_socket(sock)
            conn = http.client.HTTPSConnection(host, port, timeout=watch.remaining(), context=ctx)
        else:
            conn = http.client.HTTPConnection(host, port, timeout=watch.remaining())
        conn.sock = sock  # already connected to the checked address: http.client will not connect by name
        conn.request("GET", _target(parts), headers={"User-Agent": user_agent(user_agent_token),
                                                     "Accept-Encoding": "identity", "Connection": "close"})
        return conn.getresponse(), conn
    except BaseException:
        sock.close()
        raise


def _read_body(resp, watch: _Watch, opts: FetchOptions) -> bytes:
    limit = opts.max_image_bytes
    declared = resp.length  # None without Content-Length (chunked or close-delimited)
    if declared is not None and declared > limit:
        raise FetchError(f"body over {limit} bytes", f"Content-Length {declared}")
    buf = bytearray()
    while True:
        watch.remaining()
        chunk = resp.read1(_CHUNK)
        if not chunk:
            break
        buf += chunk
        if len(buf) > limit:
            raise FetchError(f"body over {limit} bytes", f"more than {limit} bytes read")
    if watch.fired:
        raise FetchError("timeout", f"{len(buf)} bytes read", transient=True)
    if declared is not None and len(buf) < declared:
        raise FetchError("incomplete body", f"{len(buf)} of {declared} bytes (Content-Length)", transient=True)
    return bytes(buf)


# ------------------------------------------------------------------------------------------------ the bytes
def check_image(data: bytes, opts: FetchOptions) -> tuple[int, int]:
    """Width and height of ``data`` from its header alone; refuse empty, non-image, oversized and truncated data
    before img2dataset's resizer decodes it."""
    if not data:
        raise FetchError("empty body")
    fast = _header_size(data)
    if fast is not None:
        width, height, fmt = fast
    else:
        width, height, fmt = _pillow_size(data, opts)
    if width * height > opts.max_image_pixels:
        raise FetchError(f"image over {opts.max_image_pixels} pixels", f"{width}x{height} {fmt}")
    if fmt == "JPEG":
        sos = data.rfind(b"\xff\xda")
        if sos < 0:
            raise FetchError("truncated image", "JPEG without image data")
        if data.rfind(b"\xff\xd9") < sos:
            raise FetchError("truncated image", "JPEG without end marker")
    elif fmt == "PNG" and data.rfind(b"IEND") < 0:
        raise FetchError("truncated image", "PNG without IEND chunk")
    return width, height


_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # start-of-frame markers (DHT, JPG, DAC are not)


def _header_size(data: bytes) -> tuple[int, int, str] | None:
    """(width, height, format) of a JPEG or PNG read straight from its header bytes, in a few microseconds (Pillow's
    open costs ~0.2 ms per image, most of the fetcher's own CPU); None for anything else or anything odd, which
    then goes to Pillow and gets its reason there."""
    if data.startswith(_PNG_MAGIC):
        if data[12:16] != b"IHDR" or len(data) < 24:
            return None
        width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
        return (width, height, "PNG") if width and height else None
    if not data.startswith(b"\xff\xd8"):
        return None
    i, n = 2, len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # a fill byte before the marker
            i += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            i += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image or scan data before any frame header
            return None
        length = int.from_bytes(data[i + 2:i + 4], "big")
        if marker in _JPEG_SOF:
            if length < 8 or i + 9 > n:
                return None
            height, width = int.from_bytes(data[i + 5:i + 7], "big"), int.from_bytes(data[i + 7:i + 9], "big")
            return (width, height, "JPEG") if width and height else None
        i += 2 + length
    return None


def _pillow_size(data: bytes, opts: FetchOptions) -> tuple[int, int, str]:
    """Pillow's reading of the header (every format it knows), with the reason when it cannot read one."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data)) as im:  # parses the header only; nothing is decoded
                return im.width, im.height, im.format
    except Image.DecompressionBombError as e:  # Pillow's own limit, where install() did not lift it
        raise FetchError(f"image over {opts.max_image_pixels} pixels", str(e)[:120]) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        head = data[:256].lstrip().lower()
        if head.startswith(b"<"):
            raise FetchError("not an image", "HTML or XML") from None
        if head.startswith((b"{", b"[")):
            raise FetchError("not an image", "JSON") from None
        if "truncated" in str(e).lower():  # a known format whose header itself is cut short
            raise FetchError("truncated image", f"header cut short: {e}"[:120]) from None
        raise FetchError("not an image", f"unrecognised format, starts with {data[:8].hex()}") from None


# ------------------------------------------------------------------------------------------------ img2dataset
def download_image_with_retry(row, timeout, retries, user_agent_token, disallowed_header_directives, *,
                              opts: FetchOptions):
    """img2dataset's contract: ``(key, BytesIO, None)`` or ``(key, None, error message)``."""
    try:
        return _download_with_retry(row, timeout, retries, user_agent_token, disallowed_header_directives, opts)
    finally:
        fetch_progress.count_one()  # the parent's progress bar moves with images, not only with finished shards


def _download_with_retry(row, timeout, retries, user_agent_token, disallowed_header_directives, opts):
    key, url = row
    err = None
    for _ in range(retries + 1):
        try:
            return key, io.BytesIO(fetch(url, timeout, opts, user_agent_token, disallowed_header_directives)), None
        except FetchError as e:
            err = str(e)
            if not e.transient:
                break
        except Exception as e:  # noqa: BLE001  (a bug here must not take the shard down: it is counted)
            err = f"connection failed (unexpected {type(e).__name__}: {e})"[:300]
            break
    return key, None, err


def install(opts: FetchOptions) -> None:
    """Make img2dataset's downloader in this process fetch with :func:`download_image_with_retry` and ``opts``.
    Called in every download worker (see :mod:`laionprep.ingest.safe_downloader`)."""
    import functools

    import img2dataset.downloader as i2d
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = None  # check_image applies max_image_pixels itself, before any decoding
    i2d.download_image_with_retry = functools.partial(download_image_with_retry, opts=opts)
