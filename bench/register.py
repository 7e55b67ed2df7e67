"""Benchmark: `laionprep build-tfds` registration vs. reading every record to count it.

What hand-written registration scripts do is read the whole dataset once to count the records of every shard
(then rename the files); `build-tfds` takes the counts from img2dataset's _stats.json files and re-counts only a
sample of shards by hopping over record headers.  One run measures, side by side:

1. N shards of real demo records (from a real img2dataset download of the demo, repeated to 10,000 records per
   shard as in LAION's downloads; the N shards are hard links to one file, so the reference reads from the page
   cache -- its most favourable case): register (default: --verify sample), register --verify all, and the
   reference: a full read counting every record of every shard (tf_record_iterator, the usual idiom);
2. 41,455 shards (LAION-400M's shard count), tiny but real TFRecords with img2dataset-style _stats.json files:
   register, and the same full-read reference.

Usage:  python bench/register.py [--shards 32] [--per-shard 10000] [--big 41455] [--workdir /tmp/bench-register]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time

from laionprep._env import import_tf


def _time(fn):
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def full_read_count(files: list[str]) -> int:
    """The reference: what a hand-written script does to learn the counts -- read every record."""
    tf = import_tf()
    total = 0
    for f in files:  # per file, because the counts are needed per shard (the usual idiom of such scripts)
        total += sum(1 for _ in tf.compat.v1.io.tf_record_iterator(f))
    return total


def make_demo_download(work: str) -> str:
    from laionprep.demo.run import DemoConfig, download_demo
    from laionprep.testing.server import DemoServer

    with DemoServer() as srv:
        download_demo(DemoConfig(workdir=work, rows=240, processes=2, progress=False, number_sample_per_shard=60), srv)
    return os.path.join(work, "laion")


def repeated_shards(download: str, out: str, n: int, per_shard: int) -> tuple[str, int]:
    """A download-shaped folder of ``n`` shards of ``per_shard`` real demo records each (the demo's records
    repeated; LAION's img2dataset shards hold 10,000), as hard links to one file, with stats files."""
    from laionprep.tfrecord import read_records, write_records

    src = os.path.join(download, "tfrecord")
    records = [r for f in sorted(os.listdir(src)) if f.endswith(".tfrecord")
               for r in read_records(os.path.join(src, f))]
    proto = os.path.join(out, "shard.tfrecord")
    os.makedirs(os.path.join(out, "tfrecord"))
    write_records(proto, (records[i % len(records)] for i in range(per_shard)))
    stats = json.dumps({"count": per_shard, "successes": per_shard, "failed_to_download": 0, "failed_to_resize": 0,
                        "status_dict": {"success": per_shard}}, indent=4)
    for i in range(n):
        os.link(proto, os.path.join(out, "tfrecord", f"{i:05d}.tfrecord"))
        with open(os.path.join(out, "tfrecord", f"{i:05d}_stats.json"), "w") as f:
            f.write(stats)
    return out, n * per_shard


def tiny_shards(download: str, out: str, n: int, records: int = 3) -> tuple[str, int]:
    """``n`` shards of ``records`` tiny real records each (a demo record with a 1x1 image), stats files included."""
    from laionprep.tfrecord import read_records, write_records

    tf = import_tf()
    first = os.path.join(download, "tfrecord", sorted(f for f in os.listdir(os.path.join(download, "tfrecord"))
                                                      if f.endswith(".tfrecord"))[0])
    ex = tf.train.Example.FromString(next(read_records(first)))
    ex.features.feature["jpg"].bytes_list.value[0] = tf.io.encode_jpeg(tf.zeros((1, 1, 3), tf.uint8)).numpy()
    dst = os.path.join(out, "tfrecord")
    os.makedirs(dst)
    proto = os.path.join(out, "proto.tfrecord")
    write_records(proto, [ex.SerializeToString()] * records)
    stats = json.dumps({"count": records, "successes": records, "failed_to_download": 0, "failed_to_resize": 0,
                        "duration": 1.0, "start_time": 0.0, "end_time": 1.0, "status_dict": {"success": records}},
                       indent=4)
    for i in range(n):
        os.link(proto, os.path.join(dst, f"{i:05d}.tfrecord"))
        with open(os.path.join(dst, f"{i:05d}_stats.json"), "w") as f:
            f.write(stats)
    return out, n * records


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shards", type=int, default=32, help="demo shards for part 1 (default 32)")
    ap.add_argument("--per-shard", type=int, default=10000, help="records per demo shard (default 10000, as LAION's)")
    ap.add_argument("--big", type=int, default=41455, help="tiny shards for part 2 (default 41455)")
    ap.add_argument("--workdir", default="/tmp/bench-register")
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    args = ap.parse_args(argv)

    from laionprep.tfds_builders.register import register

    if os.path.exists(args.workdir):
        shutil.rmtree(args.workdir)
    os.makedirs(args.workdir)
    import_tf()
    rows = []
    try:
        t, dl = _time(lambda: make_demo_download(os.path.join(args.workdir, "demo")))
        print(f"demo download (real img2dataset, 240 rows): {t:.1f} s", file=sys.stderr, flush=True)

        # 1. N demo shards
        folder, total = repeated_shards(dl, os.path.join(args.workdir, "n_shards"), args.shards, args.per_shard)
        files = sorted(os.path.join(folder, "tfrecord", f) for f in os.listdir(os.path.join(folder, "tfrecord"))
                       if f.endswith(".tfrecord"))
        size = sum(os.path.getsize(f) for f in files)
        root = os.path.join(args.workdir, "tfds")
        t_ref, n_ref = _time(lambda: full_read_count(files))  # also warms the page cache for the others
        t_reg, res = _time(lambda: register(folder, "bench_demo", root))
        t_all, res_all = _time(lambda: register(folder, "bench_demo_all", root, verify="all"))
        assert res.splits["train"] == res_all.splits["train"] == n_ref == total, (res.splits, n_ref, total)
        rows.append((f"{args.shards} demo shards x {args.per_shard:,} records ({size / 2**30:,.1f} GiB)", t_reg, t_all,
                     t_ref))
        print(f"part 1: register {t_reg:.2f} s, --verify all {t_all:.2f} s, full read {t_ref:.2f} s", file=sys.stderr,
              flush=True)

        # 2. LAION-400M's shard count, tiny shards
        t_make, (big, big_total) = _time(lambda: tiny_shards(dl, os.path.join(args.workdir, "big"), args.big))
        print(f"made {args.big:,} tiny shards in {t_make:.1f} s", file=sys.stderr, flush=True)
        big_files = [os.path.join(big, "tfrecord", f"{i:05d}.tfrecord") for i in range(args.big)]
        t_big, res_big = _time(lambda: register(big, "bench_big", root))
        t_big_ref, n_big_ref = _time(lambda: full_read_count(big_files))
        assert res_big.splits["train"] == n_big_ref == big_total
        rows.append((f"{args.big:,} tiny shards ({big_total:,} records)", t_big, None, t_big_ref))
    finally:
        if not args.keep:
            shutil.rmtree(args.workdir, ignore_errors=True)

    print("\nbuild-tfds registration vs. a full read counting every record (seconds, one run, this machine)")
    print(f"{'folder':<46} {'register':>9} {'--verify all':>13} {'full read':>10} {'full read / register':>21}")
    for name, reg, all_, ref in rows:
        all_txt = f"{all_:.2f}" if all_ is not None else "-"
        print(f"{name:<46} {reg:>9.2f} {all_txt:>13} {ref:>10.2f} {ref / reg:>20.1f}x")
    per_record_bytes = size / total
    est = 413e6 * per_record_bytes / (size / rows[0][3]) / 3600
    print(f"\nfull read in part 1: {size / 2**20 / rows[0][3]:,.0f} MiB/s from the page cache; at that rate "
          f"LAION-400M (413M records of {per_record_bytes / 1024:.0f} KiB) takes ~{est:,.1f} h just to count, more "
          f"from disk or gs://.  Registration reads no record outside its sample, so its time follows the shard "
          f"count, not the bytes: the tiny-shard row is its per-shard overhead (where counting tiny files is cheap).")
    print("register includes the record sample type check, writing dataset_info.json/features.json/metadata.json, "
          "the symlinks and reading one record back through TFDS; the full read gets a warm page cache.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
