"""Benchmark the listing step of reshard planning, validate and build-tfds on a 41,455-shard download folder (the
size of LAION-400M) behind an object-store-like filesystem that adds 30 ms to every request.

``slow://PATH`` is a local folder seen through an fsspec filesystem whose ``ls``, ``info`` and ``open`` sleep 30 ms
first (a gs:// request's latency), so the number of requests — and whether they overlap — decides the time.
The folder (one one-record tfrecord, a parquet and a real ``NNNNN_stats.json`` per shard) is generated once into
``--work`` and reused.  Each step runs with the concurrent scanner (laionprep.folders, a thread pool) on all
shards; the sequential scanner (the old path: one stats read after another) runs on a ``--subset``-shard folder
and is extrapolated linearly to the full folder (the full sequential run would take 41,455 x 30 ms = 21 min).
Target: each step under 60 s on the full folder; the exit status follows it.

    python bench/objstore_plan.py [--work /tmp/laionprep-objstore] [--shards 41455] [--subset 2000]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import threading

import fsspec
from fsspec.implementations.local import LocalFileSystem

LATENCY_S = 0.030
_depth = threading.local()  # requests made inside a request (LocalFileSystem.ls calls info per entry) are free


class SlowFileSystem(LocalFileSystem):
    """The local filesystem under ``slow://``, each request delayed by :data:`LATENCY_S`."""

    protocol = ("slow",)
    requests = 0

    @classmethod
    def _strip_protocol(cls, path):
        path = str(path)
        if path.startswith("slow://"):
            path = path[len("slow://"):]
        return super()._strip_protocol(path)

    def _request(self, call, *args, **kwargs):
        outer = not getattr(_depth, "n", 0)
        if outer:  # one object-store request: a listing returns sizes, an open reads the object
            SlowFileSystem.requests += 1
            time.sleep(LATENCY_S)
        _depth.n = getattr(_depth, "n", 0) + 1
        try:
            return call(*args, **kwargs)
        finally:
            _depth.n -= 1

    def ls(self, path, detail=False, **kwargs):
        return self._request(super().ls, path, detail=detail, **kwargs)

    def info(self, path, **kwargs):
        return self._request(super().info, path, **kwargs)

    def _open(self, path, mode="rb", **kwargs):
        return self._request(super()._open, path, mode, **kwargs)


fsspec.register_implementation("slow", SlowFileSystem, clobber=True)


def generate(root: str, shards: int) -> str:
    """DIR/manifest.json + DIR/tfrecord/NNNNN.{tfrecord,parquet,_stats.json}, one record per shard."""
    from laionprep.tfrecord import RecordWriter

    data = os.path.join(root, "tfrecord")
    done = os.path.join(root, ".complete")
    if os.path.exists(done):
        return root
    os.makedirs(data, exist_ok=True)
    sample = os.path.join(root, "sample.tfrecord")
    with RecordWriter(sample) as w:
        w.write(_example())
    record = open(sample, "rb").read()
    os.remove(sample)
    for sid in range(shards):
        base = os.path.join(data, f"{sid:05d}")
        with open(base + ".tfrecord", "wb") as f:
            f.write(record)
        open(base + ".parquet", "wb").close()
        with open(base + "_stats.json", "w") as f:
            json.dump({"count": 1, "successes": 1, "failed_to_download": 0, "failed_to_resize": 0}, f)
    with open(os.path.join(root, "manifest.json"), "w") as f:
        json.dump({"dataset": "laion400m", "status": "complete",
                   "stages": {"download": {"shards_expected": shards, "shards_done": shards}}}, f)
    open(done, "w").close()
    return root


def _example() -> bytes:
    from laionprep.tfrecord import Example

    ex = Example()
    f = ex.features.feature
    f["jpg"].bytes_list.value.append(b"\xff\xd8\xff\xd9")
    f["txt"].bytes_list.value.append(b"a caption")
    f["key"].bytes_list.value.append(b"000000000")
    f["width"].int64_list.value.append(1)
    f["height"].int64_list.value.append(1)
    return ex.SerializeToString()


def steps():
    from laionprep.sharding import plan
    from laionprep.tfds_builders import sources
    from laionprep.validate import layout
    from laionprep.validate.core import ValidateConfig

    return {
        "reshard plan (inspect_source)": lambda url: len(plan.inspect_source(0, url).shards),
        "validate layout": lambda url: len(layout.build(ValidateConfig(path=url, decode_fraction=0.0)).units),
        "build-tfds source scan": lambda url: sum(len(s) for s in sources.detect(url).splits.values()),
    }


def timed(fn, url: str, threads: int) -> tuple[float, int, int]:
    from laionprep.folders import shardscan as scan

    old, scan.THREADS = scan.THREADS, threads
    SlowFileSystem.requests = 0
    try:
        t = time.perf_counter()
        n = fn(url)
        return time.perf_counter() - t, n, SlowFileSystem.requests
    finally:
        scan.THREADS = old


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", default="/tmp/laionprep-objstore")
    ap.add_argument("--shards", type=int, default=41455)
    ap.add_argument("--subset", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=None, help="concurrent scanner threads (default: folders')")
    args = ap.parse_args()
    from laionprep.folders import shardscan

    threads = args.threads or shardscan.THREADS
    t = time.perf_counter()
    full = generate(os.path.join(args.work, f"dl-{args.shards}"), args.shards)
    sub = generate(os.path.join(args.work, f"dl-{args.subset}"), args.subset)
    print(f"folders ready in {time.perf_counter() - t:.1f} s ({args.shards} and {args.subset} shards, x3 files)")
    rows = []
    ok = True
    for name, fn in steps().items():
        seq_s, seq_n, seq_req = timed(fn, "slow://" + sub, 1)
        con_s, con_n, con_req = timed(fn, "slow://" + full, threads)
        assert seq_n == args.subset and con_n == args.shards, (name, seq_n, con_n)
        seq_full = seq_s * args.shards / args.subset
        ok &= con_s < 60
        rows.append((name, seq_s, seq_req, seq_full, con_s, con_req, seq_full / con_s))
    load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    print(f"\n{args.shards} shards, +{LATENCY_S * 1000:.0f} ms per request, concurrent scanner {threads} threads; "
          f"sequential measured on {args.subset} shards, extrapolated x{args.shards / args.subset:.2f}")
    print(f"uptime: {load}")
    print(f"| step | sequential {args.subset} (s) | requests | sequential {args.shards} extrapolated (s) "
          f"| concurrent {args.shards} (s) | requests | speed-up | target < 60 s |")
    print("|---|---|---|---|---|---|---|---|")
    for name, seq_s, seq_req, seq_full, con_s, con_req, ratio in rows:
        print(f"| {name} | {seq_s:.1f} | {seq_req} | {seq_full:.0f} | {con_s:.1f} | {con_req} | {ratio:.0f}x "
              f"| {'yes' if con_s < 60 else 'NO'} |")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
