"""bench/ingest.py: what laionprep's download layer costs on top of img2dataset, and the prefilter's speed.

1. `laionprep download` (metadata copy + prefilter + img2dataset in a child + accounting) against a direct
   `img2dataset.download(...)` call with the same parameters on the same prefiltered input, both downloading the
   same images from the same loopback server (images pre-rendered so the server is not what is measured).
   Runs alternate; the median of --repeats runs each is compared.  Target: ratio <= 1.05.
2. The prefilter's rows/s on a LAION-shaped parquet against a plain pyarrow read + write of the same file.
   Target: time ratio <= 1.25.
3. The fetcher alone: CPU per URL of laionprep's safe fetcher (what img2dataset's workers call for each row)
   against img2dataset's own urllib download of the same loopback URLs (served by another process), 16 threads,
   this process's CPU time per round, alternating rounds (median).  The per-URL difference is what the fetcher
   adds to every row of a download.

   At scale: `--rows 20000` (fixed costs amortised; the accounting reads every shard parquet's status columns).

Usage: python bench/ingest.py [--rows 2000] [--repeats 3] [--prefilter-rows 2000000] [--skip-prefilter]
       [--skip-download] [--skip-fetcher] [--fetcher-urls 4000]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from laionprep.datasets import get_spec
from laionprep.testing import synth
from laionprep.testing.server import DemoServer
from laionprep.ingest.download import DownloadOptions, img2dataset_config
from laionprep.ingest.prefilter import prefilter

DIRECT = """
import json, sys
from img2dataset import download
if __name__ == "__main__":
    download(**json.load(open(sys.argv[1])))
"""


def timed(cmd, log):
    t = time.perf_counter()
    with open(log, "ab") as f:
        subprocess.run(cmd, check=True, stdout=f, stderr=subprocess.STDOUT)
    return time.perf_counter() - t


def bench_download(rows: int, repeats: int, processes: int, work: str) -> dict:
    shard = max(rows // 4, 100)
    opts = DownloadOptions(processes=processes, threads=16, number_sample_per_shard=shard)
    with DemoServer() as srv:
        source = os.path.join(work, "source", "metadata")
        synth.write_metadata(source, rows, srv.base_url, seed=7, files=2)
        srv.prewarm(7, rows)
        ours, direct = [], []
        for rep in range(repeats):
            for which in (("ours", "direct") if rep % 2 == 0 else ("direct", "ours")):
                out = os.path.join(work, f"{which}-{rep}")
                if which == "ours":
                    cmd = [sys.executable, "-m", "laionprep.cli", "download", "--dataset", "demo", "--metadata-source",
                           source, "--output", out, "--processes", str(processes), "--threads", "16",
                           "--number-sample-per-shard", str(shard), "--no-progress",
                           "--allow-private-addresses"]
                    ours.append(timed(cmd, os.path.join(work, "bench.log")))
                else:
                    # same input img2dataset gets from us: the prefiltered parquet of an earlier (or a fresh) run
                    pre = os.path.join(work, "prefiltered-input")
                    if not os.path.exists(pre):
                        _prepare_prefiltered(source, pre)
                    cfg = img2dataset_config(pre, os.path.join(out, "tfrecord"), ["NSFW", "similarity", "LICENSE"],
                                             False, opts)
                    cfg_path = os.path.join(work, f"direct-{rep}.json")
                    json.dump(cfg, open(cfg_path, "w"))
                    script = os.path.join(work, "direct.py")
                    open(script, "w").write(DIRECT)
                    direct.append(timed([sys.executable, script, cfg_path], os.path.join(work, "bench.log")))
                shutil.rmtree(out)
    o, d = statistics.median(ours), statistics.median(direct)
    return {"rows": rows, "laionprep_s": round(o, 2), "img2dataset_s": round(d, 2), "ratio": round(o / d, 3),
            "runs_laionprep": [round(x, 2) for x in ours], "runs_img2dataset": [round(x, 2) for x in direct]}


def _prepare_prefiltered(source: str, out: str) -> None:
    spec = get_spec("demo")
    files = sorted(os.path.join(source, f) for f in os.listdir(source) if f.endswith(".parquet"))
    prefilter(spec, files, out, spec.default_filters)


def bench_prefilter(n: int, work: str) -> dict:
    rng = np.random.default_rng(0)
    ids = rng.integers(0, n * 2, n)
    table = pa.table({
        "SAMPLE_ID": np.arange(n, dtype=np.int64),
        "URL": pa.array([f"https://images.example.com/{i}/photo.jpg" for i in ids]),
        "TEXT": pa.array([f"a photo of item {i} on a table" for i in ids]),
        "HEIGHT": rng.integers(100, 2000, n).astype(np.int32), "WIDTH": rng.integers(100, 2000, n).astype(np.int32),
        "LICENSE": pa.array(np.where(rng.random(n) < 0.9, "?", "creativecommons.org/licenses/by/4.0")),
        "NSFW": pa.array(np.where(rng.random(n) < 0.95, "UNLIKELY", "NSFW")),
        "similarity": pa.array(rng.uniform(0.2, 0.45, n), mask=rng.random(n) < 0.01),
    })
    src = os.path.join(work, "pf.parquet")
    pq.write_table(table, src)
    spec = get_spec("laion400m")
    times_pf, times_raw = [], []
    for rep in range(5):  # interleaved; the best of 5 each (this VM's timings vary by +-20%)
        out = os.path.join(work, f"pf-out-{rep}")
        t = time.perf_counter()
        prefilter(spec, [src], out, spec.default_filters)
        times_pf.append(time.perf_counter() - t)
        t = time.perf_counter()
        pq.write_table(pq.read_table(src), os.path.join(work, f"raw-{rep}.parquet"))
        times_raw.append(time.perf_counter() - t)
    p, r = min(times_pf), min(times_raw)
    return {"rows": n, "prefilter_rows_per_s": int(n / p), "pyarrow_rw_rows_per_s": int(n / r),
            "time_ratio": round(p / r, 3)}


SERVE = """
import sys, time
from laionprep.testing.server import DemoServer
srv = DemoServer().start()
srv.prewarm(7, 500)
print(srv.base_url, flush=True)
sys.stdin.read()
"""


def bench_fetcher(n: int, rounds: int = 3) -> dict:
    from concurrent.futures import ThreadPoolExecutor

    import img2dataset.downloader as i2d

    from laionprep.ingest import safe_fetch as sf

    directives = ["noai", "noimageai", "noindex", "noimageindex"]
    opts = sf.FetchOptions(allow_private_addresses=True)
    fetchers = {
        "laionprep": lambda row: sf.download_image_with_retry(row, 10, 0, "laionprep", directives, opts=opts),
        "img2dataset": lambda row: i2d.download_image_with_retry(row, 10, 0, "laionprep", directives),
    }
    # the server in its own process, so this process's CPU time is the fetching alone
    server = subprocess.Popen([sys.executable, "-c", SERVE], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        base = server.stdout.readline().strip()
        urls = [f"{base}/img/7/{i % 500}.{synth.sample(7, i % 500).fmt}" for i in range(n)]
        cpu: dict = {k: [] for k in fetchers}
        for _ in range(rounds):
            for name, fetch in fetchers.items():
                t = time.process_time()
                with ThreadPoolExecutor(16) as ex:
                    res = list(ex.map(fetch, enumerate(urls)))
                cpu[name].append((time.process_time() - t) / n * 1e6)
                assert all(r[1] is not None for r in res), f"{name}: some loopback URLs failed"
    finally:
        server.stdin.close()
        server.wait()
    med = {k: statistics.median(v) for k, v in cpu.items()}
    return {"urls": n, "rounds": rounds, "laionprep_us_per_url": round(med["laionprep"]),
            "img2dataset_us_per_url": round(med["img2dataset"]),
            "added_us_per_url": round(med["laionprep"] - med["img2dataset"])}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--prefilter-rows", type=int, default=2_000_000)
    ap.add_argument("--skip-prefilter", action="store_true")
    ap.add_argument("--skip-download", action="store_true")
    ap.add_argument("--skip-fetcher", action="store_true")
    ap.add_argument("--fetcher-urls", type=int, default=4000)
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="laionprep-bench-ingest-")
    try:
        pf = dl = fe = None
        if not args.skip_fetcher:
            fe = bench_fetcher(args.fetcher_urls)
            print(f"fetcher:   {fe['urls']:,} loopback URLs x {fe['rounds']} rounds  CPU per URL: laionprep "
                  f"{fe['laionprep_us_per_url']} us, img2dataset {fe['img2dataset_us_per_url']} us "
                  f"(+{fe['added_us_per_url']} us)", flush=True)
        if not args.skip_prefilter:
            pf = bench_prefilter(args.prefilter_rows, work)
            print(f"prefilter: {pf['rows']:,} rows  laionprep {pf['prefilter_rows_per_s']:,} rows/s  "
                  f"pyarrow read+write {pf['pyarrow_rw_rows_per_s']:,} rows/s  "
                  f"time ratio {pf['time_ratio']} (target <= 1.25)", flush=True)
        if not args.skip_download:
            dl = bench_download(args.rows, args.repeats, args.processes, work)
            print(f"download:  {dl['rows']:,} metadata rows  laionprep download {dl['laionprep_s']} s  "
                  f"img2dataset {dl['img2dataset_s']} s  ratio {dl['ratio']} (target <= 1.05)")
        print(json.dumps({"prefilter": pf, "download": dl, "fetcher": fe}))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
