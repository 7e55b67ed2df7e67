"""Helpers of the reliability tests: metadata from a list of URLs, and each URL's outcome from img2dataset's shard
parquets."""
from __future__ import annotations

import os


def write_urls(folder: str, urls: list[str]) -> str:
    """One metadata parquet (the demo dataset's LAION-400M schema) with one row per URL; returns the folder."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    os.makedirs(folder, exist_ok=True)
    n = len(urls)
    pq.write_table(pa.table({
        "SAMPLE_ID": pa.array(range(n), pa.int64()), "URL": urls, "TEXT": [f"caption {i}" for i in range(n)],
        "HEIGHT": pa.array([128] * n, pa.int32()), "WIDTH": pa.array([128] * n, pa.int32()),
        "LICENSE": ["?"] * n, "NSFW": ["UNLIKELY"] * n, "similarity": [0.5] * n,
    }), os.path.join(folder, "part-00000.parquet"))
    return folder


def url_status(download_dir: str) -> dict[str, tuple[str, str | None]]:
    """URL -> (status, error message) from img2dataset's shard parquets."""
    import glob

    import pyarrow.parquet as pq

    out = {}
    for p in sorted(glob.glob(os.path.join(download_dir, "tfrecord", "*.parquet"))):
        t = pq.read_table(p, columns=["url", "status", "error_message"]).to_pydict()
        for u, s, e in zip(t["url"], t["status"], t["error_message"]):
            assert u not in out, f"{u} has two rows"
            out[u] = (s, e)
    return out
