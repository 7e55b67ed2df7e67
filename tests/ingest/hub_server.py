"""A Hugging Face Hub stand-in on 127.0.0.1 for the endpoints huggingface_hub's HfFileSystem uses: repo info,
tree listing, paths-info and file resolve (with Range), behind an optional bearer token like a gated repo.
Used through the real huggingface_hub client (HF_ENDPOINT points at it)."""
import hashlib
import http.server
import json
import os
import re
import threading
import urllib.parse

from laionprep.testing.server import LocalHTTPServer

SHA = "0123456789abcdef0123456789abcdef01234567"

class Hub:
    def __init__(self, root, repo="laion/fake", token=None):
        self.root, self.repo, self.token = root, repo, token
        self.requests = []
        hub = self
        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            def log_message(self, *a):
                hub.requests.append((self.command, self.path))
            def _send(self, code, b=b"", ctype="application/json", headers=(), body=True):
                self.send_response(code)
                self.send_header("Content-Type", ctype); self.send_header("Content-Length", str(len(b)))
                for k, v in headers: self.send_header(k, v)
                self.end_headers()
                if body: self.wfile.write(b)
            def _json(self, obj, code=200): self._send(code, json.dumps(obj).encode())
            def _authorised(self):
                if hub.token and self.headers.get("Authorization") != f"Bearer {hub.token}":
                    self._json({"error": "Access to this dataset is restricted."}, 401)
                    return False
                return True
            def do_GET(self): self._authorised() and self._handle(True)
            def do_HEAD(self): self._authorised() and self._handle(False)
            def do_POST(self):
                if not self._authorised(): return
                n = int(self.headers.get("Content-Length") or 0); raw = self.rfile.read(n).decode()
                m = re.match(r"^/api/datasets/(.+?)/paths-info/([^/]+)$", urllib.parse.urlparse(self.path).path)
                if not m: return self._json({"error": "nf"}, 404)
                q = urllib.parse.parse_qs(raw)
                paths = q.get("paths", [])
                if not paths and raw.startswith("{"): paths = json.loads(raw).get("paths", [])
                self._json([e for e in hub.entries() if e["path"] in paths])
            def _handle(self, body):
                p = urllib.parse.unquote(urllib.parse.urlparse(self.path).path)
                m = re.match(r"^/api/datasets/([^/]+/[^/]+)(?:/revision/([^/]+))?$", p)
                if m:
                    files = [{"rfilename": e["path"]} for e in hub.entries() if e["type"] == "file"]
                    return self._json({"id": m.group(1), "sha": SHA, "private": False, "siblings": files})
                m = re.match(r"^/api/datasets/([^/]+/[^/]+)/tree/([^/]+)/?(.*)$", p)
                if m:
                    sub = m.group(3).strip("/")
                    rec = "recursive=true" in self.path or "recursive=True" in self.path
                    out = []
                    for e in hub.entries():
                        path = e["path"]
                        if sub and not path.startswith(sub + "/"): continue
                        rest = path[len(sub) + 1:] if sub else path
                        if not rec and "/" in rest: continue
                        out.append(e)
                    return self._json(out)
                m = re.match(r"^/datasets/([^/]+/[^/]+)/resolve/([^/]+)/(.+)$", p)
                if m:
                    f = os.path.join(hub.root, m.group(3))
                    if not os.path.isfile(f): return self._json({"error": "nf"}, 404)
                    data = open(f, "rb").read()
                    etag = '"' + hashlib.sha1(data).hexdigest() + '"'
                    hdr = [("ETag", etag), ("X-Repo-Commit", SHA), ("Accept-Ranges", "bytes")]
                    rng = self.headers.get("Range")
                    if rng:
                        a, b = rng.split("=")[1].split("-")
                        a = int(a); b = int(b) if b else len(data) - 1
                        chunk = data[a:b + 1]
                        rng_hdr = ("Content-Range", f"bytes {a}-{a+len(chunk)-1}/{len(data)}")
                        return self._send(206, chunk, "application/octet-stream", hdr + [rng_hdr], body)
                    return self._send(200, data, "application/octet-stream", hdr, body)
                self._json({"error": "nf"}, 404)
        self.srv = LocalHTTPServer(("127.0.0.1", 0), H)
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.srv.server_address[1]}"

    def stop(self):
        self.srv.shutdown()
        self.srv.server_close()

    def entries(self):
        out = []
        for d, dirs, files in os.walk(self.root):
            rel = os.path.relpath(d, self.root)
            if rel != ".": out.append({"type": "directory", "path": rel, "oid": "d" * 40})
            for f in files:
                full = os.path.join(d, f); data = open(full, "rb").read()
                out.append({"type": "file", "path": os.path.normpath(os.path.join(rel, f)), "size": len(data),
                            "oid": hashlib.sha1(data).hexdigest()})
        return sorted(out, key=lambda e: e["path"])
