"""--quarantine moves a bad shard out of the download (nothing deleted) and a resumed download fetches it again."""
from __future__ import annotations

import glob
import hashlib
import json
import os

import validate_helpers as vh

from laionprep.demo.run import DemoConfig, download_demo
from laionprep.validate import ValidateConfig, validate


def _fingerprint(path):
    """Sorted (key, sha256 of the stored jpg) of a shard: img2dataset's thread pool may order records differently."""
    out = []
    for r in vh.read_records(path):
        ex = vh.tf().train.Example.FromString(r)
        f = ex.features.feature
        out.append((f["key"].bytes_list.value[0], hashlib.sha256(f["jpg"].bytes_list.value[0]).hexdigest()))
    return sorted(out)


def test_quarantine_then_resumed_download_fetches_the_shard_again(copy_download, demo_download, demo_server,
                                                                   tmp_path, cli):
    d = copy_download()  # == tmp_path/laion, the download folder of a demo workdir tmp_path
    assert d == str(tmp_path / "laion")
    bad = vh.shard_paths(d, 1)
    offs = vh.frame_offsets(bad["tfrecord"])
    with open(bad["tfrecord"], "r+b") as f:
        f.seek(offs[2] + 40)
        b = f.read(1)
        f.seek(offs[2] + 40)
        f.write(bytes([b[0] ^ 0x10]))
    damaged = {k: open(p, "rb").read() for k, p in bad.items()}

    # exit 0: every problem was in the moved shard, what is left is sound (the README's `... --quarantine &&
    # laionprep download ...` then runs the download); it used to exit 1 after moving
    assert cli(d, "--quarantine", "--decode-fraction", 0) == 0
    (qdir,) = glob.glob(os.path.join(d, "_quarantine", "*"))
    moved = sorted(os.listdir(qdir))
    assert moved == ["00001.parquet", "00001.tfrecord", "00001_stats.json", "why.json"]
    for k, p in bad.items():  # moved, byte for byte; nothing deleted
        assert not os.path.exists(p)
        assert open(os.path.join(qdir, os.path.basename(p)), "rb").read() == damaged[k]
    why = json.load(open(os.path.join(qdir, "why.json")))
    (entry,) = why["shards"]
    assert entry["shard"] == 1 and entry["kinds"] == ["bad_data_crc"]
    assert entry["examples"][0]["record"] == 2 and entry["examples"][0]["offset"] == offs[2]
    # nothing foreign lands in the image folder (img2dataset's resume reads every *.json there)
    assert sorted(os.listdir(os.path.join(d, "tfrecord"))) == sorted(
        f"{sid:05d}{ext}" for sid in (0, 2, 3) for ext in (".tfrecord", ".parquet", "_stats.json"))

    # before the download is resumed, the shard is reported missing (not silently ignored)
    rep = validate(ValidateConfig(d, workers=1, decode_fraction=0))
    assert [p.file for p in rep.by_kind("missing_shard")] == ["tfrecord/00001.tfrecord"]
    assert rep.exit_code == 1 and rep.by_kind("incomplete_download")  # the manifest no longer says complete
    assert json.load(open(os.path.join(d, "manifest.json")))["status"] == "incomplete"

    # resume: the same demo rows from the same server into the same folder (the demo of workdir tmp_path)
    from tests.conftest import relocate_download

    relocate_download(d, str(tmp_path / "source" / "metadata"))
    m = json.load(open(os.path.join(demo_download, "manifest.json")))
    download_demo(DemoConfig(workdir=str(tmp_path), rows=m["stages"]["metadata"]["rows"], processes=2, seed=0,
                             progress=False,
                             number_sample_per_shard=m["parameters"]["download"]["number_sample_per_shard"]),
                  demo_server)
    assert _fingerprint(bad["tfrecord"]) == _fingerprint(vh.shard_paths(demo_download, 1)["tfrecord"])
    for sid in (0, 2, 3):  # untouched shards were not downloaded again
        assert open(vh.shard_paths(d, sid)["tfrecord"], "rb").read() == \
            open(vh.shard_paths(demo_download, sid)["tfrecord"], "rb").read()
    assert cli(d, "--decode-fraction", 1) == 0
    assert os.listdir(os.path.join(d, "_quarantine"))  # still there: nothing is ever deleted


def test_a_problem_in_every_shard_moves_nothing(copy_download):
    """A wrong setting (here --image-size) flags every shard: that is not damage, so nothing is quarantined."""
    d = copy_download()
    rep = validate(ValidateConfig(d, workers=1, decode_fraction=0, image_size=400, quarantine=True))
    assert rep.counts == {"wrong_short_side": 190}
    assert rep.quarantined == [] and not os.path.exists(os.path.join(d, "_quarantine"))
    assert rep.exit_code == 1 and rep.remaining == {"wrong_short_side": 190}  # a problem left: exit 1
    assert any("wrong_short_side is in every shard" in n for n in rep.notes)
    assert sorted(os.listdir(os.path.join(d, "tfrecord"))) == sorted(
        f"{sid:05d}{ext}" for sid in range(4) for ext in (".tfrecord", ".parquet", "_stats.json"))


def test_quarantine_waits_for_no_running_stage(copy_download):
    """--quarantine moves files: while another laionprep command holds the folder's lock it is refused, and nothing
    moves; plain validation (read-only) still runs."""
    import pytest

    from laionprep import fs as lfs
    from laionprep.errors import UsageError

    d = copy_download()
    bad = vh.shard_paths(d, 1)
    os.truncate(bad["tfrecord"], os.path.getsize(bad["tfrecord"]) - 7)
    before = sorted(os.listdir(os.path.join(d, "tfrecord")))
    with lfs.exclusive_lock(d, "laionprep download"):
        with pytest.raises(UsageError, match="another laionprep download is running"):
            validate(ValidateConfig(path=d, quarantine=True, decode_fraction=0))
        assert sorted(os.listdir(os.path.join(d, "tfrecord"))) == before
        assert validate(ValidateConfig(path=d, decode_fraction=0)).exit_code == 1
    assert not os.path.exists(os.path.join(d, "_quarantine"))
    assert validate(ValidateConfig(path=d, quarantine=True, decode_fraction=0)).quarantined
