"""What validation finds: :class:`Problem` (each with a kind, a message and a precise location) and the kinds."""
from __future__ import annotations

import dataclasses

# kind -> (check, one-line description).  The check is one of the four families of the issue.
KINDS: dict[str, tuple[str, str]] = {
    # integrity
    "truncated": ("integrity", "the file ends inside a record"),
    "bad_length_crc": ("integrity", "a record's length field fails its CRC; the rest of the file is unreadable"),
    "bad_data_crc": ("integrity", "a record's bytes fail their CRC (changed after writing)"),
    "unreadable_file": ("integrity", "the file cannot be opened or read"),
    # schema
    "unparsable_record": ("schema", "the record is not a tf.train.Example"),
    "mixed_type": ("schema", "a key has more than one type across the dataset"),
    "wrong_type": ("schema", "a key's type differs from the declared one (features.json, or the dataset's column)"),
    "missing_key": ("schema", "a required key (or one other records have) is absent"),
    "bad_value": ("schema", "a value of the wrong shape (e.g. width with 0 or 2 values, empty key)"),
    # content
    "not_jpeg": ("content", "the image bytes are not a decodable JPEG"),
    "undecodable_image": ("content", "the image bytes do not decode"),
    "wrong_short_side": ("content", "the image's short side is not the download's image size"),
    "wrong_image_size": ("content", "the image's size does not follow the download's resize mode"),
    "size_mismatch": ("content", "width/height features differ from the decoded image"),
    "empty_caption": ("content", "the caption is empty"),
    "bad_caption": ("content", "the caption is not valid UTF-8"),
    "duplicate_key": ("content", "the same key appears in more than one record"),
    "format_mismatch": ("content", "a shard's copy in the other file format (reshard --format both) holds other "
                                   "records"),
    "sha256_mismatch": ("content", "the sha256 feature does not match the stored image bytes"),
    "sha256_malformed": ("content", "the sha256 feature is not 64 hex digits"),
    # accounting
    "count_mismatch": ("accounting", "records in a shard != the count its metadata gives"),
    "parquet_mismatch": ("accounting", "records and the shard parquet's success rows name different keys"),
    "missing_shard": ("accounting", "a shard number with no shard (a gap, or fewer shards than expected)"),
    "incomplete_shard": ("accounting", "shard files without a _stats.json (an unfinished or killed download)"),
    "missing_file": ("accounting", "a file the shard needs is missing (tfrecord, parquet or stats)"),
    "unexpected_file": ("accounting", "a shard file the counts file does not list"),
    "manifest_mismatch": ("accounting", "totals differ from manifest.json"),
    "incomplete_download": ("accounting", "manifest.json's status is not complete (an unfinished download, or "
                                          "shards quarantined): resume the download"),
    "tfds_shard_length": ("accounting", "dataset_info.json's shard length differs from the records counted"),
    "tfds_unreadable": ("accounting", "TFDS cannot load the folder"),
    "parameters_mismatch": ("accounting", "the shards do not match the manifest's parameters (e.g. a re-run with "
                                          "other parameters over old shards); redo the stage with --restart"),
    "bad_metadata": ("accounting", "a metadata file (stats, counts, manifest, dataset_info) is unreadable"),
}

CHECK_ORDER = ("integrity", "schema", "content", "accounting")

# Problems that are not one shard's (dataset-wide types, the manifest, TFDS metadata): --quarantine moves no shard
# for them and they keep the exit code 1.  Every other kind found in a download shard moves that shard.
NOT_PER_SHARD = {"mixed_type", "wrong_type", "manifest_mismatch", "tfds_shard_length", "tfds_unreadable",
                 "unexpected_file", "missing_shard", "incomplete_download",
                 "parameters_mismatch"}
# What a resumed download repairs by itself: after --quarantine these are left to it (exit 0, listed).
LEFT_TO_DOWNLOAD = {"missing_shard", "incomplete_download"}


@dataclasses.dataclass
class Problem:
    kind: str
    message: str
    file: str | None = None  # path relative to the validated folder
    record: int | None = None  # record index within the file (0-based)
    offset: int | None = None  # byte offset of the record's frame
    key: str | None = None  # the record's key, when it could be read
    count: int = 1  # records (or shards) this problem stands for
    unit: int | None = None  # index of the shard (internal: quarantine)
    shard: int | None = None  # download shard id of a problem found from the listing (no unit): quarantine

    @property
    def check(self) -> str:
        return KINDS.get(self.kind, ("other", ""))[0]

    def where(self) -> str:
        parts = []
        if self.file:
            parts.append(self.file)
        if self.record is not None:
            parts.append(f"record {self.record}")
        if self.offset is not None:
            parts.append(f"byte {self.offset:,}")
        if self.key:
            parts.append(f"key {self.key}")
        return " ".join(parts) or "-"

    def to_dict(self) -> dict:
        d = {"kind": self.kind, "check": self.check, "message": self.message, "file": self.file,
             "record": self.record, "offset": self.offset, "key": self.key, "count": self.count}
        return {k: v for k, v in d.items() if v is not None}
