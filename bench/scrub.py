"""Peak memory of ``laionprep remove``'s input-copy rewrite (``ingest.scrub.tombstone_rows``) as the file grows,
against a whole-file ``pyarrow.parquet.read_table`` of the same file (the reference: what a non-streaming rewrite
needs at least).  Each measurement runs in a fresh process (``ru_maxrss``); the ratios are printed, not asserted.

    .venv/bin/python bench/scrub.py [--rows 250000,1000000]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

CHILD = r"""
import json, resource, sys
import numpy as np
import pyarrow.parquet as pq
from laionprep.ingest import scrub
mode, path = sys.argv[1], sys.argv[2]
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
if mode == "scrub":
    n = pq.ParquetFile(path).metadata.num_rows
    rows = np.unique(np.linspace(0, n - 1, 200).astype(np.int64))
    scrub.tombstone_rows(path, "URL", scrub.positions_mask(rows), "bench", sentinel=False)
else:
    pq.read_table(path)
print(json.dumps({"peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "base_mib": base / 1024}))
"""


def write(path: str, n: int) -> None:
    """A LAION-shaped metadata file: URL, caption, sizes, similarity, NSFW tag; 1M-row row groups as LAION's."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    writer = None
    for start in range(0, n, 250_000):
        k = min(250_000, n - start)
        ids = np.arange(start, start + k)
        t = pa.table({"SAMPLE_ID": ids,
                      "URL": [f"https://images.example-{i % 997}.com/photos/2021/{i:012d}/large-view.jpg" for i in ids],
                      "TEXT": [f"a photo of item {i} on a table next to a window in the afternoon light" for i in ids],
                      "HEIGHT": rng.integers(64, 2048, k).astype(np.int32),
                      "WIDTH": rng.integers(64, 2048, k).astype(np.int32),
                      "similarity": rng.random(k), "NSFW": pa.array(["UNLIKELY"] * k)})
        writer = writer or pq.ParquetWriter(path, t.schema)
        writer.write_table(t, row_group_size=1_000_000)
    writer.close()


def measure(mode: str, path: str) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, mode, path], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", default="250000,1000000")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="laionprep-bench-scrub-") as tmp:
        print(f"{'rows':>10} {'file MiB':>9} {'read_table MiB':>15} {'scrub MiB':>10} {'scrub/read':>11}")
        for n in (int(x) for x in args.rows.split(",")):
            path = os.path.join(tmp, f"{n}.parquet")
            write(path, n)
            size = os.path.getsize(path) / 2**20
            ref, got = measure("read", path), measure("scrub", path)
            print(f"{n:>10,} {size:>9.1f} {ref['peak_mib']:>15.0f} {got['peak_mib']:>10.0f} "
                  f"{got['peak_mib'] / ref['peak_mib']:>10.2f}x")
            os.remove(path)


if __name__ == "__main__":
    main()
