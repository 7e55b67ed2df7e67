"""``laionprep reshard``'s config: every option declared once, as a field with its flag (``laionprep.options``).

Light on purpose (no Beam): ``cli.py`` builds the reshard parser from it on every start.
"""
from __future__ import annotations

import dataclasses
from dataclasses import MISSING

from laionprep import manifest as lmanifest
from laionprep import feature_names, options
from laionprep.datasets import FilterOverrides, Filters
from laionprep.folders import names
from laionprep.options import option


@dataclasses.dataclass(frozen=True)
class ReshardConfig(FilterOverrides):
    """``laionprep reshard``'s config; each field with a flag is the CLI option (``laionprep.options``), so a new
    option is one line here.  The filter flags (``FilterOverrides``) are download's, applied to no filters unless
    ``--default-filters``."""

    sources: tuple[str, ...] = option("sources", None, "img2dataset TFRecord folders (a download DIR or DIR/tfrecord)",
                                      default=MISSING, nargs="+", metavar="SRC", parse=tuple)
    output: str = option("--output", None, "output folder OUT (local or gs://)", default=MISSING, required=True,
                         output=False)
    name: str = option("--name", None, "dataset name in the file names (snake_case, e.g. laion_demo)",
                       default=MISSING, required=True)
    split: str = option("--split", None, "name of the main split (default train)", default="train")
    num_shards: int | None = option("--num-shards", int, "output shards per split", exclusive="size")
    shard_size_mb: float = option(  # target size of an output shard, computed from the INPUT bytes
        "--shard-size-mb", float, "target shard size, from the input bytes (default 1024)", default=1024.0,
        exclusive="size")
    dataset: str | None = option("--dataset", None, "dataset spec (default: from the sources' manifests)")
    default_filters: bool = option(  # the download already applied them
        "--default-filters", bool, "start from the dataset's default filters", default=False, group="filters")
    min_side: int | None = option("--min-side", int, "keep images whose original short side >= this (pixels)",
                                  group="filters")
    max_aspect: float | None = option("--max-aspect", float, "keep long side / short side <= this", group="filters")
    min_caption_chars: int | None = option("--min-caption-chars", int, "keep captions at least this long (stripped)",
                                           group="filters")
    max_caption_chars: int | None = option("--max-caption-chars", int, "keep captions at most this long (stripped)",
                                           group="filters")
    keep_keys: str | None = option("--keep-keys", None, "keep only these keys/uids (.txt, .parquet or .npy)",
                                   metavar="FILE", group="filters", exclusive="keys")
    drop_keys: str | None = option("--drop-keys", None, "drop these keys/uids (.txt, .parquet or .npy)",
                                   metavar="FILE", group="filters", exclusive="keys")
    keys_column: str | None = option("--keys-column", None, "column the key lists match (default: uid if present, "
                                     "else key)", group="filters")
    validation_fraction: float = option(
        "--validation-fraction", float, "fraction of records (by a stable hash of the key) for the validation split",
        default=0.0, group="output")
    validation_split: str = option("--validation-split", None, "name of that split (default validation)",
                                   default="validation", group="output")
    shuffle: bool = option("--shuffle", bool, "shuffle input order and records within shards (seeded)",
                           default=False, group="output")
    seed: int = option("--seed", int, default=0, group="output")
    shuffle_buffer_mb: float = option("--shuffle-buffer-mb", float, "per-split shuffle buffer of a worker",
                                      default=256.0, group="output")
    file_format: str = option(  # a parameter: the files differ (pipeline.parameters omits the default)
        "--format", None, "shard file format: tfrecord (streamed: FLIP, tf.data), array_record (random access: "
        "tfds.data_source, Grain) or both (each shard in both formats, one pass); the records are the same",
        default="tfrecord", choices=list(names.FORMAT_CHOICES),
        group="output")
    drop_columns: tuple[str, ...] = option(
        "--drop-columns", None, "comma-separated columns to remove, e.g. exif,error_message,status", default=(),
        cli_default=None, parse=options.csv, group="output")
    feature_names: tuple[tuple[str, str], ...] = option(
        "--feature-names", None, "rename record keys, NEW=OLD,... or a preset (big_vision: image=jpg,texts=txt, "
        "what big_vision's LiT/CLIPPO configs read)", default=(), cli_default=None, parse=feature_names.parse,
        group="output")
    image_size: int | None = option(
        "--image-size", int, "re-encode each image to this short side in px (a low-resolution copy for low-resolution "
        "training; never upscaled; img2dataset's encoder settings)", metavar="N", group="output")
    restart: bool = option("--restart", bool, "move the outputs of an earlier run in OUT (other parameters or "
                           "inputs, or a clean redo) to OUT/_previous/<UTC time>/ and start fresh", default=False,
                           group="output", output=False)
    beam_args: tuple[str, ...] = dataclasses.field(default=(), metadata=lmanifest.RUN_ONLY)  # runner, workers...

    def filters(self, spec=None) -> Filters:
        return self.apply(spec.default_filters if (self.default_filters and spec is not None) else Filters(), spec)
