"""Do a folder's shards belong to its manifest's parameters?  (A re-run with other parameters over old shards is
refused by the stage runner since ``stage.check_rerun``; this finds such a folder made by hand or by an older
laionprep.)  Problems are ``parameters_mismatch``.

Download: img2dataset numbers shards per prefiltered file, in sorted file order, ``number_sample_per_shard``
consecutive rows each (``img2dataset/reader.py``), and a row's key is ``shard * 10**ceil(log10(per_shard)) +
row index``.  So every complete shard's parquet (one row per input row, success or not) must hold exactly the
``url`` values of its rows of ``prefiltered/``, key by key; the prefilter report must record the manifest's
filters.  Reads: the ``url`` column of each prefiltered file (one at a time) and ``key``/``url`` of each shard
parquet; no TFRecord.

Reshard: counts.json's splits, shard count and shard lengths must be the manifest's (parameters and
``stages.reshard``).
"""
from __future__ import annotations

import math
import posixpath
from typing import Any

from laionprep import fs as lfs
from laionprep.validate.problems import Problem

PREFILTER_REPORT = "_prefilter_report.json"  # ingest.prefilter.REPORT_NAME (validate does not import ingest)
_FIX = "the folder mixes outputs of runs with other parameters: redo it with `laionprep download ... --restart`"


def download(root: str, data: str, manifest: dict, shards: list) -> list[Problem]:
    """``parameters_mismatch`` problems of a download folder (``shards``: ``shardscan`` complete shards)."""
    params = manifest.get("parameters") or {}
    per_shard = (params.get("download") or {}).get("number_sample_per_shard")
    prefiltered = lfs.join(root, "prefiltered")
    if manifest.get("stage") != "download" or not isinstance(per_shard, int) or not lfs.exists(prefiltered):
        return []
    out: list[Problem] = []
    report_path = lfs.join(prefiltered, PREFILTER_REPORT)
    report = lfs.read_json(report_path) if lfs.exists(report_path) else {}
    if "filters" in report and report["filters"] != params.get("filters_applied"):
        out.append(Problem("parameters_mismatch", f"the prefilter output was made with filters {report['filters']}, "
                                                  f"the manifest says {params.get('filters_applied')}",
                           file=f"prefiltered/{PREFILTER_REPORT}"))
    by_id = {s.id: s for s in shards}
    files = sorted(p for p in lfs.glob(lfs.join(prefiltered, "*.parquet")))  # img2dataset's order
    oom = 10 ** math.ceil(math.log10(per_shard))
    sid = 0
    for f in files:
        urls = _url_column(f)  # Arrow, not Python strings: a LAION metadata file has ~13M rows
        for k in range(math.ceil(len(urls) / per_shard)):
            begin, end = k * per_shard, min(len(urls), (k + 1) * per_shard)
            s = by_id.pop(sid, None)
            if s is not None:
                bad = _shard_mismatch(s, sid, oom, urls.slice(begin, end - begin).to_pylist())
                if bad:
                    out.append(Problem("parameters_mismatch", f"shard {sid:05d} does not hold rows {begin}-{end - 1} "
                                       f"of prefiltered/{posixpath.basename(f)}: {bad}. {_FIX}",
                                       file=_rel(s.parquet, root)))
            sid += 1
    for s in sorted(by_id.values(), key=lambda s: s.id):
        out.append(Problem("parameters_mismatch", f"shard {s.id:05d} is beyond the {sid} shards the prefilter output "
                                                  f"makes with number_sample_per_shard={per_shard}. {_FIX}",
                           file=_rel(s.parquet, root)))
    return out


def _shard_mismatch(s, sid: int, oom: int, want: list[str]) -> str:
    try:
        t, removed = _table(s.parquet, ["key", "url"], with_removed=True)
    except Exception:  # a missing or unreadable parquet is the shard checks' problem, not this one
        return ""
    got: dict[int, Any] = {}
    for key, url in zip(t["key"], t["url"]):
        try:
            n = int(key)
        except (TypeError, ValueError):
            return f"key {key!r} is not img2dataset's"
        if n // oom != sid:
            return f"key {key} belongs to shard {n // oom}"
        got[n % oom] = url
    # rows `laionprep remove` took out (their count in the parquet's metadata) are the only ones that may be missing
    if len(t["key"]) + removed != len(want) or len(got) != len(t["key"]) or not all(0 <= i < len(want) for i in got):
        return f"{len(t['key'])} rows" + (f" (+{removed} removed by a list)" if removed else "") + \
            f" where the prefilter output gives {len(want)}"
    wrong = [i for i, u in got.items() if want[i] != u]
    return f"{len(wrong)} of its {len(want)} URLs differ (e.g. row {wrong[0]})" if wrong else ""


def reshard(manifest: dict, counts: dict) -> list[Problem]:
    """``parameters_mismatch`` problems of a reshard output: counts.json against the manifest."""
    params = manifest.get("parameters") or {}
    detail = (manifest.get("stages") or {}).get("reshard") or {}
    if manifest.get("stage") != "reshard" or not params:
        return []
    splits = counts.get("splits") or {}
    problems = []
    want_splits = [params.get("split")] + ([params.get("validation_split")]
                                           if (params.get("validation_fraction") or 0) > 0 else [])
    if params.get("name") != counts.get("name"):
        problems.append(f"name {counts.get('name')!r} but the manifest's parameters say {params.get('name')!r}")
    if sorted(splits) != sorted(want_splits):
        problems.append(f"splits {sorted(splits)} but the parameters make {sorted(want_splits)}")
    plan_shards = (detail.get("plan") or {}).get("num_shards")
    for split, s in splits.items():
        n = s.get("num_shards")
        if params.get("num_shards") is not None and n != params["num_shards"]:
            problems.append(f"split {split}: {n} shards but --num-shards {params['num_shards']}")
        elif plan_shards is not None and n != plan_shards:
            problems.append(f"split {split}: {n} shards but the manifest's plan has {plan_shards}")
        recorded = [sh.get("records") for sh in (detail.get("shards") or {}).get(split, [])]
        if recorded and recorded != list(s.get("shard_lengths") or []):
            problems.append(f"split {split}: shard lengths differ from the manifest's shards")
    return [Problem("parameters_mismatch", f"counts.json does not match manifest.json: {p}", file="counts.json")
            for p in problems]


REMOVED_KEY = b"laionprep.removed_by_list"  # folders.replace.REMOVED_KEY (validate does not import it)


def _table(path: str, columns: list[str], with_removed: bool = False):
    """The columns of a shard parquet (and, ``with_removed``, the rows ``laionprep remove`` took out of it)."""
    import pyarrow.parquet as pq

    with lfs.open_file(path) as f:
        t = pq.read_table(f, columns=columns)
    if not with_removed:
        return t.to_pydict()
    return t.to_pydict(), int((t.schema.metadata or {}).get(REMOVED_KEY, b"0"))


def _url_column(path: str):
    import pyarrow.parquet as pq

    with lfs.open_file(path) as f:
        return pq.read_table(f, columns=["url"]).column("url")


def _rel(path: str, root: str) -> str:
    p, r = str(path), str(root).rstrip("/") + "/"
    return p[len(r):] if p.startswith(r) else p
