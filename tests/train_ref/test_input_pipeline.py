"""The tf.data pipelines, on real TFRecords / TFDS datasets / image folders written by the tests."""
from __future__ import annotations

import io
import json
import os
import shutil

import numpy as np
import pytest

from laionprep._env import import_tf
from laionprep.errors import DataError, UsageError
from laionprep.train_ref import input_pipeline as ip
from laionprep.train_ref import tokenizer as tokenizer_lib

from flip_helpers import write_records, write_tfds

tf = import_tf()


@pytest.fixture(scope="module")
def tok(vocab_file):
    return tokenizer_lib.Tokenizer(tokenizer_lib.load_vocab(vocab_file), max_len=16)


def _take(ds, n):
    return [{k: v.numpy() for k, v in b.items()} for b in ds.take(n)]


def test_sources_resolve(flip_data, tmp_path):
    src = ip.resolve_source(flip_data)  # img2dataset layout: DIR/tfrecord/*.tfrecord
    assert src.kind == "files" and len(src.files) == 4
    assert ip.resolve_source(os.path.join(flip_data, "tfrecord", "*.tfrecord")).files == src.files
    assert ip.resolve_source(src.files[0]).files == [src.files[0]]
    # reshard-style names: the wanted split is picked by name
    rs = tmp_path / "resharded"
    rs.mkdir()
    for k, f in enumerate(src.files):
        split = "train" if k < 3 else "validation"
        shutil.copy(f, rs / f"laion-{split}.tfrecord-{k:05d}-of-00004")
    assert len(ip.resolve_source(str(rs), split="train").files) == 3
    assert len(ip.resolve_source(str(rs), split="validation").files) == 1
    with pytest.raises(UsageError):
        ip.resolve_source(str(rs), split="test")
    with pytest.raises(DataError):
        ip.resolve_source(str(tmp_path / "nothing" / "*.tfrecord"))
    with pytest.raises(UsageError):
        ip.resolve_source("no_such_tfds_dataset_xyz", data_dir=str(tmp_path))
    with pytest.raises(UsageError):
        ip.resolve_source("")


def test_stage_folders_resolve_through_laionprep_folders(flip_data, tmp_path):
    """A download's complete shards only (a shard without its stats file is a killed run's), and a reshard output's
    shards of one split from its counts.json (a stray file under another name is not read)."""
    files = ip.resolve_source(flip_data).files
    dl = tmp_path / "download" / "tfrecord"
    dl.mkdir(parents=True)
    for k, f in enumerate(files):
        shutil.copy(f, dl / f"{k:05d}.tfrecord")
        if k != 2:  # shard 2 never finished
            (dl / f"{k:05d}_stats.json").write_text(json.dumps({"count": 256, "successes": 256}))
    got = ip.resolve_source(str(tmp_path / "download"))
    assert [os.path.basename(f) for f in got.files] == ["00000.tfrecord", "00001.tfrecord", "00003.tfrecord"]
    assert "complete shards" in got.description
    rs = tmp_path / "rs"
    rs.mkdir()
    for k, f in enumerate(files[:3]):
        shutil.copy(f, rs / f"x-train.tfrecord-{k:05d}-of-00003")
    shutil.copy(files[3], rs / "x-train.tfrecord-00003-of-00004")  # a stray file of an older plan
    (rs / "counts.json").write_text(json.dumps({"name": "x", "splits": {"train": {
        "filename_template": "x-train.tfrecord-{SHARD_INDEX}-of-{NUM_SHARDS}", "num_shards": 3,
        "shard_lengths": [256] * 3, "num_examples": 768}}}))
    got = ip.resolve_source(str(rs), split="train")
    assert [os.path.basename(f) for f in got.files] == [f"x-train.tfrecord-{k:05d}-of-00003" for k in range(3)]
    with pytest.raises(UsageError, match="it has: train"):
        ip.resolve_source(str(rs), split="validation")


def test_train_batches(flip_data, tok):
    ds = ip.train_dataset(flip_data, tok, image_size=32, batch_size=8, seed=0, shuffle_buffer=32)
    b1, b2 = _take(ds, 2)
    assert b1["image"].shape == (8, 32, 32, 3) and b1["image"].dtype == np.uint8
    assert b1["text"].shape == (8, 16) and b1["text"].dtype == np.int32
    assert (b1["text"][:, 0] == tok.cls_id).all()
    assert b1["image"].std() > 10  # real pixels, not blank
    assert not np.array_equal(b1["image"], b2["image"])
    # captions came through: the colour words of the demo captions are there
    words = {tok.vocab[i] for i in b1["text"].ravel()}
    assert words & {"red", "green", "blue", "yellow", "purple", "orange"}


def test_same_seed_same_stream_other_seed_other_stream(flip_data, tok):
    kw = dict(image_size=32, batch_size=8, shuffle_buffer=64)
    a = _take(ip.train_dataset(flip_data, tok, seed=1, **kw), 3)
    b = _take(ip.train_dataset(flip_data, tok, seed=1, **kw), 3)
    c = _take(ip.train_dataset(flip_data, tok, seed=2, **kw), 3)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x["image"], y["image"])
        np.testing.assert_array_equal(x["text"], y["text"])
    assert not all(np.array_equal(x["image"], z["image"]) for x, z in zip(a, c))


def test_iterator_checkpoint_resumes_exactly(flip_data, tok, tmp_path):
    def make():
        return iter(ip.train_dataset(flip_data, tok, image_size=32, batch_size=8, seed=3, shuffle_buffer=64))

    it = make()
    for _ in range(3):
        next(it)
    tf.train.Checkpoint(iterator=it).write(str(tmp_path / "pos"))
    expected = [next(it) for _ in range(3)]
    it2 = make()
    tf.train.Checkpoint(iterator=it2).read(str(tmp_path / "pos")).assert_existing_objects_matched()
    got = [next(it2) for _ in range(3)]
    for e, g in zip(expected, got):
        np.testing.assert_array_equal(e["image"].numpy(), g["image"].numpy())
        np.testing.assert_array_equal(e["text"].numpy(), g["text"].numpy())


def test_per_process_file_sharding(flip_data):
    src = ip.resolve_source(flip_data)
    seen = []
    for p in range(2):
        assert ip.shard_files(src.files, p, 2) == src.files[p::2]
        ds = ip._pair_examples(src, seed=0, process_index=p, process_count=2, shuffle_files=True, repeat=False,
                               keys=("key",))
        seen.append({ex["key"].numpy() for ex in ds})
    assert not seen[0] & seen[1]  # no example read by two processes
    assert len(seen[0] | seen[1]) == 1024  # and none missed
    with pytest.raises(DataError):
        ip.shard_files(src.files, 0, 8)  # more hosts than files


def test_decode_and_crop_equals_crop_of_full_decode(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    arr = (rng.random((120, 160, 3)) * 255).astype(np.uint8)
    buf = io.BytesIO()
    # 4:4:4 (no chroma subsampling): with 4:2:0, libjpeg's chroma upsampling differs in the crop's edge column
    Image.fromarray(arr).save(buf, format="JPEG", quality=95, subsampling=0)
    data = tf.constant(buf.getvalue())
    seed = tf.constant([7, 9], tf.int64)
    got = ip.decode_random_crop(data, seed, 96, flip=False).numpy()  # crop < 1.5x96: decoded at full scale
    # the same window cut from the fully decoded image
    seeds = tf.random.experimental.stateless_split(seed, 2)
    win = ip._crop_window(tf.image.extract_jpeg_shape(data), seeds[0], (0.5, 1.0), (3 / 4, 4 / 3)).numpy()
    full = tf.io.decode_jpeg(data, channels=3)[win[0]:win[0] + win[2], win[1]:win[1] + win[3]]
    want = ip._to_uint8(tf.image.resize(full, [96, 96])).numpy()
    assert win[2] * win[3] >= 0.5 * 120 * 160 * 0.99 and (win[2] < 120 or win[3] < 160)
    assert min(win[2], win[3]) < 144
    assert np.abs(got.astype(int) - want.astype(int)).max() <= 1
    # flip is a mirror of the same crop or the crop itself
    flipped = ip.decode_random_crop(data, seed, 96, flip=True).numpy()
    assert np.array_equal(flipped, got) or np.array_equal(flipped, got[:, ::-1])


@pytest.mark.parametrize("out_size,ratio", [(32, 8), (64, 8), (120, 4), (200, 2), (300, 1)])
def test_large_crops_decode_at_reduced_dct_scale(out_size, ratio):
    """A window whose 1/r-scale copy keeps >= 3/4 of the output size is decoded at 1/r scale (the largest such r);
    the result matches decoding it all and resizing."""
    from PIL import Image

    yy, xx = np.mgrid[0:480, 0:640]
    arr = np.stack([xx * 255 // 639, yy * 255 // 479, (xx + yy) * 255 // 1118], -1).astype(np.uint8)  # smooth
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=95)
    data = tf.constant(buf.getvalue())
    win = tf.constant([40, 60, 400, 520], tf.int32)
    dec = ip.decode_jpeg_crop(data, win, out_size)
    assert dec.shape[0] == 400 // ratio and dec.shape[1] == 520 // ratio
    got = ip._resize(dec, out_size).numpy().astype(int)
    want = ip._resize(tf.io.decode_jpeg(data, channels=3)[40:440, 60:580], out_size).numpy().astype(int)
    assert np.abs(got - want).mean() < 2.0


def test_dct_scaled_crops_cover_the_snapped_window_exactly():
    """At 1/r scale the decoded pixels are those of the window rounded down to multiples of r (snap_window), not a
    copy shifted by up to r-1 px: against an antialiased resize of the full-resolution crop, the snapped window is
    far closer than the window asked for."""
    from PIL import Image

    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[0:480, 0:640]
    arr = np.stack([127 + 120 * np.sin(xx / 7.0), 127 + 120 * np.cos(yy / 5.0), (xx ^ yy) % 256], -1)
    arr = np.clip(arr + rng.normal(0, 4, arr.shape), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=95)
    data = tf.constant(buf.getvalue())
    win = tf.constant([37, 51, 403, 519], tf.int32)  # odd: off the 1/2, 1/4 and 1/8 grids
    r, _ = ip.dct_scale(win, 224)
    assert int(r) == 2
    got = ip._resize(ip.decode_jpeg_crop(data, win, 224), 224).numpy().astype(float)

    def ref(w):
        full = tf.io.decode_jpeg(data, channels=3)[w[0]:w[0] + w[2], w[1]:w[1] + w[3]]
        return tf.image.resize(tf.cast(full, tf.float32), [224, 224], antialias=True).numpy()

    snapped = ip.snap_window(win, r).numpy()
    assert list(snapped) == [36, 50, 402, 518]
    err_snapped = np.mean((got - ref(snapped)) ** 2)
    err_asked = np.mean((got - ref(win.numpy())) ** 2)
    assert err_snapped * 4 < err_asked
    assert 10 * np.log10(255 ** 2 / err_snapped) > 35


def test_png_in_the_jpg_column_still_reads(tmp_path, tok):
    out = str(tmp_path / "mixed")
    write_records(out, 24, files=1, png_every=2)  # every other record is a PNG
    b = _take(ip.train_dataset(out, tok, image_size=32, batch_size=24, shuffle_buffer=1), 1)[0]
    assert b["image"].shape == (24, 32, 32, 3) and b["image"].std() > 10


def test_records_without_txt_are_a_data_error(tmp_path, tok):
    path = tmp_path / "bad.tfrecord"
    with tf.io.TFRecordWriter(str(path)) as w:
        ex = tf.train.Example(features=tf.train.Features(feature={
            "jpg": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"x"]))}))
        w.write(ex.SerializeToString())
    with pytest.raises(DataError, match="txt"):
        ip.train_dataset(str(path), tok, image_size=32, batch_size=2)
    empty = tmp_path / "empty.tfrecord"
    empty.write_bytes(b"")
    with pytest.raises(DataError):
        ip.train_dataset(str(empty), tok, image_size=32, batch_size=2)


def _store_tfds_pairs(data_dir: str, flip_data: str, n: int = 40):
    import tensorflow_datasets as tfds

    src = ip.resolve_source(flip_data)
    rows = []
    for ex in ip._pair_examples(src, seed=0, process_index=0, process_count=1, shuffle_files=False, repeat=False,
                                keys=("jpg", "txt")).take(n):
        rows.append({"jpg": tf.io.decode_jpeg(ex["jpg"], channels=3).numpy(), "txt": ex["txt"].numpy().decode()})
    return write_tfds(data_dir, "flip_test_pairs",
                      tfds.features.FeaturesDict({"jpg": tfds.features.Image(encoding_format="jpeg"),
                                                  "txt": tfds.features.Text()}), {"train": rows})


def test_tfds_dataset_by_name_and_by_directory(tmp_path, flip_data, tok):
    data_dir = str(tmp_path / "tfds")
    bdir = _store_tfds_pairs(data_dir, flip_data)
    by_name = ip.resolve_source("flip_test_pairs", data_dir=data_dir)
    by_dir = ip.resolve_source(bdir)
    by_parent = ip.resolve_source(os.path.dirname(bdir))  # ROOT/NAME -> newest version
    assert by_name.kind == by_dir.kind == by_parent.kind == "tfds"
    for src in (by_name, by_dir):
        b = _take(ip.train_dataset(src, tok, image_size=32, batch_size=8, shuffle_buffer=16), 2)
        assert b[0]["image"].shape == (8, 32, 32, 3) and b[0]["image"].std() > 10
        assert (b[1]["text"][:, 0] == tok.cls_id).all()
    caps = [c.numpy().decode() for c in ip.caption_dataset(bdir)]
    assert len(caps) == 40 and all(caps)
    # per-process split of a TFDS dataset covers it without overlap
    halves = [list(ip._pair_examples(by_dir, seed=0, process_index=p, process_count=2, shuffle_files=False,
                                     repeat=False, keys=("txt", "jpg"))) for p in range(2)]
    assert len(halves[0]) + len(halves[1]) == 40
    # the train pipeline's iterator over TFDS can be checkpointed too
    it = iter(ip.train_dataset(by_dir, tok, image_size=32, batch_size=8, shuffle_buffer=16, seed=5))
    next(it)
    tf.train.Checkpoint(iterator=it).write(str(tmp_path / "pos"))
    want = next(it)["image"].numpy()
    it2 = iter(ip.train_dataset(by_dir, tok, image_size=32, batch_size=8, shuffle_buffer=16, seed=5))
    tf.train.Checkpoint(iterator=it2).read(str(tmp_path / "pos")).assert_existing_objects_matched()
    np.testing.assert_array_equal(next(it2)["image"].numpy(), want)


def test_eval_folder(eval_folder):
    ed = ip.eval_dataset(eval_folder, image_size=32, batch_size=64)
    assert ed.num_examples == 240 and ed.num_batches == 4
    assert ed.label_names[0] == "blue_circle"  # sorted folder names
    assert ed.class_names[0] == "blue circle"  # the prompt name from class_names.txt, matched by name
    assert ed.class_names[ed.label_names.index("red_star")] == "red star"
    batches = list(ed.dataset.as_numpy_iterator())
    assert len(batches) == 4
    mask = np.concatenate([b["mask"] for b in batches])
    labels = np.concatenate([b["label"] for b in batches])
    assert mask.sum() == 240 and (labels[mask] >= 0).all() and (labels[~mask] == -1).all()
    assert np.bincount(labels[mask]).tolist() == [8] * 30
    # two processes: each has its own share, padded to the same number of batches
    parts = [ip.eval_dataset(eval_folder, image_size=32, batch_size=32, process_index=p, process_count=2)
             for p in range(2)]
    assert parts[0].num_batches == parts[1].num_batches == 4
    assert sum(int(np.sum(b["mask"])) for p in parts for b in p.dataset.as_numpy_iterator()) == 240


def test_eval_tfds_classification_dataset(tmp_path, eval_folder):
    import tensorflow_datasets as tfds

    root = os.path.join(eval_folder, "val")
    names = sorted(os.listdir(root))
    rows = []
    for label, name in enumerate(names):
        for fn in sorted(os.listdir(os.path.join(root, name)))[:2]:
            rows.append({"image": os.path.join(root, name, fn), "label": label})
    data_dir = str(tmp_path / "tfds")
    write_tfds(data_dir, "flip_test_shapes",
               tfds.features.FeaturesDict({"image": tfds.features.Image(encoding_format="jpeg"),
                                           "label": tfds.features.ClassLabel(names=names)}),
               {"validation": rows})
    ed = ip.eval_dataset("flip_test_shapes", data_dir=data_dir, image_size=32, batch_size=16)
    assert ed.num_examples == 60 and ed.label_names == names
    assert ed.class_names[names.index("orange_cross")] == "orange cross"  # no file: '_' -> ' '
    b = next(ed.dataset.as_numpy_iterator())
    assert b["image"].shape == (16, 32, 32, 3) and b["image"].std() > 10
    cn = tmp_path / "names.txt"
    cn.write_text("\n".join(f"the {n}" for n in names) + "\n")  # no name match: taken by position
    ed2 = ip.eval_dataset("flip_test_shapes", data_dir=data_dir, image_size=32, batch_size=16,
                          class_names_file=str(cn))
    assert ed2.class_names[0] == f"the {names[0]}"
    cj = tmp_path / "names.json"
    cj.write_text(json.dumps({n: n.upper() for n in names}))  # {label name: prompt name}
    ed3 = ip.eval_dataset("flip_test_shapes", data_dir=data_dir, image_size=32, batch_size=16,
                          class_names_file=str(cj))
    assert ed3.class_names == [n.upper() for n in names]
    # prompt names stored with the dataset (what `build-tfds --mode image-folder` writes) are used by default
    bdir = os.path.join(data_dir, "flip_test_shapes", "1.0.0")
    with open(os.path.join(bdir, "metadata.json"), "w") as f:
        json.dump({"class_names": [f"a {n}" for n in names]}, f)
    assert ip.eval_dataset(bdir, image_size=32, batch_size=16).class_names[1] == f"a {names[1]}"


def test_wordnet_ids_need_a_class_names_file():
    with pytest.raises(UsageError, match="WordNet"):
        ip.prompt_names(["n01440764", "n01443537"])
    assert ip.prompt_names(["golden_retriever", "tree-frog"]) == ["golden retriever", "tree frog"]


def test_position_saved_by_another_pipeline_is_a_clear_error(flip_data, tok, tmp_path):
    """An iterator position saved by a pipeline of another shape (here: no shuffle buffer; also an older
    laionprep's graph) is refused with the fix, not restored and not a TensorFlow traceback."""
    from laionprep.train_ref.checkpointing import DataIteratorHandler, DataIteratorRestore, DataIteratorSave

    kw = dict(image_size=32, batch_size=8, seed=0)
    saved = iter(ip.train_dataset(flip_data, tok, shuffle_buffer=1, **kw))
    next(saved)
    DataIteratorHandler().save(tmp_path, DataIteratorSave(saved))
    same = iter(ip.train_dataset(flip_data, tok, shuffle_buffer=1, **kw))
    DataIteratorHandler().restore(tmp_path, DataIteratorRestore(same))  # the same shape restores
    other = iter(ip.train_dataset(flip_data, tok, shuffle_buffer=16, **kw))
    with pytest.raises(DataError, match="does not fit this run's input pipeline") as e:
        DataIteratorHandler().restore(tmp_path, DataIteratorRestore(other))
    assert "checkpoint_position=False" in e.value.fix
