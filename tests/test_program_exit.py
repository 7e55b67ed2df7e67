"""Issue #14: ``laionprep`` run as a program ends with ``os._exit`` after flushing (no C++ static destructors racing
TensorFlow's threads at interpreter exit, which once aborted a run that had written a correct folder).  What the
verb wrote must still all arrive, with its exit code, whatever stdout is connected to."""
from __future__ import annotations

import os
import subprocess
import sys

from laionprep.datasets import SPECS

SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")
ENV = dict(os.environ, PYTHONPATH=os.pathsep.join([SRC, os.environ.get("PYTHONPATH", "")]))


def run_program(*argv, **kw):
    return subprocess.run([sys.executable, "-m", "laionprep.cli", *argv], capture_output=True, text=True,
                          timeout=120, env=ENV, **kw)


def test_buffered_stdout_is_flushed_before_exit():
    r = run_program("datasets")  # stdout is a pipe: block-buffered, lost by os._exit unless flushed
    assert r.returncode == 0, r.stderr
    listed = [line.split()[0] for line in r.stdout.splitlines() if line.strip()]
    assert listed == list(SPECS), r.stdout


def test_exit_codes_survive(tmp_path):
    r = run_program("validate", str(tmp_path / "missing"))
    assert r.returncode == 2 and "no such folder" in r.stderr and "Traceback" not in r.stderr
    r = run_program("--help")
    assert r.returncode == 0 and "VERB" in r.stdout
    r = run_program("download", "--dataset", "laion400m", "--output", str(tmp_path / "o"), "--no-such-flag")
    assert r.returncode == 2 and "--no-such-flag" in r.stderr and "Traceback" not in r.stderr


def test_reader_leaving_early_is_not_a_traceback():
    p = subprocess.Popen([sys.executable, "-m", "laionprep.cli", "datasets"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env=ENV)
    p.stdout.close()  # `laionprep datasets | head -0`: the reader is gone before anything is written
    err = p.stderr.read().decode()
    p.wait(timeout=120)
    assert "Traceback" not in err and "Exception ignored" not in err, err


def test_python_dash_m_laionprep_is_the_command(tmp_path):
    r = subprocess.run([sys.executable, "-m", "laionprep", "datasets"], capture_output=True, text=True, timeout=120,
                       env=ENV)
    assert r.returncode == 0 and r.stdout.split()[0] == next(iter(SPECS)), r.stderr
    r = subprocess.run([sys.executable, "-m", "laionprep", "validate", str(tmp_path / "missing")],
                       capture_output=True, text=True, timeout=120, env=ENV)
    assert r.returncode == 2 and "no such folder" in r.stderr
