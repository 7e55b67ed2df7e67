"""Shard file names: the one place that knows TFDS's filename template (``tfds.core.ShardedFileTemplate``).

Pure string formatting (no TFDS import), checked against TFDS's own class in tests/test_folders.py.
"""
from __future__ import annotations

# TFDS's default template; a reshard output's files and counts.json's ``filename_template`` use it.
DEFAULT_TEMPLATE = "{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}"
# The same template with dataset, split and file format filled in, as counts.json records it.
RESHARD_TEMPLATE = "{name}-{split}.tfrecord-{{SHARD_INDEX}}-of-{{NUM_SHARDS}}"


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


def reshard_template(name: str, split: str) -> str:
    """counts.json's ``filename_template`` of a reshard output's split."""
    return RESHARD_TEMPLATE.format(name=name, split=split)


def shard_name(name: str, split: str, index: int, num_shards: int) -> str:
    """``NAME-SPLIT.tfrecord-XXXXX-of-YYYYY``: one output shard of a reshard (TFDS's default naming)."""
    return format_template(DEFAULT_TEMPLATE, index, num_shards, dataset=name, split=split)


def shard_names(name: str, split: str, num_shards: int) -> list[str]:
    return [shard_name(name, split, i, num_shards) for i in range(num_shards)]
