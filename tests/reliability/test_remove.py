"""Issue #17: ``laionprep remove DIR --list FILE`` on a finished download (a tiny real download from 127.0.0.1).

Only the shards holding a listed row are rewritten; nothing of a removed row stays in the tfrecord or the shard
parquet; stats, the size record, the manifest's accounting (``removed_by_list``) and an audit file follow; validate
passes; the same download command afterwards resumes without fetching anything again; a second run changes
nothing; a run killed with SIGKILL at any step (a deterministic kill point, ``removal.KILL_ENV``) and run again
ends with the same folder; ``build-tfds --check`` reports an earlier registration as outdated until it is
registered again.  docs/RELIABILITY.md lists these cases.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from laionprep import removal
from laionprep.folders import tombstone

from .crash_helpers import cli, env, run
from .lost_files_helpers import damage, download_cmd, manifest, records, snapshot, validate_cmd, write_source


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, demo_server):
    """(metadata source, a finished tiny download: 23 rows in shards of 10, 10 and 3) built once; copy it."""
    base = tmp_path_factory.mktemp("remove")
    src = write_source(str(base / "src"), demo_server)
    out = str(base / "dl")
    r, _ = run(download_cmd(src, out))
    assert r.returncode == 0, r.stderr
    return src, out


@pytest.fixture
def folder(tiny, tmp_path):
    dst = str(tmp_path / "dl")
    shutil.copytree(tiny[1], dst)
    return dst


def shard_rows(folder: str, sid: int) -> list[dict]:
    return pq.read_table(os.path.join(folder, "tfrecord", f"{sid:05d}.parquet")).to_pylist()


def metadata_rows(folder: str) -> list[dict]:
    return pq.read_table(os.path.join(folder, "metadata", "part-00000.parquet")).to_pylist()


def dropped_by_prefilter(folder: str) -> dict:
    """A metadata row with a valid URL that the prefilter dropped (it is only in DIR/metadata/)."""
    kept = {r["url"] for r in pq.read_table(os.path.join(folder, "prefiltered", "00000.parquet")).to_pylist()}
    return next(r for r in metadata_rows(folder) if r["URL"].startswith("http") and r["URL"] not in kept)


def make_list(folder: str, tmp_path) -> tuple[str, set[str], set[str]]:
    """A URL list naming two images of shard 0, one failed row of shard 1 (or a third image), a row the prefilter
    dropped and an unknown URL; returns (list path, keys listed, URLs listed that are in the folder)."""
    s0 = [r for r in shard_rows(folder, 0) if r["status"] == "success"][:2]
    s1 = shard_rows(folder, 1)
    pick = [r for r in s1 if r["status"] != "success"][:1] or [r for r in s1 if r["status"] == "success"][:1]
    chosen = s0 + pick
    urls = [r["url"] for r in chosen] + [dropped_by_prefilter(folder)["URL"]]
    path = str(tmp_path / "takedown.txt")
    with open(path, "w") as f:
        f.write("\n".join(urls + ["http://example.invalid/not-in-the-folder.jpg"]) + "\n")
    return path, {r["key"] for r in chosen}, set(urls)


def listed_and_removed(folder: str, tmp_path) -> tuple[str, set[str], set[str], set[str]]:
    """`remove` with :func:`make_list`'s list: (list path, keys, URLs, the listed rows' URLs and captions)."""
    lst, keys, urls = make_list(folder, tmp_path)
    texts = texts_of(urls, folder)
    r, _ = run(remove_cmd(folder, lst))
    assert r.returncode == 0, r.stderr
    return lst, keys, urls, texts


def input_copies(folder: str) -> dict:
    """DIR/metadata/ and DIR/prefiltered/ parquets: relative path -> (rows, footer key-value metadata)."""
    out = {}
    for sub in ("metadata", "prefiltered"):
        for n in sorted(os.listdir(os.path.join(folder, sub))):
            if n.endswith(".parquet"):
                t = pq.read_table(os.path.join(folder, sub, n))
                out[f"{sub}/{n}"] = (t.to_pylist(), t.schema.metadata)
    return out


def texts_of(urls: set[str], folder: str) -> set[str]:
    """The URLs and the captions (those that are not part of another row's caption) of the metadata rows with
    these URLs."""
    rows = metadata_rows(folder)
    captions = {r["TEXT"] for r in rows if r["URL"] in urls}
    others = [r["TEXT"] or "" for r in rows if r["URL"] not in urls]
    return set(urls) | {c for c in captions if c and not any(c in o for o in others)}


def holders(folder: str, texts: set[str], audit_ok: bool = True) -> list[str]:
    """The files under ``folder`` holding one of ``texts``: raw bytes, and every cell of every parquet file."""
    found = []
    for root, _, files in os.walk(folder):
        for n in files:
            p = os.path.join(root, n)
            raw = open(p, "rb").read()
            cells: set = set()
            if n.endswith(".parquet"):
                t = pq.read_table(p)
                cells = {v for c in t.columns if pa.types.is_string(c.type) for v in c.to_pylist()}
            if any(x.encode() in raw for x in texts) or cells & texts:
                found.append(os.path.relpath(p, folder))
    return found


def remove_cmd(folder: str, lst: str, *extra: str) -> list[str]:
    return cli("remove", folder, "--list", lst, *extra)


@pytest.fixture(autouse=True)
def own_keylist_cache(tmp_path, monkeypatch):
    """Each test's key-list cache is its own (the session's is shared with tests that expect it empty)."""
    monkeypatch.setenv("LAIONPREP_CACHE_DIR", str(tmp_path / "keylist-cache"))


def data_files(folder: str) -> dict:
    """The folder's shard files and size record (what must come out identical), by relative path."""
    snap = snapshot(folder)
    return {k: v for k, v in snap.items() if k.startswith("tfrecord/") or k == "_shards.parquet"}


@pytest.mark.slow
def test_remove_rewrites_only_the_listed_shards_and_keeps_nothing_of_a_removed_row(tiny, folder, tmp_path):
    src, _ = tiny
    lst, keys, urls = make_list(folder, tmp_path)
    before, before_snap, m0 = records(folder), snapshot(folder), manifest(folder)
    r, _ = run(remove_cmd(folder, lst))
    assert r.returncode == 0, r.stderr
    after, m = records(folder), manifest(folder)
    # records: the listed ones gone, every other one byte-identical (caption and image hash)
    assert set(after) == set(before) - keys
    assert all(after[k] == before[k] for k in after)
    # nothing of a removed row in any shard file: not in the tfrecords' bytes, not in the parquets' rows
    for n in os.listdir(os.path.join(folder, "tfrecord")):
        p = os.path.join(folder, "tfrecord", n)
        raw = open(p, "rb").read()
        assert not any(u.encode() in raw for u in urls), n
        if n.endswith(".parquet"):
            rows = pq.read_table(p).to_pylist()
            assert not {r["key"] for r in rows} & keys and not {r["url"] for r in rows} & urls
    # only shards 0 and 1 were rewritten; shard 2 is untouched
    snap = snapshot(folder)
    for n in ("00002.tfrecord", "00002.parquet", "00002_stats.json"):
        assert snap[f"tfrecord/{n}"] == before_snap[f"tfrecord/{n}"]
    assert snap["tfrecord/00000.tfrecord"] != before_snap["tfrecord/00000.tfrecord"]
    # stats, manifest and accounting
    stats0 = json.load(open(os.path.join(folder, "tfrecord", "00000_stats.json")))
    assert stats0["successes"] == sum(1 for k in after if k.startswith("00000")) and stats0["removed_by_list"] == 2
    acc = m["accounting"]
    assert acc["balanced"] and acc["removed_by_list"] == 3 and acc["kept"] == len(after)
    assert acc["rows_in"] == m0["accounting"]["rows_in"]
    assert m["stages"]["download"]["success"] == len(after) and m["stages"]["download"]["removed_by_list"] == 3
    # the audit: the list's name, its sha256, the keys removed, when
    audit = json.load(open(os.path.join(folder, m["stages"]["remove"]["lists"][0]["audit"])))
    assert audit["list"] == lst and audit["list_sha256"] == hashlib.sha256(open(lst, "rb").read()).hexdigest()
    assert set(audit["keys"]) == keys and audit["rows_removed"] == 3 and audit["when"].endswith("Z")
    assert audit["shards"] == [0, 1]
    # validate passes on the result
    r, _ = run(validate_cmd(folder))
    assert r.returncode == 0, r.stdout + r.stderr
    # a second run with the same list changes nothing
    snap = snapshot(folder)
    r, _ = run(remove_cmd(folder, lst))
    assert r.returncode == 0 and "nothing left to remove" in r.stdout
    assert snapshot(folder) == snap
    # the same download command resumes: no shard looks damaged (sizes recorded), nothing fetched again
    r, _ = run(download_cmd(src, folder))
    assert r.returncode == 0, r.stderr
    m2 = manifest(folder)
    assert records(folder) == after and m2["accounting"] == m["accounting"]
    assert not m2["stages"]["download"]["refetched"] and not os.path.exists(os.path.join(folder, "_quarantine"))


KILL_POINTS = ["metadata:written", "prefiltered:written", "0:pending", "0:planned", "0:renamed.tfrecord",
               "0:renamed.parquet", "1:renamed.tfrecord", "1:renamed_stats.json", "-1:recounted"]


@pytest.fixture(scope="module")
def reference(tiny, tmp_path_factory):
    """The folder after one uninterrupted removal (and its list)."""
    base = tmp_path_factory.mktemp("remove-ref")
    folder = str(base / "dl")
    shutil.copytree(tiny[1], folder)
    lst, keys, _ = make_list(folder, base)
    r, _ = run(remove_cmd(folder, lst), env=env(LAIONPREP_CACHE_DIR=str(base / "keylist-cache")))
    assert r.returncode == 0, r.stderr
    return folder, lst, keys


@pytest.mark.slow
@pytest.mark.parametrize("point", KILL_POINTS)
def test_remove_killed_at_any_step_then_run_again_gives_the_same_folder(point, reference, folder, tmp_path):
    ref, ref_list, keys = reference
    lst = str(tmp_path / "takedown.txt")
    shutil.copy(ref_list, lst)
    r, _ = run(remove_cmd(folder, lst), env=env(**{removal.KILL_ENV: point}))
    assert r.returncode == -signal.SIGKILL, (r.returncode, r.stderr)
    r, _ = run(remove_cmd(folder, lst))
    assert r.returncode == 0, r.stderr
    assert data_files(folder) == data_files(ref)
    assert input_copies(folder) == input_copies(ref)
    assert records(folder) == records(ref)
    m, mr = manifest(folder), manifest(ref)
    assert m["accounting"] == mr["accounting"] and m["stages"]["download"] == mr["stages"]["download"]
    audit = json.load(open(os.path.join(folder, m["stages"]["remove"]["lists"][0]["audit"])))
    assert set(audit["keys"]) == keys and audit["shards"] == [0, 1]
    assert audit["input_rows_tombstoned"] == json.load(open(os.path.join(ref, mr["stages"]["remove"]["lists"][0][
        "audit"])))["input_rows_tombstoned"]
    assert not os.listdir(os.path.join(folder, "_removals", audit["list_sha256"][:16], "pending"))
    r, _ = run(validate_cmd(folder))
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.slow
def test_download_resumed_over_a_half_replaced_shard_completes_the_removal_first(tiny, reference, folder, tmp_path):
    """Killed between the tfrecord's and the stats file's rename, the shard holds the new tfrecord next to the old
    stats: the resume check would take it for damaged and fetch the removed images again.  The download first
    completes the replacement (roll forward), and remove afterwards finishes the bookkeeping."""
    src, _ = tiny
    ref, ref_list, _ = reference
    lst = str(tmp_path / "takedown.txt")
    shutil.copy(ref_list, lst)
    r, _ = run(remove_cmd(folder, lst), env=env(**{removal.KILL_ENV: "0:renamed.tfrecord"}))
    assert r.returncode == -signal.SIGKILL
    r, _ = run(download_cmd(src, folder))
    assert r.returncode == 0, r.stderr
    assert not os.path.exists(os.path.join(folder, "_quarantine"))
    assert not manifest(folder)["stages"]["download"]["refetched"]
    r, _ = run(remove_cmd(folder, lst))
    assert r.returncode == 0, r.stderr
    assert records(folder) == records(ref) and data_files(folder) == data_files(ref)
    assert manifest(folder)["accounting"] == manifest(ref)["accounting"]


@pytest.mark.slow
def test_build_tfds_check_reports_a_registration_outdated_after_remove(folder, tmp_path):
    root = str(tmp_path / "tfds")
    reg = cli("build-tfds", "--source", folder, "--name", "tiny", "--data-dir", root, "--no-progress")
    check = cli("build-tfds", "--check", "--name", "tiny", "--data-dir", root, "--no-progress")
    r, _ = run(reg)
    assert r.returncode == 0, r.stderr
    r, _ = run(check)
    assert r.returncode == 0 and "ok" in r.stdout
    lst, _, _ = make_list(folder, tmp_path)
    r, _ = run(remove_cmd(folder, lst))
    assert r.returncode == 0, r.stderr
    r, _ = run(check)
    assert r.returncode == 1 and "outdated" in r.stdout, r.stdout
    assert "removed by `laionprep remove`" in r.stdout and "takedown.txt" in r.stdout
    r, _ = run(reg)  # registered again, it is current
    assert r.returncode == 0, r.stderr
    r, _ = run(check)
    assert r.returncode == 0, r.stdout


def test_remove_refuses_what_it_cannot_do_with_the_fix(tiny, folder, tmp_path):
    lst = str(tmp_path / "l.txt")
    open(lst, "w").write("x\n")
    r, _ = run(remove_cmd(folder, lst, "--by", "md5"))
    assert r.returncode == 2 and "--by md5: the shard parquets have no column 'md5'" in r.stderr
    assert "match on one of: url, key" in r.stderr and "fix:" in r.stderr and "Traceback" not in r.stderr
    m = manifest(folder)
    with open(os.path.join(folder, "manifest.json"), "w") as f:
        json.dump({**m, "status": "incomplete"}, f)
    r, _ = run(remove_cmd(folder, lst))
    assert r.returncode == 2 and "not complete" in r.stderr and "finish it first" in r.stderr
    assert "Traceback" not in r.stderr
    r, _ = run(remove_cmd(str(tmp_path / "nowhere"), lst))
    assert r.returncode == 2 and "DIR" in r.stderr and "Traceback" not in r.stderr
    r, _ = run(remove_cmd(folder, str(tmp_path / "typo.txt")))
    assert r.returncode == 2 and "removal list not found" in r.stderr and "--list" in r.stderr
    assert "--keep-keys" not in r.stderr and "Traceback" not in r.stderr


def ident_of(folder: str) -> str:
    (ident,) = os.listdir(os.path.join(folder, "_removals"))
    return ident


@pytest.mark.slow
def test_after_remove_no_file_in_dir_holds_a_removed_row_and_every_row_keeps_its_position(tiny, folder, tmp_path):
    """The input copies (DIR/metadata/, DIR/prefiltered/) lose the listed rows too, a listed row the prefilter
    dropped included; each is a tombstone in place, so img2dataset's plan (rows by position) and the download's
    fingerprint stay, and the same download command resumes without fetching or prefiltering again."""
    src, _ = tiny
    lst, keys, urls = make_list(folder, tmp_path)
    texts = texts_of(urls, folder)
    before, m0 = input_copies(folder), manifest(folder)
    assert {"metadata/part-00000.parquet", "prefiltered/00000.parquet"} <= set(holders(folder, texts))
    r, _ = run(remove_cmd(folder, lst))
    assert r.returncode == 0, r.stderr
    assert holders(folder, texts) == []
    stone = tombstone.url(ident_of(folder))
    after = input_copies(folder)
    assert after.keys() == before.keys()
    for rel, (rows, _) in after.items():
        url = "URL" if rel.startswith("metadata/") else "url"
        old = before[rel][0]
        assert len(rows) == len(old), rel
        changed = [i for i, (a, b) in enumerate(zip(old, rows)) if a != b]
        assert {old[i][url] for i in changed} == urls & {r[url] for r in old}, rel
        assert all(rows[i][url] == stone for i in changed)
        assert all(v in (None, "", -1, -1.0) for i in changed for k, v in rows[i].items() if k != url)
    audit = json.load(open(os.path.join(folder, manifest(folder)["stages"]["remove"]["lists"][0]["audit"])))
    assert audit["input_rows_tombstoned"] == {"metadata": len(urls), "prefiltered": len(keys)}
    assert not any(u in json.dumps(audit) for u in urls)  # the audit names keys, never a URL
    m = manifest(folder)
    assert m["fingerprint"] == m0["fingerprint"] and m["stages"]["prefilter"] == m0["stages"]["prefilter"]
    r, _ = run(download_cmd(src, folder))
    assert r.returncode == 0, r.stderr
    m2 = manifest(folder)
    assert input_copies(folder) == after and m2["accounting"] == m["accounting"]
    assert m2["stages"]["metadata"]["already_present"] == 1 and not m2["stages"]["download"]["refetched"]


def shard_state(folder: str) -> dict:
    """Per finished shard: its parquet's rows (by key: img2dataset writes them as they finish) and removal count, its
    stats without the times (what a shard fetched again must equal)."""
    out = {}
    for n in sorted(os.listdir(os.path.join(folder, "tfrecord"))):
        if n.endswith("_stats.json"):
            sid = int(n[:5])
            t = pq.read_table(os.path.join(folder, "tfrecord", f"{sid:05d}.parquet"))
            stats = json.load(open(os.path.join(folder, "tfrecord", n)))
            out[sid] = (sorted(t.to_pylist(), key=lambda r: r["key"]),
                        (t.schema.metadata or {}).get(b"laionprep.removed_by_list"),
                        {k: v for k, v in stats.items() if k not in ("duration", "start_time", "end_time")})
    return out


def download_figures(m: dict) -> dict:
    d = m["stages"]["download"]
    return {k: d.get(k) for k in ("rows_in", "success", "failed", "failure_reasons", "shards_done",
                                  "removed_by_list", "incomplete_shards")}


def lose_shards(folder: str, how: str) -> None:
    """Shards 0 and 1 (both hold listed rows) lost whole, or one file each (the resume check sets them aside)."""
    for sid in (0, 1):
        if how == "deleted":
            for what in ("tfrecord", "parquet", "stats"):
                damage(folder, sid, what)
        else:
            damage(folder, sid, "tfrecord" if sid == 0 else "parquet")


def assert_like_the_removal(folder: str, ref: str, texts: set[str], plans_before: dict) -> None:
    assert shard_state(folder) == shard_state(ref)
    assert records(folder) == records(ref)
    assert input_copies(folder) == input_copies(ref)
    m, mr = manifest(folder), manifest(ref)
    assert m["status"] == "complete" and m["accounting"] == mr["accounting"] and m["accounting"]["balanced"]
    assert download_figures(m) == download_figures(mr)
    assert holders(folder, texts) == []  # the shards set aside, in DIR/_quarantine/, were removed from already
    assert plans(folder) == plans_before


def plans(folder: str) -> dict:
    d = os.path.join(folder, "_removals", ident_of(folder), "shards")
    return {n: json.load(open(os.path.join(d, n))) for n in sorted(os.listdir(d))}


def removed_with_the_reference_list(ref_list: str, folder: str, tmp_path) -> tuple[str, set[str], dict]:
    """`remove` with a copy of the reference list: (the list, the listed rows' URLs and captions, the plans)."""
    lst = str(tmp_path / "takedown.txt")
    shutil.copy(ref_list, lst)
    texts = texts_of(set(open(lst).read().split()), folder)
    r, _ = run(remove_cmd(folder, lst))
    assert r.returncode == 0, r.stderr
    return lst, texts, plans(folder)


@pytest.mark.slow
@pytest.mark.parametrize("how", ["deleted", "a file lost"])
def test_a_shard_fetched_again_after_remove_comes_back_without_the_removed_rows(how, tiny, reference, folder,
                                                                                tmp_path):
    """The download fetches shards 0 and 1 again: their tombstones are refused by the fetcher (no request) and
    taken out as remove took them out; each shard, the accounting and the plans equal the removal's."""
    src, _ = tiny
    ref, ref_list, _ = reference
    lst, texts, plans_before = removed_with_the_reference_list(ref_list, folder, tmp_path)
    lose_shards(folder, how)
    r, _ = run(download_cmd(src, folder))
    assert r.returncode == 0, r.stderr
    assert sorted(e["shard"] for e in manifest(folder)["stages"]["download"]["refetched"]) == (
        [0, 1] if how != "deleted" else [])
    assert_like_the_removal(folder, ref, texts, plans_before)
    r, _ = run(validate_cmd(folder))
    assert r.returncode == 0, r.stdout + r.stderr
    snap = snapshot(folder)
    r, _ = run(remove_cmd(folder, lst))  # nothing left to remove: the download kept the removal
    assert r.returncode == 0 and "nothing left to remove" in r.stdout, r.stdout + r.stderr
    assert snapshot(folder) == snap


@pytest.mark.slow
@pytest.mark.parametrize("point", ["0:settling", "0:pending", "0:planned", "0:renamed.parquet"])
def test_download_killed_while_taking_tombstones_out_of_a_shard_then_run_again(point, tiny, reference, folder,
                                                                               tmp_path):
    src, _ = tiny
    ref, ref_list, _ = reference
    lst, texts, plans_before = removed_with_the_reference_list(ref_list, folder, tmp_path)
    lose_shards(folder, "deleted")
    r, _ = run(download_cmd(src, folder), env=env(**{removal.KILL_ENV: point}))
    assert r.returncode == -signal.SIGKILL, (r.returncode, r.stderr)
    r, _ = run(download_cmd(src, folder))
    assert r.returncode == 0, r.stderr
    assert_like_the_removal(folder, ref, texts, plans_before)
    assert not os.listdir(os.path.join(folder, "_removals", ident_of(folder), "pending"))


@pytest.mark.slow
def test_a_download_that_would_fetch_or_prefilter_the_inputs_again_after_remove_is_refused(tiny, folder, tmp_path):
    """A lost metadata copy would come back from the source with the listed rows, a lost prefiltered file from
    the prefilter over tombstones (another plan): both are errors naming the fix, and nothing is changed."""
    src, _ = tiny
    lst, _, urls, texts = listed_and_removed(folder, tmp_path)
    for lost in ("metadata/part-00000.parquet", "prefiltered/00000.parquet"):
        keep = str(tmp_path / "kept.parquet")
        shutil.move(os.path.join(folder, lost), keep)
        r, _ = run(download_cmd(src, folder))
        assert r.returncode == 1 and "laionprep remove" in r.stderr and "--restart" in r.stderr, r.stderr
        assert "Traceback" not in r.stderr
        assert holders(folder, texts) == [] and not os.path.exists(os.path.join(folder, lost))
        shutil.move(keep, os.path.join(folder, lost))
    r, _ = run(download_cmd(src, folder))  # restored: it resumes
    assert r.returncode == 0, r.stderr


@pytest.mark.slow
def test_a_list_applied_by_an_older_laionprep_is_completed_by_the_same_remove(tiny, folder, tmp_path):
    """An older laionprep rewrote the shards but left the input copies as they were (simulated: the copies put
    back).  A download that fetches a shard again says so; the same `remove` then tombstones the input copies
    (the prefiltered rows found by the plans' keys, the metadata rows by their URLs there)."""
    src, original = tiny
    lst, keys, urls, texts = listed_and_removed(folder, tmp_path)
    for rel in ("metadata/part-00000.parquet", "prefiltered/00000.parquet"):
        shutil.copy2(os.path.join(original, rel), os.path.join(folder, rel))
    damage(folder, 2, "tfrecord")  # a shard without listed rows: fetched again, it is as it was
    r, _ = run(download_cmd(src, folder))
    assert r.returncode == 0, r.stderr
    assert "applied here by an older laionprep" in r.stderr + r.stdout, r.stderr
    r, _ = run(remove_cmd(folder, lst))
    assert r.returncode == 0 and "nothing left to remove" not in r.stdout, r.stdout + r.stderr
    assert holders(folder, texts) == []
    audit = json.load(open(os.path.join(folder, manifest(folder)["stages"]["remove"]["lists"][0]["audit"])))
    assert audit["input_rows_tombstoned"] == {"metadata": len(urls), "prefiltered": len(keys)}
    assert set(audit["keys"]) == keys and manifest(folder)["accounting"]["balanced"]
    damage(folder, 2, "tfrecord")  # fetched again over the scrubbed copies: no warning now
    r, _ = run(download_cmd(src, folder))
    assert r.returncode == 0 and "older laionprep" not in r.stderr + r.stdout, r.stderr
    assert [e["shard"] for e in manifest(folder)["stages"]["download"]["refetched"]] == [2]
