"""``laionprep reshard --format both`` on the real demo download (real Beam runner): one pass writes every shard as
TFRecord and as ArrayRecord, record for record the single-format reshards' records; its re-run rule; build-tfds
registers it as tfrecord with array_record as alternative format, so ``tfds.load`` streams and ``tfds.data_source``
reads by index; validate checks both sets; the Grain loader finds the ArrayRecords.
"""
from __future__ import annotations

import glob
import json
import os
import shutil

import pytest

from laionprep import cli
from laionprep.errors import DataError
from laionprep.manifest import detail
from laionprep.sharding import ReshardConfig, reshard
from laionprep.sharding.worker import FAIL_ONCE_ENV
from laionprep.tfrecord import Example, read_records
from laionprep.validate import ValidateConfig, validate

from reshard_helpers import array_records

QUIET = {"log": lambda *a, **k: None}
SPLITS = ("train", "validation")
BASE = dict(name="demo_ab", num_shards=3, validation_fraction=0.25, shuffle=True, seed=5,
            drop_columns=("exif", "error_message", "status"))
FLAGS = ["--name", "demo_ab", "--num-shards", "3", "--validation-fraction", "0.25", "--shuffle", "--seed", "5",
         "--drop-columns", "exif,error_message,status"]


def _shard(out: str, split: str, i: int, fmt: str) -> str:
    return os.path.join(out, split, f"demo_ab-{split}-{i:05d}-of-00003.{fmt}")


@pytest.fixture(scope="module")
def outs(demo_download, tmp_path_factory):
    """The same shuffled, split, column-dropping reshard as tfrecord, array_record and both."""
    root = tmp_path_factory.mktemp("both")
    out = {}
    for fmt in ("tfrecord", "array_record", "both"):
        cfg = ReshardConfig(sources=(demo_download,), output=str(root / fmt), file_format=fmt, **BASE)
        out[fmt] = (cfg, reshard(cfg, **QUIET))
    return out


def _records(out: str, split: str, fmt: str) -> list[bytes]:
    read = array_records if fmt == "array_record" else (lambda p: list(read_records(p)))
    return [r for i in range(3) for r in read(_shard(out, split, i, fmt))]


def test_both_formats_hold_the_single_format_reshards_records_in_order(outs):
    bcfg, bm = outs["both"]
    counts = json.load(open(os.path.join(bcfg.output, "counts.json")))
    single = json.load(open(os.path.join(outs["tfrecord"][0].output, "counts.json")))
    n = 0
    for split in SPLITS:
        info = counts["splits"][split]
        assert info["filename_template"] == f"{split}/demo_ab-{split}-{{SHARD_X_OF_Y}}.tfrecord"
        assert info["alternative_templates"] == {"array_record": f"{split}/demo_ab-{split}-{{SHARD_X_OF_Y}}"
                                                                 ".array_record"}
        assert info["shard_lengths"] == single["splits"][split]["shard_lengths"]
        for i in range(3):  # record for record, byte for byte, shard by shard
            recs = list(read_records(_shard(bcfg.output, split, i, "tfrecord")))
            assert array_records(_shard(bcfg.output, split, i, "array_record")) == recs
            assert len(recs) == info["shard_lengths"][i]
            n += len(recs)
        assert _records(bcfg.output, split, "tfrecord") == _records(outs["tfrecord"][0].output, split, "tfrecord")
        assert _records(bcfg.output, split, "array_record") == _records(outs["array_record"][0].output, split,
                                                                        "array_record")
    assert n == detail(bm)["rows_in"] > 0
    assert detail(bm)["file_format"] == "both" and bm["parameters"]["file_format"] == "both"
    sh = detail(bm)["shards"]["train"][0]
    assert sh["alternatives"]["array_record"]["bytes"] == os.path.getsize(_shard(bcfg.output, "train", 0,
                                                                                 "array_record"))
    hashes = {detail(m)["plan"]["hash"] for _, m in outs.values()}
    assert len(hashes) == 3
    assert not os.path.exists(os.path.join(bcfg.output, "_reshard"))


def test_both_rerun_is_a_noop_a_lost_copy_is_redone_and_another_format_needs_restart(outs, tmp_path, capfd):
    bcfg, bm = outs["both"]
    again = reshard(bcfg, **QUIET)
    assert again["fingerprint"] == bm["fingerprint"] and again["updated"] == bm["updated"]  # nothing rewritten
    for fmt in ("tfrecord", "array_record"):  # a re-run with a single format is other parameters: refused
        code = cli.main(["reshard", *bcfg.sources, "--output", bcfg.output, *FLAGS, "--format", fmt])
        err = capfd.readouterr().err
        assert code == 2 and 'file_format: "both" -> ' in err, err
        assert "--restart" in err and "Traceback" not in err
    # a single-format output re-run with --format both is refused the same way
    code = cli.main(["reshard", *bcfg.sources, "--output", outs["array_record"][0].output, *FLAGS,
                     "--format", "both"])
    err = capfd.readouterr().err
    assert code == 2 and 'file_format: "array_record" -> "both"' in err, err
    # losing one format's copy of a shard: the output is no longer complete, the same command writes it again
    d = str(tmp_path / "both")
    shutil.copytree(bcfg.output, d)
    lost = _shard(d, "train", 1, "array_record")
    os.remove(lost)
    reshard(ReshardConfig(sources=bcfg.sources, output=d, file_format="both", **BASE), **QUIET)
    assert _bytes(d) == _bytes(bcfg.output)


def _bytes(out: str) -> dict[str, bytes]:
    return {os.path.relpath(p, out): open(p, "rb").read() for p in glob.glob(os.path.join(out, "*", "*-of-*"))
            if ".tmp-" not in p}


def test_both_killed_mid_task_leaves_no_partial_file_in_either_format_and_resumes(outs, tmp_path, monkeypatch):
    bcfg, _ = outs["both"]
    marker = tmp_path / "failed-once"
    monkeypatch.setenv(FAIL_ONCE_ENV, f"0@{marker}")
    cfg = ReshardConfig(sources=bcfg.sources, output=str(tmp_path / "killed"), file_format="both", **BASE)
    with pytest.raises(DataError, match="injected failure"):
        reshard(cfg, **QUIET)
    assert marker.exists() and not os.path.exists(os.path.join(cfg.output, "counts.json"))
    finals = _bytes(cfg.output)
    assert not [p for p in finals if "-00000-of-" in p]  # neither format of task 0 got a final name
    tmps = glob.glob(os.path.join(cfg.output, "train", "*-00000-of-*.tmp-*"))
    assert sorted(t.split(".")[1] for t in tmps) == ["array_record", "tfrecord"]  # both stayed temporary
    ref = _bytes(bcfg.output)
    assert all(ref[p] == b for p, b in finals.items())  # whatever got a final name is complete
    done = len(glob.glob(os.path.join(cfg.output, "_reshard", "part-*.json")))
    m = reshard(cfg, **QUIET)
    assert _bytes(cfg.output) == ref and detail(m)["resumed_shards"] == done
    assert not glob.glob(os.path.join(cfg.output, "**", "*.tmp-*"), recursive=True)


def test_registration_streams_with_tfds_load_and_reads_by_index_with_data_source(outs, tmp_path):
    import tensorflow_datasets as tfds

    from laionprep.tfds_builders.register import register

    bcfg, _ = outs["both"]
    root = str(tmp_path / "tfds")
    res = register(bcfg.output, "demo_ab", root)
    assert res.layout == "symlinks"
    vdir = os.path.join(root, "demo_ab", "1.0.0")
    info = json.load(open(os.path.join(vdir, "dataset_info.json")))
    assert info["fileFormat"] == "tfrecord" and info["alternativeFileFormats"] == ["array_record"]
    for split in SPLITS:
        want = [Example.FromString(r).features.feature["key"].bytes_list.value[0].decode()
                for r in _records(bcfg.output, split, "tfrecord")]
        streamed = [ex["key"].numpy().decode() for ex in tfds.load("demo_ab", split=split, data_dir=root,
                                                                   shuffle_files=False)]
        # all keys, each once (TFDS interleaves the files it streams)
        assert sorted(streamed) == sorted(want) and len(want) == len(set(want)) == res.splits[split] > 0
        src = tfds.data_source("demo_ab", split=split, data_dir=root)
        assert len(src) == len(want)
        for i in (len(want) - 1, 0, len(want) // 2):  # out of order: random access by index
            assert src[i]["key"].decode() == want[i]
        assert src[0]["jpg"].shape[-1] == 3
    # validate: the TFRecords read, and tfds.data_source's view of the ArrayRecords
    rep = validate(ValidateConfig(vdir, workers=1))
    assert rep.ok, rep.problem_rows()


def test_in_place_registration_of_both_formats(outs, tmp_path):
    import tensorflow_datasets as tfds

    from laionprep.tfds_builders.register import register

    bcfg, _ = outs["both"]
    root = tmp_path / "tfds"
    vdir = root / "demo_ab" / "1.0.0"
    shutil.copytree(bcfg.output, vdir)  # a reshard written straight into ROOT/NAME/VERSION
    res = register(str(vdir), "demo_ab", str(root), split_aliases=(("full", "train"),))
    assert res.layout == "in_place"
    info = json.load(open(vdir / "dataset_info.json"))
    assert info["splits"][0]["filepathTemplate"].endswith(".{FILEFORMAT}")
    for split in SPLITS + ("full",):
        n = res.splits.get(split, res.splits["train"])
        assert sum(1 for _ in tfds.load("demo_ab", split=split, data_dir=str(root))) == n > 0
        src = tfds.data_source("demo_ab", split=split, data_dir=str(root))
        assert len(src) == n and src[n - 1]["jpg"].shape[-1] == 3


def test_validate_checks_both_sets(outs, tmp_path):
    bcfg, _ = outs["both"]
    rep = validate(ValidateConfig(bcfg.output, workers=1, decode_fraction=1.0))
    assert rep.ok, rep.problem_rows()
    counts = json.load(open(os.path.join(bcfg.output, "counts.json")))
    assert rep.totals["records"] == sum(s["num_examples"] for s in counts["splits"].values())
    d = str(tmp_path / "both")
    shutil.copytree(bcfg.output, d)
    os.remove(_shard(d, "validation", 2, "array_record"))
    # train shard 0's ArrayRecord copy replaced by shard 1's: another count or other records
    shutil.copy(_shard(d, "train", 1, "array_record"), _shard(d, "train", 0, "array_record"))
    rep = validate(ValidateConfig(d, workers=1, decode_fraction=0))
    assert not rep.ok
    assert [p.file for p in rep.by_kind("missing_shard")] == ["validation/demo_ab-validation-00002-of-00003"
                                                              ".array_record"]
    wrong = rep.by_kind("count_mismatch") + rep.by_kind("format_mismatch")
    assert [p.file for p in wrong] == ["train/demo_ab-train-00000-of-00003.array_record"]


def test_grain_loader_takes_the_array_records_of_both(outs, tmp_path):
    from laionprep.tfds_builders.register import register
    from laionprep.train_ref import input_pipeline
    from laionprep.train_ref.grain_pipeline import array_record_files, check_streamable

    bcfg, _ = outs["both"]
    want = [_shard(bcfg.output, "train", i, "array_record") for i in range(3)]
    src = input_pipeline.resolve_source(bcfg.output, split="train")
    assert array_record_files(src) == want
    check_streamable(src)  # tf.data streams its TFRecords: no error
    root = str(tmp_path / "tfds")
    register(bcfg.output, "demo_ab", root)
    tsrc = input_pipeline.resolve_source("demo_ab", data_dir=root, split="train")
    files = array_record_files(tsrc)
    assert [os.path.realpath(f) for f in files] == want
    check_streamable(tsrc)
    # the loader itself, over the folder and over the registration: an epoch of batches, every train record once
    from laionprep.train_ref import tokenizer
    from laionprep.train_ref.grain_pipeline import GrainLoader

    vocab = str(tmp_path / "vocab.txt")
    tokenizer.learn_vocab(bcfg.output, 100, vocab)
    tok = tokenizer.Tokenizer(tokenizer.load_vocab(vocab), 8)
    keys = sorted(Example.FromString(r).features.feature["key"].bytes_list.value[0].decode()
                  for r in _records(bcfg.output, "train", "tfrecord"))
    for source, data_dir in ((bcfg.output, ""), ("demo_ab", root)):
        log = str(tmp_path / f"keys-{bool(data_dir)}.jsonl")
        ld = GrainLoader(source, tok, image_size=16, batch_size=1, seed=3, data_dir=data_dir, keys_log=log)
        batches = [next(ld) for _ in range(len(keys))]
        ld.close()
        assert batches[0]["image"].shape == (1, 16, 16, 3)
        drawn = [json.loads(line)["keys"] for line in open(log)]
        assert sorted(k for ks in drawn for k in ks) == keys


def test_registration_refuses_a_missing_copy_and_leaves_that_shard_out_of_both_when_told(outs, tmp_path):
    import tensorflow_datasets as tfds

    from laionprep.tfds_builders.register import register

    bcfg, _ = outs["both"]
    d = str(tmp_path / "both")
    shutil.copytree(bcfg.output, d)
    gone = _shard(d, "train", 1, "array_record")
    os.remove(gone)
    with pytest.raises(DataError, match="demo_ab-train-00001-of-00003.array_record is missing"):
        register(d, "demo_ab", str(tmp_path / "refused"))
    root = str(tmp_path / "tfds")
    res = register(d, "demo_ab", root, allow_incomplete=True)
    counts = json.load(open(os.path.join(d, "counts.json")))["splits"]["train"]["shard_lengths"]
    assert res.splits["train"] == counts[0] + counts[2] and res.shards["train"] == 2
    assert sum(1 for _ in tfds.load("demo_ab", split="train", data_dir=root)) == res.splits["train"]
    assert len(tfds.data_source("demo_ab", split="train", data_dir=root)) == res.splits["train"]
