"""bench/reliability.py: the figures of docs/RELIABILITY.md (network faults), from the real download stage.

1. Every behaviour of the hostile test server (tests/reliability/hostile_server.py) tried with --copies distinct
   URLs in one `laionprep download` (pipeline in-process, img2dataset in its child, private addresses allowed):
   per behaviour the URLs tried, records, failures by reason, URLs lost (no row, or not the expected outcome) and
   hangs (connections the server saw held past the deadline + 3 s).
2. Peak RSS of the largest download worker (the manifest's peak_worker_rss_mib) for three runs of --mem-urls URLs
   each: valid images only (the baseline), decompression bombs only (30000x30000 PNG), 200 MB bodies only (half
   with Content-Length, half without), all with the default limits.
3. With --compare-img2dataset N: N URLs of the bomb and 200 MB runs through plain img2dataset (its urllib
   fetch), for the record of what the limits prevent.  It allocates several GB: run it on a machine with room.

    .venv/bin/python bench/reliability.py [--copies 10] [--mem-urls 30] [--timeout 2] [--compare-img2dataset 3]
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "reliability"))  # hostile_server, reliability_helpers

import hostile_server  # noqa: E402
from reliability_helpers import url_status, write_urls  # noqa: E402

from laionprep.ingest import pipeline  # noqa: E402
from laionprep.ingest import safe_fetch as sf  # noqa: E402
from laionprep.ingest.download import DownloadOptions, img2dataset_config, normalise_error  # noqa: E402

DIRECT = """
import json, resource, sys
from img2dataset import download
if __name__ == "__main__":
    download(**json.load(open(sys.argv[1])))
    print("PEAK_KIB", resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""


def download(urls, work, timeout, **opts):
    src = write_urls(os.path.join(work, "src"), urls)
    out = os.path.join(work, "out")
    t = time.perf_counter()
    m = pipeline.run(pipeline.IngestConfig(
        dataset="demo", output=out, metadata_source=src, no_filters=True,
        download=DownloadOptions(processes=1, threads=16, timeout=timeout, image_size=64, number_sample_per_shard=10000,
                                 allow_private_addresses=True, **opts)))
    return out, m, time.perf_counter() - t


def faults(copies: int, timeout: int) -> dict:
    max_bytes = sf.DEFAULT_MAX_IMAGE_BYTES
    table = hostile_server.behaviours(max_bytes, sf.DEFAULT_MAX_IMAGE_PIXELS)
    with hostile_server.HostileServer(drip_interval=1.0) as srv, tempfile.TemporaryDirectory() as work:
        urls = {pattern: hostile_server.urls_of(srv, pattern, copies) for pattern in table}
        out, m, secs = download([u for us in urls.values() for u in us], work, timeout)
        got = url_status(out)
        rows = []
        for pattern, reason in table.items():
            outcomes = collections.Counter(
                "record" if got.get(u, (None,))[0] == "success" else normalise_error(got[u][1]) if u in got else "LOST"
                for u in urls[pattern])
            lost = sum(n for o, n in outcomes.items() if o != (reason or "record"))
            rows.append({"behaviour": pattern, "urls": copies, "outcome": dict(outcomes), "lost": lost})
        held = {p: max(v) for p, v in srv.held.items()}
        hangs = sum(1 for v in srv.held.values() for s in v if s > timeout + 3)
        return {"urls": sum(len(v) for v in urls.values()), "records": m["stages"]["download"]["success"],
                "lost": sum(r["lost"] for r in rows), "hangs": hangs, "longest_held_s": held,
                "balanced": m["accounting"]["balanced"], "seconds": round(secs, 1),
                "peak_worker_rss_mib": m["stages"]["download"]["peak_worker_rss_mib"], "behaviours": rows}


def memory(n: int, timeout: int, compare: int) -> dict:
    cases = {"valid images (baseline)": [f"/ok/{i % 40}.jpg?c={i}" for i in range(n)],
             "30000x30000 PNG bombs": [f"/bomb.png?c={i}" for i in range(n)],
             "200 MB bodies": [f"/huge{'' if i % 2 else '-nolength'}.jpg?c={i}" for i in range(n)]}
    res = {}
    for name, paths in cases.items():
        with hostile_server.HostileServer() as srv, tempfile.TemporaryDirectory() as work:
            urls = [srv.url(p) for p in paths]
            out, m, secs = download(urls, work, timeout)
            dl = m["stages"]["download"]
            res[name] = {"urls": n, "records": dl["success"], "failures": dl["failure_reasons"],
                         "peak_worker_rss_mib": dl["peak_worker_rss_mib"], "seconds": round(secs, 1),
                         "server_bytes_sent_max": max((x for v in srv.huge_sent.values() for x in v), default=0)}
            if compare and name != "valid images (baseline)":
                res[name]["img2dataset_alone"] = direct(urls[:compare], work, timeout)
    return res


def direct(urls, work, timeout) -> dict:
    """Plain img2dataset (urllib) on the same URLs: its worker's peak RSS and outcomes."""
    src = write_urls(os.path.join(work, "src-direct"), urls)
    out = os.path.join(work, "direct")
    cfg = img2dataset_config(src, out, [], False, DownloadOptions(processes=1, threads=16, timeout=timeout,
                                                                   image_size=64, number_sample_per_shard=10000))
    cfg.update(url_col="URL", caption_col="TEXT")
    with open(os.path.join(work, "direct.json"), "w") as f:
        json.dump(cfg, f)
    with open(os.path.join(work, "direct.py"), "w") as f:
        f.write(DIRECT)
    t = time.perf_counter()
    r = subprocess.run([sys.executable, os.path.join(work, "direct.py"), os.path.join(work, "direct.json")],
                       capture_output=True, text=True)
    secs = time.perf_counter() - t
    peak = [int(line.split()[1]) for line in r.stdout.splitlines() if line.startswith("PEAK_KIB")]
    import glob

    import pyarrow.parquet as pq

    status = collections.Counter()
    for p in glob.glob(os.path.join(out, "*.parquet")):
        t_ = pq.read_table(p, columns=["status", "error_message"]).to_pydict()
        status.update(f"{s}: {normalise_error(e) if e else ''}" for s, e in zip(t_["status"], t_["error_message"]))
    return {"returncode": r.returncode, "peak_worker_rss_mib": round(peak[0] / 1024, 1) if peak else None,
            "outcomes": dict(status), "seconds": round(secs, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--copies", type=int, default=10, help="URLs per behaviour (default 10)")
    ap.add_argument("--mem-urls", type=int, default=30, help="URLs per memory run (default 30)")
    ap.add_argument("--timeout", type=int, default=2, help="--timeout of the downloads (default 2 s)")
    ap.add_argument("--compare-img2dataset", type=int, default=0, metavar="N",
                    help="also run plain img2dataset on N URLs of each memory case (needs several GB)")
    args = ap.parse_args()
    f = faults(args.copies, args.timeout)
    print(f"{'behaviour':<58} {'urls':>4}  outcome")
    for r in f["behaviours"]:
        print(f"{r['behaviour']:<58} {r['urls']:>4}  " + ", ".join(f"{k} x{v}" for k, v in r["outcome"].items())
              + (f"  LOST {r['lost']}" if r["lost"] else ""))
    print(f"\n{f['urls']} URLs, {f['records']} records, lost {f['lost']}, hangs {f['hangs']}, "
          f"balanced {f['balanced']}, "
          f"{f['seconds']} s, peak worker RSS {f['peak_worker_rss_mib']} MiB; longest held (s): "
          + json.dumps({k: round(v, 1) for k, v in f["longest_held_s"].items()}))
    mem = memory(args.mem_urls, args.timeout, args.compare_img2dataset)
    print()
    for name, r in mem.items():
        print(f"{name:<28} peak worker RSS {r['peak_worker_rss_mib']} MiB  ({r['urls']} URLs, {r['records']} records, "
              f"{r['failures']}, {r['seconds']} s, most bytes the server sent to one request: "
              f"{r['server_bytes_sent_max']})")
        if "img2dataset_alone" in r:
            print(f"{'':<28} img2dataset alone: {r['img2dataset_alone']}")
    print(json.dumps({"faults": {k: v for k, v in f.items() if k != "behaviours"}, "memory": mem}))


if __name__ == "__main__":
    main()
