"""Download: drive the real img2dataset over the prefiltered metadata and account for every row.

img2dataset writes, per shard ``NNNNN``: ``NNNNN.tfrecord`` (the successes), ``NNNNN.parquet`` (one row per input
row with ``status`` and ``error_message``) and, last, ``NNNNN_stats.json``.  The stats file is the completion
marker: a shard without it is incomplete (a killed run), is redone by img2dataset's incremental mode on the next
run, and is never counted or read by later stages.  Nothing else may write ``*.json`` into the output folder
(img2dataset's resume reads every ``*.json`` there as a shard marker), so the manifest and reports live one level
up.

Every URL is fetched by laionprep's own fetcher (:mod:`laionprep.ingest.safe_fetch`, installed in img2dataset's
workers): public http(s) addresses only unless ``allow_private_addresses``, byte and pixel limits, one deadline
per URL.  Its failure messages map to stable reasons (:func:`normalise_error`).
"""
from __future__ import annotations

import dataclasses
import ipaddress
import json
import math
import os
import posixpath
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from typing import Sequence

from laionprep import fs as lfs
from laionprep.errors import DataError, UsageError
from laionprep.folders import replace, tombstone
from laionprep.folders.replace import REMOVED_KEY, removed_rows  # noqa: F401  (REMOVED_KEY: this module's name too)
from laionprep.folders.shardscan import STATS_FILE as STATS_RE, list_done
from laionprep.ingest import fetch_progress, repair, safe_fetch
from laionprep.options import option

DISTRIBUTORS = ("multiprocessing", "pyspark", "ray")
# Columns img2dataset reserves for itself; a carried column of one of these names cannot be saved as an extra.
RESERVED = {"key", "caption", "url", "width", "height", "original_width", "original_height", "status",
            "error_message", "exif", "md5", "sha256", "sha512"}


_DL = "download"  # the flags' argument groups (titles in GROUPS)
_SAFETY = "safety"
GROUPS = {_DL: "download (img2dataset)", _SAFETY: "fetch safety (laionprep's fetcher in img2dataset's workers)"}


@dataclasses.dataclass(frozen=True)
class DownloadOptions:
    """img2dataset's settings and laionprep's fetch limits; each flagged field is one ``laionprep download`` flag
    (``laionprep.options``); ``output=False`` marks the run-only ones, left out of the manifest's parameters."""

    image_size: int = option("--image-size", int, "short side after resizing (default 480)", default=480, group=_DL)
    resize_mode: str = option("--resize-mode", None, "img2dataset resize mode (default keep_ratio)",
                              default="keep_ratio", group=_DL)
    resize_only_if_bigger: bool = option("--resize-only-if-bigger", bool, "never upscale small images",
                                         default=False, group=_DL)
    encode_quality: int = 95
    processes: int = option("--processes", int, "download processes (default: one per core)", default=0,
                            group=_DL, output=False)  # 0: one per core
    threads: int = option("--threads", int, "download threads per process (default 64)", default=64, group=_DL,
                          output=False)
    # --retries and --timeout are run-only: they only change which transient network failures happen, and a resume
    # never re-fetches the failed rows of finished shards, so bumping them after a flaky night must not need --restart
    retries: int = option("--retries", int, "retries per URL (default 0)", default=0, group=_DL, output=False)
    timeout: int = option("--timeout", int, "seconds per URL attempt: connect, redirects, headers and body "
                          "together (default 10)", default=10, group=_DL, output=False)
    number_sample_per_shard: int = option("--number-sample-per-shard", int, "rows per shard (default 10000)",
                                          default=10000, group=_DL)
    distributor: str = option("--distributor", None, "", default="multiprocessing", group=_DL, output=False,
                              choices=list(DISTRIBUTORS))
    spark_master: str | None = option("--spark-master", None, "Spark master URL for --distributor pyspark "
                                      "(default local[processes])", group=_DL, output=False)
    extract_exif: bool = True
    user_agent_token: str | None = "laionprep"
    # laionprep's fetcher (safe_fetch): address safety and limits per URL
    allow_private_addresses: bool = option(  # True only for servers you run yourself (the demo, the tests)
        "--allow-private-addresses", bool, "also fetch from loopback, private, link-local and other non-public "
        "addresses (only for servers you run yourself, e.g. the demo's 127.0.0.1); refused by default",
        default=False, group=_SAFETY)
    allowed_networks: tuple[str, ...] = option(  # CIDRs allowed even when private addresses are refused
        "--allow-network", None, "a private network to allow while the rest stay refused, e.g. 10.1.2.0/24 "
        "(repeatable)", default=(), cli_default=[], parse=tuple, group=_SAFETY, action="append", metavar="CIDR")
    max_image_bytes: int = option(
        "--max-image-bytes", int, f"refuse bodies larger than this (default {safe_fetch.DEFAULT_MAX_IMAGE_BYTES}, "
        "32 MiB)", default=safe_fetch.DEFAULT_MAX_IMAGE_BYTES, group=_SAFETY)
    max_image_pixels: int = option(
        "--max-image-pixels", int, "refuse images whose header says more pixels, before decoding (default "
        f"{safe_fetch.DEFAULT_MAX_IMAGE_PIXELS})", default=safe_fetch.DEFAULT_MAX_IMAGE_PIXELS, group=_SAFETY)
    max_redirects: int = option("--max-redirects", int, "redirect hops per URL (default "
                                f"{safe_fetch.DEFAULT_MAX_REDIRECTS})", default=safe_fetch.DEFAULT_MAX_REDIRECTS,
                                group=_SAFETY)

    def fetch_options(self) -> safe_fetch.FetchOptions:
        return safe_fetch.FetchOptions(
            allow_private_addresses=self.allow_private_addresses, allowed_networks=tuple(self.allowed_networks),
            max_image_bytes=self.max_image_bytes, max_image_pixels=self.max_image_pixels,
            max_redirects=self.max_redirects)

    def validate(self) -> None:
        if self.distributor not in DISTRIBUTORS:
            raise UsageError(f"unknown distributor {self.distributor!r}", where="--distributor",
                             fix="use one of: " + ", ".join(DISTRIBUTORS))
        if self.distributor == "ray":
            try:
                import ray  # noqa: F401
            except ImportError:
                raise UsageError("--distributor ray needs the ray package", where="--distributor",
                                 fix="pip install 'ray[default]' and start a ray cluster, or use "
                                     "multiprocessing/pyspark") from None
        if self.distributor == "pyspark":
            try:
                import pyspark  # noqa: F401
            except ImportError:
                raise UsageError("--distributor pyspark needs the pyspark package", where="--distributor",
                                 fix="pip install 'laionprep[spark]' (and Java 17+), or use multiprocessing") from None
        for name in ("image_size", "threads", "number_sample_per_shard", "timeout", "max_image_bytes",
                     "max_image_pixels"):
            if getattr(self, name) < 1:
                raise UsageError(f"{name} must be >= 1, got {getattr(self, name)}", where="--" + name.replace("_", "-"))
        if self.max_redirects < 0:
            raise UsageError(f"max_redirects must be >= 0, got {self.max_redirects}", where="--max-redirects")
        for net in self.allowed_networks:
            try:
                ipaddress.ip_network(net, strict=False)
            except ValueError as e:
                raise UsageError(f"not a network: {net!r} ({e})", where="--allow-network",
                                 fix="give an address or CIDR, e.g. 10.1.2.0/24 or 10.1.2.3") from None
        if self.resize_mode not in ("no", "border", "keep_ratio", "keep_ratio_largest", "center_crop"):
            raise UsageError(f"unknown resize mode {self.resize_mode!r}", where="--resize-mode",
                             fix="use keep_ratio (short side = image size), center_crop, border, "
                                 "keep_ratio_largest or no")

    @property
    def processes_count(self) -> int:
        return self.processes or os.cpu_count() or 1


@dataclasses.dataclass
class DownloadResult:
    shards_expected: int
    shards_done: int
    rows: int  # rows img2dataset accounted for in its shard parquets
    success: int
    failed: dict[str, int]  # status -> count
    failure_reasons: dict[str, int]  # "status: error message" -> count (all of them)
    incomplete_shards: list[int]
    seconds: float
    # largest child process of the img2dataset child (multiprocessing: a download worker); None: nothing was run
    peak_worker_rss_mib: float | None = None
    # finished shards the resume check moved aside (why.json entries): fetched again by this run
    repaired: list[dict] = dataclasses.field(default_factory=list)
    removed: int = 0  # rows `laionprep remove` took out of finished shards (not img2dataset's losses)
    # finished shards holding tombstone rows (fetched again after a remove), not yet taken out (replace.settle)
    tombstoned: list[int] = dataclasses.field(default_factory=list)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def expected_shards(rows_per_file: Sequence[int], per_shard: int) -> dict[int, int]:
    """Shard id -> rows, the way img2dataset numbers shards: per input file, consecutively."""
    out, sid = {}, 0
    for rows in rows_per_file:
        for k in range(math.ceil(rows / per_shard)):
            out[sid] = min(per_shard, rows - k * per_shard)
            sid += 1
    return out


def shard_starts(rows_per_file: Sequence[int], per_shard: int) -> dict[int, tuple[int, int]]:
    """Shard id -> (index of its prefiltered file, its first row there): ``expected_shards``' numbering."""
    out, sid = {}, 0
    for i, rows in enumerate(rows_per_file):
        for k in range(math.ceil(rows / per_shard)):
            out[sid] = (i, k * per_shard)
            sid += 1
    return out


def key_position(key: str, per_shard: int) -> tuple[int, int]:
    """(shard id, row in the shard) of img2dataset's key (``compute_key``: shard * 10**ceil(log10(per_shard)) +
    row, zero-padded)."""
    scale = 10 ** math.ceil(math.log10(per_shard)) if per_shard > 1 else 1
    return divmod(int(key), scale)


def img2dataset_config(input_dir: str, output_dir: str, extra_columns: Sequence[str], verify_sha256: bool,
                       opts: DownloadOptions, bbox_column: str | None = None) -> dict:
    """The exact keyword arguments given to ``img2dataset.download`` (also used by bench/ingest.py).

    ``bbox_column``: img2dataset's ``bbox_col``; its resizer blurs those boxes (after resizing; boxes are
    relative, so the resize does not move them) and it appends the column to the saved ones itself, so it is left
    out of ``save_additional_columns`` (listed twice, the reader would read it twice).  The column holds JSON text
    (lists cannot be written to a TFRecord by img2dataset); ``safe_downloader`` decodes it for the blurrer."""
    extras = [c for c in extra_columns if c not in RESERVED and c != bbox_column]
    return {
        "url_list": input_dir,
        "input_format": "parquet",
        "url_col": "url",
        "caption_col": "caption",
        "output_format": "tfrecord",
        "output_folder": output_dir,
        "image_size": opts.image_size,
        "resize_mode": opts.resize_mode,
        "resize_only_if_bigger": opts.resize_only_if_bigger,
        "encode_quality": opts.encode_quality,
        "encode_format": "jpg",
        "processes_count": opts.processes_count,
        "thread_count": opts.threads,
        "number_sample_per_shard": opts.number_sample_per_shard,
        "save_additional_columns": extras or None,
        "bbox_col": bbox_column,
        "timeout": opts.timeout,
        "retries": opts.retries,
        "distributor": opts.distributor,
        "incremental_mode": "incremental",
        "compute_hash": "sha256",
        "verify_hash": ["sha256", "sha256"] if verify_sha256 else None,
        "extract_exif": opts.extract_exif,
        "oom_shard_count": 5,
        "enable_wandb": False,
        "user_agent_token": opts.user_agent_token,
    }


def check_output_folder(output_dir: str) -> None:
    """Refuse an output folder that holds foreign *.json files (img2dataset's resume would crash on them)."""
    fsys, path = lfs.get_fs(output_dir)
    if not fsys.exists(path):
        return
    foreign = [p for p in fsys.glob(path.rstrip("/") + "/*.json") if not STATS_RE.search(p)]
    if foreign:
        raise UsageError(
            f"the image output folder holds {len(foreign)} foreign .json file(s), e.g. {foreign[0]}",
            where=output_dir,
            fix="move them out: img2dataset's resume treats every *.json there as a finished-shard marker",
        )


def run(input_dir: str, output_dir: str, rows_per_file: Sequence[int], extra_columns: Sequence[str],
        opts: DownloadOptions, *, verify_sha256: bool = False, bbox_column: str | None = None,
        log_path: str | None = None, progress=None) -> DownloadResult:
    """Run img2dataset (resuming whatever is already done) and return the accounting of its output."""
    opts.validate()
    check_output_folder(output_dir)
    expected = expected_shards(rows_per_file, opts.number_sample_per_shard)
    cfg = {"download": img2dataset_config(input_dir, output_dir, extra_columns, verify_sha256, opts, bbox_column),
           "spark_master": opts.spark_master, "fetch": dataclasses.asdict(opts.fetch_options())}
    start = time.time()
    root = posixpath.dirname(str(output_dir).rstrip("/"))  # DIR: the quarantine and the shard record live there
    replace.finish_pending(root, output_dir)  # a shard a killed `laionprep remove` left half replaced
    checked = repair.check(output_dir, root)  # finished shards with a lost or damaged file are fetched again
    remove_stale_config(log_path)
    peak = None
    if expected and len(list_done(output_dir)) < len(expected):
        peak = _run_child(cfg, output_dir, expected, log_path, progress)
    res = account(output_dir, expected, seconds=time.time() - start)
    if res.tombstoned:  # shards fetched again after a `laionprep remove`: its rows out, as remove took them out
        settled = replace.settle(root, output_dir, res.tombstoned)
        res = account(output_dir, expected, seconds=time.time() - start)
        for sid in settled:  # their stats changed: recorded afresh
            checked.stats.pop(sid, None)
    repair.record(output_dir, root, checked.stats)
    res.peak_worker_rss_mib = peak
    res.repaired = checked.repaired
    return res


def _pdeathsig_preexec():
    """A ``preexec_fn`` that makes the img2dataset child get SIGKILL when its parent dies (Linux PR_SET_PDEATHSIG),
    so a kill -9 of ``laionprep download`` does not leave it writing.  libc is loaded here, in the parent: between
    fork and exec the child only makes the prctl call (loading a library there could deadlock a threaded parent)."""
    try:
        import ctypes

        prctl = ctypes.CDLL("libc.so.6", use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    sig = int(signal.SIGKILL)
    return lambda: prctl(1, sig)  # 1 = PR_SET_PDEATHSIG


def _config_base(log_path: str | None) -> str:
    """The img2dataset config file is written next to the log, under a temporary name of this base."""
    return os.path.abspath(log_path if log_path and log_path != os.devnull else "img2dataset") + ".config.json"


def remove_stale_config(log_path: str | None) -> None:
    """Remove the config file a killed run left next to the log (the output folder's lock is held by this run, so
    no other run is using it)."""
    if not log_path or log_path == os.devnull:
        return
    base = _config_base(log_path)
    folder, stale = os.path.dirname(base), os.path.basename(base) + lfs.TMP_MARK
    if os.path.isdir(folder):
        for n in os.listdir(folder):
            if n.startswith(stale):
                os.remove(os.path.join(folder, n))


def _run_child(cfg: dict, output_dir: str, expected: dict[int, int], log_path: str | None,
               progress) -> float | None:
    """Run the img2dataset child; returns the peak RSS (MiB) of its largest worker process, when it reported one."""
    remote_log = log_path if log_path and not lfs.is_local(log_path) else None
    if remote_log:  # the child writes a local file; it is appended to the log on the object store when it ends
        import tempfile

        fd, log_path = tempfile.mkstemp(prefix="laionprep-img2dataset-", suffix=".log")
        os.close(fd)
    log_path = log_path or os.devnull
    if log_path != os.devnull:
        os.makedirs(os.path.dirname(os.path.abspath(log_path)), exist_ok=True)
    cfg_path = lfs.tmp_name(_config_base(log_path))
    rusage_path = cfg["rusage_path"] = cfg_path + ".rusage"
    with open(cfg_path, "w") as f:
        json.dump(cfg, f)
    total_rows = sum(expected.values())
    task = progress.add_task("download", total=total_rows) if progress else None
    env = dict(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")
    counted = _ImageProgress(output_dir, expected) if progress else None
    if counted:
        env[fetch_progress.ENV] = counted.folder
    try:
        with open(log_path, "ab") as log:
            # Same process group as the caller: a Ctrl-C or a kill of the group stops img2dataset's workers too.
            proc = subprocess.Popen([sys.executable, "-m", "laionprep.ingest.img2dataset_runner", cfg_path],
                                    stdout=log, stderr=subprocess.STDOUT, env=env, preexec_fn=_pdeathsig_preexec())
            try:
                while True:
                    try:
                        proc.wait(timeout=0.5)  # returns as soon as img2dataset exits
                        break
                    except subprocess.TimeoutExpired:
                        if progress:
                            progress.update(task, completed=counted.rows())
            except BaseException:  # Ctrl-C or an error in the parent: stop img2dataset
                proc.terminate()
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                raise
        if progress:
            progress.update(task, completed=_rows_done(output_dir, expected))
        if proc.returncode != 0:
            raise DataError(
                f"img2dataset exited with status {proc.returncode}" + _tail(log_path),
                where=remote_log or log_path,
                fix="read the log; re-running the same command resumes from the finished shards",
            )
        try:
            with open(rusage_path) as f:
                return round(json.load(f)["children_max_rss_kib"] / 1024, 1)
        except (OSError, ValueError, KeyError):
            return None
    finally:
        for p in (cfg_path, rusage_path):
            os.path.exists(p) and os.remove(p)
        if counted:
            counted.close()
        if remote_log:
            _append_remote_log(log_path, remote_log)


def _append_remote_log(local: str, remote: str) -> None:
    """Append the local log file to the log on the object store (objects cannot be appended to: rewritten)."""
    try:
        with open(local, "rb") as f:
            new = f.read()
        old = b""
        if lfs.exists(remote):
            with lfs.open_file(remote) as f:
                old = f.read()
        lfs.atomic_write_bytes(remote, old + new)
        os.remove(local)
    except OSError as e:  # the log is not worth failing the download for; say where it is
        print(f"laionprep download: could not copy the img2dataset log to {remote} ({e}); it is in {local}",
              file=sys.stderr)


def _tail(path: str, n: int = 15) -> str:
    if not path or path == os.devnull or not os.path.exists(path):
        return ""
    with open(path, "rb") as f:
        lines = f.read().decode("utf-8", "replace").splitlines()[-n:]
    return "\n  last log lines:\n    " + "\n    ".join(lines)


_LIST_EVERY_S = 15.0


class _ImageProgress:
    """Rows done for the progress bar: those of the shards finished before this run, plus the URLs the workers
    have fetched since (``fetch_progress``: per-process counters in a local temporary folder), at least those of
    the finished shards and at most all rows."""

    def __init__(self, output_dir: str, expected: dict[int, int]):
        import tempfile

        self.output_dir, self.expected = output_dir, expected
        self.before = self.done = _rows_done(output_dir, expected)
        self.listed = time.monotonic()
        self.folder = tempfile.mkdtemp(prefix="laionprep-progress-")

    def rows(self) -> int:
        # the counters move the bar; the listing (one object-store request per 1,000 files) is only its floor,
        # so it is refreshed every _LIST_EVERY_S, not at every poll
        if time.monotonic() - self.listed >= _LIST_EVERY_S:
            self.done, self.listed = _rows_done(self.output_dir, self.expected), time.monotonic()
        total = sum(self.expected.values())
        return min(total, max(self.done, self.before + fetch_progress.read_total(self.folder)))

    def close(self) -> None:
        import shutil

        shutil.rmtree(self.folder, ignore_errors=True)


def _rows_done(output_dir: str, expected: dict[int, int]) -> int:
    return sum(expected.get(s, 0) for s in list_done(output_dir))


_LOCAL_READERS = 4  # concurrent local shard parquet reads (pyarrow decodes outside the GIL)


def _shard_statuses(pq_path: str) -> tuple[int, list[tuple[str | None, str | None, int]], int] | Exception:
    """(rows, [(status, error_message, count)], rows removed by `laionprep remove`) of one shard parquet: only its
    two status columns are read and counted by pyarrow (no per-row Python); an unreadable file is returned as its
    exception."""
    import pyarrow.parquet as pq

    try:
        with lfs.open_file(pq_path) as f:
            t = pq.read_table(f, columns=["status", "error_message"])
    except (OSError, ValueError) as e:  # pyarrow's ArrowInvalid is a ValueError
        return e
    g = t.group_by(["status", "error_message"], use_threads=False).aggregate([([], "count_all")])
    return (t.num_rows, list(zip(*(g.column(c).to_pylist() for c in ("status", "error_message", "count_all")))),
            removed_rows(t.schema))


def account(output_dir: str, expected: dict[int, int], seconds: float = 0.0) -> DownloadResult:
    """Count what img2dataset produced: successes and failures per reason, from the finished shards only.  The
    shard parquets are read concurrently (``folders.shardscan``'s pool size on object stores), two columns each."""
    import concurrent.futures

    from laionprep.folders import shardscan

    done = list_done(output_dir)
    success = 0
    rows = 0
    removed_total = 0
    failed: Counter = Counter()
    reasons: Counter = Counter()
    sids = sorted(done)
    paths = [done[sid].replace("_stats.json", ".parquet") for sid in sids]
    threads = _LOCAL_READERS if shardscan.local_path(output_dir) is not None else shardscan.THREADS
    if len(paths) > 1:
        with concurrent.futures.ThreadPoolExecutor(min(threads, len(paths))) as pool:
            counted = list(pool.map(_shard_statuses, paths))
    else:
        counted = [_shard_statuses(p) for p in paths]
    normalised: dict = {}  # one normalise_error per distinct message, not per row
    tombstoned = []
    for sid, pq_path, c in zip(sids, paths, counted):
        if isinstance(c, Exception):
            raise DataError(f"shard {sid:05d}: its parquet cannot be read ({str(c).splitlines()[0][:200]})",
                            where=pq_path, fix="set the shard aside with `laionprep validate DIR --quarantine` "
                                               "and run the same download again to fetch it") from None
        n, groups, removed = c
        rows += n
        for st, msg, k in groups:
            if st == "success":
                success += k
                continue
            failed[st or "unknown"] += k
            if msg not in normalised:
                normalised[msg] = normalise_error(msg)
            reasons[f"{st}: {normalised[msg]}"] += k
            if normalised[msg] == tombstone.REASON and (not tombstoned or tombstoned[-1] != sid):
                tombstoned.append(sid)
        removed_total += removed
        lost = expected.get(sid, n + removed) - n - removed
        if lost > 0:  # img2dataset dropped rows of this shard without a status row: account for them explicitly
            failed["lost_by_img2dataset"] += lost
            reasons["lost_by_img2dataset: rows missing from the shard parquet"] += lost
            rows += lost
    incomplete = sorted(set(expected) - set(done))
    return DownloadResult(
        shards_expected=len(expected), shards_done=len(done), rows=rows, success=success, failed=dict(failed),
        failure_reasons=dict(reasons.most_common()), incomplete_shards=incomplete, seconds=round(seconds, 2),
        removed=removed_total, tombstoned=tombstoned,
    )


def normalise_error(msg: str | None) -> str:
    """Shorten an error message into a reason: the stable reason of laionprep's fetcher (its details dropped, e.g.
    ``refused: loopback address``), else img2dataset's message with URLs and long tails removed."""
    if not msg:
        return "no message"
    reason = safe_fetch.reason_of(str(msg))
    if reason:
        return reason
    msg = re.sub(r"https?://\S+", "<url>", str(msg))
    msg = re.sub(r"\s+", " ", msg).strip()
    return msg[:160]
