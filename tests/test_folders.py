"""laionprep.folders: detection of every folder kind, the one shard scanner, the one shard namer."""
from __future__ import annotations

import json
import os

import fsspec
import pytest

from laionprep import folders
from laionprep.errors import UsageError


def _touch(path: str, data: bytes = b"") -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def _stats(path: str, successes: int, count: int) -> None:
    _touch(path, json.dumps({"successes": successes, "count": count}).encode())


def make_download(root: str, *, manifest: bool = True) -> str:
    """DIR with tfrecord/: shards 0, 1 complete, 2 missing entirely (a gap), 3 with stats but no tfrecord,
    4 without stats (orphans), 5 complete."""
    data = os.path.join(root, "tfrecord")
    for sid, ok in ((0, 3), (1, 2), (5, 4)):
        _touch(os.path.join(data, f"{sid:05d}.tfrecord"), b"x" * 16 * ok)
        _touch(os.path.join(data, f"{sid:05d}.parquet"))
        _stats(os.path.join(data, f"{sid:05d}_stats.json"), ok, ok + 1)
    _stats(os.path.join(data, "00003_stats.json"), 1, 1)
    _touch(os.path.join(data, "00004.tfrecord"))
    _touch(os.path.join(data, "00004.parquet"))
    if manifest:
        _touch(os.path.join(root, "manifest.json"), json.dumps({"dataset": "laion400m", "status": "complete"}).encode())
    return root


def test_detect_download_dir_and_tfrecord(tmp_path):
    root = make_download(str(tmp_path / "dl"))
    data = os.path.join(root, "tfrecord")
    for given in (root, data, data + "/"):
        f = folders.detect(given)
        assert isinstance(f, folders.DownloadFolder) and f.kind == "download"
        assert (f.root, f.data) == (root, data)
        assert f.manifest_path == os.path.join(root, "manifest.json")
        assert f.manifest()["dataset"] == "laion400m"
    bare = make_download(str(tmp_path / "bare"), manifest=False)
    f = folders.detect(os.path.join(bare, "tfrecord"))
    assert (f.root, f.data) == ((os.path.join(bare, "tfrecord"),) * 2) and f.manifest() == {}


def test_detect_reshard_and_tfds(tmp_path):
    out = tmp_path / "out"
    _touch(str(out / "counts.json"), b"{}")
    f = folders.detect(str(out))
    assert isinstance(f, folders.ReshardFolder) and f.kind == "resharded" and f.counts() == {}
    assert f.shard_path("laion", "train", 1, 4) == str(out / "train" / "laion-train-00001-of-00004.tfrecord")
    version = tmp_path / "tfds" / "laion" / "1.0.0"
    _touch(str(version / "dataset_info.json"), b"{}")
    for given in (version, tmp_path / "tfds", tmp_path / "tfds" / "laion"):
        f = folders.detect(str(given))
        assert isinstance(f, folders.TfdsFolder) and f.root == str(version)
        assert f.info_path == str(version / "dataset_info.json")
    _touch(str(tmp_path / "tfds" / "laion" / "2.0.0" / "dataset_info.json"), b"{}")
    with pytest.raises(UsageError, match="2 TFDS dataset versions"):
        folders.detect(str(tmp_path / "tfds"))
    # a kind not asked for is not recognised
    with pytest.raises(UsageError, match="not a dataset folder"):
        folders.detect(str(version), kinds=("download", "resharded"))
    with pytest.raises(UsageError, match="no such folder"):
        folders.detect(str(tmp_path / "nowhere"))


def test_scan_gaps_orphans_missing(tmp_path):
    root = make_download(str(tmp_path / "dl"))
    data = os.path.join(root, "tfrecord")
    sc = folders.scan(root)
    assert sc.folder == data
    assert [s.id for s in sc.shards] == [0, 1, 5]
    assert [(s.count, s.rows) for s in sc.shards] == [(3, 4), (2, 3), (4, 5)] and sc.total == 9
    assert sc.shards[0].tfrecord == os.path.join(data, "00000.tfrecord")
    assert sc.shards[0].parquet == os.path.join(data, "00000.parquet")
    # a gap has no file at all; an orphan shard (4: no stats file) is listed once, as orphans (it used to be a gap
    # too, and validate then said it had no file at all)
    assert sc.gaps == [2]
    assert sorted(sc.files) == [0, 1, 3, 4, 5] and sorted(sc.files[4]) == [".parquet", ".tfrecord"]
    assert sc.missing_tfrecord == [3]
    assert sc.orphans == [os.path.join(data, "00004.parquet"), os.path.join(data, "00004.tfrecord")]
    assert sorted(folders.list_done(data)) == [0, 1, 3, 5]


def test_concurrent_scan_equals_sequential(tmp_path):
    root = make_download(str(tmp_path / "dl"))
    assert folders.scan(root, threads=8) == folders.scan(root, threads=1)
    # on an object store (memory://) the default is the thread pool; the result is the same as the local one's
    mem = "memory://folders-test/dl"
    fs = fsspec.filesystem("memory")
    for dirpath, _, files in os.walk(root):
        for name in files:
            p = os.path.join(dirpath, name)
            fs.pipe(mem + p[len(root):], open(p, "rb").read())
    seq, conc = folders.scan(mem, threads=1), folders.scan(mem)
    assert seq == conc
    assert [s.id for s in conc.shards] == [0, 1, 5] and conc.gaps == [2] and conc.missing_tfrecord == [3]
    assert isinstance(folders.detect(mem), folders.DownloadFolder)
    fs.rm("/folders-test", recursive=True)


@pytest.mark.parametrize("template,index,num", [
    ("{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}", 0, 4),
    ("{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}", 41454, 41455),
    ("{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}", 7, 123456),
    ("tfrecord/{SHARD_INDEX}.tfrecord", 12, 100),
    ("laion-train.tfrecord-{SHARD_INDEX}-of-{NUM_SHARDS}", 3, 10),
    ("{SPLIT}/{DATASET}-{SPLIT}-{SHARD_X_OF_Y}.{FILEFORMAT}", 3, 10),
    ("{SPLIT}/{DATASET}-{SPLIT}-{SHARD_X_OF_Y}.{FILEFORMAT}", 7, 123456),
    ("train/laion-train-{SHARD_X_OF_Y}.tfrecord", 3, 10),
])
def test_namer_matches_tfds(template, index, num):
    from laionprep._env import import_tf

    import_tf()
    import tensorflow_datasets as tfds

    tpl = tfds.core.ShardedFileTemplate(data_dir="/", template=template, dataset_name="laion", split="train",
                                        filetype_suffix="tfrecord")
    want = tpl.relative_filepath(shard_index=index, num_shards=num)
    assert folders.format_template(template, index, num, dataset="laion", split="train") == want
    if template == folders.names.RESHARD_LAYOUT:  # a reshard's shard: SPLIT/NAME-SPLIT-XXXXX-of-YYYYY.tfrecord
        assert folders.shard_name("laion", "train", index, num) == want
        assert want.startswith("train/") and want.endswith(".tfrecord")  # FLIP globs OUT/train/*.tfrecord
        literal = tpl.replace(template=folders.reshard_template("laion", "train"))  # as counts.json records it
        assert literal.relative_filepath(shard_index=index, num_shards=num) == want and literal.is_valid(want)
        assert folders.names.RESHARD_FILE_RE.match(want.split("/")[1])
    # counts.json's template (split written in) names the same file, under any split name (--split-alias)
    assert folders.names.fix_split(folders.names.RESHARD_LAYOUT, "train").replace(
        "{DATASET}", "laion").replace("{FILEFORMAT}", "tfrecord") == folders.reshard_template("laion", "train")
    assert folders.format_template(folders.reshard_template("laion", "train"), index, num) == \
        folders.shard_name("laion", "train", index, num)


def test_scan_lists_an_unreadable_stats_file_and_strict_readers_get_a_data_error(tmp_path):
    from laionprep.errors import DataError
    from laionprep.folders.shardscan import scan

    d = tmp_path / "tfrecord"
    d.mkdir()
    for sid in (0, 1):
        (d / f"{sid:05d}.tfrecord").write_bytes(b"")
        (d / f"{sid:05d}.parquet").write_bytes(b"")
    (d / "00000_stats.json").write_text('{"count": 2, "successes": 2}')
    (d / "00001_stats.json").write_text('{"count": 2, "succ')  # cut short
    sc = scan(str(d))
    assert [s.id for s in sc.shards] == [0] and list(sc.unreadable) == [1] and sc.gaps == []
    with pytest.raises(DataError, match="shard 00001: _stats.json cannot be read") as e:
        sc.require_readable()
    assert "--quarantine" in e.value.fix
