"""``laionprep validate``: run the shard checks in parallel, then the checks that need the whole dataset.

Per shard (in worker processes, :mod:`.shard_check`): integrity, schema of each record, content, and the shard's
own accounting.  Across the dataset (here): one type per key, keys present in every record, keys unique, sha256
verdict, totals against ``manifest.json``, TFDS's own read.  Then optionally the report and the quarantine.
"""
from __future__ import annotations

import collections
import concurrent.futures as cf
import dataclasses
from dataclasses import MISSING
import multiprocessing
import os
import shutil
import time
from typing import Any

import numpy as np

from laionprep import fs as lfs
from laionprep import options, stage
from laionprep.options import option
from laionprep.errors import UsageError
from laionprep.validate import figures as lfigures
from laionprep.validate import key_check
from laionprep.validate import layout as llayout
from laionprep.validate.problems import CHECK_ORDER, KINDS, LEFT_TO_DOWNLOAD, NOT_PER_SHARD, Problem
from laionprep.validate.shard_check import KIND_NAMES, ShardResult, check_shard, result_summary

SHA256_MODES = ("auto", "stored", "off")
DEFAULT_MEMORY_BUDGET = 1 << 30
MAX_LISTED = 1000  # problems listed per kind in the report (all are counted)
# Kinds that a wrong setting makes appear everywhere: not quarantined when every shard has them.
SETTINGS_SENSITIVE = ("missing_key", "wrong_short_side", "wrong_image_size", "sha256_mismatch", "bad_value",
                      "empty_caption")


@dataclasses.dataclass(frozen=True)
class ValidateConfig:
    """``laionprep validate``'s options, each flag declared on its field (``laionprep.options``)."""

    path: str = option("path", None, "a download folder, a resharded folder or a TFDS folder", default=MISSING,
                       metavar="DIR")
    report: str | None = option("--report", None, "write report.json and report.html (with plots) there",
                                metavar="REPORT_DIR")
    decode_fraction: float = option("--decode-fraction", float, "share of images fully decoded, 0..1 (default "
                                    "0.01; every image's JPEG header is checked)", default=0.01)
    quarantine: bool = option("--quarantine", bool, "move every download shard with a problem to "
                              "DIR/_quarantine/ and mark the download incomplete, so the same download command "
                              "fetches them again; exit 0 when what is left is sound", default=False)
    workers: int = option("--workers", int, "processes (default: one per core)", default=0)
    dataset: str | None = option("--dataset", None,
                                 "dataset spec whose columns are required (default: the manifest's)")
    image_size: int | None = option("--image-size", int,
                                    "expected image size (default: the download's, from its manifest)")
    sha256: str = option("--sha256", None, "stored: sha256 must match the stored image bytes; auto (default): only "
                         "when the dataset's hashes are of the stored bytes (see docs/validate.md)", default="auto",
                         choices=list(SHA256_MODES))
    memory_budget: int = option("--memory-budget", options.size, "memory the duplicate-key check may use, all "
                                "processes together (e.g. 1GiB, 512MiB; default 1GiB): sizes its partitions on "
                                "local disk ($TMPDIR, key width + 8 bytes per record), never changes the report",
                                default=DEFAULT_MEMORY_BUDGET, metavar="SIZE")
    max_examples: int = 20  # problems kept with full detail, per kind and shard

    def check(self) -> None:
        if not 0.0 <= self.decode_fraction <= 1.0:
            raise UsageError(f"--decode-fraction must be within [0, 1], got {self.decode_fraction}",
                             where="--decode-fraction", fix="e.g. 0.01 decodes one image in a hundred, 1 all")
        if self.workers < 0:
            raise UsageError(f"--workers must be >= 0, got {self.workers}", where="--workers",
                             fix="0 (the default) uses one process per core")
        if self.sha256 not in SHA256_MODES:
            raise UsageError(f"unknown --sha256 mode {self.sha256!r}", where="--sha256",
                             fix="use one of: " + ", ".join(SHA256_MODES))
        if self.image_size is not None and self.image_size < 1:
            raise UsageError("--image-size must be >= 1", where="--image-size")
        if self.memory_budget < 1:
            raise UsageError(f"--memory-budget must be positive, got {self.memory_budget}", where="--memory-budget",
                             fix="e.g. 1GiB (the default) or 512MiB")
        if self.report:
            lfs.check_bucket(self.report, where="--report")  # before the work, not when writing the report

    @property
    def worker_count(self) -> int:
        return self.workers or os.cpu_count() or 1


@dataclasses.dataclass
class Report:
    kind: str
    folder: str
    config: dict
    problems: list[Problem]  # the first few of each kind, with their location
    counts: dict[str, int]  # kind -> records (or shards) affected, all of them
    totals: dict[str, Any]
    shards: list[dict]
    figures: dict[str, Any]
    notes: list[str]
    quarantined: list[dict] = dataclasses.field(default_factory=list)
    files: dict[str, str] = dataclasses.field(default_factory=dict)  # report.json / report.html paths
    # --quarantine only: the problems left once the bad shards were moved (kind -> count; None: no quarantine run),
    # the first of them, and the shards a resumed download fetches (moved or missing)
    remaining: dict[str, int] | None = None
    remaining_problems: list[Problem] = dataclasses.field(default_factory=list)
    left_to_download: list[int] = dataclasses.field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Sound: no problem at all; with --quarantine, none left in the shards that stayed (the moved and missing
        ones are for the download to fetch)."""
        if self.remaining is not None:
            return not self.remaining
        return not any(self.counts.values())

    @property
    def exit_code(self) -> int:
        """0: sound (or sound after --quarantine); 1: problems (left); usage errors exit 2 in the CLI."""
        return 0 if self.ok else 1

    def by_kind(self, kind: str) -> list[Problem]:
        return [p for p in self.problems if p.kind == kind]

    def problem_rows(self) -> list[list]:
        """One row per problem kind: check, kind, count, first location, first message."""
        rows = []
        order = {c: i for i, c in enumerate(CHECK_ORDER)}
        for kind in sorted(self.counts, key=lambda k: (order.get(KINDS.get(k, ("z",))[0], 9), k)):
            first = next((p for p in self.problems if p.kind == kind), None)
            rows.append([KINDS.get(kind, ("other",))[0], kind, self.counts[kind],
                         first.where() if first else "", first.message if first else ""])
        return rows

    def total_rows(self) -> list[tuple[str, Any]]:
        t = self.totals
        rows = [("folder kind", self.kind), ("shards", t["shards"]), ("records", t["records"]),
                ("images decoded", t["decoded"]), ("bytes read", f"{t['bytes']:,}"),
                ("problems (records or shards affected)", t["problems"]),
                ("seconds", f"{t['seconds']:.1f}"), ("records/s", f"{t['records_per_s']:,.0f}")]
        if self.quarantined:
            rows.append(("shards quarantined", len(self.quarantined)))
        return rows

    def to_dict(self) -> dict:
        return {"kind": self.kind, "folder": self.folder, "ok": self.ok, "config": self.config,
                "totals": self.totals, "problem_counts": self.counts,
                "problems": [p.to_dict() for p in self.problems], "notes": self.notes,
                "quarantined": self.quarantined, "remaining_after_quarantine": self.remaining,
                "left_to_download": self.left_to_download, "figures": self.figures, "shards": self.shards}


# ------------------------------------------------------------------------------------------------- running
def _pool(n: int) -> cf.ProcessPoolExecutor:
    """Worker processes without TensorFlow: forkserver (preloaded with the shard checks) where there is one."""
    method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    ctx = multiprocessing.get_context(method)
    if method == "forkserver":
        ctx.set_forkserver_preload(["laionprep.validate.shard_check"])
    return cf.ProcessPoolExecutor(max_workers=n, mp_context=ctx)


def _key_spill(config: ValidateConfig, lay, folder: str) -> key_check.KeySpill:
    os.makedirs(folder, exist_ok=True)
    return key_check.KeySpill(folder, config.memory_budget, len(lay.units), lay.expected_total,
                              processes=config.worker_count)


def _run_units(lay: llayout.Layout, workers: int, progress, keys: key_check.KeySpill,
               figures: lfigures.Figures) -> list[ShardResult]:
    """Check every shard; each result's keys go to ``keys`` and its histograms to ``figures`` as it arrives, so
    neither is held here per shard."""
    units = lay.units
    results: list[ShardResult | None] = [None] * len(units)
    task = progress.add_task("validate", total=len(units)) if progress is not None else None
    n = min(workers, len(units))
    if n <= 1:
        for u in units:
            results[u.index] = r = check_shard(u, lay.checks)
            keys.add(r)
            figures.add(r)
            if task is not None:
                progress.advance(task)
        return results  # type: ignore[return-value]
    pool = _pool(n)
    futs: list = []
    try:
        futs = [pool.submit(check_shard, u, lay.checks) for u in units]
        for fut in cf.as_completed(futs):
            r = fut.result()
            results[r.unit] = r
            keys.add(r)
            figures.add(r)
            if task is not None:
                progress.advance(task)
    except BaseException:  # Ctrl-C or a bug: stop now, do not work through the queued shards
        for f in futs:
            f.cancel()  # (shutdown's cancel_futures is skipped once the executor object is garbage-collected)
        for proc in list(getattr(pool, "_processes", {}).values()):
            proc.terminate()  # workers only read: stopping them mid-shard loses nothing
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    return results  # type: ignore[return-value]


def validate(config: ValidateConfig, *, progress=None) -> Report:
    """Validate the dataset folder ``config.path``; returns the :class:`Report` (and writes it with ``--report``)."""
    config.check()
    start = time.time()
    cpu_start = time.process_time()
    lay = llayout.build(config)
    if config.quarantine and lay.kind != "download":
        raise UsageError(f"--quarantine applies to download folders; this is a {lay.kind} folder",
                         where="--quarantine",
                         fix="re-run the stage that wrote this folder (reshard / build-tfds) instead")
    if config.report and lay.kind == "download" and lfs.is_inside(config.report, lay.data_folder):
        raise UsageError("the report folder is inside the image folder, where img2dataset's resume reads every "
                         "*.json as a finished shard", where="--report",
                         fix=f"write the report elsewhere, e.g. {lfs.join(lay.root, 'validation')}")
    # --quarantine moves shards: it holds the folder lock every stage takes, so no download runs meanwhile
    work = key_check.spill_folder()
    try:
        with stage.locked(lay.root if config.quarantine else None, "validate --quarantine"):
            return _validate(config, lay, start, cpu_start, progress, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


@dataclasses.dataclass
class _Findings:
    problems: list[Problem]
    counts: collections.Counter
    bad: dict[int, set[str]]  # download shard id (else unit index) -> the per-shard problem kinds it has
    notes: list[str]
    figures: dict


def _assess(config: ValidateConfig, lay, results: list[ShardResult], keys: key_check.KeySpill,
            unit_map: np.ndarray | None = None, figures: dict | None = None) -> _Findings:
    """Merge the per-shard results and run the dataset-wide checks (no data is read here).  ``keys`` holds the
    results' keys; ``unit_map`` renumbers its units to ``results``' (-1: a unit left out); ``figures``: the
    results' figures, summed as they arrived (else summed here from what the results still hold)."""
    problems = list(lay.problems)
    counts: collections.Counter = collections.Counter(p.kind for p in lay.problems)
    for p in lay.problems:
        counts[p.kind] += p.count - 1
    for r in results:
        problems.extend(r.problems)
        counts.update(r.counts)
    bad_units: dict[int, set[str]] = collections.defaultdict(set)
    for r in results:
        for kind, n in r.counts.items():
            if n and kind not in NOT_PER_SHARD:
                bad_units[r.unit].add(kind)
    _check_types(lay, results, problems, counts, config.max_examples)
    _check_duplicates(config, results, problems, counts, bad_units, keys, unit_map)
    notes = list(lay.notes)
    _check_sha256(config, results, problems, counts, bad_units, notes)
    figures = figures if figures is not None else lfigures.summed(results)
    if lay.kind == "download":
        _check_manifest(lay, results, figures, problems, counts)
    if lay.kind == "tfds":
        _check_tfds_read(lay, results, problems, counts)
    if lay.kind != "download":
        return _Findings(problems, counts, dict(bad_units), notes, figures)
    # a download's shards by id: the listing's problems name one (missing tfrecord, no stats file) too
    by_unit = {u.index: u.shard_id for u in lay.units}
    for p in problems:
        if p.shard is None and p.unit is not None:
            p.shard = by_unit.get(p.unit)
    bad: dict[int, set[str]] = collections.defaultdict(set)
    for ui, kinds in bad_units.items():
        bad[by_unit[ui]] |= kinds
    for p in lay.problems:
        if p.shard is not None and p.kind not in NOT_PER_SHARD:
            bad[p.shard].add(p.kind)
    return _Findings(problems, counts, dict(bad), notes, figures)


def _validate(config: ValidateConfig, lay, start: float, cpu_start: float, progress, work: str) -> Report:
    keys = _key_spill(config, lay, os.path.join(work, "all"))
    figures = lfigures.Figures()
    results = _run_units(lay, config.worker_count, progress, keys, figures)
    found = _assess(config, lay, results, keys, figures=figures.result(results))
    problems, counts, notes, figures = found.problems, found.counts, found.notes, found.figures
    seconds = time.time() - start
    records = sum(r.frames for r in results)
    in_process = min(config.worker_count, len(results)) <= 1
    worker_cpu: dict[int, float] = {}
    for r in results:
        worker_cpu[r.pid] = max(worker_cpu.get(r.pid, 0.0), r.process_cpu)
    cpu = time.process_time() - cpu_start + (0.0 if in_process else sum(worker_cpu.values()))
    totals = {"shards": len(results), "records": records, "parsed": sum(r.records for r in results),
              "decoded": sum(r.decoded for r in results), "bytes": sum(r.bytes for r in results),
              "expected_records": lay.expected_total, "problems": sum(counts.values()),
              "seconds": round(seconds, 3), "records_per_s": records / seconds if seconds else 0.0,
              "cpu_seconds": round(cpu, 3),  # this process + its workers (their start-up included)
              "workers": min(config.worker_count, max(len(results), 1))}
    cfg = dataclasses.asdict(config)
    cfg["checks"] = dataclasses.asdict(lay.checks)
    rep = Report(kind=lay.kind, folder=lay.root, config=cfg, problems=_capped(_sorted(problems)),
                 counts={k: v for k, v in counts.items() if v}, totals=totals,
                 shards=[result_summary(r) | {"split": lay.units[r.unit].split, "shard_id": lay.units[r.unit].shard_id}
                         for r in results],
                 figures=figures, notes=notes)
    if config.quarantine:
        _quarantine(config, lay, results, found, rep, keys)
    if config.report:
        from laionprep.validate.report import write_report

        rep.files = write_report(rep, config.report)
    return rep


def _quarantine(config: ValidateConfig, lay, results: list[ShardResult], found: _Findings, rep: Report,
                keys: key_check.KeySpill) -> None:
    """Move every shard with a problem of its own, mark the manifest, then assess what is left (the folder listed
    again; the results of the shards left in place reused, no data read twice)."""
    from laionprep.validate.quarantine import mark_manifest, quarantine

    bad = found.bad
    _drop_systematic(bad, len(results), rep.notes)
    if bad:
        rep.quarantined = quarantine(lay, found.problems, bad)
    is_download = lay.manifest.get("stage") == "download"
    missing = sorted({p.shard for p in found.problems if p.kind == "missing_shard" and p.shard is not None})
    if is_download and (rep.quarantined or missing):
        mark_manifest(lay, rep.quarantined, missing)
    after_lay = llayout.build(config)
    by_shard = {lay.units[r.unit].shard_id: r for r in results}
    kept = [dataclasses.replace(by_shard[u.shard_id], unit=u.index) for u in after_lay.units if u.shard_id in by_shard]
    unit_map = np.full(len(lay.units), -1, dtype=np.int64)  # the spilled keys' units -> the units left
    for u in after_lay.units:
        if u.shard_id in by_shard:
            unit_map[by_shard[u.shard_id].unit] = u.index
    if len(kept) < len(after_lay.units):  # a shard that appeared meanwhile cannot be (the folder lock is held)
        keys, unit_map = _key_spill(config, after_lay, os.path.join(keys.folder, "again")), None
        kept = _run_units(after_lay, config.worker_count, None, keys, lfigures.Figures())
    after = _assess(config, after_lay, kept, keys, unit_map)
    left = LEFT_TO_DOWNLOAD if is_download else set()
    rep.remaining = {k: v for k, v in after.counts.items() if v and k not in left}
    rep.remaining_problems = [p for p in _sorted(after.problems) if p.kind in rep.remaining][:50]
    rep.left_to_download = sorted({p.shard for p in after.problems if p.kind == "missing_shard" and
                                   p.shard is not None}) if is_download else []


def _capped(problems: list[Problem]) -> list[Problem]:
    """At most MAX_LISTED problems of each kind are listed (the counts cover all of them)."""
    seen: collections.Counter = collections.Counter()
    out = []
    for p in problems:
        seen[p.kind] += 1
        if seen[p.kind] <= MAX_LISTED:
            out.append(p)
    return out


def _drop_systematic(bad_units: dict, n_units: int, notes: list) -> None:
    """A settings-sensitive problem found in every shard points at the settings (--dataset, --image-size, --sha256)
    or at how the whole dataset was made, not at damage: re-downloading would not help, so it moves nothing."""
    if n_units < 2:
        return
    for kind in SETTINGS_SENSITIVE:
        if sum(1 for kinds in bad_units.values() if kind in kinds) == n_units:
            for u in list(bad_units):
                bad_units[u].discard(kind)
                if not bad_units[u]:
                    del bad_units[u]
            notes.append(f"quarantine: {kind} is in every shard, which points at the settings or at how the whole "
                         "dataset was made, not at damage; no shard was moved for it")


def _sorted(problems: list[Problem]) -> list[Problem]:
    order = {c: i for i, c in enumerate(CHECK_ORDER)}
    return sorted(problems, key=lambda p: (order.get(p.check, 9), p.kind, p.file or "", p.record or 0))


# ------------------------------------------------------------------------------------------------- dataset-wide
def _check_types(lay, results, problems, counts, mx) -> None:
    """One type per key across the dataset; keys other records have must be in every record."""
    types: dict[str, dict[str, list]] = collections.defaultdict(dict)  # key -> kind -> [count, (unit, idx)]
    present: collections.Counter = collections.Counter()
    parsed = 0
    per_unit_sigs = []
    for r in results:
        parsed += r.records
        per_unit_sigs.append((r, r.signatures))
        for sig, (n, first) in r.signatures.items():
            for k, kind in sig:
                kname = KIND_NAMES[kind]
                cur = types[k].get(kname)
                if cur is None:
                    types[k][kname] = [n, (r.unit, first)]
                else:
                    cur[0] += n
                    cur[1] = min(cur[1], (r.unit, first))
                present[k] += n
    declared = dict(lay.checks.declared)
    for k, kinds in sorted(types.items()):
        if len(kinds) < 2 or k in declared:
            continue
        major = max(kinds, key=lambda kk: kinds[kk][0])
        desc = ", ".join(f"{kk} in {v[0]:,} record{'s' if v[0] != 1 else ''}" for kk, v in
                         sorted(kinds.items(), key=lambda kv: -kv[1][0]))
        for kk, (n, (unit, idx)) in kinds.items():
            if kk == major:
                continue
            counts["mixed_type"] += n
            problems.append(Problem("mixed_type", f"'{k}' has {len(kinds)} types: {desc}; first {kk} record here"
                                    + (" (img2dataset writes a null as bytes b''; `laionprep reshard` normalises "
                                       "types)" if kk in ("bytes", "empty") else ""),
                                    file=results[unit].label, record=idx, count=n, unit=unit))
    for k, want in sorted(lay.expected_kinds.items()):
        kinds = types.get(k)
        if not kinds or k in declared:
            continue
        major = max(kinds, key=lambda kk: kinds[kk][0])
        if major == want:
            continue  # the odd records, if any, are reported as mixed_type
        n = sum(v[0] for kk, v in kinds.items() if kk != want)
        unit, idx = kinds[major][1]
        counts["wrong_type"] += n
        problems.append(Problem("wrong_type", f"'{k}' is {major} in {kinds[major][0]:,} records, {want} expected "
                                              "(the dataset's column type)", file=results[unit].label, record=idx,
                                count=n, unit=unit))
    required = set(lay.checks.required)
    for k in sorted(present):
        if k in required or present[k] == parsed:
            continue
        missing_total = parsed - present[k]
        loc = None
        for r, sigs in per_unit_sigs:
            for sig, (n, first) in sigs.items():
                if k not in {kk for kk, _ in sig}:
                    cand = (r.unit, first)
                    loc = cand if loc is None or cand < loc else loc
        counts["missing_key"] += missing_total
        unit, idx = loc if loc else (None, None)
        problems.append(Problem("missing_key", f"'{k}' is in {present[k]:,} records but absent from "
                                               f"{missing_total:,}; first record without it here",
                                file=results[unit].label if unit is not None else None, record=idx,
                                count=missing_total, unit=unit))


def _check_duplicates(config, results, problems, counts, bad_units, keys, unit_map) -> None:
    """Keys unique across the dataset (``key_check``: partitions on local disk, one sort each)."""
    listed = config.max_examples * 5
    keys.close()  # the last chunk written: the partition count is known
    pool = _pool(min(config.worker_count, keys.partitions)) if config.worker_count > 1 and keys.partitions > 1 \
        else None
    try:
        dups = key_check.find_duplicates(keys, unit_map, listed, pool)
    finally:
        if pool is not None:
            pool.shutdown(wait=True)
    if not dups.count:
        return
    counts["duplicate_key"] += dups.count
    for u in dups.units:
        bad_units[u].add("duplicate_key")
    for token, ub, rb, ua, ra in dups.listed:
        problems.append(Problem("duplicate_key", f"key also in {results[ua].label} record {ra}",
                                file=results[ub].label, record=rb, key=token.decode("utf-8", "backslashreplace"),
                                unit=ub))


def _check_sha256(config, results, problems, counts, bad_units, notes) -> None:
    checked = sum(r.sha["checked"] for r in results)
    verified = sum(r.sha["verified"] for r in results)
    differs = sum(r.sha["differs"] for r in results)
    if config.sha256 == "off" or not checked:
        return
    errors = config.sha256 == "stored" or (verified > 0 and verified >= 0.9 * checked)
    if differs and errors:
        counts["sha256_mismatch"] += differs
        for r in results:
            problems.extend(r.sha_differs)
            if r.sha["differs"]:
                bad_units[r.unit].add("sha256_mismatch")
        if config.sha256 == "auto":
            notes.append(f"sha256: {verified:,} of {checked:,} checked images match their sha256, so the hashes "
                         "are of the stored bytes and the others are reported as mismatches")
    elif differs:
        notes.append(f"sha256: {differs:,} of {checked:,} checked images differ from their sha256, which "
                     "img2dataset computes over the ORIGINAL downloaded bytes before resizing/re-encoding: not "
                     "comparable (pass --sha256 stored if this dataset's hashes are of the stored bytes)"
                     + (f"; {verified:,} match" if verified else ""))
    else:
        notes.append(f"sha256: all {checked:,} checked images match their sha256")


def _check_manifest(lay, results, figures, problems, counts) -> None:
    m = lay.manifest
    st = (m.get("stages") or {}).get("download")
    if not st:
        return

    def add(msg):
        problems.append(Problem("manifest_mismatch", msg, file="manifest.json"))
        counts["manifest_mismatch"] += 1

    if m.get("status") not in (None, "complete"):
        # an unfinished download's totals are a snapshot the resumed download recounts from the shards
        q = (m.get("stages") or {}).get("quarantine") or {}
        shards = sorted({e["shard"] for e in q.get("shards", [])} | set(q.get("missing", [])))
        problems.append(Problem("incomplete_download", f"manifest status is {m.get('status')!r}: the download did not "
                                f"finish" + (f" (shards quarantined or missing: {_ids(shards)})" if shards else "")
                                + "; run the same `laionprep download` command to resume", file="manifest.json"))
        counts["incomplete_download"] += 1
        return
    records = sum(r.frames for r in results)
    if isinstance(st.get("success"), int) and st["success"] != records:
        add(f"manifest says {st['success']:,} images downloaded, the shards hold {records:,} records")
    dl = figures.get("download")
    if dl and isinstance(st.get("failed"), dict):
        found = {k: v for k, v in dl["status"].items() if k != "success" and v}
        want = {k: v for k, v in st["failed"].items() if v}
        if found != want:
            add(f"manifest failures {want} != the shard parquets' {found}")
    if dl and isinstance(st.get("rows_in"), int) and st["rows_in"] != dl["rows"]:
        add(f"manifest says {st['rows_in']:,} rows went to the downloader, the shard parquets hold {dl['rows']:,}")
    acc = m.get("accounting") or {}
    if acc.get("balanced") is False:
        add(f"manifest accounting does not balance: {acc}")


def _ids(shards, n: int = 10) -> str:
    return ", ".join(f"{s:05d}" for s in shards[:n]) + (f" and {len(shards) - n} more" if len(shards) > n else "")


def _check_tfds_read(lay, results, problems, counts) -> None:
    """TFDS's own reader must load (and decode) the first example of each split."""
    import tensorflow_datasets as tfds

    try:
        builder = tfds.builder_from_directory(lay.tfds_dir)
    except Exception as e:  # already reported by the layout step if it failed there
        problems.append(Problem("tfds_unreadable", f"{type(e).__name__}: {e}", file="dataset_info.json"))
        counts["tfds_unreadable"] += 1
        return
    formats = {f.value for f in builder.info.available_file_formats()}  # + alternative_file_formats
    for split in lay.splits:
        try:
            if "array_record" in formats:  # random access: tfds.data_source's view
                source = tfds.builder_from_directory(lay.tfds_dir).as_data_source(split=split)
                if len(source):
                    source[0]  # noqa: B018 -- decodes record 0
            if str(builder.info.file_format.value) != "array_record":  # streamed: tfds.load's view
                for _ in builder.as_dataset(split=split, shuffle_files=False).take(1):
                    pass
        except Exception as e:
            msg = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
            problems.append(Problem("tfds_unreadable", f"split {split}: tfds cannot read its first example: "
                                                       f"{type(e).__name__}: {msg}", file="dataset_info.json"))
            counts["tfds_unreadable"] += 1


# ------------------------------------------------------------------------------------------------- CLI output
def print_summary(rep: Report) -> None:
    """The CLI's ending: problems by kind (with the first location of each), notes, then totals."""
    from rich.console import Console
    from rich.table import Table

    from laionprep.progress import print_table

    if rep.counts:
        t = Table(title=f"problems in {rep.folder}", title_justify="left")
        for h in ("check", "kind", "count", "first at", "what"):
            t.add_column(h, justify="right" if h == "count" else "left", overflow="fold")
        for row in rep.problem_rows():
            t.add_row(*[f"{v:,}" if isinstance(v, int) else str(v) for v in row])
        Console().print(t)
    for n in rep.notes:
        print(f"note: {n}")
    for q in rep.quarantined:
        where = q["moved_to"][0].rsplit("/", 1)[0] if q["moved_to"] else "(no file to move)"
        why = q["why"].split(": ", 1)[1] if q["why"].startswith("shard ") else f"{q['file']}: {q['why']}"
        print(f"quarantined shard {q['shard']:05d} ({', '.join(q['kinds'])}): {why} -> {where}")
    if rep.remaining is not None:
        if rep.remaining:
            print("problems left after the quarantine (not one shard's, so not moved): "
                  + ", ".join(f"{k} {v:,}" for k, v in sorted(rep.remaining.items())))
            for p in rep.remaining_problems[:10]:
                print(f"  {p.kind}: {p.where()}: {p.message}")
        if rep.left_to_download:
            print(f"left for the download: shards {_ids(rep.left_to_download)}; run the same `laionprep download` "
                  "command to fetch them")
    title = "PROBLEMS FOUND" if not rep.ok else (
        "OK after quarantine" if rep.quarantined or rep.left_to_download else "OK")
    print_table(f"laionprep validate {rep.folder}: {title}", rep.total_rows(), ["", ""])
    if rep.files:
        print(f"report: {rep.files['html']} (and report.json)")
