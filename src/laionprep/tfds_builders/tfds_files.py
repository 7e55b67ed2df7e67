"""The TFDS files of a registered dataset — names, DatasetInfo / SplitInfo, metadata writing — shared by the
build-tfds stage (:mod:`register`) and the image-folder writer (:mod:`image_folder`).  Shard names come from
:mod:`laionprep.folders.names` (TFDS's template, checked against TFDS in tests/test_folders.py).
"""
from __future__ import annotations

import os
import re
import tempfile

from laionprep import fs as lfs
from laionprep.errors import UsageError
from laionprep.folders import names

NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")
DEFAULT_TEMPLATE = names.DEFAULT_TEMPLATE
IN_PLACE_DOWNLOAD_TEMPLATE = "tfrecord/{SHARD_INDEX}.tfrecord"
RECORD_KEY = "laionprep"  # key of the registration record in the dataset's metadata.json

def our_builder_names() -> set[str]:
    from laionprep.tfds_builders import BUILDERS

    return set(BUILDERS)


def check_name(name: str, version: str) -> None:
    import tensorflow_datasets as tfds

    if not NAME_RE.match(name or ""):
        raise UsageError(f"invalid dataset name {name!r}", where="--name",
                         fix="use lower case letters, digits and underscores, starting with a letter "
                             "(e.g. laion400m_tfrecord)")
    if not tfds.core.Version.is_valid(version):
        raise UsageError(f"invalid version {version!r}", where="--version", fix="use MAJOR.MINOR.PATCH, e.g. 1.0.0")
    if name not in our_builder_names() and name in set(tfds.list_builders(with_community_datasets=False)):
        raise UsageError(f"{name!r} is a dataset in the TFDS catalog: tfds.load({name!r}) would use TFDS's own "
                         f"code and features instead of these files", where="--name",
                         fix=f"choose another name, e.g. {name}_tfrecord")


def _info_dir(url: str) -> str:
    """The folder to name in TFDS objects (informational: TFDS re-derives it when reading).  etils.epath knows local
    paths, gs:// and s3://; fsspec-only schemes such as memory:// get a neutral placeholder."""
    url = str(url)
    if "://" not in url or url.startswith(("gs://", "s3://", "file://")):
        return url
    return "/" + url.split("://", 1)[1]


def dataset_info(*, name: str, version: str, dataset_dir: str, features, split_infos, description: str,
                 homepage: str | None, citation: str | None, metadata: dict, supervised_keys=None,
                 file_format: str = "tfrecord", alternative_file_formats: tuple[str, ...] | list[str] = ()):
    import tensorflow_datasets as tfds
    from tensorflow_datasets.core import file_adapters

    identity = tfds.core.dataset_info.DatasetIdentity(
        name=name, version=tfds.core.Version(version), data_dir=_info_dir(dataset_dir), module_name="")
    info = tfds.core.DatasetInfo(builder=identity, description=description, features=features,
                                 homepage=homepage or None, citation=citation or None,
                                 metadata=tfds.core.MetadataDict(metadata), supervised_keys=supervised_keys,
                                 alternative_file_formats=list(alternative_file_formats) or None)
    # array_record: what tfds.data_source needs (random access); TFDS 4.9's tf.data reader refuses that format, so a
    # folder holding both is registered as tfrecord (tfds.load streams it) with array_record as alternative
    # (tfds.data_source picks it)
    info.set_file_format(file_adapters.file_format_from_suffix(file_format))
    info.set_splits(tfds.core.SplitDict(split_infos))
    return info


def split_info(split: str, name: str, template: str, dataset_dir: str, lengths: list[int], num_bytes: int,
               file_format: str = "tfrecord"):
    import tensorflow_datasets as tfds

    tpl = tfds.core.ShardedFileTemplate(data_dir=_info_dir(dataset_dir), template=template, dataset_name=name,
                                        split=split, filetype_suffix=file_format)
    return tfds.core.SplitInfo(name=split, shard_lengths=list(lengths), num_bytes=int(num_bytes),
                               filename_template=tpl)


def shard_file_name(split: str, name: str, template: str, index: int, num_shards: int,
                    file_format: str = "tfrecord") -> str:
    return names.format_template(template, index, num_shards, dataset=name, split=split, fileformat=file_format)


def shard_file_names(split: str, name: str, template: str, num_shards: int, file_format: str = "tfrecord") -> list[str]:
    return [shard_file_name(split, name, template, i, num_shards, file_format) for i in range(num_shards)]


def write_metadata_files(info, target: str, *, last: str = "dataset_info.json") -> None:
    """Write the info's files into ``target`` (any filesystem), each atomically, ``dataset_info.json`` last: TFDS
    treats a folder with ``dataset_info.json`` as a finished dataset."""
    with tempfile.TemporaryDirectory(prefix="laionprep-tfds-") as tmp:
        info.write_to_directory(tmp)
        names = sorted(os.listdir(tmp), key=lambda n: (n == last, n))
        for n in names:
            with open(os.path.join(tmp, n), "rb") as f:
                lfs.atomic_write_bytes(lfs.join(target, n), f.read())


def read_record(dataset_dir: str) -> dict | None:
    p = lfs.join(dataset_dir, "metadata.json")
    if not lfs.exists(p):
        return None
    try:
        return lfs.read_json(p).get(RECORD_KEY)
    except (ValueError, AttributeError):
        return None


def _now() -> str:
    from laionprep.manifest import now

    return now()
