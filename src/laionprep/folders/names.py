"""Shard file names: the one place that knows TFDS's filename template (``tfds.core.ShardedFileTemplate``).

Pure string formatting (no TFDS import), checked against TFDS's own class in tests/test_folders.py.

A reshard output puts each split in its own folder, with names that END in ``.tfrecord``
(``OUT/train/NAME-train-00000-of-00004.tfrecord``): FLIP globs ``LAION_PATH/*.tfrecord``, so pointing it at
``OUT/train`` reads every train shard and nothing of another split.  TFDS reads the same files through the
split's ``filepathTemplate`` (a path relative to the dataset folder may name a sub-folder).  The older flat layout
(``OUT/NAME-SPLIT.tfrecord-XXXXX-of-YYYYY``, :data:`LEGACY_RESHARD_TEMPLATE`) is still read: every reader takes
the template from counts.json.
"""
from __future__ import annotations

import re

# TFDS's default template; build-tfds' symlink and copy registrations use it.
DEFAULT_TEMPLATE = "{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}"
# A reshard output's files, as a TFDS template (relative to OUT).
RESHARD_LAYOUT = "{SPLIT}/{DATASET}-{SPLIT}-{SHARD_X_OF_Y}.{FILEFORMAT}"
# The same template with dataset, split and file format filled in, as counts.json records it: with no {SPLIT}
# left, the template names the files of that split whatever the split is called (build-tfds --split-alias).
RESHARD_TEMPLATE = "{split}/{name}-{split}-{{SHARD_X_OF_Y}}.{fileformat}"
# The file formats a reshard writes: TFDS's ``FileFormat`` values, which are also its file suffixes.
FILE_FORMATS = ("tfrecord", "array_record")
# ``reshard --format both``: both formats from one pass, the TFRecords primary (counts.json's ``filename_template``,
# what FLIP and tfds.load read), the ArrayRecords their alternative (``alternative_templates``: tfds.data_source, Grain)
BOTH = "both"
FORMAT_CHOICES = FILE_FORMATS + (BOTH,)
# Reshard outputs written before the per-split folders (still readable through counts.json).
LEGACY_RESHARD_TEMPLATE = "{name}-{split}.tfrecord-{{SHARD_INDEX}}-of-{{NUM_SHARDS}}"
# What a reshard writes directly in OUT (old layout) or in OUT/SPLIT (current): stale ones are cleaned up.
RESHARD_FILE_RE = re.compile(r"^[a-z][a-z0-9_]*-[a-z][a-z0-9_]*"
                             r"(\.tfrecord-\d{5,}-of-\d{5,}|-\d{5,}-of-\d{5,}\.(tfrecord|array_record))$")


def digits(num_shards: int | None) -> int:
    """TFDS pads shard numbers to 5 digits, or more when the shard count needs them."""
    return max(5, len(str(num_shards))) if num_shards else 5


def format_template(template: str, index: int, num_shards: int | None, *, dataset: str = "", split: str = "",
                    fileformat: str = "tfrecord") -> str:
    """``template`` with TFDS's variables replaced, as ``ShardedFileTemplate.relative_filepath`` formats them."""
    d = digits(num_shards)
    i, n = f"{index:0{d}d}", f"{num_shards:0{d}d}" if num_shards else ""
    return (template.replace("{SHARD_X_OF_Y}", f"{i}-of-{n}").replace("{SHARD_INDEX}", i)
            .replace("{NUM_SHARDS}", n).replace("{SPLIT}", split).replace("{DATASET}", dataset)
            .replace("{FILEFORMAT}", fileformat))


def reshard_template(name: str, split: str, fileformat: str = "tfrecord") -> str:
    """counts.json's ``filename_template`` of a reshard output's split (relative to OUT)."""
    return RESHARD_TEMPLATE.format(name=name, split=split, fileformat=fileformat)


def template_folder(template: str) -> str:
    """The sub-folder a template's files are in ('' for files directly in the dataset folder)."""
    return template.rsplit("/", 1)[0] if "/" in template else ""


def fix_split(template: str, split: str) -> str:
    """``template`` with ``{SPLIT}`` filled in: it then names ``split``'s files under any split name."""
    return template.replace("{SPLIT}", split)


def shard_name(name: str, split: str, index: int, num_shards: int, fileformat: str = "tfrecord") -> str:
    """``SPLIT/NAME-SPLIT-XXXXX-of-YYYYY.tfrecord`` (or ``.array_record``): one output shard of a reshard, relative
    to OUT."""
    return format_template(reshard_template(name, split, fileformat), index, num_shards)


def shard_names(name: str, split: str, num_shards: int, fileformat: str = "tfrecord") -> list[str]:
    return [shard_name(name, split, i, num_shards, fileformat) for i in range(num_shards)]


def formats_of(choice: str) -> tuple[str, ...]:
    """The file formats a ``--format`` choice writes, the primary first."""
    return FILE_FORMATS if choice == BOTH else (choice,)


def split_templates(info: dict) -> dict[str, str]:
    """``{file format: filename template}`` of one split of counts.json: the primary ``filename_template`` and the
    ``alternative_templates`` a ``--format both`` reshard adds (the same records under another format's names)."""
    primary = info["filename_template"]
    return {file_format_of(primary): primary,
            **dict(info.get("alternative_templates") or {})}


def file_format_of(path: str) -> str:
    """The record format of a shard file, from its name: ``array_record`` or ``tfrecord``."""
    return "array_record" if re.search(r"\.array_record(-\d+-of-\d+)?$", path) else "tfrecord"
