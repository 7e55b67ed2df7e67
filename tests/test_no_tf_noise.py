"""Issue #14: TensorFlow's start-up probe lines never reach a user's terminal.

TensorFlow 2.21 writes "Could not find cuda drivers", "failed call to cuInit", the absl pre-initialisation notice
(and, on GPU machines, cuDNN/cuFFT/cuBLAS factory and TF-TRT notices) to stderr whatever TF_CPP_MIN_LOG_LEVEL says;
``laionprep.native_stderr`` filters them when laionprep runs as a program.  Each verb that imports TensorFlow is
run here the way a user runs it, and its whole output is searched for them."""
from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from laionprep.testing import synth

SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")
# what the probe lines say (collected by running the verbs on TF 2.21 without the filter)
PROBE = re.compile(r"cuda|cuInit|cudart|oneDNN|TF-TRT|absl::InitializeLog|computation_placer|cuDNN|cuBLAS|cuFFT|"
                   r"TensorRT|cpu_feature_guard", re.I)


def run_cli(*argv, timeout=300):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([SRC, os.environ.get("PYTHONPATH", "")]))
    for k in ("TF_CPP_MIN_LOG_LEVEL", "LAIONPREP_RAW_STDERR"):
        env.pop(k, None)
    r = subprocess.run([sys.executable, "-m", "laionprep.cli", *argv], capture_output=True, text=True,
                       timeout=timeout, env=env)
    return r.returncode, r.stdout + r.stderr


def assert_quiet(code, out):
    assert code == 0, out
    assert not PROBE.findall(out), [ln for ln in out.splitlines() if PROBE.search(ln)]
    assert "Traceback" not in out


@pytest.fixture(scope="module")
def tfds_root(demo_download, tmp_path_factory):
    root = str(tmp_path_factory.mktemp("tfds"))
    assert_quiet(*run_cli("build-tfds", "--name", "quiet_demo", "--source", demo_download, "--data-dir", root,
                          "--no-progress"))
    return root


def test_build_tfds_is_quiet(tfds_root):
    assert os.path.isdir(os.path.join(tfds_root, "quiet_demo", "1.0.0"))  # the run itself is checked by the fixture


def test_validate_of_a_tfds_folder_is_quiet(tfds_root):
    assert_quiet(*run_cli("validate", os.path.join(tfds_root, "quiet_demo", "1.0.0"), "--workers", "1",
                          "--decode-fraction", "0", "--no-progress"))


def test_tokenizer_is_quiet(demo_download, tmp_path):
    assert_quiet(*run_cli("tokenizer", "--source", os.path.join(demo_download, "tfrecord"), "--vocab-size", "200",
                          "--output", str(tmp_path / "vocab.txt"), "--max-examples", "100"))


def test_reshard_is_quiet(demo_download, tmp_path):
    assert_quiet(*run_cli("reshard", demo_download, "--output", str(tmp_path / "rs"), "--name", "quiet_rs",
                          "--num-shards", "1", "--no-progress", "--direct_num_workers=1"))


def test_download_is_quiet(demo_server, tmp_path):
    src = str(tmp_path / "meta")
    synth.write_metadata(src, 8, demo_server.base_url, seed=3, files=1)
    assert_quiet(*run_cli("download", "--dataset", "demo", "--metadata-source", src, "--output", str(tmp_path / "dl"),
                          "--processes", "1", "--threads", "4", "--allow-private-addresses"))


def test_filter_drops_probe_lines_and_keeps_the_rest():
    """The filter itself: probe lines (as TF 2.21 writes them, to descriptor 2) dropped, others kept in order,
    a partial line forwarded."""
    code = r"""
import os, sys
from laionprep import native_stderr
native_stderr.install()
w = lambda b: os.write(2, b)
w(b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n")
w(b"I0000 00:00:1796229383.932352   20754 cudart_stub.cc:31] Could not find cuda drivers on your machine.\n")
w(b"E0000 00:00:1796229391.764640   20754 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error\n")
w(b"E0000 00:00:1796229391.7  20754 cuda_dnn.cc:8310] Unable to register cuDNN factory: Attempting to register\n")
w(b"W0000 00:00:1796229391.7  20754 py_utils.cc:38] TF-TRT Warning: Could not find TensorRT\n")
w(b"E0000 00:00:1.5   20754 gcs_file_system.cc:120] a real error from TensorFlow\n")
w(b"I0000 00:00:1.6   20754 cuda_diagnostics.cc:137] hostname: gpu-1\n")
w(b"E0000 00:00:1.7   20754 cuda_dnn.cc:535] Loaded runtime CuDNN library: 8.6.0 but source was compiled with: 8.9\n")
w(b"laionprep download: error: kept\n")
sys.stderr.write("partial line, no newline")
"""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([SRC, os.environ.get("PYTHONPATH", "")]))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 0, r.stderr
    assert r.stderr == ("E0000 00:00:1.5   20754 gcs_file_system.cc:120] a real error from TensorFlow\n"
                        "E0000 00:00:1.7   20754 cuda_dnn.cc:535] Loaded runtime CuDNN library: 8.6.0 but source was "
                        "compiled with: 8.9\n"
                        "laionprep download: error: kept\npartial line, no newline"), r.stderr
