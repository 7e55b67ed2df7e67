"""A hostile image server on 127.0.0.1 (ephemeral port): one server, one behaviour per path.

=========================  ======================================================================================
path                       behaviour
=========================  ======================================================================================
/ok/N.jpg, /ok/N.png       a valid 128x128 image (noise seeded by N)
/status/CODE               that HTTP status, a small text body
/redirect/ok/N             302 -> /ok/N.jpg
/chain/K                   302 -> /chain/K-1 ... /chain/0 -> 302 /ok/0.jpg (K+1 redirects)
/loop/a, /loop/b           302 to each other, forever
/redirect/self             302 to itself
/redirect/nolocation       302 without a Location header
/redirect/to?url=U         302 -> U (file://, ftp://, gopher:, data:, a private address...)
/drip.jpg                  200, full Content-Length, then one byte every ``drip_interval`` seconds
/stall.jpg                 200, full Content-Length, half the body, then nothing (until the client leaves)
/stall-headers             reads the request, never answers
/truncated.jpg             the first half of a JPEG, with a Content-Length that matches the half
/html.jpg                  an HTML page served as image/jpeg
/garbage.jpg               random bytes served as image/jpeg
/empty.jpg                 200 with an empty body
/bomb.png                  a valid 30000x30000 RGB PNG (2.7 GB decoded) in a 2.6 MB file
/huge.jpg                  200 MB of zeros, with Content-Length, generated on the fly
/huge-nolength.jpg         200 MB of zeros, no Content-Length (close-delimited), generated on the fly
/cl-long.jpg               Content-Length 1000 bytes more than the JPEG sent, then the connection closes
/cl-short.jpg              Content-Length half the JPEG; the whole JPEG is sent
/robots/noai.jpg           a valid JPEG with ``X-Robots-Tag: noai``
/robots/otherbot.jpg       a valid JPEG with ``X-Robots-Tag: otherbot: noai`` (not for us: allowed)
/flaky/ID.jpg              503 on the first request for ID, a valid JPEG afterwards
=========================  ======================================================================================

The server counts requests per path (``hits``) and, for the drip and stall paths, records how long each connection
stayed open before the client went away (``held``), so tests can see that the downloader let go in time.
"""
from __future__ import annotations

import collections
import functools
import http.server
import io
import os
import struct
import threading
import time
import urllib.parse
import zlib

from laionprep.testing.server import LocalHTTPServer

HUGE = 200 * 1024 * 1024
BOMB_SIDE = 30000


@functools.lru_cache(maxsize=64)
def image(n: int, fmt: str = "JPEG") -> bytes:
    """A 128x128 image of seeded noise (its entropy-coded data is most of the file, as in a photo)."""
    import random

    from PIL import Image

    rnd = random.Random(n)
    im = Image.frombytes("RGB", (128, 128), bytes(rnd.randrange(256) for _ in range(128 * 128 * 3)))
    buf = io.BytesIO()
    im.save(buf, fmt, quality=90)
    return buf.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


@functools.lru_cache(maxsize=1)
def bomb_png(side: int = BOMB_SIDE) -> bytes:
    """A complete, valid PNG of ``side`` x ``side`` black RGB pixels (2.7 GB decoded at 30000) in ~2.6 MB.

    Never allocated: with a sync flush after each block, deflate turns every block of zero rows after the first
    two into the same bytes, so the stream is ``first + second * (blocks - 1) + tail``, and the zlib trailer
    (Adler-32 of ``n`` zero bytes is ``(n % 65521) << 16 | 1``) is written directly."""
    row = b"\x00" * (1 + 3 * side)  # filter byte 0 + RGB
    per = max(1, (1 << 26) // len(row))  # rows per block (~64 MB)
    blocks, rest = divmod(side, per)
    c = zlib.compressobj(9)
    parts = [c.compress(row * per) + c.flush(zlib.Z_SYNC_FLUSH)]
    if blocks > 1:
        parts.append((c.compress(row * per) + c.flush(zlib.Z_SYNC_FLUSH)) * (blocks - 1))
    tail = c.compress(row * rest) + c.flush()
    raw_len = len(row) * side
    idat = b"".join(parts) + tail[:-4] + struct.pack(">I", ((raw_len % 65521) << 16) | 1)
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def behaviours(max_bytes: int, max_pixels: int) -> dict[str, str | None]:
    """Path (``{k}``: a copy number) -> the reason laionprep's fetcher must give its URLs (None: a record), for a
    download with these limits, the default 5 redirects and private addresses allowed."""
    return {
        "/ok/{k}.jpg": None,
        "/ok/{k}.png": None,
        "/redirect/ok/{k}": None,
        "/chain/3": None,  # 4 redirects: within the default 5
        "/robots/otherbot.jpg": None,  # an X-Robots-Tag for another user agent
        "/status/404": "HTTP Error 404: Not Found",
        "/status/403": "HTTP Error 403: Forbidden",
        "/status/500": "HTTP Error 500: Internal Server Error",
        "/loop/a": "redirect loop",
        "/redirect/self": "redirect loop",
        "/chain/9": "too many redirects",
        "/redirect/nolocation": "redirect without location",
        "/redirect/to?url=file:///etc/passwd": "refused: scheme file not allowed",
        "/redirect/to?url=ftp://127.0.0.1/x.jpg": "refused: scheme ftp not allowed",
        "/redirect/to?url=gopher://127.0.0.1:70/x": "refused: scheme gopher not allowed",
        "/redirect/to?url=data:image/png;base64,iVBORw0KGgo=": "refused: scheme data not allowed",
        "/drip.jpg": "timeout",
        "/stall.jpg": "timeout",
        "/stall-headers": "timeout",
        "/truncated.jpg": "truncated image",
        "/cl-short.jpg": "truncated image",
        "/cl-long.jpg": "incomplete body",
        "/html.jpg": "not an image",
        "/garbage.jpg": "not an image",
        "/empty.jpg": "empty body",
        "/bomb.png": f"image over {max_pixels} pixels",
        "/huge.jpg": f"body over {max_bytes} bytes",
        "/huge-nolength.jpg": f"body over {max_bytes} bytes",
        "/robots/noai.jpg": "Use of image disallowed by X-Robots-Tag directive",
    }


def urls_of(srv: "HostileServer", pattern: str, copies: int) -> list[str]:
    """``copies`` distinct URLs for one behaviour (a ``copy=`` query where the path has no ``{k}``)."""
    out = []
    for k in range(copies):
        path = pattern.format(k=k)
        if "{k}" not in pattern:
            path += ("&" if "?" in path else "?") + f"copy={k}"
        out.append(srv.url(path))
    return out


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    @property
    def hostile(self) -> "HostileServer":
        return self.server.hostile  # type: ignore[attr-defined]

    def _head(self, code: int, ctype: str = "image/jpeg", length: int | None = None, headers=()):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        if length is not None:
            self.send_header("Content-Length", str(length))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()

    def _send(self, code: int, body: bytes, ctype: str = "image/jpeg", headers=()):
        self._head(code, ctype, len(body), headers)
        self.wfile.write(body)

    def _redirect(self, location: str | None, code: int = 302):
        self.send_response(code)
        if location is not None:
            self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _hold(self, path: str, write_byte=None, max_s: float = 60.0):
        """Keep the connection open (dripping a byte per interval if ``write_byte``) until the client leaves."""
        start = time.monotonic()
        srv = self.hostile
        try:
            while time.monotonic() - start < max_s and not srv.stopping.is_set():
                if write_byte is not None:
                    self.wfile.write(write_byte())
                    self.wfile.flush()
                    time.sleep(srv.drip_interval)
                else:
                    # nothing to send: notice the client leaving by peeking at the socket
                    self.connection.settimeout(0.1)
                    try:
                        if self.connection.recv(1) == b"":
                            break
                    except (TimeoutError, OSError) as e:
                        if not isinstance(e, TimeoutError):
                            break
        except OSError:
            pass
        srv.held[path].append(time.monotonic() - start)
        self.close_connection = True

    def do_GET(self):  # noqa: N802, C901 (one branch per behaviour)
        url = urllib.parse.urlsplit(self.path)
        path = url.path
        srv = self.hostile
        with srv.lock:
            srv.hits[path] += 1
        parts = path.strip("/").split("/")
        try:
            if parts[0] == "ok" and len(parts) == 2:
                n, ext = parts[1].rsplit(".", 1)
                fmt = {"jpg": "JPEG", "png": "PNG"}[ext]
                return self._send(200, image(int(n), fmt), "image/" + fmt.lower())
            if parts[0] == "status":
                return self._send(int(parts[1]), b"status " + parts[1].encode(), "text/plain")
            if path.startswith("/redirect/ok/"):
                return self._redirect(f"/ok/{parts[2]}.jpg")
            if parts[0] == "chain":
                k = int(parts[1])
                return self._redirect(f"/chain/{k - 1}" if k > 0 else "/ok/0.jpg")
            if parts[0] == "loop":
                return self._redirect("/loop/b" if parts[1] == "a" else "/loop/a")
            if path == "/redirect/self":
                return self._redirect(path)
            if path == "/redirect/nolocation":
                return self._redirect(None)
            if path == "/redirect/to":
                return self._redirect(urllib.parse.parse_qs(url.query)["url"][0])
            body = image(7)
            if path == "/drip.jpg":
                self._head(200, length=len(body) * 50)
                data = iter(body * 50)
                return self._hold(path, write_byte=lambda: bytes([next(data)]))
            if path == "/stall.jpg":
                self._head(200, length=len(body))
                self.wfile.write(body[: len(body) // 2])
                self.wfile.flush()
                return self._hold(path)
            if path == "/stall-headers":
                return self._hold(path)
            if path == "/truncated.jpg":
                return self._send(200, body[: len(body) // 2])
            if path == "/html.jpg":
                return self._send(200, b"<!DOCTYPE html><html><body><h1>Not found</h1></body></html>")
            if path == "/garbage.jpg":
                return self._send(200, os.urandom(4096))
            if path == "/empty.jpg":
                return self._send(200, b"")
            if path == "/bomb.png":
                return self._send(200, bomb_png(), "image/png")
            if path in ("/huge.jpg", "/huge-nolength.jpg"):
                with_length = path == "/huge.jpg"
                self._head(200, length=HUGE if with_length else None,
                           headers=() if with_length else (("Connection", "close"),))
                zeros, sent = bytes(64 * 1024), 0
                try:
                    while sent < HUGE and not srv.stopping.is_set():
                        self.wfile.write(zeros)
                        sent += len(zeros)
                except OSError:
                    pass
                with srv.lock:
                    srv.huge_sent[path].append(sent)
                self.close_connection = True
                return None
            if path == "/cl-long.jpg":
                self._head(200, length=len(body) + 1000)
                self.wfile.write(body)
                self.close_connection = True
                return None
            if path == "/cl-short.jpg":
                self._head(200, length=len(body) // 2)
                self.wfile.write(body)
                self.close_connection = True
                return None
            if parts[0] == "flaky":
                with srv.lock:
                    first = srv.hits[path] == 1
                return self._send(503, b"busy", "text/plain") if first else self._send(200, body)
            if path == "/robots/noai.jpg":
                return self._send(200, body, headers=(("X-Robots-Tag", "noai"),))
            if path == "/robots/otherbot.jpg":
                return self._send(200, body, headers=(("X-Robots-Tag", "otherbot: noai"),))
            return self._send(404, b"not found", "text/plain")
        except OSError:  # the client went away
            self.close_connection = True
            return None


def self_signed(folder: str, names=("localhost",), ips=("127.0.0.1",)) -> tuple[str, str]:
    """A self-signed certificate for ``names`` and ``ips`` (files cert.pem, key.pem in ``folder``)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0] if names else "test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    san = [x509.DNSName(n) for n in names] + [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(san), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = os.path.join(folder, "cert.pem"), os.path.join(folder, "key.pem")
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(key_path, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    return cert_path, key_path


class HostileServer:
    """``with HostileServer() as srv: srv.url("/drip.jpg")``; ``HostileServer(tls=self_signed(dir))`` for https."""

    def __init__(self, drip_interval: float = 1.0, tls: tuple[str, str] | None = None):
        """``tls``: (certificate file, key file) to serve https instead of http."""
        self.drip_interval = drip_interval
        self.scheme = "https" if tls else "http"
        self.hits: collections.Counter = collections.Counter()
        self.held: dict[str, list[float]] = collections.defaultdict(list)
        self.huge_sent: dict[str, list[int]] = collections.defaultdict(list)
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self._httpd = LocalHTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.hostile = self  # type: ignore[attr-defined]
        if tls:
            import ssl

            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(*tls)
            self._httpd.socket = ctx.wrap_socket(self._httpd.socket, server_side=True)

    @property
    def base_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"{self.scheme}://{host}:{port}"

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    def url(self, path: str) -> str:
        return self.base_url + path

    def __enter__(self) -> "HostileServer":
        bomb_png()  # built before serving (about 1 s), so no request waits for it
        threading.Thread(target=self._httpd.serve_forever, name="hostile-server", daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()
