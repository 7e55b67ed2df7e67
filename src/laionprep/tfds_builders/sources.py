"""The two kinds of folder ``build-tfds`` registers, scanned without reading a record.

* a **download folder** ``DIR`` (``laionprep download`` / img2dataset output): ``DIR/tfrecord/NNNNN.tfrecord``,
  each complete shard marked by ``NNNNN_stats.json`` whose ``successes`` is the shard's record count;
* a **resharded folder** ``OUT`` (``laionprep reshard``): ``OUT/SPLIT/NAME-SPLIT-XXXXX-of-YYYYY.tfrecord`` (or the
  older flat ``OUT/NAME-SPLIT.tfrecord-XXXXX-of-YYYYY``: counts.json's template says which) and ``OUT/counts.json``
  with the exact count of every shard (written last: it marks the folder complete).

Counts come only from these files.  Everything that keeps a count from being established is reported as a
:class:`Problem` (a gap in the numbering, a shard without stats, an unreadable stats file, a missing file, a size
that contradicts the count); :mod:`register` refuses to register while there are problems unless told to
register the complete shards only.  Listing and stats reads are batched (one directory listing with sizes, one
concurrent ``cat`` of all stats files on object stores), so 41,455 shards scan in seconds.
"""
from __future__ import annotations

import dataclasses
import json

from laionprep import fs as lfs
from laionprep import folders
from laionprep.errors import DataError, UsageError
from laionprep.folders.shardscan import list_sizes, read_many
MIN_RECORD_BYTES = 16  # framing overhead of one TFRecord record


@dataclasses.dataclass(frozen=True)
class SourceShard:
    split: str
    number: int  # img2dataset shard id, or the shard index in counts.json
    url: str  # the TFRecord file
    count: int
    size: int


@dataclasses.dataclass(frozen=True)
class Problem:
    kind: str  # gap | no_stats | no_tfrecord | bad_stats | size | missing | incomplete
    number: int | None
    message: str


@dataclasses.dataclass
class Source:
    kind: str  # "download" | "resharded"
    root: str  # DIR or OUT
    data_folder: str  # DIR/tfrecord or OUT
    dataset: str | None  # dataset spec name, from the manifest
    manifest: dict
    splits: dict[str, list[SourceShard]]  # the shards whose count is established, in order
    problems: list[Problem]
    reshard_name: str | None = None
    templates: dict[str, str] = dataclasses.field(default_factory=dict)  # counts.json filename templates
    num_shards: dict[str, int] = dataclasses.field(default_factory=dict)  # counts.json shard counts
    # ``reshard --format both``: {file format: {split: shards}} of the same records under the other format's names
    # (counts.json's alternative_templates); ``splits`` and these hold the shards present in every format
    alternatives: dict[str, dict[str, list[SourceShard]]] = dataclasses.field(default_factory=dict)
    alternative_templates: dict[str, dict[str, str]] = dataclasses.field(default_factory=dict)  # {format: {split: t}}

    @property
    def num_examples(self) -> dict[str, int]:
        return {s: sum(x.count for x in shards) for s, shards in self.splits.items()}


def detect(path: str) -> Source:
    """Scan ``path``: a download folder DIR (or DIR/tfrecord) or a resharded folder."""
    path = str(path).rstrip("/") or "/"
    if not lfs.exists(path):
        raise DataError(f"source folder not found: {path}", where="--source",
                        fix="pass a `laionprep download` output folder or a `laionprep reshard` output folder")
    try:
        folder = folders.detect(path, kinds=("resharded", "download"))
    except UsageError:
        folder = None
    if isinstance(folder, folders.ReshardFolder):
        return scan_resharded(path)
    if isinstance(folder, folders.DownloadFolder):
        return scan_download(path)
    if any(".tfrecord-" in n for n in list_sizes(path)) or lfs.glob(lfs.join(path, "*", "*-of-*.tfrecord")):
        raise DataError("this looks like a resharded folder without counts.json: the reshard did not finish",
                        where=path, fix="re-run `laionprep reshard` to completion (counts.json is written last)")
    raise DataError("not a download folder (no tfrecord/ with NNNNN_stats.json) nor a resharded folder "
                    "(no counts.json)", where=path,
                    fix="pass the folder given to `laionprep download --output` or `laionprep reshard --output`")


def _manifest(folder: str) -> dict:
    p = lfs.join(folder, "manifest.json")
    if lfs.exists(p):
        try:
            return lfs.read_json(p)
        except ValueError:
            return {}
    return {}


def _dataset_of(manifest: dict) -> str | None:
    from laionprep.datasets import dataset_of

    return dataset_of(manifest)


def scan_download(path: str) -> Source:
    folder = folders.download_folder(path)
    root, data = folder.root, folder.data
    manifest = _manifest(root) if root != data else {}
    sizes = list_sizes(data)
    by_id = folders.group_files(sizes)
    stats_urls = {sid: lfs.join(data, f["_stats.json"]) for sid, f in by_id.items() if "_stats.json" in f}
    contents = read_many(list(stats_urls.values()))
    shards: list[SourceShard] = []
    problems: list[Problem] = []
    for sid in sorted(by_id):
        files = by_id[sid]
        if "_stats.json" not in files:
            problems.append(Problem("no_stats", sid, f"shard {sid:05d}: {', '.join(sorted(files.values()))} without "
                                                     f"{sid:05d}_stats.json: the shard did not finish, its count "
                                                     f"cannot be established"))
            continue
        raw = contents.get(stats_urls[sid])
        count = None
        if not isinstance(raw, Exception):
            try:
                count = int(json.loads(raw)["successes"])
            except (ValueError, KeyError, TypeError):
                count = None
        if count is None or count < 0:
            problems.append(Problem("bad_stats", sid, f"shard {sid:05d}: {files['_stats.json']} is unreadable or has "
                                                      f"no 'successes' count"))
            continue
        if ".tfrecord" not in files:
            problems.append(Problem("no_tfrecord", sid, f"shard {sid:05d}: stats file but no {sid:05d}.tfrecord"))
            continue
        size = sizes[files[".tfrecord"]]
        if (count == 0) != (size == 0) or size < count * MIN_RECORD_BYTES:
            problems.append(Problem("size", sid, f"shard {sid:05d}: {files['.tfrecord']} has {size} bytes but the "
                                                 f"stats file says {count} records"))
            continue
        shards.append(SourceShard("train", sid, lfs.join(data, files[".tfrecord"]), count, size))
    if by_id:
        for sid in range(max(by_id)):
            if sid not in by_id:
                problems.append(Problem("gap", sid, f"shard {sid:05d}: no files at all (a gap in the shard numbering)"))
    problems.sort(key=lambda p: (p.number if p.number is not None else -1, p.kind))
    dl = (manifest.get("stages") or {}).get("download") or {}
    if manifest.get("status") not in (None, "complete"):
        problems.append(Problem("incomplete", None, f"the download's manifest says status={manifest.get('status')!r} "
                                                    f"({dl.get('shards_done', '?')}/{dl.get('shards_expected', '?')} "
                                                    f"shards done)"))
    elif dl.get("shards_expected") and by_id and max(by_id) + 1 < int(dl["shards_expected"]):
        problems.append(Problem("incomplete", None, f"the manifest expects {dl['shards_expected']} shards, the folder "
                                                    f"has shards up to {max(by_id):05d}"))
    if not shards and not problems:
        raise DataError("no shards in the download folder", where=data,
                        fix="run `laionprep download` first (or point --source at its output folder)")
    return Source(kind="download", root=root, data_folder=data, dataset=_dataset_of(manifest), manifest=manifest,
                  splits={"train": shards} if shards else {}, problems=problems)


def scan_resharded(path: str) -> Source:
    counts_url = lfs.join(path, "counts.json")
    try:
        counts = lfs.read_json(counts_url)
        splits_in = counts["splits"]
        name = counts.get("name")
    except (ValueError, KeyError, TypeError) as e:
        raise DataError(f"counts.json is unreadable: {type(e).__name__}: {e}", where=counts_url,
                        fix="re-run `laionprep reshard` to rewrite it") from None
    manifest = _manifest(path)
    listed: dict[str, dict[str, int]] = {}  # sub-folder ('' = OUT) -> {file: size}, one listing each

    def size_of(rel: str) -> int | None:
        sub, _, base = rel.rpartition("/")
        if sub not in listed:
            folder = lfs.join(path, sub) if sub else path
            listed[sub] = list_sizes(folder) if lfs.exists(folder) else {}
        return listed[sub].get(base)

    def scan_split(split: str, template: str, n: int, lengths: list[int]) -> list[SourceShard]:
        shards = []
        for i, count in enumerate(lengths):
            fname = folders.format_template(template, i, n)
            size = size_of(fname)
            if size is None:
                problems.append(Problem("missing", i, f"{split} shard {i}: {fname} is missing"))
                continue
            # an empty TFRecord file has 0 bytes; an empty ArrayRecord file still has its header and index
            framed = folders.names.file_format_of(fname) == "array_record"
            if (count == 0) != (size == 0) and not (framed and size) or size < count * MIN_RECORD_BYTES:
                problems.append(Problem("size", i, f"{split} shard {i}: {fname} has {size} bytes but counts.json says "
                                                   f"{count} records"))
                continue
            shards.append(SourceShard(split, i, lfs.join(path, fname), count, size))
        return shards

    splits: dict[str, list[SourceShard]] = {}
    templates: dict[str, str] = {}
    num_shards: dict[str, int] = {}
    alternatives: dict[str, dict[str, list[SourceShard]]] = {}
    alt_templates: dict[str, dict[str, str]] = {}
    problems: list[Problem] = []
    for split, info in splits_in.items():
        try:
            template = info["filename_template"]
            n = int(info["num_shards"])
            lengths = [int(x) for x in info["shard_lengths"]]
            total = int(info["num_examples"])
        except (KeyError, TypeError, ValueError) as e:
            raise DataError(f"counts.json: split {split!r} lacks {e}", where=counts_url,
                            fix="re-run `laionprep reshard` to rewrite it") from None
        if len(lengths) != n or sum(lengths) != total:
            raise DataError(f"counts.json: split {split!r} is inconsistent: {n} shards, {len(lengths)} lengths, "
                            f"sum {sum(lengths)} != num_examples {total}", where=counts_url,
                            fix="re-run `laionprep reshard` to rewrite it")
        templates[split] = template
        num_shards[split] = n
        by_format = {fmt: scan_split(split, t, n, lengths) for fmt, t in folders.names.split_templates(info).items()}
        complete = set.intersection(*({sh.number for sh in v} for v in by_format.values()))
        by_format = {fmt: [sh for sh in v if sh.number in complete] for fmt, v in by_format.items()}
        splits[split] = by_format.pop(folders.names.file_format_of(template))
        for fmt, shards in by_format.items():
            alternatives.setdefault(fmt, {})[split] = shards
            alt_templates.setdefault(fmt, {})[split] = info["alternative_templates"][fmt]
    return Source(kind="resharded", root=path, data_folder=path, dataset=_dataset_of(manifest), manifest=manifest,
                  splits=splits, problems=problems, reshard_name=name, templates=templates,
                  num_shards=num_shards, alternatives=alternatives, alternative_templates=alt_templates)
