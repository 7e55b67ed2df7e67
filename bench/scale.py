"""bench/scale.py: does each stage stay in bounded memory and linear time as the dataset grows?  (Printed, not
asserted; results in BENCHMARKS.md.)

--part prefilter: `laionprep download --dry-run` (metadata copy + prefilter) on --small and --large files of
  --rows-per-file generated LAION-400M-shaped rows (unique URLs, 2% of rows repeating an earlier URL, anywhere in
  the dataset), with --prefilter-processes 1, and the small set again with 2 processes.  Peak RSS is that of the
  whole process tree (the CLI and its prefilter workers): /proc is sampled every 0.1 s and the RSS of every
  descendant summed (a short peak between samples can be missed; the largest single process's peak, from
  getrusage(RUSAGE_CHILDREN).ru_maxrss, is printed too).  Seconds per million rows are wall time of the whole
  dry run.  Targets: RSS ratio large/small <= 1.2, per-row time ratio <= 1.2, rows/s with 2 processes >= 1.7x one.
--part validate: validate's dataset-wide duplicate-key check (laionprep.validate.key_check) fed synthetic keys:
  --keys-small and --keys-large keys (default 10M and 100M) in shards of 10,000 9-digit img2dataset-style keys, a
  few of them repeated, spilled as the shards' results would arrive, then the partitions checked in --processes
  workers under --validate-budget.  Peak RSS of the process tree, seconds per million keys (spill / check), the
  spill's bytes on disk; and the previous design (every key in one process, one argsort) at the small size as the
  reference.  Target: RSS ratio large/small <= 1.2.
--part keys: a reshard worker's record processing (sharding.records.RecordProcessor.process_batch, in batches of
  the worker's size, its keep list from sharding.worker._key_list) over --records synthetic DataComp-shaped records,
  without a list and with a --uids-uid keep list (default 50M) that laionprep.keylist builds from an unsorted
  DataComp-format .npy; the list's build time, peak RSS and file size; the worker's peak RSS and records/s with vs
  without the list (its own memory, RssAnon, apart from the list's page-cache pages, RssFile).
--part extrapolate (also printed by --part all): RAM and hours on N cores for LAION-400M, LAION-2B-en, DataComp-1B
  and xlarge from the per-row figures measured (read from --results, which every part updates).

Generated files are cached in --cache (default /tmp/laionprep-scale-cache); outputs go to a temporary folder that is
removed afterwards.  Usage: python bench/scale.py [--part prefilter|validate|keys|extrapolate|all] [--small 10]
[--large 100] [--keys-small 10000000] [--keys-large 100000000] [--uids 50000000]
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


def _anon(pid: int) -> int:
    """A process's anonymous resident bytes (RssAnon: its own memory, without the file pages it maps)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _tree_rss(root: int, anon: bool = False):
    """RSS bytes of ``root`` and all its descendants now (from /proc); with ``anon``, (RSS, RssAnon) summed."""
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
    total, own, todo = 0, 0, [root]
    while todo:
        p = todo.pop()
        total += rss.get(p, 0)
        own += _anon(p) if anon else 0
        todo += children.get(p, [])
    return (total, own) if anon else total


def run_measured(cmd: list[str]) -> dict:
    """Run ``cmd``; wall seconds, peak RSS of its process tree (sampled; also its anonymous part, RssAnon: the
    processes' own memory without the file pages they map), and the largest child's ru_maxrss."""
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    peak = peak_anon = 0
    while proc.poll() is None:
        rss, anon = _tree_rss(proc.pid, anon=True)
        peak, peak_anon = max(peak, rss), max(peak_anon, anon)
        time.sleep(0.1)
    out = proc.stdout.read().decode("utf-8", "replace")
    if proc.returncode != 0:
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{out[-3000:]}")
    return {"seconds": time.perf_counter() - t, "peak_tree_rss_mib": peak / 2**20,
            "peak_tree_anon_mib": peak_anon / 2**20,
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
    return res


# ------------------------------------------------------------------------------------------------- validate
KEYS_PER_SHARD = 10_000


def _shard_keys(shard: int) -> np.ndarray:
    """Shard ``shard``'s keys: 9 digits (img2dataset's shard number + index), unique except one in 5,000, which
    repeats a key of an earlier shard (or of this one)."""
    base = 100_000_000 + shard * KEYS_PER_SHARD  # 9 digits while shard < 90,000
    vals = np.arange(base, base + KEYS_PER_SHARD, dtype=np.int64)
    rng = np.random.default_rng(shard)
    dup = rng.random(KEYS_PER_SHARD) < 2e-4
    vals[dup] = 100_000_000 + (rng.random(int(dup.sum())) * (base - 100_000_000 + 1)).astype(np.int64)
    return vals.astype("S9")


def child_validate(n_keys: int, budget: int, processes: int, work: str, reference: bool) -> dict:
    """The key check over ``n_keys`` synthetic keys (run in a child process: its tree's RSS is measured)."""
    import types

    from laionprep.validate import key_check
    from laionprep.validate.core import _pool

    shards = -(-n_keys // KEYS_PER_SHARD)
    recs = np.arange(KEYS_PER_SHARD, dtype=np.int64)
    t0 = time.perf_counter()
    if not n_keys:  # the baseline: the interpreter and these imports
        return {"keys": 0, "duplicates": 0, "spill_s": 0.0, "check_s": 0.0, "partitions": 0, "disk_bytes": 0}
    if reference:  # the previous design: every shard's keys (+ unit + record) held, concatenated and argsorted
        held = [types.SimpleNamespace(unit=s, keys=_shard_keys(s), key_records=recs.copy()) for s in range(shards)]
        t1 = time.perf_counter()
        keys = np.concatenate([r.keys for r in held])
        units = np.concatenate([np.full(len(r.keys), r.unit, np.int64) for r in held])
        rows = np.concatenate([r.key_records for r in held])
        order = np.argsort(keys, kind="stable")
        sk = keys[order]
        dups = int((sk[1:] == sk[:-1]).sum())
        del units, rows
        return {"keys": n_keys, "duplicates": dups, "spill_s": t1 - t0, "check_s": time.perf_counter() - t1,
                "partitions": 1, "disk_bytes": 0}
    spill = key_check.KeySpill(work, budget, shards, n_keys, processes=processes)
    gen = 0.0
    for s in range(shards):
        g = time.perf_counter()
        r = types.SimpleNamespace(unit=s, keys=_shard_keys(s), key_records=recs)
        gen += time.perf_counter() - g
        spill.add(r)
    spill.close()
    t1 = time.perf_counter()
    disk = sum(os.path.getsize(os.path.join(work, f)) for f in os.listdir(work))
    pool = _pool(min(processes, spill.partitions)) if processes > 1 and spill.partitions > 1 else None
    try:
        found = key_check.find_duplicates(spill, None, 100, pool)
    finally:
        if pool is not None:
            pool.shutdown()
    return {"keys": n_keys, "duplicates": found.count, "spill_s": t1 - t0 - gen, "generate_s": gen,
            "check_s": time.perf_counter() - t1, "partitions": spill.partitions, "chunks": spill.chunks,
            "disk_bytes": disk}


def _child(args, name: str, **kw) -> dict:
    """Run this script's ``child_<name>(**kw)`` in a child process, measured; its JSON result merged in."""
    out = os.path.join(tempfile.mkdtemp(prefix="laionprep-bench-child-"), "result.json")
    code = (f"import json, sys; sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r}); import scale; "
            f"json.dump(scale.child_{name}(**{kw!r}), open({out!r}, 'w'))")
    r = run_measured([sys.executable, "-c", code])
    r.update(json.load(open(out)))
    shutil.rmtree(os.path.dirname(out))
    return r


def part_validate(args, work: str) -> dict:
    res = {}
    runs = (("baseline", 0, False), ("reference_small", args.keys_small, True), ("small", args.keys_small, False),
            ("large", args.keys_large, False))
    for name, n, ref in runs:
        spill_dir = os.path.join(work, f"keys-{name}")
        os.makedirs(spill_dir)
        r = res[name] = _child(args, "validate", n_keys=n, budget=args.validate_budget, processes=args.processes,
                               work=spill_dir, reference=ref)
        shutil.rmtree(spill_dir)
        if not n:
            print(f"  baseline (imports, no keys): peak tree RSS {r['peak_tree_rss_mib']:,.0f} MiB", flush=True)
            continue
        r["s_per_million"] = (r["spill_s"] + r["check_s"]) / (n / 1e6)
        print(f"  {name}: {n:,} keys ({r['duplicates']:,} duplicates, {r['partitions']} partitions) spill "
              f"{r['spill_s']:.1f} s + check {r['check_s']:.1f} s = {r['s_per_million']:.2f} s per million keys; "
              f"peak tree RSS {r['peak_tree_rss_mib']:,.0f} MiB; disk {r['disk_bytes'] / 2**20:,.0f} MiB", flush=True)
    s, lg, ref = res["small"], res["large"], res["reference_small"]
    res["ratios"] = {"rss_large_over_small": lg["peak_tree_rss_mib"] / s["peak_tree_rss_mib"],
                     "per_key_time_large_over_small": lg["s_per_million"] / s["s_per_million"],
                     "rss_small_over_reference": s["peak_tree_rss_mib"] / ref["peak_tree_rss_mib"]}
    q = res["ratios"]
    print(f"validate keys: RSS {args.keys_large:,}/{args.keys_small:,} keys {q['rss_large_over_small']:.2f} (target "
          f"<= 1.2); time per key {q['per_key_time_large_over_small']:.2f}; at {args.keys_small:,} keys "
          f"{q['rss_small_over_reference']:.2f}x the RSS of the in-memory design")
    return res


# ------------------------------------------------------------------------------------------------- keys
def _rss_status() -> dict:
    got = {}
    with open("/proc/self/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmHWM", "RssAnon", "RssFile"):
                got[k] = int(v.split()[0]) / 1024  # MiB
    return got


def child_keylist_build(path: str, cache: str) -> dict:
    os.environ["LAIONPREP_CACHE_DIR"] = cache
    from laionprep import keylist

    t = time.perf_counter()
    kl = keylist.load(path)
    seconds = time.perf_counter() - t
    built = [os.path.join(keylist.cache_dir(), f) for f in os.listdir(keylist.cache_dir()) if f.endswith(".keys")]
    return {"uids": len(kl), "build_s": seconds, "list_bytes": sum(os.path.getsize(f) for f in built),
            "status_mib": _rss_status()}


def _uid_hex(hi: np.ndarray, lo: np.ndarray) -> list[bytes]:
    return [b"%016x%016x" % (int(h), int(w)) for h, w in zip(hi, lo)]


def _uids(n: int, listed: np.ndarray | None) -> list[bytes]:
    """``n`` uids (32 hex digits): half drawn from ``listed`` (the keep list's records), half random."""
    rng = np.random.default_rng(7)
    if listed is not None:
        pick = listed[np.sort(rng.choice(len(listed), n // 2, replace=False))]
        hi = np.concatenate([pick["f0"], rng.integers(0, 2**63, n - n // 2, dtype=np.uint64)])
        lo = np.concatenate([pick["f1"], rng.integers(0, 2**63, n - n // 2, dtype=np.uint64)])
        order = rng.permutation(n)
        hi, lo = hi[order], lo[order]
    else:
        hi = rng.integers(0, 2**63, n, dtype=np.uint64)
        lo = rng.integers(0, 2**63, n, dtype=np.uint64)
    return [b"%016x%016x" % (int(h), int(w)) for h, w in zip(hi, lo)]


def _records(first: int, uids: list[bytes], img: bytes) -> list[bytes]:
    """DataComp-shaped records (a 6 KB image, caption, key, uid, sizes, similarity), one per uid."""
    from laionprep.tfrecord import Example

    out = []
    for i, uid in enumerate(uids, first):
        ex = Example()
        f = ex.features.feature
        f["jpg"].bytes_list.value.append(img)
        f["txt"].bytes_list.value.append(b"a photo of a red dog on the beach at night")
        f["key"].bytes_list.value.append(b"%09d" % i)
        f["uid"].bytes_list.value.append(uid)
        f["width"].int64_list.value.append(256)
        f["height"].int64_list.value.append(192)
        f["similarity"].float_list.value.append(0.31)
        out.append(ex.SerializeToString())
    return out


def child_process(records: int, list_path: str | None, cache: str) -> dict:
    """A reshard worker's record processing over ``records`` records, with the keep list ``list_path`` or none;
    the records are made batch by batch (not timed), as a worker reads them, so the process holds one batch."""
    os.environ["LAIONPREP_CACHE_DIR"] = cache
    from laionprep.sharding import worker
    from laionprep.sharding.records import RecordFilters, RecordProcessor

    listed = np.load(list_path, mmap_mode="r") if list_path else None
    uids = _uids(records, listed)
    del listed
    img = b"\xff\xd8\xff" + np.random.default_rng(1).bytes(6000)
    before = _rss_status()
    t0 = time.perf_counter()
    filters = RecordFilters(keep_keys=list_path, keys_column="uid")
    schema = {"height": "int64", "jpg": "bytes", "key": "bytes", "similarity": "float", "txt": "bytes",
              "uid": "bytes", "width": "int64"}
    proc = RecordProcessor(schema, (), filters, worker._key_list(list_path), None, 0.0)
    load_s = time.perf_counter() - t0
    kept, busy = 0, 0.0
    for s in range(0, records, worker.BATCH):
        batch = _records(s, uids[s:s + worker.BATCH], img)
        t = time.perf_counter()
        for is_val, _ in proc.process_batch(batch):
            kept += is_val is not None
        busy += time.perf_counter() - t
    return {"records": records, "kept": kept, "load_s": load_s, "process_s": busy,
            "records_per_s": records / busy, "status_mib_before": before, "status_mib": _rss_status()}


def part_keys(args, work: str) -> dict:
    src = os.path.join(work, "uids.npy")  # DataComp's subset format, unsorted: keylist sorts it into its cache
    rng = np.random.default_rng(3)
    out = np.lib.format.open_memmap(src, mode="w+", dtype=np.dtype("u8,u8"), shape=(args.uids,))
    for s in range(0, args.uids, 5_000_000):
        k = min(5_000_000, args.uids - s)
        out["f0"][s:s + k] = rng.integers(0, 2**64 - 1, k, dtype=np.uint64)
        out["f1"][s:s + k] = rng.integers(0, 2**64 - 1, k, dtype=np.uint64)
    out.flush()
    del out
    cache = os.path.join(work, "cache")
    res = {"build": _child(args, "keylist_build", path=src, cache=cache)}
    b = res["build"]
    print(f"  key list: {b['uids']:,} uids built in {b['build_s']:.1f} s, {b['list_bytes'] / 2**20:,.0f} MiB on disk; "
          f"peak tree RSS {b['peak_tree_rss_mib']:,.0f} MiB, of it anonymous (its own memory, not the mapped files' "
          f"pages) at most {b['peak_tree_anon_mib']:,.0f} MiB", flush=True)
    for name, path in (("without", None), ("with", src)):
        r = res[name] = _child(args, "process", records=args.records, list_path=path, cache=cache)
        st = r["status_mib"]
        own = st["RssAnon"] - r["status_mib_before"]["RssAnon"]
        r["own_growth_mib"] = own
        print(f"  worker {name} the list: {r['records']:,} records ({r['kept']:,} kept) at {r['records_per_s']:,.0f} "
              f"records/s (list load {r['load_s']:.2f} s); peak tree RSS {r['peak_tree_rss_mib']:,.0f} MiB (anonymous "
              f"{r['peak_tree_anon_mib']:,.0f}); at the "
              f"end RssAnon {st['RssAnon']:,.0f} MiB ({own:+,.0f} while processing), RssFile {st['RssFile']:,.0f} "
              f"MiB (the list's pages in the page cache, shared by a machine's workers)", flush=True)
    w, wo = res["with"], res["without"]
    res["ratios"] = {"rss_with_over_without": w["peak_tree_rss_mib"] / wo["peak_tree_rss_mib"],
                     "anon_with_minus_without_mib": w["status_mib"]["RssAnon"] - wo["status_mib"]["RssAnon"],
                     "speed_with_over_without": w["records_per_s"] / wo["records_per_s"]}
    q = res["ratios"]
    print(f"keys: peak tree RSS with/without {q['rss_with_over_without']:.2f}; own memory with - without "
          f"{q['anon_with_minus_without_mib']:+,.0f} MiB; records/s with/without {q['speed_with_over_without']:.2f}")
    os.remove(src)
    return res


# ------------------------------------------------------------------------------------------------- extrapolate
CORES = (1, 8, 32, 64)


def extrapolate(results: dict) -> None:
    """RAM and hours on N cores per dataset from the per-row figures in ``results``."""
    pf, va, ks = results.get("prefilter"), results.get("validate"), results.get("keys")
    head = f"  {'dataset':<18}{'rows':>16}{'RAM GiB':>9}" + "".join(f"{f'h@{n}c':>9}" for n in CORES)
    if pf:
        lg = pf["large_p1"]
        eff = min(1.0, pf["ratios"]["rows_per_s_2p_over_1p"] / 2)
        print(f"\nprefilter (per-row time of the {lg['rows']:,}-row run, {eff:.2f} parallel efficiency per core "
              f"measured with 2 processes; peak RAM as measured, bounded by --memory-budget):")
        print(head)
        for name, rows in DATASETS:
            h1 = lg["s_per_million"] * rows / 1e6 / 3600
            print(f"  {name:<18}{rows:>16,}{lg['peak_tree_rss_mib'] / 1024:>9.1f}"
                  + "".join(f"{h1 / (1 if n == 1 else n * eff):>9.2f}" for n in CORES))
    if va:
        lg = va["large"]
        spill_m, check_m = lg["spill_s"] / (lg["keys"] / 1e6), lg["check_s"] / (lg["keys"] / 1e6)
        per_key_disk = lg["disk_bytes"] / lg["keys"]
        ref = va["reference_small"]
        ref_b = (ref["peak_tree_rss_mib"] - va["baseline"]["peak_tree_rss_mib"]) * 2**20 / ref["keys"]
        print(f"\nvalidate's duplicate-key check (the {lg['keys']:,}-key run: spill {spill_m:.2f} s per million keys "
              f"in the parent, overlapping the shard checks, + partitions {check_m:.2f} s per million on "
              f"{lg.get('processes', 1)} process(es), divided by N; RAM as measured, bounded by the budget; one record "
              f"per row; disk {per_key_disk:.0f} bytes per key; the in-memory design's RAM at {ref_b:.0f} bytes per "
              f"key for comparison):")
        print(f"  {'dataset':<18}{'rows':>16}{'RAM GiB':>9}{'before':>9}{'disk GB':>9}"
              + "".join(f"{f'h@{n}c':>9}" for n in CORES))
        procs = lg.get("processes", 1)
        for name, rows in DATASETS:
            hours = [(spill_m + check_m * procs / n) * rows / 1e6 / 3600 for n in CORES]
            print(f"  {name:<18}{rows:>16,}{lg['peak_tree_rss_mib'] / 1024:>9.1f}{ref_b * rows / 2**30:>9.0f}"
                  f"{per_key_disk * rows / 1e9:>9.0f}" + "".join(f"{h:>9.2f}" for h in hours))
    if ks:
        w, wo, b = ks["with"], ks["without"], ks["build"]
        per_rec_w, per_rec_wo = 1 / w["records_per_s"], 1 / wo["records_per_s"]
        per_uid_build = b["build_s"] / b["uids"]
        bytes_per_uid = b["list_bytes"] / b["uids"]
        print(f"\nreshard record processing (per-record time without / with a {b['uids']:,}-uid keep list: "
              f"{per_rec_wo * 1e6:.1f} / {per_rec_w * 1e6:.1f} us; N workers divide it by N; RAM per worker: own "
              f"{w['status_mib']['RssAnon']:,.0f} MiB + the list's pages, shared; list build "
              f"{per_uid_build * 1e9:.0f} ns per uid, {bytes_per_uid:.0f} bytes per uid on disk). DataComp-1B: "
              "the 12.8B pool filtered by its 1.4B-uid list; the others: no list:")
        print(f"  {'dataset':<18}{'records':>16}{'list GB':>9}{'build h':>9}"
              + "".join(f"{f'h@{n}c':>9}" for n in CORES))
        for name, rows in DATASETS:
            records, uids = (12_800_000_000, 1_400_000_000) if name == "DataComp-1B" else (rows, 0)
            per = per_rec_w if uids else per_rec_wo
            print(f"  {name:<18}{records:>16,}{bytes_per_uid * uids / 1e9:>9.1f}{per_uid_build * uids / 3600:>9.2f}"
                  + "".join(f"{per * records / n / 3600:>9.2f}" for n in CORES))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--part", choices=("prefilter", "validate", "keys", "extrapolate", "all"), default="all")
    ap.add_argument("--small", type=int, default=10, help="files in the small set")
    ap.add_argument("--large", type=int, default=100, help="files in the large set")
    ap.add_argument("--rows-per-file", type=int, default=1_000_000)
    ap.add_argument("--memory-budget", default="2GiB")
    ap.add_argument("--cache", default="/tmp/laionprep-scale-cache")
    ap.add_argument("--keys-small", type=int, default=10_000_000)
    ap.add_argument("--keys-large", type=int, default=100_000_000)
    ap.add_argument("--validate-budget", type=int, default=1 << 30, help="validate's --memory-budget, bytes")
    ap.add_argument("--processes", type=int, default=2, help="processes for validate's partitions")
    ap.add_argument("--uids", type=int, default=50_000_000, help="uids in the keep list")
    ap.add_argument("--records", type=int, default=200_000, help="records the reshard worker processes")
    ap.add_argument("--results", help="measured figures, updated by each part and read by --part extrapolate "
                    "(default: CACHE/results.json)")
    args = ap.parse_args()
    args.results = args.results or os.path.join(args.cache, "results.json")
    os.makedirs(os.path.dirname(os.path.abspath(args.results)), exist_ok=True)
    work = tempfile.mkdtemp(prefix="laionprep-bench-scale-")
    print("load:", open("/proc/loadavg").read().strip(), flush=True)
    results = json.load(open(args.results)) if os.path.exists(args.results) else {}
    parts = {"prefilter": part_prefilter, "validate": part_validate, "keys": part_keys}
    try:
        for name, fn in parts.items():
            if args.part in (name, "all"):
                results[name] = fn(args, work)
                results[name]["load"] = open("/proc/loadavg").read().strip()
                if name == "validate":
                    results[name]["large"]["processes"] = args.processes
                with open(args.results + ".tmp", "w") as f:
                    json.dump(results, f, indent=1)
                os.replace(args.results + ".tmp", args.results)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.part in ("extrapolate", "all") or args.part in results:
        extrapolate({k: v for k, v in results.items() if args.part in ("extrapolate", "all", k)})
    print("load:", open("/proc/loadavg").read().strip())


if __name__ == "__main__":
    main()
