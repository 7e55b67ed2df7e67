"""Issue #8.2: address safety.  By default the fetcher refuses every non-public address and every scheme but
http(s), before connecting and again at every redirect hop; ``--allow-private-addresses`` turns the address check
off (the demo and the tests use it), ``--allow-network CIDR`` opens one private network."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import time

import pytest

from laionprep.folders import tombstone
from laionprep.ingest import safe_fetch as sf
from laionprep.ingest.download import normalise_error

import hostile_server
from reliability_helpers import url_status, write_urls

ROBOTS = {"noai", "noimageai", "noindex", "noimageindex"}


def fetch(url, opts, timeout=3, retries=0):
    key, stream, err = sf.download_image_with_retry((0, url), timeout, retries, "laionprep", ROBOTS, opts=opts)
    return stream.getvalue() if stream else None, err


@pytest.mark.parametrize("address,kind", [
    ("127.0.0.1", "loopback"), ("127.8.9.10", "loopback"), ("::1", "loopback"),
    ("10.1.2.3", "private"), ("172.16.0.1", "private"), ("192.168.1.1", "private"), ("fc00::1", "private"),
    ("169.254.169.254", "link-local"), ("fe80::1", "link-local"),
    ("0.0.0.0", "unspecified"), ("::", "unspecified"),
    ("224.0.0.1", "multicast"), ("ff02::1", "multicast"),
    ("240.0.0.1", "private"),  # reserved for future use; Python counts it private
    ("100.64.0.1", "non-public"),  # carrier-grade NAT
    ("::ffff:10.0.0.1", "private"), ("::ffff:127.0.0.1", "loopback"),  # IPv4-mapped IPv6
    ("8.8.8.8", None), ("1.1.1.1", None), ("2606:4700:4700::1111", None), ("93.184.216.34", None),
])
def test_address_classes(address, kind):
    assert sf.address_problem(address, sf.FetchOptions()) == kind
    assert sf.address_problem(address, sf.FetchOptions(allow_private_addresses=True)) is None


def test_refused_before_connecting(hostile):
    before = sum(hostile.hits.values())
    opts = sf.FetchOptions()
    cases = {
        hostile.url("/ok/1.jpg"): "refused: loopback address",
        f"http://localhost:{hostile.port}/ok/1.jpg": "refused: loopback address",
        f"http://2130706433:{hostile.port}/ok/1.jpg": "refused: loopback address",  # 127.0.0.1 as one number
        f"http://[::ffff:127.0.0.1]:{hostile.port}/ok/1.jpg": "refused: loopback address",
        "http://169.254.169.254/latest/meta-data/iam/security-credentials/": "refused: link-local address",
        "http://10.0.0.1/x.jpg": "refused: private address",
        "http://0.0.0.0/x.jpg": "refused: unspecified address",
        "file:///etc/passwd": "refused: scheme file not allowed",
        "ftp://ftp.example.com/x.jpg": "refused: scheme ftp not allowed",
        "//example.com/x.jpg": "refused: scheme none not allowed",
        # a row `laionprep remove` took out (folders.tombstone): its own reason, even with every address allowed
        tombstone.url("0123456789abcdef"): tombstone.REASON,
    }
    for url, reason in cases.items():
        data, err = fetch(url, opts)
        assert data is None and sf.reason_of(err) == reason, (url, err)
    data, err = fetch(tombstone.url("0123456789abcdef"), sf.FetchOptions(allow_private_addresses=True))
    assert data is None and err == f"{tombstone.REASON} (0123456789abcdef)"
    assert sum(hostile.hits.values()) == before  # not one request reached the server


def test_redirects_are_checked_at_every_hop(hostile):
    """127.0.0.1 allowed through --allow-network; each redirect target is checked again."""
    opts = sf.FetchOptions(allowed_networks=("127.0.0.1/32",))
    assert fetch(hostile.url("/redirect/ok/2"), opts)[0] is not None  # allowed -> allowed
    cases = {
        f"http://127.0.0.2:{hostile.port}/ok/1.jpg": "refused: loopback address",
        "http://169.254.169.254/latest/meta-data/": "refused: link-local address",
        "http://192.168.0.1/admin": "refused: private address",
        "file:///etc/passwd": "refused: scheme file not allowed",
    }
    for target, reason in cases.items():
        data, err = fetch(hostile.url("/redirect/to?url=" + target), opts)
        assert data is None and sf.reason_of(err) == reason, (target, err)
    # with every private address allowed, the scheme check still holds
    data, err = fetch(hostile.url("/redirect/to?url=file:///etc/passwd"), sf.FetchOptions(allow_private_addresses=True))
    assert sf.reason_of(err) == "refused: scheme file not allowed"


def test_connects_to_the_checked_address(hostile, monkeypatch):
    """DNS rebinding: a name that answers 127.0.0.1 (allowed) once and 169.254.169.254 afterwards.  The fetcher
    resolves it once per hop and connects to the address it checked."""
    real, calls = socket.getaddrinfo, []

    def rebinding(host, port, *args, **kwargs):
        if host == "rebind.test":
            calls.append(host)
            addr = "127.0.0.1" if len(calls) == 1 else "169.254.169.254"
            return real(addr, port, *args, **kwargs)
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    data, err = fetch(f"http://rebind.test:{hostile.port}/ok/3.jpg",
                      sf.FetchOptions(allowed_networks=("127.0.0.1/32",)))
    assert err is None and data is not None and calls == ["rebind.test"]
    data, err = fetch(f"http://rebind.test:{hostile.port}/ok/3.jpg",
                      sf.FetchOptions(allowed_networks=("127.0.0.1/32",)))
    assert sf.reason_of(err) == "refused: link-local address"


def test_limits_are_configurable(hostile):
    opts = sf.FetchOptions(allow_private_addresses=True, max_image_pixels=100 * 100)
    data, err = fetch(hostile.url("/ok/1.jpg"), opts)  # 128x128
    assert data is None and err == "image over 10000 pixels (128x128 JPEG)"
    opts = sf.FetchOptions(allow_private_addresses=True, max_image_bytes=1000)
    data, err = fetch(hostile.url("/ok/1.jpg"), opts)
    assert data is None and err.startswith("body over 1000 bytes (Content-Length ")
    opts = sf.FetchOptions(allow_private_addresses=True, max_redirects=2)
    assert sf.reason_of(fetch(hostile.url("/chain/2"), opts)[1]) == "too many redirects"
    assert fetch(hostile.url("/chain/1"), opts)[1] is None


def test_retries_only_what_may_succeed_later(hostile):
    opts = sf.FetchOptions(allow_private_addresses=True)
    assert fetch(hostile.url("/flaky/a.jpg"), opts, retries=0)[1] == "HTTP Error 503: Service Unavailable"
    data, err = fetch(hostile.url("/flaky/b.jpg"), opts, retries=1)
    assert err is None and data is not None and hostile.hits["/flaky/b.jpg"] == 2
    n = hostile.hits["/status/404"]
    assert fetch(hostile.url("/status/404"), opts, retries=3)[1] == "HTTP Error 404: Not Found"
    assert hostile.hits["/status/404"] == n + 1  # a 404 is not retried


def test_a_stalled_fetch_ends_at_its_deadline(hostile):
    """The drip would take about 50 * 15 KB * 0.5 s; the 1 s deadline ends it (whatever the server does)."""
    opts = sf.FetchOptions(allow_private_addresses=True)
    for path in ("/drip.jpg", "/stall.jpg", "/stall-headers"):
        t = time.monotonic()
        data, err = fetch(hostile.url(path), opts, timeout=1)
        assert data is None and sf.reason_of(err) == "timeout", (path, err)
        assert time.monotonic() - t < 5, path


def test_https_checks_the_certificate_against_the_name(tmp_path, monkeypatch):
    """https goes through the same checked connection, with TLS verification against the URL's name (SNI)."""
    cert = hostile_server.self_signed(str(tmp_path), names=("localhost",), ips=("127.0.0.1",))
    (tmp_path / "other").mkdir()
    other = hostile_server.self_signed(str(tmp_path / "other"), names=("other.test",), ips=())
    opts = sf.FetchOptions(allow_private_addresses=True)
    with hostile_server.HostileServer(tls=cert) as srv:
        url = srv.url("/ok/1.jpg")
        assert url.startswith("https://127.0.0.1:")
        assert sf.reason_of(fetch(url, opts)[1]) == "tls error"  # not signed by a trusted CA
        monkeypatch.setenv("SSL_CERT_FILE", cert[0])  # trust it: the default context reads this
        data, err = fetch(url, opts)
        assert err is None and data == hostile_server.image(1)
        data, err = fetch(f"https://localhost:{srv.port}/redirect/ok/2", opts)
        assert err is None and data == hostile_server.image(2)
        assert sf.reason_of(fetch(url, sf.FetchOptions())[1]) == "refused: loopback address"
    with hostile_server.HostileServer(tls=other) as srv:  # a trusted certificate for another name
        monkeypatch.setenv("SSL_CERT_FILE", other[0])
        data, err = fetch(srv.url("/ok/1.jpg"), opts)
        assert sf.reason_of(err) == "tls error" and "mismatch" in err.lower(), err


def test_download_refuses_private_addresses_by_default(tmp_path, hostile):
    """The real CLI without --allow-private-addresses: every URL counted as refused, none fetched, exit 1."""
    urls = [hostile.url(f"/ok/{i}.jpg") for i in range(3)] + [
        f"http://localhost:{hostile.port}/ok/9.jpg", "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.7/a.jpg", "http://[::1]/b.jpg"]
    src = write_urls(str(tmp_path / "src"), urls)
    before = sum(hostile.hits.values())
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-m", "laionprep.cli", "download", "--dataset", "demo", "--no-filters",
                        "--metadata-source", src, "--output", str(out), "--processes", "1", "--threads", "4",
                        "--no-progress"], capture_output=True, text=True, timeout=300)
    # nothing downloaded: exit 1 with the table and the flags that allow a server of one's own (issue #14)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "every URL (7) was refused by the address policy" in r.stderr and "--allow-private-addresses" in r.stderr
    assert "Traceback" not in r.stderr
    got = url_status(str(out))
    reasons = {u: normalise_error(e) for u, (s, e) in got.items()}
    assert reasons == {**{u: "refused: loopback address" for u in urls[:4]},
                       urls[4]: "refused: link-local address", urls[5]: "refused: private address",
                       urls[6]: "refused: loopback address"}
    m = json.load(open(out / "manifest.json"))
    assert m["stages"]["download"]["failure_reasons"] == {
        "failed_to_download: refused: loopback address": 5, "failed_to_download: refused: link-local address": 1,
        "failed_to_download: refused: private address": 1}
    assert m["parameters"]["download"]["allow_private_addresses"] is False and m["accounting"]["balanced"]
    assert m["status"] == "empty"
    assert "refused: loopback address" in r.stdout  # the summary table names the reason
    assert sum(hostile.hits.values()) == before


def test_bad_allow_network_flag(tmp_path):
    r = subprocess.run([sys.executable, "-m", "laionprep.cli", "download", "--dataset", "demo", "--metadata-source",
                        str(tmp_path), "--output", str(tmp_path / "o"), "--allow-network", "10.0.0.0/33"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "--allow-network" in r.stderr and "10.0.0.0/33" in r.stderr
