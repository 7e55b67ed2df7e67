"""``laionprep build-tfds --mode image-folder``: an ImageNet-style folder -> a TFDS classification dataset.

Input layout (what the CLIPA PyTorch seed documents for ImageNet)::

    FOLDER/train/<class>/*.jpg
    FOLDER/val/<class>/*.jpg          (any split names; a split may lack some classes)
    FOLDER/class_names.txt            optional: one prompt name per line, in sorted class-folder order (names
                                      that are the folder names with spaces are matched by name, in any order)

Output: the agreed TFDS folder ``ROOT/NAME/VERSION`` with one split per split folder and the features ``image``
(``Image``, JPEG), ``label`` (``ClassLabel`` whose names are the sorted class-folder names) and ``file_name``
(``<class>/<file>``).  The prompt names (from ``--class-names`` or ``FOLDER/class_names.txt``; ``.txt`` one per
line in label order, or ``.json`` ``{folder: name}``) are stored in the dataset's ``metadata.json`` and as
``class_names.txt`` next to it; :func:`class_names` returns them (or the folder names, ``_`` -> space).

JPEG files are stored as they are; other formats (PNG, CMYK JPEG, ...) are re-encoded to RGB JPEG so TFDS decodes
every image to uint8 HxWx3.  Examples are written in a fixed pseudo-random order (hash of the file name) so that
``split[:N]`` mixes classes.  The version folder is built under a temporary name and renamed into place.
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import math
import os
import shutil
import time
import uuid

from laionprep import fs as lfs
from laionprep.errors import DataError, UsageError

IMAGE_EXT = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
SHARD_BYTES = 256 << 20


@dataclasses.dataclass(frozen=True)
class ImageFolderConfig:
    source: str
    name: str
    data_dir: str
    version: str = "1.0.0"
    class_names: str | None = None  # mapping file; default FOLDER/class_names.txt when present
    split: str | None = None  # treat FOLDER itself as this one split (FOLDER/<class>/*.jpg)
    description: str | None = None
    shard_bytes: int = SHARD_BYTES


@dataclasses.dataclass
class ImageFolderResult:
    dataset_dir: str
    name: str
    version: str
    splits: dict[str, int]
    classes: list[str]
    prompts: list[str] | None
    reencoded: int
    seconds: float

    def summary_rows(self):
        rows = [("dataset dir", self.dataset_dir), ("classes", len(self.classes))]
        rows += [(f"split {s}", f"{n:,} images") for s, n in self.splits.items()]
        rows.append(("class names", "from mapping file" if self.prompts else "folder names"))
        if self.reencoded:
            rows.append(("re-encoded to JPEG", self.reencoded))
        rows.append(("seconds", f"{self.seconds:.2f}"))
        return rows


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXT) and not name.startswith(".")


def _subdirs(path: str) -> list[str]:
    return sorted(e.name for e in os.scandir(path) if e.is_dir() and not e.name.startswith("."))


def discover(source: str, split: str | None = None) -> dict[str, dict[str, list[str]]]:
    """``{split: {class: [image paths]}}``."""
    if not os.path.isdir(source):
        raise DataError(f"image folder not found: {source}", where="--source",
                        fix="pass a folder laid out as SPLIT/CLASS/*.jpg (e.g. val/n01440764/*.JPEG)")
    if split is not None:
        layout = {split: source}
    else:
        layout = {}
        for d in _subdirs(source):
            full = os.path.join(source, d)
            if any(_is_image(n) for n in os.listdir(full)):
                raise UsageError(f"{full} holds images directly: FOLDER looks like one split of class folders",
                                 where="--source",
                                 fix="pass --split NAME to register FOLDER as that one split, or lay it out as "
                                     "FOLDER/SPLIT/CLASS/*.jpg")
            layout[d] = full
    out: dict[str, dict[str, list[str]]] = {}
    for s, path in layout.items():
        classes = {}
        for c in _subdirs(path):
            files = sorted(os.path.join(path, c, n) for n in os.listdir(os.path.join(path, c)) if _is_image(n))
            classes[c] = files
        if classes:
            out[s] = classes
    if not out:
        raise DataError("no SPLIT/CLASS/image files found", where=source,
                        fix="lay the folder out as SPLIT/CLASS/*.jpg (e.g. val/n01440764/ILSVRC2012_val_00000293.JPEG)")
    return out


def read_mapping(path: str, classes: list[str]) -> list[str]:
    """Prompt names in label order from a ``.txt`` (one per line, label order) or ``.json`` ({folder: name})."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    if path.endswith(".json"):
        try:
            mapping = json.loads(text)
        except ValueError as e:
            raise DataError(f"unreadable class-name mapping: {e}", where=path,
                            fix="write {folder: name} JSON") from None
        missing = [c for c in classes if c not in mapping]
        if missing:
            raise DataError(f"class-name mapping lacks {len(missing)} class folder(s), e.g. {missing[:3]}",
                            where=path, fix="give a name for every class folder")
        return [str(mapping[c]) for c in classes]
    names = [line.strip() for line in text.splitlines() if line.strip()]
    if len(names) != len(classes):
        raise DataError(f"class-name file has {len(names)} names for {len(classes)} class folders", where=path,
                        fix="one prompt name per line, one line per class folder, in sorted folder order")
    # Names that are the folder names with spaces ("red circle" for red_circle/) are matched by name, whatever
    # their order in the file; anything else (e.g. "tench" for n01440764/) is taken in label order.
    by_folder = {n.replace(" ", "_").lower(): n for n in names}
    if len(by_folder) == len(names) and set(by_folder) == {c.lower() for c in classes}:
        return [by_folder[c.lower()] for c in classes]
    return names


def _jpeg(path: str) -> tuple[bytes, bool]:
    """(JPEG bytes, re-encoded?) of an image file."""
    from PIL import Image

    with open(path, "rb") as f:
        data = f.read()
    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.format == "JPEG" and im.mode in ("RGB", "L"):
                return data, False
            buf = io.BytesIO()
            im.convert("RGB").save(buf, format="JPEG", quality=95)
            return buf.getvalue(), True
    except Exception as e:  # PIL raises many types for broken files
        raise DataError(f"unreadable image: {type(e).__name__}: {e}", where=path,
                        fix="remove or replace the file") from None


def build_image_folder(source: str, name: str, data_dir: str, version: str = "1.0.0", *,
                       class_names_file: str | None = None, split: str | None = None, progress=None,
                       **options) -> ImageFolderResult:
    """Write ``source`` (SPLIT/CLASS/*.jpg) as TFDS classification dataset ``name`` under ``data_dir``."""
    return run(ImageFolderConfig(source=source, name=name, data_dir=data_dir, version=version,
                                 class_names=class_names_file, split=split, **options), progress=progress)


def run(cfg: ImageFolderConfig, *, progress=None) -> ImageFolderResult:
    import tensorflow_datasets as tfds

    from laionprep.tfds_builders import tfds_files
    from laionprep.tfrecord import write_records

    t0 = time.time()
    tfds_files.check_name(cfg.name, cfg.version)
    if not lfs.is_local(cfg.data_dir) or not lfs.is_local(cfg.source):
        raise UsageError("image-folder mode reads and writes local folders", where="--data-dir/--source",
                         fix="build locally, then copy ROOT/NAME/VERSION to the bucket (gsutil -m cp -r)")
    found = discover(cfg.source, cfg.split)
    classes = sorted({c for per in found.values() for c in per})
    mapping = cfg.class_names or (os.path.join(cfg.source, "class_names.txt")
                                  if os.path.exists(os.path.join(cfg.source, "class_names.txt")) else None)
    prompts = read_mapping(mapping, classes) if mapping else None
    features = tfds.features.FeaturesDict({
        "image": tfds.features.Image(encoding_format="jpeg"),
        "label": tfds.features.ClassLabel(names=classes),
        "file_name": tfds.features.Text(),
    })
    label_of = {c: i for i, c in enumerate(classes)}
    parent = os.path.join(lfs.get_fs(cfg.data_dir)[1], cfg.name)
    final = os.path.join(parent, cfg.version)
    os.makedirs(parent, exist_ok=True)
    tmp = os.path.join(parent, f".{cfg.version}.tmp-{uuid.uuid4().hex[:10]}")
    os.makedirs(tmp)
    reencoded = 0
    counts: dict[str, int] = {}
    try:
        infos = []
        for split, per_class in found.items():
            items = [(f"{c}/{os.path.basename(p)}", p, label_of[c]) for c, files in per_class.items() for p in files]
            items.sort(key=lambda it: hashlib.sha256(f"{split}/{it[0]}".encode()).digest())
            total_bytes = sum(os.path.getsize(p) for _, p, _ in items)
            n_shards = max(1, min(len(items), math.ceil(total_bytes / cfg.shard_bytes)))
            names = tfds_files.shard_file_names(split, cfg.name, tfds_files.DEFAULT_TEMPLATE, n_shards)
            task = progress.add_task(f"images {split}", total=len(items)) if progress is not None else None
            lengths, nbytes, done = [], 0, 0
            for k in range(n_shards):
                chunk = items[k * len(items) // n_shards:(k + 1) * len(items) // n_shards]

                def records(chunk=chunk):
                    nonlocal reencoded, done
                    for fname, path, label in chunk:
                        data, re_enc = _jpeg(path)
                        reencoded += re_enc
                        done += 1
                        if task is not None and done % 256 == 0:
                            progress.update(task, completed=done)
                        yield features.serialize_example({"image": data, "label": label, "file_name": fname})

                out = os.path.join(tmp, names[k])
                lengths.append(write_records(out, records()))
                nbytes += os.path.getsize(out)
            if task is not None:
                progress.update(task, completed=len(items))
            counts[split] = sum(lengths)
            infos.append(tfds_files.split_info(split, cfg.name, tfds_files.DEFAULT_TEMPLATE, final, lengths, nbytes))
        record = {"tool": "laionprep build-tfds --mode image-folder", "created": tfds_files._now(),
                  "source": os.path.abspath(cfg.source), "source_kind": "image_folder",
                  "class_names_file": os.path.abspath(mapping) if mapping else None}
        info = tfds_files.dataset_info(
            name=cfg.name, version=cfg.version, dataset_dir=final, features=features, split_infos=infos,
            description=cfg.description or (f"Labelled images from {os.path.abspath(cfg.source)} "
                                            f"({len(classes)} classes), for zero-shot evaluation."),
            homepage=None, citation=None, supervised_keys=("image", "label"),
            metadata={"class_names": prompts or [c.replace("_", " ") for c in classes],
                      "class_names_from": "mapping file" if prompts else "folder names", tfds_files.RECORD_KEY: record})
        info.write_to_directory(tmp)
        with open(os.path.join(tmp, "class_names.txt"), "w", encoding="utf-8") as f:
            f.write("\n".join(prompts or [c.replace("_", " ") for c in classes]) + "\n")
        lfs.replace_local_dir(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ImageFolderResult(dataset_dir=final, name=cfg.name, version=cfg.version, splits=counts, classes=classes,
                             prompts=prompts, reencoded=reencoded, seconds=time.time() - t0)


def class_names(name: str, data_dir: str, version: str | None = None) -> list[str]:
    """Prompt names in label order for an image-folder dataset (what zero-shot evaluation turns into prompts)."""
    import tensorflow_datasets as tfds

    path = lfs.join(data_dir, name, version) if version else None
    if path is None:
        base = lfs.join(data_dir, name)
        versions = sorted((v for v in (os.listdir(base) if os.path.isdir(base) else [])
                           if tfds.core.Version.is_valid(v)), key=tfds.core.Version)
        if not versions:
            raise DataError(f"no dataset {name!r} under {data_dir}", where=base,
                            fix="build it with `laionprep build-tfds --mode image-folder`")
        path = lfs.join(base, versions[-1])
    meta = lfs.join(path, "metadata.json")
    if lfs.exists(meta):
        names = lfs.read_json(meta).get("class_names")
        if names:
            return list(names)
    b = tfds.builder_from_directory(path)
    return [n.replace("_", " ") for n in b.info.features["label"].names]
