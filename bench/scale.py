"""bench/scale.py: does each stage stay in bounded memory and linear time as the dataset grows?  (Printed, not
asserted; results in BENCHMARKS.md.)

--part prefilter: `laionprep download --dry-run` (metadata copy + prefilter) on --small and --large files of
  --rows-per-file generated LAION-400M-shaped rows (unique URLs, 2% of rows repeating an earlier URL, anywhere in
  the dataset), with --prefilter-processes 1, and the small set again with 2 processes.  Peak RSS is that of the
  whole process tree (the CLI and its prefilter workers): /proc is sampled every 0.1 s and the RSS of every
  descendant summed (a short peak between samples can be missed; the largest single process's peak, from
  getrusage(RUSAGE_CHILDREN).ru_maxrss, is printed too).  Seconds per million rows are wall time of the whole
  dry run.  Targets: RSS ratio large/small <= 1.2, per-row time ratio <= 1.2, rows/s with 2 processes >= 1.7x one.
  Then an extrapolation table (RAM and hours on N cores) for LAION-400M, LAION-2B-en, DataComp-1B and xlarge.
(--part validate / --part keys: added by the validate and key-list work.)

Generated files are cached in --cache (default /tmp/laionprep-scale-cache); outputs go to a temporary folder that is
removed afterwards.  Usage: python bench/scale.py [--part prefilter] [--small 10] [--large 100]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

GENERATOR_VERSION = 2
DATASETS = (("LAION-400M", 413_000_000), ("LAION-2B-en", 2_320_000_000), ("DataComp-1B", 1_400_000_000),
            ("DataComp xlarge", 12_800_000_000))
_WORDS = np.array("a photo of the red blue small large dog cat house car tree on in with and at beach city night "
                  "old new woman man child garden street table book flower".split())


def generate_file(path: str, index: int, rows: int, dup_fraction: float = 0.02) -> None:
    """One LAION-400M-shaped metadata file, vectorised (pyarrow string kernels).  URL ids are unique across files
    (index * rows + row) except ``dup_fraction`` of rows, which repeat the URL of a random earlier row of the
    dataset (this file or an earlier one)."""
    rng = np.random.default_rng(index)
    ids = np.arange(rows, dtype=np.int64) + index * rows
    dup = rng.random(rows) < dup_fraction
    upto = ids[dup]  # a random earlier id (0 for the very first row)
    ids[dup] = (rng.random(dup.sum()) * np.maximum(upto, 1)).astype(np.int64)
    sid = pa.array(ids).cast(pa.string())
    host = pa.array(ids % 5000).cast(pa.string())  # a function of the id: a repeated id is a repeated URL
    url = pc.binary_join_element_wise("https://img", host, ".example-cdn.com/images/2021/", sid,
                                      "/full-size-photo.jpg", "")
    vocab = pa.array(_WORDS.tolist())
    words = [pc.take(vocab, pa.array(rng.integers(0, len(_WORDS), rows))) for _ in range(8)]  # arrow take: fast
    text = pc.binary_join_element_wise(*words, " ")
    choice = lambda p, a, b: pc.take(pa.array([a, b]), pa.array((rng.random(rows) >= p).astype(np.int8)))  # noqa
    t = pa.table({
        "SAMPLE_ID": ids, "URL": url, "TEXT": text,
        "HEIGHT": rng.integers(100, 2000, rows).astype(np.int32),
        "WIDTH": rng.integers(100, 2000, rows).astype(np.int32),
        "LICENSE": choice(0.9, "?", "creativecommons.org/licenses/by/4.0"),
        "NSFW": choice(0.95, "UNLIKELY", "NSFW"),
        "similarity": pa.array(rng.uniform(0.25, 0.45, rows), mask=rng.random(rows) < 0.01),
    })
    tmp = path + ".tmp"
    pq.write_table(t, tmp)
    os.replace(tmp, path)


def dataset(cache: str, files: int, rows: int) -> str:
    """A folder of ``files`` links to cached generated files (generated when missing)."""
    src = os.path.join(cache, f"v{GENERATOR_VERSION}-{rows}")
    os.makedirs(src, exist_ok=True)
    for i in range(files):
        p = os.path.join(src, f"part-{i:05d}.parquet")
        if not os.path.exists(p):
            t = time.perf_counter()
            generate_file(p, i, rows)
            print(f"  generated {p} in {time.perf_counter() - t:.1f} s", flush=True)
    view = os.path.join(cache, f"view-{rows}-{files}")
    if not os.path.isdir(view):
        os.makedirs(view + ".tmp", exist_ok=True)
        for i in range(files):
            n = f"part-{i:05d}.parquet"
            if not os.path.exists(os.path.join(view + ".tmp", n)):
                os.symlink(os.path.join(src, n), os.path.join(view + ".tmp", n))
        os.replace(view + ".tmp", view)
    return view


def _tree_rss(root: int) -> int:
    """RSS bytes of ``root`` and all its descendants now (from /proc)."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(d))
            rss[int(d)] = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, IndexError, ValueError):
            continue
    total, todo = 0, [root]
    while todo:
        p = todo.pop()
        total += rss.get(p, 0)
        todo += children.get(p, [])
    return total


def run_measured(cmd: list[str]) -> dict:
    """Run ``cmd``; wall seconds, peak RSS of its process tree (sampled), and the largest child's ru_maxrss."""
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, _tree_rss(proc.pid))
        time.sleep(0.1)
    out = proc.stdout.read().decode("utf-8", "replace")
    if proc.returncode != 0:
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{out[-3000:]}")
    return {"seconds": time.perf_counter() - t, "peak_tree_rss_mib": peak / 2**20,
            "max_child_rss_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}


def dry_run(source: str, work: str, processes: int, budget: str) -> dict:
    out = os.path.join(work, f"out-{os.path.basename(source)}-p{processes}")
    cmd = [sys.executable, "-m", "laionprep.cli", "download", "--dataset", "laion400m", "--metadata-source", source,
           "--output", out, "--dry-run", "--no-progress", "--prefilter-processes", str(processes),
           "--memory-budget", budget]
    r = run_measured(cmd)
    m = json.load(open(os.path.join(out, "manifest.json")))
    shutil.rmtree(out)
    r.update(rows=m["stages"]["metadata"]["rows"], kept=m["stages"]["prefilter"]["rows_out"],
             duplicates=m["stages"]["prefilter"]["dropped"]["duplicate_url"])
    r["s_per_million"] = r["seconds"] / (r["rows"] / 1e6)
    return r


def part_prefilter(args, work: str) -> dict:
    small = dataset(args.cache, args.small, args.rows_per_file)
    large = dataset(args.cache, args.large, args.rows_per_file)
    res = {}
    for name, src, procs in (("small_p1", small, 1), ("large_p1", large, 1), ("small_p2", small, 2)):
        r = res[name] = dry_run(src, work, procs, args.memory_budget)
        print(f"  {name}: {r['rows']:,} rows ({r['kept']:,} kept, {r['duplicates']:,} duplicates) in "
              f"{r['seconds']:.1f} s = {r['s_per_million']:.2f} s per million rows; peak tree RSS "
              f"{r['peak_tree_rss_mib']:,.0f} MiB", flush=True)
    s, lg, s2 = res["small_p1"], res["large_p1"], res["small_p2"]
    res["ratios"] = {"rss_large_over_small": lg["peak_tree_rss_mib"] / s["peak_tree_rss_mib"],
                     "per_row_time_large_over_small": lg["s_per_million"] / s["s_per_million"],
                     "rows_per_s_2p_over_1p": s["seconds"] / s2["seconds"]}
    q = res["ratios"]
    print(f"prefilter: RSS {args.large}/{args.small} files {q['rss_large_over_small']:.2f} (target <= 1.2); "
          f"time per row {q['per_row_time_large_over_small']:.2f} (target <= 1.2); 2 processes "
          f"{q['rows_per_s_2p_over_1p']:.2f}x one (target >= 1.7, needs an idle machine)")
    print(f"  largest single process (getrusage children max-rss): {lg['max_child_rss_mib']:,.0f} MiB")
    # extrapolation: time per row from the large run, one process; N processes divide the time by N x the
    # measured 2-process efficiency (capped at 1); RAM: the budget bounds it, so the large run's peak applies
    eff = min(1.0, q["rows_per_s_2p_over_1p"] / 2)
    print(f"\nextrapolated (per-row time of the {lg['rows']:,}-row run, {eff:.2f} parallel efficiency per core "
          f"measured with 2 processes, peak RAM as measured: bounded by --memory-budget {args.memory_budget}):")
    print(f"  {'dataset':<18}{'rows':>16}{'RAM GiB':>9}" + "".join(f"{f'h@{n}c':>9}" for n in (1, 8, 32, 64)))
    for name, rows in DATASETS:
        h1 = lg["s_per_million"] * rows / 1e6 / 3600
        print(f"  {name:<18}{rows:>16,}{lg['peak_tree_rss_mib'] / 1024:>9.1f}"
              + "".join(f"{h1 / (1 if n == 1 else n * eff):>9.2f}" for n in (1, 8, 32, 64)))
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--part", choices=("prefilter", "all"), default="all")
    ap.add_argument("--small", type=int, default=10, help="files in the small set")
    ap.add_argument("--large", type=int, default=100, help="files in the large set")
    ap.add_argument("--rows-per-file", type=int, default=1_000_000)
    ap.add_argument("--memory-budget", default="2GiB")
    ap.add_argument("--cache", default="/tmp/laionprep-scale-cache")
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="laionprep-bench-scale-")
    print("load:", open("/proc/loadavg").read().strip(), flush=True)
    results = {}
    try:
        if args.part in ("prefilter", "all"):
            results["prefilter"] = part_prefilter(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("load:", open("/proc/loadavg").read().strip())
    print(json.dumps(results))


if __name__ == "__main__":
    main()
