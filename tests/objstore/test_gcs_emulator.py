"""Every stage that takes gs:// paths, run against a local GCS emulator through the clients real buckets use:
gcsfs (laionprep.fs, img2dataset's parquet/stats files), TensorFlow's C++ GCS client (img2dataset's TFRecord
writer, TFDS reads, the trainer's tf.data pipeline) and Beam's DirectRunner workers.  Tiny data: one download of
40 rows in 2 shards, shared by the module; tests that change data work under their own prefix."""
from __future__ import annotations

import os

import pytest

from laionprep import cli
from laionprep import fs as lfs
from laionprep.testing import synth
from laionprep.tfrecord import read_records

ROWS, SHARD = 40, 20


def upload_dir(local: str, url: str) -> None:
    fsys, path = lfs.get_fs(url)
    for name in sorted(os.listdir(local)):
        fsys.put_file(os.path.join(local, name), f"{path}/{name}")


def keys_of(files) -> list[str]:
    from laionprep._env import import_tf

    tf = import_tf()
    return sorted(tf.train.Example.FromString(r).features.feature["key"].bytes_list.value[0].decode()
                  for f in files for r in read_records(f))


def download_argv(source: str, out: str) -> list[str]:
    return ["download", "--dataset", "demo", "--metadata-source", source, "--output", out, "--processes", "1",
            "--threads", "8", "--number-sample-per-shard", str(SHARD), "--no-progress",
            "--allow-private-addresses"]  # the images come from the demo server on 127.0.0.1


@pytest.fixture(scope="module")
def gcs_download(gcs_module, demo_server, tmp_path_factory):
    """`laionprep download` with the metadata on gs:// and the output on gs://; returns (bucket, output URL)."""
    bucket = gcs_module
    meta = tmp_path_factory.mktemp("meta")
    synth.write_metadata(str(meta), ROWS, demo_server.base_url, seed=3, files=2)
    upload_dir(str(meta), f"gs://{bucket}/meta")
    out = f"gs://{bucket}/laion"
    assert cli.main(download_argv(f"gs://{bucket}/meta", out)) == 0
    return bucket, out


def test_download_from_and_to_gcs(gcs_download):
    """Metadata read from gs://, everything written to gs://: cache, prefiltered parquet, img2dataset's shards (its
    TFRecords through TF's GCS client, its parquet/stats through gcsfs), the log and the manifest; every row is
    accounted for, and the TFRecords TF wrote read back through gcsfs with their checksums."""
    bucket, out = gcs_download
    man = lfs.read_json(f"{out}/manifest.json")
    acc = man["accounting"]
    assert man["status"] == "complete" and acc["balanced"] and acc["metadata_rows"] == ROWS
    assert acc["downloaded_ok"] > 30 and acc["failed_download"] == 0
    shards = lfs.glob(f"{out}/tfrecord/*.tfrecord")
    assert [s.rsplit("/", 1)[1] for s in shards] == ["00000.tfrecord", "00001.tfrecord"]
    assert len(keys_of(shards)) == acc["downloaded_ok"]
    assert len(lfs.glob(f"{out}/tfrecord/*_stats.json")) == 2
    assert lfs.listdir(f"{out}/metadata") == ["part-00000.parquet", "part-00001.parquet"]
    assert "_prefilter_report.json" in lfs.listdir(f"{out}/prefiltered")
    with lfs.open_file(f"{out}/logs/img2dataset.log") as f:
        assert b"shard" in f.read()
    everything = lfs.get_fs(out)[0].find(f"{bucket}/laion")
    assert not [p for p in everything if lfs.TMP_MARK in p or "/_tmp/" in p], everything
    assert not os.path.exists("gs:")  # nothing written to a local folder named after the URL


def test_download_rerun_resumes_a_killed_shard(gcs_module, gcs_download):
    """A run killed mid-shard leaves a TFRecord and parquet but no stats marker (and a half-written object never
    appears: GCS publishes an object only when its upload completes).  Re-running the same command redoes exactly
    that shard; the finished one and the metadata are not fetched again."""
    bucket, out = gcs_download
    fsys, _ = lfs.get_fs(out)
    kill = f"{bucket}/killed"
    fsys.copy(f"{bucket}/laion", kill, recursive=True)
    fsys.rm(f"{kill}/tfrecord/00001_stats.json")
    fsys.pipe_file(f"{kill}/tfrecord/00001.tfrecord", b"\x00" * 10)  # what TF's writer had uploaded so far
    fsys.pipe_file(f"{kill}/metadata/part-00000.parquet{lfs.TMP_MARK}0123456789ab", b"PAR1 partial")
    before = fsys.info(f"{kill}/tfrecord/00000.tfrecord")["generation"]
    assert cli.main(download_argv(f"gs://{bucket}/meta", f"gs://{kill}")) == 0
    man = lfs.read_json(f"gs://{kill}/manifest.json")
    assert man["status"] == "complete" and man["accounting"] == lfs.read_json(f"{out}/manifest.json")["accounting"]
    assert man["stages"]["metadata"]["already_present"] == 2 and man["stages"]["metadata"]["fetched"] == 0
    assert fsys.info(f"{kill}/tfrecord/00000.tfrecord")["generation"] == before  # not rewritten
    assert keys_of(lfs.glob(f"gs://{kill}/tfrecord/*.tfrecord")) == keys_of(lfs.glob(f"{out}/tfrecord/*.tfrecord"))
    assert not [p for p in fsys.find(kill) if lfs.TMP_MARK in p]


def test_validate_gcs(gcs_download):
    """`validate gs://...` reads every shard from the bucket and writes its report there."""
    bucket, out = gcs_download
    report = f"gs://{bucket}/report"
    assert cli.main(["validate", out, "--report", report, "--workers", "1", "--decode-fraction", "1",
                     "--no-progress"]) == 0
    rep = lfs.read_json(f"{report}/report.json")
    n = lfs.read_json(f"{out}/manifest.json")["accounting"]["downloaded_ok"]
    assert rep["kind"] == "download" and rep["ok"] and not any(rep["problem_counts"].values())
    assert rep["totals"]["shards"] == 2 and rep["totals"]["records"] == rep["totals"]["parsed"] == n
    assert lfs.size(f"{report}/report.html") > 1000


@pytest.fixture(scope="module")
def gcs_resharded(gcs_download):
    """`reshard gs:// -> gs://` (Beam DirectRunner), written straight into a TFDS layout ROOT/NAME/VERSION."""
    bucket, out = gcs_download
    dest = f"gs://{bucket}/tfds/laion_gcs/1.0.0"
    assert cli.main(["reshard", out, "--output", dest, "--name", "laion_gcs", "--num-shards", "2",
                     "--validation-fraction", "0.25", "--no-progress"]) == 0
    return bucket, dest


def test_reshard_gcs_to_gcs(gcs_download, gcs_resharded):
    bucket, dest = gcs_resharded
    counts = lfs.read_json(f"{dest}/counts.json")
    files = {s: lfs.glob(f"{dest}/{s}/laion_gcs-{s}-*-of-00002.tfrecord") for s in counts["splits"]}
    assert set(files) == {"train", "validation"} and all(len(f) == 2 for f in files.values())
    for s, info in counts["splits"].items():
        assert [sum(1 for _ in read_records(f)) for f in files[s]] == info["shard_lengths"]
    source_keys = keys_of(lfs.glob(f"{gcs_download[1]}/tfrecord/*.tfrecord"))
    assert keys_of(files["train"] + files["validation"]) == source_keys
    assert not [p for p in lfs.get_fs(dest)[0].find(dest) if lfs.TMP_MARK in p]


def test_reshard_failed_on_gcs_resumes(gcs_download, gcs_resharded, tmp_path, monkeypatch, capsys):
    """A reshard on gs:// whose task 0 dies mid-upload (the worker's failure hook: half its records written to its
    temporary object, then an exception): the job fails, no partial shard carries a final name, no completion
    marker.  Re-running the same command keeps whatever shards were finished (same object generations), redoes the
    rest, removes the temporary object; the records equal the source's; a third run rewrites nothing."""
    from laionprep.sharding.worker import FAIL_ONCE_ENV

    bucket, _ = gcs_resharded
    out = f"gs://{bucket}/rs-failed"
    fsys, root = lfs.get_fs(out)
    argv = ["reshard", gcs_download[1], "--output", out, "--name", "laion_gcs", "--num-shards", "2",
            "--validation-fraction", "0.25", "--no-progress"]
    monkeypatch.setenv(FAIL_ONCE_ENV, f"0@{tmp_path / 'failed-once'}")
    assert cli.main(argv) == 1
    assert "injected failure" in capsys.readouterr().err
    names = [p.rsplit("/", 1)[1] for p in fsys.find(root)]
    assert "counts.json" not in names and not [n for n in names if "-00000-of-" in n and lfs.TMP_MARK not in n]
    assert [n for n in names if lfs.TMP_MARK in n]  # the failed attempt's upload stayed temporary
    # Task 1 may or may not have finished before the runner stopped the failed job (both run at once).  A task is
    # finished once its result file is written (after its shards got their final names); a finished task's shards
    # must be reused as they are (an unfinished one is redone, rewriting the same bytes).
    finished = [i for i in (0, 1) if lfs.exists(f"{out}/_reshard/part-{i:05d}.json")]
    assert 0 not in finished
    kept = {p: fsys.info(p)["generation"] for p in fsys.find(root)
            if any(f"-{i:05d}-of-" in p for i in finished) and lfs.TMP_MARK not in p}
    assert cli.main(argv) == 0
    assert {p: fsys.info(p)["generation"] for p in kept} == kept
    source_keys = keys_of(lfs.glob(f"{gcs_download[1]}/tfrecord/*.tfrecord"))
    assert keys_of(lfs.glob(f"{out}/*/laion_gcs-*-of-*.tfrecord")) == source_keys
    assert not [p for p in fsys.find(root) if lfs.TMP_MARK in p]
    # Once every shard is finished, the same command rewrites nothing on the bucket.
    shards = {p: fsys.info(p)["generation"] for p in fsys.find(root) if p.endswith(".tfrecord")}
    assert len(shards) == 4
    assert cli.main(argv) == 0
    assert {p: fsys.info(p)["generation"] for p in fsys.find(root) if p.endswith(".tfrecord")} == shards


def test_build_tfds_in_place_and_tfds_reads_gcs(gcs_download, gcs_resharded):
    """`build-tfds` registers the resharded files in place on gs:// (metadata only); TFDS then reads them through
    TensorFlow's GCS client, and every record is there."""
    import tensorflow_datasets as tfds

    bucket, dest = gcs_resharded
    before = {p: lfs.get_fs(dest)[0].info(p)["generation"] for p in lfs.get_fs(dest)[0].find(dest)
              if p.endswith(".tfrecord")}
    assert len(before) == 4  # train/ and validation/, 2 shards each
    assert cli.main(["build-tfds", "--source", dest, "--data-dir", f"gs://{bucket}/tfds", "--name", "laion_gcs",
                     "--split-alias", "full=train", "--no-progress"]) == 0
    assert lfs.exists(f"{dest}/dataset_info.json")
    assert {p: lfs.get_fs(dest)[0].info(p)["generation"] for p in before} == before  # zero-copy: untouched
    keys = []
    for split in ("train", "validation"):
        ds = tfds.load("laion_gcs", data_dir=f"gs://{bucket}/tfds", split=split)
        keys += [ex["key"].numpy().decode() for ex in ds]
    assert sorted(keys) == keys_of(lfs.glob(f"{gcs_download[1]}/tfrecord/*.tfrecord"))
    # CLIPA's reader: builder_from_directory + split 'full', the alias over train's files (nothing copied)
    full = tfds.builder_from_directory(dest).as_dataset(split="full")
    assert sorted(ex["key"].numpy().decode() for ex in full) == sorted(
        ex["key"].numpy().decode() for ex in tfds.load("laion_gcs", data_dir=f"gs://{bucket}/tfds", split="train"))
    assert {p: lfs.get_fs(dest)[0].info(p)["generation"] for p in lfs.get_fs(dest)[0].find(dest)
            if p.endswith(".tfrecord")} == before


def test_trainer_input_pipeline_reads_gcs(gcs_download):
    """The trainer's data path on gs://: a vocabulary written to and read from the bucket with tf.io.gfile (folder
    marker, temporary name, rename), then batches from tf.data reading the TFRecords through TF's GCS client."""
    import numpy as np

    from laionprep.train_ref import input_pipeline as ip
    from laionprep.train_ref import tokenizer as tokenizer_lib

    bucket, out = gcs_download
    src = ip.resolve_source(out)
    assert src.kind == "files" and src.files == lfs.glob(f"{out}/tfrecord/*.tfrecord")
    vocab = f"gs://{bucket}/train/vocab.txt"
    letters = "abcdefghijklmnopqrstuvwxyz0123456789"
    tokenizer_lib.write_vocab(tokenizer_lib.RESERVED_TOKENS + list(letters) + ["##" + c for c in letters], vocab)
    assert lfs.listdir(f"gs://{bucket}/train") == ["vocab.txt"]
    tok = tokenizer_lib.Tokenizer(tokenizer_lib.load_vocab(vocab), max_len=12)
    batches = list(ip.train_dataset(out, tok, image_size=32, batch_size=8, seed=0, shuffle_buffer=16).take(2))
    for b in batches:
        assert b["image"].shape == (8, 32, 32, 3) and b["image"].numpy().std() > 10
        assert b["text"].shape == (8, 12) and (b["text"].numpy()[:, 0] == tok.cls_id).all()
    assert not np.array_equal(batches[0]["image"].numpy(), batches[1]["image"].numpy())


# ------------------------------------------------------------------------------------------------------ faults
def test_missing_bucket_is_named(gcs_download, capsys):
    """A bucket that does not exist, as input or output of each stage: exit 1/2 with the URL and a fix, before any
    work is done (no bare 404 from deep inside an upload, no blaming the metadata source)."""
    bucket, out = gcs_download
    cases = [
        (["download", "--dataset", "demo", "--metadata-source", f"gs://{bucket}/meta", "--output",
          "gs://no-such-bucket-0/laion", "--no-progress"], 2, "bucket gs://no-such-bucket-0 does not exist"),
        (["reshard", out, "--output", "gs://no-such-bucket-0/rs", "--name", "x", "--no-progress"], 2,
         "bucket gs://no-such-bucket-0 does not exist"),
        (["validate", out, "--report", "gs://no-such-bucket-0/report", "--no-progress"], 2,
         "bucket gs://no-such-bucket-0 does not exist"),
        (["validate", "gs://no-such-bucket-0/laion", "--no-progress"], 2, "gs://no-such-bucket-0/laion"),
        (["reshard", "gs://no-such-bucket-0/laion", "--output", f"gs://{bucket}/rs-x", "--name", "x",
          "--no-progress"], 1, "gs://no-such-bucket-0/laion"),
        (["download", "--dataset", "demo", "--metadata-source", "gs://no-such-bucket-0/meta", "--output",
          f"gs://{bucket}/dl-x", "--no-progress"], 1, "metadata source not found: gs://no-such-bucket-0/meta"),
    ]
    for argv, code, msg in cases:
        assert cli.main(argv) == code, argv
        err = capsys.readouterr().err
        assert msg in err and "fix:" in err and "Traceback" not in err, (argv, err)
        if "does not exist" in msg:
            assert "gcloud storage buckets create gs://no-such-bucket-0" in err


def test_object_deleted_between_listing_and_read(gcs_download):
    """A shard deleted after the input pipeline listed it (another job cleaning the bucket): reading stops with an
    error naming that object, for TF's reader (the trainer) and for gcsfs (laionprep's own readers); the other
    shard still reads."""
    from laionprep._env import import_tf
    from laionprep.train_ref import input_pipeline as ip

    tf = import_tf()
    bucket, out = gcs_download
    fsys, _ = lfs.get_fs(out)
    fsys.copy(f"{bucket}/laion/tfrecord", f"{bucket}/gone/tfrecord", recursive=True)
    src = ip.resolve_source(f"gs://{bucket}/gone")
    assert len(src.files) == 2
    fsys.rm(f"{bucket}/gone/tfrecord/00001.tfrecord")
    assert sum(1 for _ in tf.data.TFRecordDataset(src.files[0])) > 0
    with pytest.raises(tf.errors.NotFoundError, match=f"gs://{bucket}/gone/tfrecord/00001.tfrecord"):
        for _ in tf.data.TFRecordDataset(src.files):
            pass
    with pytest.raises(FileNotFoundError, match=f"gs://{bucket}/gone/tfrecord/00001.tfrecord"):
        list(read_records(src.files[1]))


def test_listings_see_objects_other_processes_wrote(gcs_module, gcs_server):
    """laionprep's gs:// listings are never served from gcsfs's listing cache: an object written by another client
    (img2dataset's or Beam's workers, here google-cloud-storage) after a listing shows up in the next one.  With
    gcsfs's default cache a re-run reshard found none of its workers' results and failed."""
    folder = f"gs://{gcs_module}/seen"
    lfs.write_json(f"{folder}/a.json", {})
    assert lfs.glob(f"{folder}/*.json") == [f"{folder}/a.json"] and not lfs.exists(f"{folder}/b.json")
    gcs_server.client().bucket(gcs_module).blob("seen/b.json").upload_from_string(b"{}")
    assert lfs.exists(f"{folder}/b.json")
    assert lfs.glob(f"{folder}/*.json") == [f"{folder}/a.json", f"{folder}/b.json"]
    assert lfs.listdir(folder) == ["a.json", "b.json"]


def test_emulator_selects_gcsfs_json_client(gcs_server, tmp_path):
    """With STORAGE_EMULATOR_HOST set, laionprep uses gcsfs's plain JSON client and passes the switch on to child
    processes; without it gcsfs's default class is left alone.  (gcsfs's default first asks a gRPC API for the
    bucket layout: against an emulator each operation then waits out a 60 s timeout.)"""
    import subprocess
    import sys

    code = ("import os, gcsfs.core; from laionprep import fs; f = fs.get_fs('gs://b/x')[0]; "
            "print(type(f) is gcsfs.core.GCSFileSystem, os.environ.get('GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT'))")
    drop = ("STORAGE_EMULATOR_HOST", "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    plain = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    emu = subprocess.run([sys.executable, "-c", code], env={**env, "STORAGE_EMULATOR_HOST": gcs_server.endpoint},
                         capture_output=True, text=True, timeout=120)
    assert plain.stdout.split() == ["False", "None"], plain.stderr
    assert emu.stdout.split() == ["True", "false"], emu.stderr


def test_tensorflow_not_routed_to_the_emulator_is_refused(gcs_download, monkeypatch, capsys):
    """With STORAGE_EMULATOR_HOST set but no proxy for TensorFlow's GCS client (which has no endpoint setting), the
    stages that read/write gs:// through TensorFlow refuse to start instead of silently using the real bucket of
    that name; gcsfs-only stages (validate) still work."""
    from laionprep.errors import UsageError
    from laionprep.train_ref import input_pipeline as ip

    bucket, out = gcs_download
    for var in ("https_proxy", "HTTPS_PROXY"):
        monkeypatch.delenv(var)
    cases = [(download_argv(f"gs://{bucket}/meta", f"gs://{bucket}/dl-noproxy"), "--output"),
             (["build-tfds", "--source", f"gs://{bucket}/tfds/x/1.0.0", "--data-dir", f"gs://{bucket}/tfds",
               "--name", "x", "--no-progress"], "--data-dir")]
    for argv, where in cases:
        assert cli.main(argv) == 2
        err = capsys.readouterr().err
        assert "TensorFlow's GCS client" in err and f"where: {where}" in err and "https_proxy" in err, err
    assert not lfs.exists(f"gs://{bucket}/dl-noproxy")
    with pytest.raises(UsageError, match="STORAGE_EMULATOR_HOST"):
        ip.resolve_source(out)
    assert cli.main(["validate", out, "--workers", "1", "--decode-fraction", "0", "--no-progress"]) == 0
