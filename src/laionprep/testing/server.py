"""The demo image server: an in-process HTTP server on 127.0.0.1 with an ephemeral port.

``GET /img/<seed>/<index>.<jpg|png>`` renders the synthetic image for (seed, index) on the fly (see
:mod:`laionprep.testing.synth`); ``/missing/...`` and anything else answer 404.  The server counts the requests it
answered by status, so tests can check what the downloader really fetched.
"""
from __future__ import annotations

import collections
import functools
import http.server
import re
import threading
from typing import Optional

from laionprep.testing import synth

_IMG = re.compile(r"^/img/(\d+)/(\d+)\.(jpg|png)$")


@functools.lru_cache(maxsize=20_000)
def _encoded(seed: int, index: int) -> tuple[bytes, str]:
    return synth.encode(synth.sample(seed, index))


class LocalHTTPServer(http.server.ThreadingHTTPServer):
    """A threaded 127.0.0.1 server for tests and the demo.  The stock listen backlog of 5 overflows when 16
    downloader threads connect at once on a loaded machine: the kernel drops the SYN, the client resends it after
    1 s and a 2 s per-URL deadline then reads as a connect timeout."""

    request_queue_size = 1024
    daemon_threads = True


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):  # noqa: N802 (http.server's naming)
        m = _IMG.match(self.path.split("?", 1)[0])
        if not m:
            return self._send(404, b"not found", "text/plain")
        seed, index = int(m.group(1)), int(m.group(2))
        if synth.sample(seed, index).fmt != m.group(3):
            return self._send(404, b"not found", "text/plain")
        body, ctype = _encoded(seed, index)
        self._send(200, body, ctype)

    def _send(self, code: int, body: bytes, ctype: str):
        self.server.counts[code] += 1  # type: ignore[attr-defined]
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):  # quiet
        pass


class DemoServer:
    """Context manager: ``with DemoServer() as srv: srv.base_url``."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        self._httpd = LocalHTTPServer((host, port), _Handler)
        self._httpd.counts = collections.Counter()  # type: ignore[attr-defined]
        self._thread: Optional[threading.Thread] = None

    @property
    def base_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def counts(self) -> collections.Counter:
        return self._httpd.counts  # type: ignore[attr-defined]

    def prewarm(self, seed: int, n: int) -> None:
        """Render images 0..n-1 of ``seed`` now, so that timed downloads measure the downloader, not the server."""
        for i in range(n):
            _encoded(seed, i)

    def start(self) -> "DemoServer":
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="laionprep-demo-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> "DemoServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
