"""``laionprep reshard`` end to end on the real demo download, with real Beam runners.

The default runner (Beam's portable Python runner, multi-process, 2 workers here) runs most tests; the retry test
uses Beam's BundleBasedDirectRunner, which retries a failed bundle like Dataflow does.  Outputs are read back with
TensorFlow's own TFRecord reader and compared with independent pyarrow computations over img2dataset's parquets.
"""
from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from laionprep import cli
from laionprep.errors import DataError, UsageError
from laionprep.manifest import detail
from laionprep.sharding import REASONS, ReshardConfig, reshard
from laionprep.sharding.worker import FAIL_ONCE_ENV

from reshard_helpers import kinds_of, shard_bytes, value

QUIET = {"log": lambda *a, **k: None}


def success_table(download: str) -> pa.Table:
    t = pa.concat_tables([pq.read_table(p) for p in sorted(glob.glob(os.path.join(download, "tfrecord", "*.parquet")))],
                         promote_options="default")
    return t.filter(pc.equal(t["status"], "success"))


def keys_of(rows) -> list[str]:
    return [value(ex, "key")[0].decode() for _, ex in rows]


# ------------------------------------------------------------------------------------------------ filters
def test_filters_drop_exactly_what_pyarrow_computes(demo_download, tmp_path, read_out):
    t = success_table(demo_download)
    all_keys = sorted(t["key"].to_pylist())
    keep = sorted(np.random.default_rng(0).choice(all_keys, int(len(all_keys) * 0.9), replace=False).tolist())
    np.save(tmp_path / "keep.npy", np.array(keep))
    out = str(tmp_path / "out")
    cfg = ReshardConfig(sources=(demo_download,), output=out, name="demo_f", num_shards=3, nsfw=("UNLIKELY",),
                        min_similarity=0.33, min_side=60, max_aspect=1.7, min_caption_chars=12, max_caption_chars=36,
                        keep_keys=str(tmp_path / "keep.npy"))
    m = reshard(cfg, **QUIET)

    # the same filters, first reason wins, computed column-wise with pyarrow over img2dataset's status tables
    w, h = pc.cast(t["original_width"], pa.float64()), pc.cast(t["original_height"], pa.float64())
    lo, hi = pc.min_element_wise(w, h), pc.max_element_wise(w, h)
    sim = pc.cast(t["similarity"], pa.float32())
    cap_len = pc.utf8_length(pc.utf8_trim_whitespace(t["caption"]))
    masks = {
        "key_not_kept": pc.invert(pc.is_in(t["key"], value_set=pa.array(keep))),
        "nsfw": pc.invert(pc.is_in(pc.utf8_upper(t["NSFW"]), value_set=pa.array(["UNLIKELY"]))),
        "low_similarity": pc.or_(pc.less(sim, pa.scalar(0.33, pa.float32())), pc.equal(sim, -1.0)),
        "small_side": pc.less(lo, 60),
        "aspect": pc.greater(pc.divide(hi, lo), 1.7),
        "short_caption": pc.less(cap_len, 12),
        "long_caption": pc.greater(cap_len, 36),
    }
    alive = np.ones(t.num_rows, dtype=bool)
    expected = {r: 0 for r in REASONS}
    for reason, mask in masks.items():
        hit = np.asarray(mask.to_numpy(zero_copy_only=False), dtype=bool) & alive
        expected[reason] = int(hit.sum())
        alive &= ~hit
    assert all(expected[r] > 0 for r in masks), expected  # every filter really drops something here
    assert detail(m)["dropped"] == expected
    assert detail(m)["rows_in"] == t.num_rows
    kept = sorted(np.asarray(t["key"].to_pylist(), dtype=object)[alive].tolist())
    got = keys_of(read_out(out, "train"))
    assert sorted(got) == kept and len(set(got)) == len(got)
    assert detail(m)["rows_out"] == {"train": len(kept)}


def test_filter_on_a_column_the_records_lack_is_a_usage_error(demo_download, tmp_path):
    cfg = ReshardConfig(sources=(demo_download,), output=str(tmp_path / "o"), name="x", max_punsafe=0.5)
    with pytest.raises(UsageError, match="punsafe"):
        reshard(cfg, **QUIET)
    assert not os.path.exists(tmp_path / "o")


def test_filters_keeping_nothing_exit_1_with_the_table_and_no_counts(demo_download, tmp_path, capfd):
    """Issue #14: a reshard whose filters keep none of its records is not a success: exit 1 after the summary, the
    manifest written (status empty, balanced), no counts.json (so no later stage takes it for a dataset)."""
    out = str(tmp_path / "o")
    rc = cli.main(["reshard", demo_download, "--output", out, "--name", "x", "--num-shards", "1",
                   "--min-similarity", "0.99", "--no-progress", "--direct_num_workers=1"])
    got = capfd.readouterr()
    assert rc == 1 and "Traceback" not in got.err + got.out
    assert "the filters kept none of the" in got.err and "low_similarity" in got.err
    assert "fix:" in got.err and "loosen or leave out --min-similarity" in got.err
    assert "dropped: low_similarity" in got.out and "records out: train" in got.out  # the table, printed first
    m = json.load(open(os.path.join(out, "manifest.json")))
    assert m["status"] == "empty" and m["accounting"]["balanced"] and m["accounting"]["kept"] == 0
    assert m["accounting"]["rows_in"] == detail(m)["dropped"]["low_similarity"] > 0
    assert not os.path.exists(os.path.join(out, "counts.json"))
    # the shared filter flags' checks hold for reshard too, before OUT exists
    for argv, msg in ((["--nsfw", "FOO"], "'FOO' is not an NSFW tag of demo"),
                      (["--min-similarity", "high"], "--min-similarity 'high': not a number")):
        assert cli.main(["reshard", demo_download, "--output", str(tmp_path / "e"), "--name", "x", *argv]) == 2
        err = capfd.readouterr().err
        assert msg in err and "fix:" in err and "Traceback" not in err
    assert not os.path.exists(tmp_path / "e")


# ------------------------------------------------------------------------------------------------ a clean run
@pytest.fixture(scope="module")
def clean(demo_download, tmp_path_factory):
    """One unfiltered run with a validation split and dropped debug columns: (config, OUT, manifest, bytes)."""
    out = str(tmp_path_factory.mktemp("clean") / "out")
    cfg = ReshardConfig(sources=(demo_download,), output=out, name="demo_s", num_shards=3, validation_fraction=0.25,
                        drop_columns=("exif", "error_message", "status"))
    m = reshard(cfg, **QUIET)
    return cfg, out, m, shard_bytes(out)


def test_counts_file_equals_a_full_read_and_types_are_uniform(clean, read_out, demo_download):
    cfg, out, m, _ = clean
    counts = json.load(open(os.path.join(out, "counts.json")))
    assert set(counts) == {"name", "splits"} and counts["name"] == "demo_s"
    assert set(counts["splits"]) == {"train", "validation"}
    n_total = 0
    schema = detail(m)["schema"]
    for split, info in counts["splits"].items():
        assert set(info) == {"filename_template", "num_shards", "shard_lengths", "num_examples"}
        assert info["filename_template"] == f"{split}/demo_s-{split}-{{SHARD_X_OF_Y}}.tfrecord"
        assert info["num_shards"] == 3 == len(info["shard_lengths"])
        rows = read_out(out, split)
        for i, n in enumerate(info["shard_lengths"]):
            assert sum(1 for f, _ in rows if f == f"demo_s-{split}-{i:05d}-of-00003.tfrecord") == n
        assert info["num_examples"] == len(rows) == detail(m)["rows_out"][split]
        n_total += len(rows)
        for _, ex in rows:  # one type per key, every key in every record, dropped columns gone
            kinds = kinds_of(ex)
            assert set(kinds) == set(schema)
            assert all(kinds[k] == schema[k] + "_list" for k in kinds)
            assert all(len(value(ex, k)) >= 1 for k in kinds)
    assert {"jpg", "txt", "key", "width", "height", "similarity", "NSFW"} <= set(schema)
    assert not {"exif", "error_message", "status"} & set(schema)
    assert n_total == detail(m)["rows_in"] == success_table(demo_download).num_rows
    assert m["accounting"] == {"rows_in": n_total, "kept": n_total, "dropped": 0, "balanced": True}
    assert not os.path.exists(os.path.join(out, "_reshard"))
    assert not glob.glob(os.path.join(out, "**", "*.tmp-*"), recursive=True)


def _is_validation(key: bytes, fraction: float) -> bool:
    # the rule documented in docs/reshard.md, written out independently
    h = int.from_bytes(hashlib.blake2b(key, digest_size=8, person=b"laionprep-split").digest(), "big")
    return h < fraction * 2 ** 64


def test_split_is_stable_across_runs_workers_and_plans(clean, tmp_path, read_out):
    cfg, out, m, ref = clean
    train, val = keys_of(read_out(out, "train")), keys_of(read_out(out, "validation"))
    assert not set(train) & set(val) and len(train) + len(val) == detail(m)["rows_in"]
    assert set(val) == {k for k in train + val if _is_validation(k.encode(), 0.25)}
    assert 0 < len(val) < len(train)

    # the same job with one worker process: byte-identical shards
    one = str(tmp_path / "one")
    m1 = reshard(ReshardConfig(**{**cfg.__dict__, "output": one, "beam_args": ("--direct_num_workers=1",)}), **QUIET)
    assert shard_bytes(one) == ref and detail(m1)["rows_out"] == detail(m)["rows_out"]

    # another plan (2 shards, shuffled): the same records in the same splits, in another order; reproducible
    shuf = [str(tmp_path / "shuf1"), str(tmp_path / "shuf2")]
    for o in shuf:
        reshard(ReshardConfig(**{**cfg.__dict__, "output": o, "num_shards": 2, "shuffle": True, "seed": 3}), **QUIET)
    assert shard_bytes(shuf[0]) == shard_bytes(shuf[1])
    s_train, s_val = keys_of(read_out(shuf[0], "train")), keys_of(read_out(shuf[0], "validation"))
    assert sorted(s_val) == sorted(val) and sorted(s_train) == sorted(train)
    assert s_train != sorted(s_train) and s_train != train  # shuffled


def test_rerun_is_a_noop_and_repairs_a_damaged_output(clean):
    cfg, out, m, ref = clean
    mtimes = {p: os.stat(p).st_mtime_ns for p in glob.glob(os.path.join(out, "*"))}
    m2 = reshard(cfg, **QUIET)
    assert detail(m2)["plan"]["hash"] == detail(m)["plan"]["hash"]
    assert {p: os.stat(p).st_mtime_ns for p in glob.glob(os.path.join(out, "*"))} == mtimes
    victim = sorted(ref)[1]
    os.remove(os.path.join(out, victim))
    reshard(cfg, **QUIET)
    assert shard_bytes(out) == ref


def test_a_copied_output_is_repaired_where_it_now_is(clean, tmp_path):
    """OUT copied elsewhere (another disk or bucket) is still the same plan: a lost shard there is written again."""
    cfg, out, m, ref = clean
    copy = str(tmp_path / "moved")
    shutil.copytree(out, copy)
    os.remove(os.path.join(copy, sorted(ref)[0]))
    m2 = reshard(ReshardConfig(**{**cfg.__dict__, "output": copy}), **QUIET)
    assert shard_bytes(copy) == ref and detail(m2)["plan"]["hash"] == detail(m)["plan"]["hash"]


def test_other_parameters_into_a_complete_output_need_restart(clean, tmp_path):
    """(was: ``--overwrite``, which deleted the old output; ``--restart`` moves it to OUT/_previous/<time>/)"""
    cfg, out, _, ref = clean
    copy = str(tmp_path / "copy")
    shutil.copytree(out, copy)
    other = ReshardConfig(**{**cfg.__dict__, "output": copy, "num_shards": 2, "validation_fraction": 0.0})
    with pytest.raises(UsageError, match="--restart") as e:
        reshard(other, **QUIET)
    assert "num_shards: 3 -> 2" in str(e.value) and "validation_fraction: 0.25 -> 0.0" in str(e.value)
    assert shard_bytes(copy) == ref
    m = reshard(ReshardConfig(**{**other.__dict__, "restart": True}), **QUIET)
    files = sorted(os.path.relpath(p, copy) for p in glob.glob(os.path.join(copy, "*", "*.tfrecord*")))
    assert files == ["train/demo_s-train-00000-of-00002.tfrecord", "train/demo_s-train-00001-of-00002.tfrecord"]
    assert not os.path.exists(os.path.join(copy, "validation"))  # the earlier output's other split is gone
    assert detail(m)["rows_out"] == {"train": detail(m)["rows_in"]}
    (prev,) = glob.glob(os.path.join(copy, "_previous", "*"))
    assert shard_bytes(prev) == ref  # the old output, moved whole


# ------------------------------------------------------------------------------------------------ failures
def test_worker_failure_retried_by_the_runner_leaves_no_duplicate(clean, tmp_path, monkeypatch, read_out):
    cfg, _, m, ref = clean
    marker = tmp_path / "failed-once"
    monkeypatch.setenv(FAIL_ONCE_ENV, f"1@{marker}")
    out = str(tmp_path / "retried")
    m2 = reshard(ReshardConfig(**{**cfg.__dict__, "output": out, "beam_args": ("--runner=BundleBasedDirectRunner",)}),
                 **QUIET)
    assert marker.exists()  # the failure really happened (after writing half of task 1's records)
    assert shard_bytes(out) == ref
    assert detail(m2)["rows_out"] == detail(m)["rows_out"] and detail(m2)["dropped"] == detail(m)["dropped"]
    keys = keys_of(read_out(out, "train")) + keys_of(read_out(out, "validation"))
    assert len(keys) == len(set(keys)) == detail(m)["rows_in"]
    assert not glob.glob(os.path.join(out, "**", "*.tmp-*"), recursive=True)


def test_failed_job_leaves_no_partial_shard_and_rerun_resumes(clean, tmp_path, monkeypatch):
    cfg, _, _, ref = clean
    marker = tmp_path / "failed-once"
    monkeypatch.setenv(FAIL_ONCE_ENV, f"0@{marker}")
    out = str(tmp_path / "failed")
    job_cfg = ReshardConfig(**{**cfg.__dict__, "output": out})
    with pytest.raises(DataError, match="injected failure"):  # the local runner does not retry: the job fails
        reshard(job_cfg, **QUIET)
    assert marker.exists()
    assert not os.path.exists(os.path.join(out, "counts.json"))
    finals = {p: b for p, b in shard_bytes(out).items() if ".tmp-" not in p}
    assert not [p for p in finals if "-00000-of-" in p]  # the failed task's shards never got a final name
    assert all(ref[p] == b for p, b in finals.items())  # whatever did get a final name is complete
    assert glob.glob(os.path.join(out, "**", "*.tmp-*"), recursive=True)  # the failed attempt's file stayed temporary
    done = len(glob.glob(os.path.join(out, "_reshard", "part-*.json")))
    m = reshard(job_cfg, **QUIET)  # the marker exists now: the same command completes
    assert shard_bytes(out) == ref
    assert detail(m)["resumed_shards"] == done
    assert not glob.glob(os.path.join(out, "**", "*.tmp-*"), recursive=True)


# ------------------------------------------------------------------------------------------------ sources
def test_several_sources_get_unique_numeric_keys(demo_download, copy_download, tmp_path, read_out):
    second = copy_download()
    out = str(tmp_path / "two")
    m = reshard(ReshardConfig(sources=(demo_download, second), output=out, name="two", num_shards=4), **QUIET)
    n = success_table(demo_download).num_rows
    keys = keys_of(read_out(out, "train"))
    assert len(keys) == len(set(keys)) == 2 * n == detail(m)["rows_in"]
    originals = sorted(success_table(demo_download)["key"].to_pylist())
    width = len(originals[0])
    assert all(k.isdigit() and len(k) == width + 1 and int(k) < 2**63 for k in keys)  # FLIP casts them to int64
    for i in (0, 1):  # source * 10**W + key
        assert sorted(int(k) - i * 10**width for k in keys if k.startswith(f"{i}")) == [int(k) for k in originals]
    assert detail(m)["keys"].startswith(f"numeric: source * 10**{width} + key")
    with pytest.raises(UsageError, match="given twice"):
        reshard(ReshardConfig(sources=(demo_download, os.path.join(demo_download, "tfrecord")),
                              output=str(tmp_path / "dup"), name="dup"), **QUIET)


def _foreign_folder(demo_download: str, dst: str, tf) -> dict:
    """A LAION-2B-like folder written by 'another tool': nulls as b'', ints for floats, numbers as text, NaN,
    a missing key.  Returns the expected normalisation counts."""
    src = sorted(glob.glob(os.path.join(demo_download, "tfrecord", "*.tfrecord")))[0]
    os.makedirs(dst)
    exp = {"similarity": {"null": 0, "cast": 0}, "NSFW": {"missing": 0}, "punsafe": {"null": 0, "cast": 0},
           "pwatermark": {"null": 0}}
    drops = {"high_punsafe": 0, "high_pwatermark": 0}
    index = {}  # key -> position in the file (img2dataset writes records in completion order, not key order)
    with tf.io.TFRecordWriter(os.path.join(dst, "00000.tfrecord")) as w:
        n = 0
        for i, r in enumerate(tf.data.TFRecordDataset([src]).as_numpy_iterator()):
            ex = tf.train.Example.FromString(r)
            f = ex.features.feature
            index[f["key"].bytes_list.value[0]] = i
            if i % 5 == 0:
                f["similarity"].ClearField("float_list")
                f["similarity"].bytes_list.value.append(b"")
                exp["similarity"]["null"] += 1
            elif i % 5 == 1:
                f["similarity"].ClearField("float_list")
                f["similarity"].int64_list.value.append(1)
                exp["similarity"]["cast"] += 1
            elif i % 5 == 2:
                del f["NSFW"]
                exp["NSFW"]["missing"] += 1
            if i % 4 == 0:
                f["punsafe"].bytes_list.value.append(b"")
                exp["punsafe"]["null"] += 1
            elif i % 4 == 1:
                f["punsafe"].bytes_list.value.append(b"0.7")
                exp["punsafe"]["cast"] += 1
            else:
                f["punsafe"].float_list.value.append(0.2)
            f["pwatermark"].float_list.value.append(float("nan") if i % 6 == 5 else 0.1)
            exp["pwatermark"]["null"] += i % 6 == 5
            if i % 4 in (0, 1):
                drops["high_punsafe"] += 1
            elif i % 6 == 5:
                drops["high_pwatermark"] += 1
            w.write(ex.SerializeToString())
            n += 1
    with open(os.path.join(dst, "00000_stats.json"), "w") as fh:
        json.dump({"count": n, "successes": n, "failed_to_download": 0, "failed_to_resize": 0}, fh)
    return {"normalised": exp, "dropped": drops, "n": n, "index": index}


def test_types_are_normalised_and_nulls_counted(demo_download, tmp_path, tf, read_out):
    src = str(tmp_path / "foreign")
    want = _foreign_folder(demo_download, src, tf)
    out = str(tmp_path / "out")
    m = reshard(ReshardConfig(sources=(src,), output=out, name="norm", dataset="laion2b-en", max_punsafe=0.5,
                              max_pwatermark=0.5, num_shards=2), **QUIET)
    assert detail(m)["normalised"] == want["normalised"]
    assert detail(m)["nulls_normalised"] == sum(v.get("null", 0) + v.get("missing", 0)
                                               for v in want["normalised"].values())
    assert {k: detail(m)["dropped"][k] for k in want["dropped"]} == want["dropped"]
    assert detail(m)["rows_in"] == want["n"] and sum(detail(m)["dropped"].values()) == sum(want["dropped"].values())
    schema = detail(m)["schema"]
    assert schema["similarity"] == schema["punsafe"] == schema["pwatermark"] == "float"
    assert detail(m)["schema"]["NSFW"] == "bytes"
    rows = read_out(out, "train")
    assert len(rows) == detail(m)["rows_out"]["train"] > 0
    sims = {}
    for _, ex in rows:
        k = kinds_of(ex)
        assert k["similarity"] == k["punsafe"] == k["pwatermark"] == "float_list" and k["NSFW"] == "bytes_list"
        i = want["index"][value(ex, "key")[0]]
        sims[i] = value(ex, "similarity")[0]
        assert value(ex, "punsafe")[0] == pytest.approx(0.2)
        if i % 5 == 2:
            assert value(ex, "NSFW") == [b""]
    assert any(i % 5 == 0 for i in sims) and any(i % 5 == 1 for i in sims)
    assert all(v == -1.0 for i, v in sims.items() if i % 5 == 0)
    assert all(v == 1.0 for i, v in sims.items() if i % 5 == 1)


# ------------------------------------------------------------------------------------------------ CLI
def test_cli_reshard_and_its_errors(demo_download, tmp_path, capsys):
    out = str(tmp_path / "cli")
    rc = cli.main(["reshard", demo_download, "--output", out, "--name", "demo_cli", "--num-shards", "2",
                   "--max-caption-chars", "30", "--drop-columns", "exif,status", "--validation-fraction", "0.1",
                   "--no-progress", "--direct_num_workers=2"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "long_caption" in printed and "records out: validation" in printed
    counts = json.load(open(os.path.join(out, "counts.json")))
    assert counts["splits"]["train"]["num_shards"] == 2
    man = json.load(open(os.path.join(out, "manifest.json")))
    assert detail(man)["settings"]["beam_args"] == ["--direct_num_workers=2"]
    assert detail(man)["dropped"]["long_caption"] > 0
    for argv, code, msg in [
        (["--name", "Bad-Name"], 2, "not a valid TFDS name"),
        (["--name", "x", "--drop-columns", "jpg"], 2, "cannot drop"),
        (["--name", "x", "--max-punsafe", "0.5"], 2, "punsafe"),
        (["--name", "x", "--num-shards", "0"], 2, "--num-shards"),
    ]:
        assert cli.main(["reshard", demo_download, "--output", str(tmp_path / "e"), *argv]) == code
        assert msg in capsys.readouterr().err
    assert cli.main(["reshard", str(tmp_path / "nope"), "--output", str(tmp_path / "e"), "--name", "x"]) == 1
    assert "source folder not found" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ fsspec URLs
def test_object_store_urls_work_end_to_end(demo_download, tmp_path):
    """Sources and output as fsspec URLs (memory://, in-process runner so that all workers share that store): the
    code paths gs:// takes (no local files, object 'renames', listing a missing folder)."""
    import fsspec

    from laionprep.tfrecord import read_records

    mem = fsspec.filesystem("memory")
    src_dir = os.path.join(demo_download, "tfrecord")
    for name in os.listdir(src_dir):
        mem.pipe(f"/reshard-test/src/tfrecord/{name}", open(os.path.join(src_dir, name), "rb").read())
    mem.pipe("/reshard-test/src/manifest.json", open(os.path.join(demo_download, "manifest.json"), "rb").read())
    try:
        cfg = ReshardConfig(sources=("memory://reshard-test/src",), output="memory://reshard-test/out", name="mem",
                            num_shards=2, validation_fraction=0.2, min_caption_chars=20,
                            beam_args=("--runner=BundleBasedDirectRunner",))
        m = reshard(cfg, **QUIET)
        counts = json.loads(mem.cat("/reshard-test/out/counts.json"))
        total = 0
        for split, info in counts["splits"].items():
            for i, n in enumerate(info["shard_lengths"]):
                url = f"memory://reshard-test/out/{split}/mem-{split}-{i:05d}-of-00002.tfrecord"
                assert sum(1 for _ in read_records(url)) == n
                total += n
        rs = detail(m)
        assert total == sum(rs["rows_out"].values()) == rs["rows_in"] - rs["dropped"]["short_caption"] > 0
        assert m["dataset"] == "demo" and not [p for p in mem.find("/reshard-test/out") if ".tmp-" in p]
    finally:
        mem.rm("/reshard-test", recursive=True)
