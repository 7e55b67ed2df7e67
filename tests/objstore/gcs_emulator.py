"""A local Google Cloud Storage for the tests: gcp-storage-emulator on 127.0.0.1, ephemeral ports, in a child process.

    python gcs_emulator.py DATA_DIR CERT_DIR  -> prints "PORTS <emulator> <tls-proxy>" when up; serves until killed

The pipeline's own processes (img2dataset's child, Beam's workers, TensorFlow's C++ GCS client) reach it over HTTP
the way they would reach Google:

* google-cloud-storage (Beam's gcsio) and gcsfs (everything fsspec) through their emulator switch,
  ``STORAGE_EMULATOR_HOST=http://127.0.0.1:PORT``;
* TensorFlow's own GCS filesystem has no endpoint switch (``https://www.googleapis.com/storage/v1/`` and
  ``https://storage.googleapis.com/`` are compiled in; the modular tensorflow-io plugin that honours
  ``CLOUD_STORAGE_EMULATOR_ENDPOINT`` does not load into TF 2.21).  It does honour ``https_proxy`` and
  ``CURL_CA_BUNDLE``, so this process also runs a tiny HTTPS proxy: it accepts ``CONNECT`` to the two Google hosts,
  terminates TLS with a certificate for them signed by a throw-away CA written to CERT_DIR/ca.pem, and forwards the
  plain HTTP to the emulator.  TF's real client (curl, TLS, retries, resumable uploads, ranged reads) runs unchanged.

Gaps of the emulator that the clients hit, filled here the way real GCS behaves:

* ``objects.move`` (``POST .../o/SRC/moveTo/o/DST``, gcsfs's rename) is missing: added as copy + delete (atomic
  under the emulator's single request thread);
* a body sent with both ``Transfer-Encoding: chunked`` and ``Content-Length`` (TF's resumable upload does this)
  was read by length, storing the chunk framing; chunked wins, as HTTP/1.1 says;
* ``Expect: 100-continue`` went unanswered (HTTP/1.0 server), costing curl a one-second wait per upload: the
  server now speaks HTTP/1.1 with ``Connection: close`` (one request per connection, as before);
* an empty object uploaded in one request (``uploadType=media``, e.g. the ``DIR/`` marker ``tf.io.gfile.makedirs``
  writes) failed: it is stored as empty;
* resumable-upload ``Location`` URLs are built as ``http://HOST``: for the Google hosts (requests that came
  through the TLS proxy) they are ``https://HOST``.
"""
from __future__ import annotations

import datetime
import ipaddress
import os
import socket
import ssl
import sys
import threading
import time

GOOGLE_HOSTS = ("www.googleapis.com", "storage.googleapis.com")


def _patch_emulator() -> None:
    from http import HTTPStatus

    from gcp_storage_emulator import server
    from gcp_storage_emulator.exceptions import NotFound
    from gcp_storage_emulator.handlers import objects

    def move(request, response, storage, *args, **kwargs):
        p = request.params
        try:
            dest = objects._copy(request.base_url, storage, p["bucket_name"], p["object_id"], p["bucket_name"],
                                 p["dest_object_id"])
            storage.delete_file(p["bucket_name"], p["object_id"])
            response.json(dest)
        except NotFound:
            response.status = HTTPStatus.NOT_FOUND

    route = (r"^/storage/v1/b/(?P<bucket_name>[-.\w]+)/o/(?P<object_id>.*[^/]+)/moveTo/o/(?P<dest_object_id>.*[^/]+)$",
             {"POST": move})
    server.HANDLERS = (route, *server.HANDLERS)

    read_raw = server._read_raw_data

    def read_raw_data(handler):
        if (handler.headers.get("Transfer-Encoding") or "").lower() == "chunked":
            del handler.headers["Content-Length"]
        return read_raw(handler)

    server._read_raw_data = read_raw_data

    server.RequestHandler.protocol_version = "HTTP/1.1"
    end_headers = server.RequestHandler.end_headers

    def end_headers_close(self):
        self.send_header("Connection", "close")
        end_headers(self)

    def handle_expect_100(self):
        self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        return True

    server.RequestHandler.end_headers = end_headers_close
    server.RequestHandler.handle_expect_100 = handle_expect_100

    init = server.Request.__init__

    def request_init(self, request_handler, method):
        init(self, request_handler, method)
        if (request_handler.headers.get("Host") or "").split(":")[0] in GOOGLE_HOSTS:
            self._base_url = "https://" + self._base_url.removeprefix("http://")
            self._full_url = "https://" + self._full_url.removeprefix("http://")

    server.Request.__init__ = request_init

    media_upload = objects._media_upload

    def media_upload_empty(request, response, storage):
        if request.data is None:
            request._data = b""
        return media_upload(request, response, storage)

    objects._media_upload = media_upload_empty


def _make_certs(cert_dir: str) -> tuple[str, str]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "laionprep test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
          .not_valid_after(now + datetime.timedelta(days=2))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, GOOGLE_HOSTS[0])]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(h) for h in GOOGLE_HOSTS]
                                                       + [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    os.makedirs(cert_dir, exist_ok=True)
    ca_pem, leaf_pem = os.path.join(cert_dir, "ca.pem"), os.path.join(cert_dir, "leaf.pem")
    with open(ca_pem, "wb") as f:
        f.write(ca.public_bytes(serialization.Encoding.PEM))
    with open(leaf_pem, "wb") as f:
        f.write(leaf.public_bytes(serialization.Encoding.PEM))
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    return ca_pem, leaf_pem


def _pipe(src, dst) -> None:
    """Copy src -> dst until EOF, then shut both down."""
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def _serve_proxy(listener: socket.socket, ctx: ssl.SSLContext, emulator_port: int) -> None:
    def handle(conn: socket.socket) -> None:
        try:
            req = b""
            while b"\r\n\r\n" not in req:
                chunk = conn.recv(4096)
                if not chunk:
                    return conn.close()
                req += chunk
            first = req.split(b"\r\n", 1)[0].decode("latin-1").split()
            host = first[1].rsplit(":", 1)[0] if len(first) > 1 else ""
            if first[0] != "CONNECT" or host not in GOOGLE_HOSTS:
                conn.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
                return conn.close()
            conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            tls = ctx.wrap_socket(conn, server_side=True)
            up = socket.create_connection(("127.0.0.1", emulator_port))
            t = threading.Thread(target=_pipe, args=(tls, up), daemon=True)
            t.start()
            _pipe(up, tls)
            t.join()
            tls.close()
            up.close()
        except (OSError, ssl.SSLError):
            conn.close()

    while True:
        conn, _ = listener.accept()
        threading.Thread(target=handle, args=(conn,), daemon=True).start()


def main(data_dir: str, cert_dir: str) -> None:
    from gcp_storage_emulator.server import create_server

    _patch_emulator()
    # In memory: on disk an object ``a/`` (a folder marker) and an object ``a/b`` cannot both exist.
    server = create_server("127.0.0.1", 0, in_memory=True, data_dir=os.path.abspath(data_dir))
    server.start()
    port = server._api._httpd.server_address[1]

    _, leaf_pem = _make_certs(cert_dir)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(leaf_pem)
    ctx.set_alpn_protocols(["http/1.1"])
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    threading.Thread(target=_serve_proxy, args=(listener, ctx, port), daemon=True).start()

    print(f"PORTS {port} {listener.getsockname()[1]}", flush=True)
    try:
        while True:
            time.sleep(3600)
    finally:
        server.stop()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
