"""The randomized integrity test (issue #14): seeded random sequences of what happens to a download folder in real
life, then a final run, and the folder must end exactly like a fresh run.

A sequence starts from a copy of a finished fresh download or from nothing and draws 2-3 steps from:

* ``download P``: the real ``laionprep download`` with parameters P drawn from a small set (``--min-similarity``
  default or 0.38, ``--number-sample-per-shard`` 10 or 15). P differing from the folder's manifest must exit 2
  and leave the folder unchanged; then, with probability 1/2, the same with ``--restart`` (exit 0);
* ``kill``: the same download (``--restart`` if P differs), kill -9 of its process group at a random moment;
* ``damage``: delete or truncate a random shard file (tfrecord, parquet or _stats.json);
* ``quarantine``: ``laionprep validate --quarantine`` (exit 0 or 1).

After every step that exits 0 the folder must hold what its manifest says: a download's folder validates, and its
records (keys, captions, image bytes) and accounting equal a fresh run's with the same parameters; after
``validate --quarantine`` a second one moves nothing and exits 0.  The final step runs the download with the last
parameters (``--restart`` when they differ from the folder's) and ``validate``: exit 0, records and accounting equal
the fresh run's.

``same``: sequences whose downloads all use one parameter set; ``mixed``: parameters drawn per step (needs the
re-run refusal and ``--restart`` of ``laionprep download``).  The default run has 20 sequences (10 of each);
``LAIONPREP_INTEGRITY_SEQUENCES=200`` runs 200 (100 of each); ``LAIONPREP_INTEGRITY_SEED=S`` runs sequence S alone.
A failure names the seed and the steps, and how to run it again.
"""
from __future__ import annotations

import os
import random
import shutil

import pytest

from . import lost_files_helpers as lh
from .crash_helpers import run, run_and_kill

pytestmark = pytest.mark.slow  # real img2dataset runs, killed and run again

PARAMS = [(lh.SHARD, None), (lh.SHARD, 0.38), (15, None), (15, 0.38)]  # (--number-sample-per-shard, --min-similarity)
TOTAL = int(os.environ.get("LAIONPREP_INTEGRITY_SEQUENCES", "20"))
ONE = os.environ.get("LAIONPREP_INTEGRITY_SEED")
MODES = ("same", "mixed")


def seeds(mode: str) -> list[int]:
    """Seeds of ``mode``: even numbers are same-parameter sequences, odd ones mixed."""
    if ONE is not None:
        return [int(ONE)] if int(ONE) % 2 == MODES.index(mode) else []
    return [2 * i + MODES.index(mode) for i in range(TOTAL // 2)]


@pytest.fixture(scope="module")
def fresh_runs(tmp_path_factory, demo_server):
    """P -> (fresh finished download with parameters P, its records, its manifest), made when first asked for."""
    base = tmp_path_factory.mktemp("integrity")
    source = lh.write_source(str(base / "source"), demo_server)
    cache: dict = {}

    def get(p):
        if p not in cache:
            out = str(base / f"fresh-{p[0]}-{p[1]}")
            r, _ = run(lh.download_cmd(source, out, shard=p[0], min_similarity=p[1]))
            assert r.returncode == 0, r.stdout + r.stderr
            cache[p] = (out, lh.records(out), lh.manifest(out))
        return cache[p]

    get.source = source
    return get


def draw(seed: int, mode: str) -> tuple[bool, list[tuple]]:
    """(start from a fresh copy, steps) of sequence ``seed``."""
    rng = random.Random(f"laionprep-integrity-{seed}")
    fixed = PARAMS[0]
    pick = (lambda: fixed) if mode == "same" else (lambda: rng.choice(PARAMS))
    from_copy = rng.random() < 0.7
    steps: list[tuple] = []
    for _ in range(rng.randint(2, 3)):
        kind = rng.choices(["download", "kill", "damage", "quarantine"], [0.2, 0.3, 0.3, 0.2])[0]
        if kind == "download":
            steps.append(("download", pick(), rng.random() < 0.5))
        elif kind == "kill":
            steps.append(("kill", pick(), round(rng.uniform(0.3, 5.0), 2)))
        elif kind == "damage":
            steps.append(("damage", rng.choice(["tfrecord", "parquet", "stats"]), rng.choice(["delete", "truncate"]),
                          rng.random()))
        else:
            steps.append(("quarantine",))
    return from_copy, steps


def folder_params(d: str):
    if not os.path.exists(os.path.join(d, "manifest.json")):
        return None
    p = lh.manifest(d)["parameters"]
    return p["download"]["number_sample_per_shard"], p.get("min_similarity")


class Sequence:
    def __init__(self, seed: int, mode: str, d: str, fresh):
        self.seed, self.mode, self.d, self.fresh, self.log = seed, mode, d, fresh, []

    def fail(self, msg: str):
        steps = "\n  ".join(self.log)
        pytest.fail(f"integrity sequence seed {self.seed} ({self.mode}): {msg}\n  {steps}\nreproduce: "
                    f"LAIONPREP_INTEGRITY_SEED={self.seed} pytest tests/reliability/test_integrity_random.py -k "
                    f"{self.mode}", pytrace=False)

    def check(self, cond, msg: str):
        if not cond:
            self.fail(msg)

    def cmd(self, p, restart=False):
        return lh.download_cmd(self.fresh.source, self.d, shard=p[0], min_similarity=p[1], restart=restart)

    def like_fresh(self, p, what: str):
        """The folder holds exactly a fresh run with parameters ``p``: validate exits 0, same records, accounting."""
        from laionprep.validate import ValidateConfig, validate

        _, recs, m = self.fresh(p)
        have = lh.manifest(self.d)
        self.check(have["status"] == "complete", f"{what}: exit 0 but status {have['status']!r}")
        self.check(folder_params(self.d) == p, f"{what}: exit 0 but the manifest's parameters are "
                                               f"{folder_params(self.d)}, not {p}")
        self.check(have["accounting"] == m["accounting"] and have["accounting"]["balanced"],
                   f"{what}: accounting {have['accounting']} != fresh {m['accounting']}")
        rep = validate(ValidateConfig(self.d, workers=1, decode_fraction=1.0))
        self.check(rep.exit_code == 0, f"{what}: exit 0 but validate finds {rep.counts}")
        got = lh.records(self.d)
        self.check(got == recs, f"{what}: records differ from a fresh run's: missing {sorted(set(recs) - set(got))}, "
                                f"extra {sorted(set(got) - set(recs))}, changed "
                                f"{sorted(k for k in set(got) & set(recs) if got[k] != recs[k])}")

    def fetched_nothing(self) -> bool:
        """The folder is one the re-run rule re-plans in place (stage.Replan; ingest.pipeline._replan): its run
        stopped before any image was fetched, and PARAMS only vary settings that a re-plan may change."""
        images = os.path.join(self.d, "tfrecord")
        return (lh.manifest(self.d)["status"] in ("fetching", "prefiltering", "empty")
                and not (os.path.isdir(images) and os.listdir(images)))

    def download(self, p, restart_if_changed: bool, final=False):
        have = folder_params(self.d)
        if have is not None and have != p and self.fetched_nothing():
            r, _ = run(self.cmd(p))
            self.log.append(f"download {p} over {have} (no image fetched yet): exit {r.returncode}")
            self.check(r.returncode == 0 and "re-planning with the new parameters" in r.stdout + r.stderr,
                       "a download over a folder that fetched no image did not re-plan:\n"
                       + r.stdout[-1500:] + r.stderr[-1500:])
        elif have is not None and have != p:
            before = lh.snapshot(self.d)
            r, _ = run(self.cmd(p))
            self.log.append(f"download {p} over {have}: exit {r.returncode}")
            self.check(r.returncode == 2, "a download with changed parameters did not refuse with exit 2:\n"
                       + r.stdout[-1500:] + r.stderr[-1500:])
            self.check(" -> " in r.stdout + r.stderr, "the refusal does not name `param: old -> new`")
            self.check(lh.snapshot(self.d) == before, "the refused download changed the folder")
            if not restart_if_changed:
                return
            r, _ = run(self.cmd(p, restart=True))
            self.log.append(f"download {p} --restart: exit {r.returncode}")
        else:
            r, _ = run(self.cmd(p))
            self.log.append(f"download {p}: exit {r.returncode}")
        self.check(r.returncode == 0 or not final, "the final download failed:\n" + r.stdout[-2000:] + r.stderr[-2000:])
        if r.returncode == 0:
            self.like_fresh(p, self.log[-1])

    def kill(self, p, delay):
        have = folder_params(self.d)
        killed = run_and_kill(self.cmd(p, restart=have is not None and have != p), delay)
        self.log.append(f"kill -9 download {p}{' --restart' if have not in (None, p) else ''} after {delay}s "
                        f"({'killed' if killed else 'it had ended'})")

    def damage(self, what, how, u):
        files = sorted(n for n in os.listdir(os.path.join(self.d, "tfrecord"))
                       if n.endswith({"tfrecord": ".tfrecord", "parquet": ".parquet", "stats": "_stats.json"}[what])
                       ) if os.path.isdir(os.path.join(self.d, "tfrecord")) else []
        if not files:
            self.log.append(f"damage {what}: no such file")
            return
        path = os.path.join(self.d, "tfrecord", files[int(u * len(files))])
        if how == "delete":
            os.remove(path)
            self.log.append(f"delete {os.path.basename(path)}")
        else:
            keep = int(u * os.path.getsize(path))
            os.truncate(path, keep)
            self.log.append(f"truncate {os.path.basename(path)} to {keep} bytes")

    def quarantine(self):
        from laionprep.errors import LaionprepError
        from laionprep.validate import ValidateConfig, validate

        try:
            rep = validate(ValidateConfig(self.d, workers=1, decode_fraction=1.0, quarantine=True))
        except LaionprepError as e:  # e.g. a folder killed before it had a manifest: not a dataset folder yet
            self.log.append(f"validate --quarantine: refused ({type(e).__name__}: {e.what})")
            return
        self.log.append(f"validate --quarantine: exit {rep.exit_code}, moved "
                        f"{[q['shard'] for q in rep.quarantined]}, found {rep.counts}")
        if rep.exit_code != 0:
            return
        again = validate(ValidateConfig(self.d, workers=1, decode_fraction=1.0, quarantine=True))
        self.check(again.exit_code == 0 and not again.quarantined,
                   f"validate --quarantine exited 0, but a second one finds {again.counts}")
        if lh.manifest(self.d).get("status") == "complete":
            self.like_fresh(folder_params(self.d), "validate --quarantine (status complete)")


@pytest.mark.parametrize("mode", MODES)
def test_random_sequences_end_like_a_fresh_run(tmp_path, fresh_runs, mode):
    ran = 0
    for seed in seeds(mode):
        from_copy, steps = draw(seed, mode)
        d = str(tmp_path / f"seq{seed}")
        seq = Sequence(seed, mode, d, fresh_runs)
        first = PARAMS[0]
        if from_copy:
            shutil.copytree(fresh_runs(first)[0], d)
            seq.log.append(f"start: a copy of a fresh download {first}")
        else:
            seq.log.append("start: no folder")
        last = first
        for step in steps:
            if step[0] == "download":
                last = step[1]
                seq.download(step[1], step[2])
            elif step[0] == "kill":
                last = step[1]
                seq.kill(step[1], step[2])
            elif step[0] == "damage":
                seq.damage(*step[1:])
            else:
                seq.quarantine()
        seq.download(last, restart_if_changed=True, final=True)
        shutil.rmtree(d)
        ran += 1
        print(f"seed {seed} ({mode}): " + "; ".join(seq.log))
    assert ran == len(seeds(mode))
