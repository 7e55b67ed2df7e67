"""laionprep.keylist: sorted, memory-mapped key lists whose lookups match a Python set's, built in bounded memory."""
from __future__ import annotations

import os
import random
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from laionprep import keylist
from laionprep.errors import DataError


@pytest.fixture(autouse=True)
def fresh_process_cache(monkeypatch, tmp_path):
    monkeypatch.setenv(keylist.CACHE_ENV, str(tmp_path / "keylist-cache"))  # lists built by other tests stay out
    keylist._LOADED.clear()
    yield
    keylist._LOADED.clear()


def _rss_anon() -> int:
    """Anonymous resident memory (bytes): what a process holds of its own, without the page cache it maps."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no RssAnon in /proc/self/status")


def _uid(v: int) -> str:
    return f"{v:032x}"


def _spy_merges(monkeypatch) -> list:
    calls = []
    real = keylist._merge

    def spy(runs, *a, **k):
        calls.append(len(runs))
        return real(runs, *a, **k)
    monkeypatch.setattr(keylist, "_merge", spy)
    return calls


def test_50m_uid_datacomp_list_is_mapped_as_it_is(tmp_path):
    """A sorted DataComp subset file of 50M uids (800 MB) is used in place: no copy, no conversion, fixed buffers
    of the process's own memory for loading it and looking up a batch; answers exact."""
    n = 50_000_000
    path = str(tmp_path / "subset.npy")
    rng = np.random.default_rng(0)
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.dtype("u8,u8"), shape=(n,))
    step = 2 ** 64 // n
    for s in range(0, n, 5_000_000):  # strictly increasing hi, random lo: sorted, as DataComp writes them
        idx = np.arange(s, min(s + 5_000_000, n), dtype=np.uint64)
        out["f0"][s:s + len(idx)] = idx * np.uint64(step) + rng.integers(0, step // 2, len(idx), dtype=np.uint64)
        out["f1"][s:s + len(idx)] = rng.integers(0, 2 ** 63, len(idx), dtype=np.uint64)
    out.flush()
    del out
    try:
        before = _rss_anon()
        t0 = time.time()
        kl = keylist.load(path)
        assert len(kl) == n and kl.kind == "uid"
        assert isinstance(kl.records, np.memmap) and os.path.samefile(kl.records.filename, path)
        assert not [f for f in os.listdir(keylist.cache_dir()) if f.endswith(".keys")]  # nothing built
        src = np.load(path, mmap_mode="r")
        pick = np.sort(rng.choice(n, 20_000, replace=False))
        present = [_uid((int(h) << 64) | int(lo)) for h, lo in zip(src["f0"][pick], src["f1"][pick])]
        absent = [_uid((int(h) << 64) | (int(lo) ^ 1 << 63)) for h, lo in zip(src["f0"][pick], src["f1"][pick])]
        got = kl.contains(pa.array(present + absent + ["not-a-uid", None]))
        assert got.tolist() == [True] * len(present) + [False] * (len(absent) + 2)
        grown = _rss_anon() - before
        # fixed-size buffers only (1M-record chunks of the sortedness check, 16 MiB reads for the sha256, the
        # probe batch), which the allocator keeps: a fraction of the 800 MB list, against ~5 GB as a frozenset
        assert grown < 128 << 20, f"loading and probing a 50M-uid list took {grown / 2**20:.0f} MiB of own memory"
        print(f"50M uids: load + 40k lookups {time.time() - t0:.1f} s, own memory +{grown / 2**20:.1f} MiB")
        # a second process finds the list's sha256 and sortedness remembered: no 800 MB re-read
        keylist._LOADED.clear()
        t1 = time.time()
        assert len(keylist.load(path)) == n
        assert time.time() - t1 < 1.0
    finally:
        os.remove(path)


def test_unsorted_uid_npy_with_duplicates_is_sorted_once_into_the_cache(tmp_path, monkeypatch):
    rng = random.Random(1)
    vals = [rng.getrandbits(128) for _ in range(30_000)]
    vals += vals[:1000]  # duplicates
    rng.shuffle(vals)
    arr = np.array([(v >> 64, v & (2 ** 64 - 1)) for v in vals], np.dtype("u8,u8"))
    np.save(tmp_path / "u.npy", arr)
    merges = _spy_merges(monkeypatch)
    kl = keylist.load(str(tmp_path / "u.npy"), memory_budget=100_000)  # ~2k records a run: an external sort
    assert merges and merges[0] > 5
    assert kl.kind == "uid" and len(kl) == len(set(vals)) == 30_000
    assert not os.path.samefile(kl.records.filename, tmp_path / "u.npy")
    r = np.asarray(kl.records)
    assert (r[1:]["f0"] > r[:-1]["f0"]).sum() + ((r[1:]["f0"] == r[:-1]["f0"]) & (r[1:]["f1"] > r[:-1]["f1"])).sum() \
        == len(r) - 1  # strictly sorted
    s = {_uid(v) for v in vals}
    probe = [_uid(v) for v in vals[:3000]] + [_uid(rng.getrandbits(128)) for _ in range(3000)]
    assert kl.contains(probe).tolist() == [p in s for p in probe]
    # workers and re-runs reuse the cache entry: nothing is built again
    keylist._LOADED.clear()
    monkeypatch.setattr(keylist, "build_sorted", lambda *a, **k: pytest.fail("rebuilt a cached list"))
    assert keylist.load(str(tmp_path / "u.npy"), memory_budget=100_000).contains(probe).tolist() == \
        [p in s for p in probe]


def test_txt_list_larger_than_the_memory_budget_matches_a_set(tmp_path, monkeypatch):
    """String keys (img2dataset keys, URLs, ints) hashed to 128 bits, sorted externally (sorted runs + merge)."""
    rng = random.Random(2)
    keys = [f"{rng.randrange(10 ** 9):09d}" for _ in range(25_000)]
    keys += [f"https://example.com/{i}.jpg" for i in range(5000)] + ["ü-unicode", "with space inside"]
    (tmp_path / "k.txt").write_text("\n".join(f"  {k}  " if i % 7 == 0 else k for i, k in enumerate(keys)) + "\n\n")
    merges = _spy_merges(monkeypatch)
    kl = keylist.load(str(tmp_path / "k.txt"), memory_budget=64 << 10)
    assert merges and merges[0] > 10
    s = set(keys)
    assert kl.kind == "string" and len(kl) == len(s)
    probe = keys[::3] + [f"{rng.randrange(10 ** 9):09d}" for _ in range(5000)] + ["", "https://example.com/1.jpg "]
    assert kl.contains(probe).tolist() == [p in s for p in probe]
    assert kl.contains([p.encode() for p in probe]).tolist() == [p in s for p in probe]
    assert ("with space inside" in kl) and ("ü-unicode" in kl) and ("nope" not in kl)
    # the same list, built in memory, is byte-identical
    keylist._LOADED.clear()
    merges.clear()
    monkeypatch.setenv(keylist.CACHE_ENV, str(tmp_path / "other-cache"))
    kl2 = keylist.load(str(tmp_path / "k.txt"))
    assert not merges and np.array_equal(np.asarray(kl2.records), np.asarray(kl.records))
    assert kl2.sha256 == kl.sha256 and kl2.source == str(tmp_path / "k.txt")


def test_parquet_columns_ints_and_uid_text(tmp_path):
    rng = random.Random(3)
    ints = rng.sample(range(10 ** 12), 5000)
    pq.write_table(pa.table({"n": list(range(5000)), "key": ints}), tmp_path / "k.parquet", row_group_size=700)
    kl = keylist.load(str(tmp_path / "k.parquet"))
    probe = ints[:100] + [i + 1 for i in ints[:100]]
    want = [p in set(ints) for p in probe]
    assert kl.kind == "string" and len(kl) == 5000
    assert kl.contains(probe).tolist() == want  # ints are looked up as their decimal text
    assert kl.contains([str(p) for p in probe]).tolist() == want
    assert kl.contains(pa.chunked_array([pa.array(probe[:50]), pa.array(probe[50:])])).tolist() == want
    assert keylist.load(str(tmp_path / "k.parquet"), column="n").contains([0, 4999, 5000]).tolist() == \
        [True, True, False]
    with pytest.raises(DataError, match="no column 'zz'") as e:
        keylist.load(str(tmp_path / "k.parquet"), column="zz")
    assert "k.parquet" in e.value.where
    # uid text: exact 128-bit values, the same records as DataComp's .npy
    uids = [_uid(rng.getrandbits(128)) for _ in range(2000)]
    pq.write_table(pa.table({"uid": uids, "x": [0] * 2000}), tmp_path / "u.parquet")
    ku = keylist.load(str(tmp_path / "u.parquet"))
    assert ku.kind == "uid"
    assert np.array_equal(np.asarray(ku.records), np.sort(keylist.digest(uids, kind="uid")))
    assert ku.contains(uids[:5] + [uids[0].upper(), uids[0][:-1]]).tolist() == [True] * 5 + [False, False]
    # forced string kind: the same answers through hashes
    ks = keylist.load(str(tmp_path / "u.parquet"), kind="string")
    assert ks.kind == "string" and ks.contains(uids[:5] + ["x"]).tolist() == [True] * 5 + [False]
    with pytest.raises(DataError, match="is not a 32-digit lower-case hex uid") as e:
        keylist.load(str(tmp_path / "k.parquet"), kind="uid")
    assert "k.parquet" in e.value.where and "kind string" in e.value.fix


def test_digest_is_the_stored_record():
    d = keylist.digest(["abc", b"abc"])
    assert d.dtype == np.dtype("u8,u8") and d[0] == d[1]
    import hashlib
    h = hashlib.blake2b(b"abc", digest_size=16).digest()
    assert (int(d[0]["f0"]), int(d[0]["f1"])) == (int.from_bytes(h[:8], "big"), int.from_bytes(h[8:], "big"))
    u = keylist.digest(["0123456789abcdef00000000000000ff"], kind="uid")
    assert (int(u[0]["f0"]), int(u[0]["f1"])) == (0x0123456789ABCDEF, 0xFF)
    with pytest.raises(ValueError, match="not a 32-digit"):
        keylist.digest(["xyz"], kind="uid")
