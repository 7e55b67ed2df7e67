"""Issue #14: every user mistake below ends as one laionprep message and an exit code, never a Python traceback.

Each case runs the CLI as a user does (``python -m laionprep.cli``, a subprocess) and asserts the exit code, that
the output names the path / flag / bucket (and the fix), that it came within ``max_s`` seconds, and that
``"Traceback"`` is not in stdout + stderr.  To add a case, add a row to ``CASES``: ``argv`` may use the
placeholders of :func:`places` ({tmp}: an empty folder, {file}: a regular file, {ro}: a read-only folder,
{bucket}: a bucket name).  ``env="offline_gcs"`` runs it with no Google credentials and no way to reach Google
Cloud Storage or a metadata server (closed 127.0.0.1 ports).
"""
from __future__ import annotations

import dataclasses
import os
import socket
import subprocess
import sys
import time

import pytest

SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")
AUTH = ("gcloud auth application-default login", "GOOGLE_APPLICATION_CREDENTIALS", "metadata server")


@dataclasses.dataclass(frozen=True)
class Case:
    id: str
    argv: tuple[str, ...]
    code: int
    says: tuple[str, ...]  # each must appear in stdout + stderr (after placeholder substitution)
    env: str = ""  # "" or "offline_gcs"
    max_s: float = 15.0


CASES = [
    # ---- output paths: a file, under a file, read-only; checked before any work (within a second or two)
    Case("download-output-is-a-file", ("download", "--dataset", "demo", "--output", "{file}"), 2,
         ("--output {file} exists and is not a folder", "fix:")),
    Case("download-output-under-a-file", ("download", "--dataset", "demo", "--output", "{file}/dl"), 2,
         ("{file} is a file, not a folder", "--output")),
    Case("download-output-read-only", ("download", "--dataset", "demo", "--output", "{ro}/dl"), 2,
         ("--output {ro}/dl cannot be created: {ro} is not writable", "read-only mount")),
    Case("validate-report-read-only", ("validate", "{tmp}", "--report", "{ro}"), 2,
         ("--report {ro} is not writable", "fix:")),
    Case("validate-report-is-a-file", ("validate", "{tmp}", "--report", "{file}"), 2, ("--report {file}",)),
    Case("build-tfds-data-dir-is-a-file", ("build-tfds", "--name", "x", "--source", "{tmp}", "--data-dir", "{file}"),
         2, ("--data-dir {file} exists and is not a folder",)),
    Case("build-tfds-data-dir-read-only", ("build-tfds", "--name", "x", "--source", "{tmp}", "--data-dir", "{ro}"),
         2, ("--data-dir {ro} is not writable",)),
    Case("reshard-output-is-a-file", ("reshard", "{tmp}", "--output", "{file}", "--name", "x"), 2,
         ("--output {file} exists and is not a folder",)),
    Case("demo-workdir-read-only", ("demo", "--workdir", "{ro}/demo"), 2, ("--workdir {ro}/demo cannot be created",)),
    Case("train-workdir-is-a-file", ("train", "--config", "flip_tiny", "--workdir", "{file}"), 2,
         ("--workdir {file} exists and is not a folder",)),
    Case("tokenizer-output-is-a-folder", ("tokenizer", "--source", "{tmp}", "--vocab-size", "10", "--output", "{tmp}"),
         2, ("--output {tmp} is a folder, not a file", "vocab.txt")),
    Case("tokenizer-output-read-only", ("tokenizer", "--source", "{tmp}", "--vocab-size", "10", "--output",
                                        "{ro}/vocab.txt"), 2, ("--output {ro} is not writable",)),
    # ---- gs:// without credentials or network: one message naming the bucket and the ways to authenticate
    Case("gcs-download-output", ("download", "--dataset", "demo", "--output", "gs://{bucket}/dl"), 2,
         ("gs://{bucket}", "--output", *AUTH), env="offline_gcs"),
    Case("gcs-download-metadata-source", ("download", "--dataset", "demo", "--output", "{tmp}/dl",
                                          "--metadata-source", "gs://{bucket}/meta"), 2,
         ("gs://{bucket}", "--metadata-source", *AUTH), env="offline_gcs"),
    Case("gcs-validate-dir", ("validate", "gs://{bucket}/dl"), 2, ("gs://{bucket}", *AUTH), env="offline_gcs"),
    Case("gcs-validate-report", ("validate", "{tmp}", "--report", "gs://{bucket}/report"), 2,
         ("gs://{bucket}", "--report", *AUTH), env="offline_gcs"),
    Case("gcs-reshard-source", ("reshard", "gs://{bucket}/dl", "--output", "{tmp}/rs", "--name", "x"), 2,
         ("gs://{bucket}", "SRC", *AUTH), env="offline_gcs"),
    Case("gcs-reshard-output", ("reshard", "{tmp}", "--output", "gs://{bucket}/rs", "--name", "x"), 2,
         ("gs://{bucket}", "--output", *AUTH), env="offline_gcs"),
    Case("gcs-build-tfds-source", ("build-tfds", "--name", "x", "--source", "gs://{bucket}/dl", "--data-dir",
                                   "{tmp}/tfds"), 2, ("gs://{bucket}", "--source", *AUTH), env="offline_gcs"),
    # ---- reshard: only options Beam defines go to Beam
    Case("reshard-typo", ("reshard", "{tmp}", "--output", "{tmp}/rs", "--name", "x", "--min-simlarity", "0.4"), 2,
         ("--min-simlarity is not a reshard flag", "did you mean --min-similarity?")),
    # (was `--format array_record`, until --format became a reshard flag)
    Case("reshard-foreign-flag", ("reshard", "{tmp}", "--output", "{tmp}/rs", "--name", "x", "--compression",
                                  "gzip"), 2,
         ("--compression is not a reshard flag nor an Apache Beam option", "laionprep reshard --help", "--runner")),
    # ---- bad flags: the verb's usage; no abbreviations
    Case("validate-abbreviation", ("validate", "{tmp}", "--quarantin"), 2,
         ("usage: laionprep validate", "unrecognized arguments: --quarantin", "did you mean --quarantine?")),
    Case("download-abbreviation", ("download", "--dataset", "demo", "--output", "{tmp}/dl", "--min-sim", "0.3"), 2,
         ("usage: laionprep download", "unrecognized arguments: --min-sim 0.3", "did you mean --min-similarity?")),
    Case("build-tfds-unknown-flag", ("build-tfds", "--name", "x", "--data-dir", "{tmp}", "--colour"), 2,
         ("usage: laionprep build-tfds", "unrecognized arguments: --colour")),
]


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.fixture(scope="module")
def places(tmp_path_factory):
    base = tmp_path_factory.mktemp("cli_errors")
    tmp = base / "empty"
    tmp.mkdir()
    f = base / "a_file"
    f.write_text("not a folder\n")
    ro = base / "read_only"
    ro.mkdir()
    mounted, no_ro = False, ""
    if os.geteuid() == 0:  # root writes through permissions: a read-only bind mount is what refuses it
        r = subprocess.run(["mount", "--bind", "-o", "ro", str(ro), str(ro)], capture_output=True, text=True)
        mounted = r.returncode == 0
        if not mounted:  # only the read-only cases cannot run (root without the right to mount)
            no_ro = f"cannot make a read-only folder as root here (mount: {r.stderr.strip()})"
    else:
        ro.chmod(0o555)
    yield {"tmp": str(tmp), "file": str(f), "ro": str(ro), "bucket": "laionprep-no-such-bucket-14", "no_ro": no_ro}
    if mounted:
        subprocess.run(["umount", str(ro)], check=False)
    else:
        ro.chmod(0o755)


def offline_gcs_env(tmp: str) -> dict[str, str]:
    """No credentials anywhere google-auth looks, and nothing answering where gcsfs / google-auth would ask."""
    port = _closed_port()
    env = {k: v for k, v in os.environ.items() if k not in (
        "GOOGLE_APPLICATION_CREDENTIALS", "STORAGE_EMULATOR_HOST", "NO_GCE_CHECK", "GOOGLE_AUTH_TOKEN_FOR_TESTING",
        "no_proxy", "NO_PROXY")}
    gcloud = os.path.join(tmp, "gcloud-config")
    os.makedirs(gcloud, exist_ok=True)
    env.update(CLOUDSDK_CONFIG=gcloud, GCE_METADATA_HOST=f"127.0.0.1:{port}", GCE_METADATA_IP=f"127.0.0.1:{port}",
               https_proxy=f"http://127.0.0.1:{port}", HTTPS_PROXY=f"http://127.0.0.1:{port}")
    return env


def run_cli(argv, env=None, timeout=120):
    env = dict(env or os.environ)
    env["PYTHONPATH"] = os.pathsep.join([SRC, env.get("PYTHONPATH", "")])
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "laionprep.cli", *argv], capture_output=True, text=True,
                       timeout=timeout, env=env)
    return r, time.monotonic() - t0


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_cli_error(case: Case, places):
    if places["no_ro"] and any("{ro}" in a for a in case.argv):
        pytest.skip(places["no_ro"])
    argv = [a.format(**places) for a in case.argv]
    env = offline_gcs_env(places["tmp"]) if case.env == "offline_gcs" else None
    r, seconds = run_cli(argv, env)
    out = r.stdout + r.stderr
    assert r.returncode == case.code, out
    for s in case.says:
        assert s.format(**places) in out, out
    assert "Traceback" not in out, out
    assert seconds < case.max_s, (seconds, out)
    assert not os.listdir(places["tmp"]) or os.listdir(places["tmp"]) == ["gcloud-config"]  # no work was started


def test_top_level_help_is_for_users():
    r, _ = run_cli(["--help"])
    assert r.returncode == 0
    for verb in ("datasets", "download", "reshard", "build-tfds", "validate", "train", "eval", "tokenizer", "demo"):
        assert f"\n    {verb}" in r.stdout, r.stdout
    assert "README.md" in r.stdout and "Exit codes" in r.stdout
    assert "This module only parses" not in r.stdout  # cli.py's docstring is for maintainers


def test_beam_options_pass_when_beam_defines_them():
    from laionprep.sharding import beam_options

    beam_options.check(["--direct_num_workers=1", "--direct_running_mode", "in_memory"], [])
    beam_options.check(["--runner", "DataflowRunner", "--project", "p", "--region", "europe-west4",
                        "--temp_location", "gs://b/tmp", "--max_num_workers=4"], [])
    with pytest.raises(Exception, match="did you mean --temp_location"):
        beam_options.check(["--runner", "DataflowRunner", "--temp-locaton", "gs://b/tmp"], [])
