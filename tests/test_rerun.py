"""The re-run rule (stage.check_rerun): a stage run again into its folder with other parameters is refused (exit 2,
nothing touched) naming each changed parameter; ``--restart`` moves the old outputs to ``_previous/<UTC time>/``
and runs fresh; the same parameters resume; validate flags a folder whose shards do not match its manifest."""
from __future__ import annotations

import glob
import json
import os
import re
import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from laionprep import cli, shards, stage
from laionprep.errors import UsageError
from laionprep.testing import synth

ROWS = 60


@pytest.fixture(scope="module")
def vary_metadata(tmp_path_factory, demo_server) -> str:
    """60 rows `v 0`..`v 59` with similarity 0.00..0.59, images served from 127.0.0.1."""
    md = tmp_path_factory.mktemp("md") / "vary"
    md.mkdir()
    rows = [{"SAMPLE_ID": i, "URL": f"{demo_server.base_url}/img/0/{i}.{synth.sample(0, i).fmt}", "TEXT": f"v {i}",
             "HEIGHT": 64, "WIDTH": 64, "LICENSE": "?", "NSFW": "UNLIKELY", "similarity": i / 100}
            for i in range(ROWS)]
    pq.write_table(pa.Table.from_pylist(rows), str(md / "part-00000.parquet"))
    return str(md)


def download(md: str, out: str, *extra: str) -> list[str]:
    return ["download", "--dataset", "laion400m", "--output", out, "--metadata-source", md,
            "--allow-private-addresses", "--processes", "1", "--threads", "8", "--number-sample-per-shard", "10",
            "--no-progress", *extra]


def files_of(folder: str) -> dict[str, bytes]:
    """Every file under ``folder`` with its bytes (symlinks as their target), except the lock file, which records
    the pid of the last command that held it."""
    out = {}
    for root, dirs, names in os.walk(folder):
        for n in names + [d for d in dirs if os.path.islink(os.path.join(root, d))]:
            p = os.path.join(root, n)
            if n == stage.LOCK_NAME:
                continue
            rel = os.path.relpath(p, folder)
            out[rel] = ("-> " + os.readlink(p)).encode() if os.path.islink(p) else open(p, "rb").read()
    return out


def records(folder: str) -> dict[str, tuple[str, bytes]]:
    """key -> (caption, image bytes) of a download's complete shards."""
    out = {}
    for s in shards.scan(folder).shards:
        for r in shards.iter_records(s.tfrecord):
            ex = shards.parse_example(r)
            key = ex["key"][1][0]
            assert key not in out, f"duplicate key {key}"
            out[key] = (ex["txt"][1][0].decode(), ex["jpg"][1][0])
    return out


def captions(folder: str) -> list[str]:
    return sorted((c for c, _ in records(folder).values()), key=lambda c: int(c.split()[1]))


@pytest.fixture(scope="module")
def fresh(vary_metadata, tmp_path_factory):
    """Reference downloads: min_similarity 0.1 (50 rows, 5 shards) and 0.3 (30 rows, 3 shards)."""
    base = tmp_path_factory.mktemp("fresh")
    out = {}
    for s in ("0.1", "0.3"):
        out[s] = str(base / s)
        assert cli.main(download(vary_metadata, out[s], "--min-similarity", s)) == 0
    return out


def _refused(capsys, argv, folder, *changes):
    before = files_of(folder)
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    for c in changes:
        assert c in err, err
    assert "--restart" in err and "_previous" in err and "elsewhere" in err, err
    assert files_of(folder) == before  # nothing in the folder was touched
    return err


@pytest.mark.parametrize("first,second,changed", [
    ("0.3", "0.1", "min_similarity: 0.3 -> 0.1"),  # more rows: used to mix old and new shards
    ("0.5", "0.35", "min_similarity: 0.5 -> 0.35"),
    ("0.35", "0.5", "min_similarity: 0.35 -> 0.5"),  # fewer rows: used to give `kept 0, shards 3/0`
])
def test_other_filters_are_refused_before_touching_the_folder(vary_metadata, fresh, tmp_path, capsys, first, second,
                                                             changed):
    out = str(tmp_path / "vary")
    if first == "0.3":
        shutil.copytree(fresh["0.3"], out)
    else:
        assert cli.main(download(vary_metadata, out, "--min-similarity", first)) == 0
    capsys.readouterr()
    err = _refused(capsys, download(vary_metadata, out, "--min-similarity", second), out, changed,
                   "filters_applied.min_similarity")
    assert "--output" in err


def test_other_shard_size_is_refused_with_its_dotted_path(vary_metadata, fresh, tmp_path, capsys):
    out = str(tmp_path / "vary")
    shutil.copytree(fresh["0.3"], out)
    argv = download(vary_metadata, out, "--min-similarity", "0.3")
    argv[argv.index("10")] = "20"
    _refused(capsys, argv, out, "download.number_sample_per_shard: 10 -> 20")


def test_restart_moves_the_old_outputs_and_equals_a_fresh_run(vary_metadata, fresh, tmp_path, capsys):
    out = str(tmp_path / "vary")
    shutil.copytree(fresh["0.3"], out)
    old = files_of(out)
    capsys.readouterr()
    assert cli.main(download(vary_metadata, out, "--min-similarity", "0.1", "--restart")) == 0
    said = capsys.readouterr().out
    prev = glob.glob(os.path.join(out, stage.PREVIOUS, "*"))
    assert len(prev) == 1 and re.fullmatch(r"\d{8}T\d{6}Z", os.path.basename(prev[0]))
    assert "moved the old outputs" in said and prev[0] in said
    assert files_of(prev[0]) == old  # everything moved, byte for byte, nothing deleted
    assert records(out) == records(fresh["0.1"])  # keys, captions, image bytes of a fresh run
    assert captions(out) == [f"v {i}" for i in range(10, ROWS)]
    assert not [n for n in os.listdir(os.path.join(out, "tfrecord")) if n.endswith(".json")
                and not n.endswith("_stats.json")]
    assert cli.main(["validate", out, "--no-progress"]) == 0
    # a second restart with unchanged parameters is a clean redo into a second time folder
    assert cli.main(download(vary_metadata, out, "--min-similarity", "0.1", "--restart")) == 0
    assert len(glob.glob(os.path.join(out, stage.PREVIOUS, "*"))) == 2
    assert records(out) == records(fresh["0.1"])


def test_same_parameters_resume_and_run_only_flags_do_not_count(vary_metadata, fresh, tmp_path):
    """Same parameters: a resume (finished shards are not fetched again), even with other --timeout, --retries,
    --threads; a lost shard is downloaded again."""
    out = str(tmp_path / "vary")
    shutil.copytree(fresh["0.3"], out)
    tf = os.path.join(out, "tfrecord")
    kept = os.stat(os.path.join(tf, "00000_stats.json")).st_mtime_ns
    for suffix in ("_stats.json", ".tfrecord", ".parquet"):
        os.remove(os.path.join(tf, "00002" + suffix))
    argv = download(vary_metadata, out, "--min-similarity", "0.3", "--timeout", "30", "--retries", "2")
    argv[argv.index("--threads") + 1] = "4"
    assert cli.main(argv) == 0
    assert os.stat(os.path.join(tf, "00000_stats.json")).st_mtime_ns == kept
    assert records(out) == records(fresh["0.3"])
    assert not os.path.exists(os.path.join(out, stage.PREVIOUS))
    m = json.load(open(os.path.join(out, "manifest.json")))
    assert "timeout" not in m["parameters"]["download"] and "retries" not in m["parameters"]["download"]
    assert m["stages"]["download"]["settings"]["download"]["timeout"] == 30


def test_folder_without_fingerprint_or_manifest_is_refused(vary_metadata, fresh, tmp_path, capsys):
    out = str(tmp_path / "old")
    shutil.copytree(fresh["0.3"], out)
    path = os.path.join(out, "manifest.json")
    m = json.load(open(path))
    del m["fingerprint"]  # a folder written before fingerprints existed
    json.dump(m, open(path, "w"))
    _refused(capsys, download(vary_metadata, out, "--min-similarity", "0.3"), out, "no parameter fingerprint")
    os.remove(path)  # a non-empty folder with no manifest at all
    _refused(capsys, download(vary_metadata, out, "--min-similarity", "0.3"), out, "no manifest.json",
             "metadata", "tfrecord")
    assert cli.main(download(vary_metadata, out, "--min-similarity", "0.3", "--restart")) == 0
    assert records(out) == records(fresh["0.3"])


def test_check_rerun_unit(tmp_path):
    """The rule on its own: an empty or missing folder, or one holding only the lock file and _previous/, is
    fresh; another stage's manifest is refused; --restart moves one rename per entry."""
    from laionprep import manifest

    folder = str(tmp_path / "f")
    assert stage.check_rerun("reshard", folder, {"a": 1}) is None
    os.makedirs(os.path.join(folder, stage.PREVIOUS, "x"))
    open(os.path.join(folder, stage.LOCK_NAME), "w").close()
    assert stage.check_rerun("reshard", folder, {"a": 1}) is None
    manifest.write(manifest.path_in(folder), stage="download", dataset=None, status="complete", parameters={"a": 1},
                   inputs={}, accounting=None, stages={})
    with pytest.raises(UsageError, match="output of `laionprep download`"):
        stage.check_rerun("reshard", folder, {"a": 1})
    assert stage.changed_parameters({"a": {"b": 1, "c": [1]}, "d": "x"}, {"a": {"b": 2, "c": [1]}, "e": None}) == [
        "a.b: 1 -> 2", 'd: "x" -> (not set: the default)', "e: (not set: the default) -> null"]
    moved = stage.check_rerun("reshard", folder, {"a": 1}, restart=True, log=lambda s: None)
    assert sorted(os.listdir(folder)) == sorted([stage.LOCK_NAME, stage.PREVIOUS])
    assert os.listdir(moved) == ["manifest.json"]


# --------------------------------------------------------------------------------------------------- validate
def test_validate_flags_shards_of_other_parameters(fresh, tmp_path, capsys):
    """The state the old bug left: the 0.1 prefilter output and manifest over 0.3's first three shards."""
    out = str(tmp_path / "mixed")
    shutil.copytree(fresh["0.1"], out)
    for n in os.listdir(os.path.join(fresh["0.3"], "tfrecord")):
        if n.startswith(("00000", "00001", "00002")):
            shutil.copy(os.path.join(fresh["0.3"], "tfrecord", n), os.path.join(out, "tfrecord", n))
    capsys.readouterr()
    assert cli.main(["validate", out, "--no-progress", "--report", str(tmp_path / "r")]) == 1
    rep = json.load(open(tmp_path / "r" / "report.json"))
    bad = [p for p in rep["problems"] if p["kind"] == "parameters_mismatch"]
    assert sorted(p["file"] for p in bad) == [f"tfrecord/0000{i}.parquet" for i in range(3)], bad
    assert all("does not hold rows" in p["message"] and "--restart" in p["message"] for p in bad)


def test_validate_flags_filters_and_shards_beyond_the_prefilter_output(fresh, tmp_path):
    out = str(tmp_path / "mixed")
    shutil.copytree(fresh["0.3"], out)
    report = os.path.join(out, "prefiltered", "_prefilter_report.json")
    r = json.load(open(report))
    assert r["filters"]["min_similarity"] == 0.3
    r["filters"]["min_similarity"] = 0.5
    json.dump(r, open(report, "w"))
    for n in os.listdir(os.path.join(fresh["0.1"], "tfrecord")):
        if n.startswith("00004"):
            shutil.copy(os.path.join(fresh["0.1"], "tfrecord", n), os.path.join(out, "tfrecord", n))
    assert cli.main(["validate", out, "--no-progress", "--report", str(tmp_path / "r")]) == 1
    bad = [p for p in json.load(open(tmp_path / "r" / "report.json"))["problems"] if p["kind"] == "parameters_mismatch"]
    msgs = " | ".join(p["message"] for p in bad)
    assert "made with filters" in msgs and "shard 00004 is beyond the 3 shards" in msgs, msgs


# ---------------------------------------------------------------------------------------------------- reshard
def reshard(src: str, out: str, *extra: str) -> list[str]:
    return ["reshard", src, "--output", out, "--name", "vary", "--no-progress", *extra]


def tfrecords(folder: str) -> dict[str, bytes]:
    """``{SPLIT/file: bytes}`` of a reshard output's shards (one folder per split); never empty."""
    found = {os.path.relpath(p, folder): open(p, "rb").read()
             for p in sorted(glob.glob(os.path.join(folder, "*", "*.tfrecord")))}
    assert found, f"no shard in {folder}"
    return found


def test_reshard_refused_then_restart_equals_a_fresh_run(fresh, tmp_path, capsys):
    out, ref = str(tmp_path / "r"), str(tmp_path / "ref")
    assert cli.main(reshard(fresh["0.1"], out, "--num-shards", "2")) == 0
    assert cli.main(reshard(fresh["0.1"], ref, "--num-shards", "1", "--validation-fraction", "0.2")) == 0
    old = tfrecords(out)
    capsys.readouterr()
    _refused(capsys, reshard(fresh["0.1"], out, "--num-shards", "1", "--validation-fraction", "0.2"), out,
             "num_shards: 2 -> 1", "validation_fraction: 0.0 -> 0.2")
    # a run-only Beam option is not a parameter: the same parameters find the work done
    assert cli.main(reshard(fresh["0.1"], out, "--num-shards", "2", "--direct_num_workers=1")) == 0
    assert tfrecords(out) == old
    m = json.load(open(os.path.join(out, "manifest.json")))
    assert not {"beam_args", "restart", "output"} & set(m["parameters"])
    assert {"num_shards", "split", "validation_split", "sources", "keep_keys", "shard_size_mb"} <= set(m["parameters"])
    assert cli.main(reshard(fresh["0.1"], out, "--num-shards", "1", "--validation-fraction", "0.2", "--restart")) == 0
    assert tfrecords(out) == tfrecords(ref)
    (prev,) = glob.glob(os.path.join(out, stage.PREVIOUS, "*"))
    assert tfrecords(prev) == old
    assert cli.main(["validate", out, "--no-progress"]) == 0


def test_reshard_killed_before_its_manifest_resumes(fresh, tmp_path):
    """The reshard writes its parameter record before the first shard: a folder with shards and no counts.json
    (a crashed run) is its own resumable state; the same command completes it."""
    out = str(tmp_path / "r")
    assert cli.main(reshard(fresh["0.1"], out, "--num-shards", "2")) == 0
    ref = tfrecords(out)
    os.remove(os.path.join(out, "counts.json"))
    os.remove(os.path.join(out, sorted(ref)[0]))
    m = json.load(open(os.path.join(out, "manifest.json")))
    m["status"] = "running"
    json.dump(m, open(os.path.join(out, "manifest.json"), "w"))
    assert cli.main(reshard(fresh["0.1"], out, "--num-shards", "2")) == 0
    assert tfrecords(out) == ref


def test_validate_flags_counts_json_of_other_parameters(fresh, tmp_path):
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    assert cli.main(reshard(fresh["0.1"], a, "--num-shards", "2")) == 0
    assert cli.main(reshard(fresh["0.1"], b, "--num-shards", "2", "--name", "other")) == 0
    shutil.copy(os.path.join(b, "manifest.json"), os.path.join(a, "manifest.json"))  # b's parameters over a's shards
    assert cli.main(["validate", a, "--no-progress", "--report", str(tmp_path / "rep")]) == 1
    bad = [p for p in json.load(open(tmp_path / "rep" / "report.json"))["problems"]
           if p["kind"] == "parameters_mismatch"]
    assert bad and all(p["file"] == "counts.json" for p in bad)
    assert "name 'vary' but the manifest's parameters say 'other'" in " ".join(p["message"] for p in bad)


# ------------------------------------------------------------------------------------------------- build-tfds
def build_tfds(src: str, data_dir: str, *extra: str) -> list[str]:
    return ["build-tfds", "--name", "vary", "--data-dir", data_dir, "--source", src, "--no-progress", *extra]


def test_build_tfds_refused_then_restart(fresh, tmp_path, capsys):
    data_dir = str(tmp_path / "tfds")
    version = os.path.join(data_dir, "vary", "1.0.0")
    assert cli.main(build_tfds(fresh["0.3"], data_dir)) == 0
    assert cli.main(build_tfds(fresh["0.3"], data_dir, "--verify", "all")) == 0  # same parameters: a re-registration
    capsys.readouterr()
    err = _refused(capsys, build_tfds(fresh["0.3"], data_dir, "--split", "other"), version, 'split: "train" -> "other"')
    assert "--data-dir" in err
    _refused(capsys, build_tfds(fresh["0.1"], data_dir), version, "source: ")  # another source is another output
    old = files_of(version)
    assert cli.main(build_tfds(fresh["0.1"], data_dir, "--split", "other", "--restart")) == 0
    (prev,) = glob.glob(os.path.join(version, stage.PREVIOUS, "*"))
    assert files_of(prev) == old
    info = json.load(open(os.path.join(version, "dataset_info.json")))
    assert [s["name"] for s in info["splits"]] == ["other"]
    assert sum(int(n) for s in info["splits"] for n in s["shardLengths"]) == len(records(fresh["0.1"]))
    assert cli.main(build_tfds(fresh["0.1"], data_dir, "--split", "other")) == 0  # re-registering keeps _previous
    assert glob.glob(os.path.join(version, stage.PREVIOUS, "*")) == [prev]
    assert cli.main(["validate", version, "--no-progress"]) == 0


def test_detect_never_finds_a_dataset_under_previous(tmp_path):
    """What --restart moved aside is not read back: a folder whose only TFDS version lies under _previous/ is not
    a dataset folder (without the filter, detect returned the old in-place registration)."""
    from laionprep import folders

    old = tmp_path / stage.PREVIOUS / "20261202T171502Z"
    old.mkdir(parents=True)
    (old / "dataset_info.json").write_text("{}")
    with pytest.raises(UsageError, match="not a dataset folder"):
        folders.detect(str(tmp_path))
