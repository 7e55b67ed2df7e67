"""The Beam side of ``laionprep reshard``: options (local defaults, pass-through), the laionprep wheel shipped to
remote workers, the pipeline ``Create(plan) | Reshuffle | ParDo(write)`` and the thread that runs it.
"""
from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from typing import Sequence

from laionprep.errors import UsageError
from laionprep.sharding import worker as lworker

LOCAL_RUNNERS = ("directrunner", "switchingdirectrunner", "fnapirunner")
_SHIPS_CODE = ("--setup_file", "--extra_package", "--extra_packages", "--sdk_container_image",
               "--worker_harness_container_image")


def runner_name(beam_args: Sequence[str]) -> str:
    from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

    return PipelineOptions(list(beam_args)).view_as(StandardOptions).runner or "DirectRunner"


def is_local_runner(beam_args: Sequence[str]) -> bool:
    return runner_name(beam_args).lower() in LOCAL_RUNNERS


def _has_flag(args: Sequence[str], *flags: str) -> bool:
    return any(a.split("=", 1)[0] in flags for a in args)


def pipeline_options(beam_args: Sequence[str]):
    """Beam options from the pass-through arguments, with laionprep's local defaults.

    Returns ``(options, runner)`` where ``runner`` is a runner object for the local case (the portable Python
    runner, multi-process, one worker per core unless ``--direct_num_workers`` / ``--direct_running_mode`` say
    otherwise) and the runner's name otherwise.
    """
    from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, SetupOptions, StandardOptions

    args = list(beam_args)
    opts = PipelineOptions(args)
    name = opts.view_as(StandardOptions).runner or "DirectRunner"
    if name.lower() in LOCAL_RUNNERS:
        from apache_beam.runners.portability.fn_api_runner import FnApiRunner

        direct = opts.view_as(DirectOptions)
        if not _has_flag(args, "--direct_num_workers"):
            direct.direct_num_workers = os.cpu_count() or 1
        if not _has_flag(args, "--direct_running_mode"):
            direct.direct_running_mode = "multi_processing"
        opts.view_as(StandardOptions).runner = "DirectRunner"
        return opts, FnApiRunner()
    opts.view_as(SetupOptions).save_main_session = False  # the DoFn lives in an importable module
    return opts, name


def _repo_root() -> str | None:
    here = os.path.dirname(os.path.abspath(__file__))  # src/laionprep/sharding
    root = os.path.dirname(os.path.dirname(os.path.dirname(here)))
    return root if os.path.isfile(os.path.join(root, "pyproject.toml")) else None


def build_wheel(out_dir: str) -> str:
    """Build the laionprep wheel (no dependencies) from the source tree this module runs from; returns its path.

    The build runs on a copy of ``pyproject.toml`` + ``src/`` so the checkout gets no ``build/`` folder.
    """
    root = _repo_root()
    if root is None:
        raise UsageError("cannot ship laionprep to remote workers: not running from a source checkout",
                         where="--runner", fix="pass --extra_package PATH/TO/laionprep-*.whl (or --setup_file, or "
                         "--sdk_container_image with laionprep installed)")
    os.makedirs(out_dir, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="laionprep-wheel-") as tmp:
        copy = os.path.join(tmp, "laionprep")
        os.makedirs(copy)
        for f in ("pyproject.toml", "README.md", "LICENSE"):
            if os.path.exists(os.path.join(root, f)):
                shutil.copy(os.path.join(root, f), copy)
        shutil.copytree(os.path.join(root, "src"), os.path.join(copy, "src"),
                        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc"))
        # Offline first (the venv's setuptools); if that setuptools is too old for pyproject.toml, let pip
        # provide the build requirements in an isolated environment (needs the package index).
        for isolation in (["--no-build-isolation"], []):
            cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", *isolation, "--quiet", "-w", out_dir, copy]
            r = subprocess.run(cmd, capture_output=True, text=True)
            if r.returncode == 0:
                break
        if r.returncode != 0:
            raise UsageError(f"building the laionprep wheel failed: {r.stderr.strip()[-1500:]}", where=" ".join(cmd),
                             fix="pass --extra_package with a wheel you built, or --setup_file ./pyproject.toml")
    wheels = sorted(p for p in os.listdir(out_dir) if p.startswith("laionprep-") and p.endswith(".whl"))
    return os.path.join(out_dir, wheels[-1])


def build_pipeline(prep, *, wheel_dir: str | None = None):
    """The Beam pipeline for a prepared job (a ``preparation.Prepared``; not imported: preparation imports this
    module), NOT run: ``(pipeline, options)``.

    For remote runners without code-shipping options, builds the laionprep wheel into ``wheel_dir`` (default: a
    temporary folder) and adds it as ``--extra_package``.
    """
    import apache_beam as beam
    from apache_beam.options.pipeline_options import SetupOptions

    args = list(prep.config.beam_args)
    opts, runner = pipeline_options(args)
    if isinstance(runner, str) and not _has_flag(args, *_SHIPS_CODE) and runner.lower() not in (
            "bundlebaseddirectrunner", "interactiverunner"):
        wheel = build_wheel(wheel_dir or tempfile.mkdtemp(prefix="laionprep-ship-"))
        opts.view_as(SetupOptions).extra_packages = [wheel]
    p = beam.Pipeline(runner=runner, options=opts)
    (p
     | "Plan" >> beam.Create(prep.tasks, reshuffle=False)
     | "Distribute" >> beam.Reshuffle()
     | "WriteShards" >> beam.ParDo(lworker.WriteShardFn(prep.job)))
    return p, opts


def run_pipeline(pipeline, local: bool, on_poll) -> None:
    """Run and wait, calling ``on_poll()`` about every second from this thread; re-raises the job's error."""
    box: dict = {}

    def target():
        try:
            res = pipeline.run()
            res.wait_until_finish()
            state = str(getattr(res, "state", "DONE"))
            if "DONE" not in state.upper():
                box["error"] = RuntimeError(f"the Beam job ended in state {state}")
        except BaseException as e:  # noqa: BLE001 - handed to the launcher thread
            box["error"] = e

    beam_logger = logging.getLogger("apache_beam")
    old_level = beam_logger.level
    if local:  # the local job service relays every worker log line (start-up warnings, tracebacks that the
        # error raised below carries anyway): noise for a user
        beam_logger.setLevel(logging.CRITICAL)
    try:
        t = threading.Thread(target=target, name="laionprep-reshard-beam", daemon=True)
        t.start()
        while t.is_alive():
            t.join(1.0 if local else 5.0)
            on_poll()
    finally:
        beam_logger.setLevel(old_level)
    if "error" in box:
        raise box["error"]


def error_summary(e: BaseException) -> str:
    text = str(e)
    for pat in (r"(laionprep\.errors\.\w+Error: .*?)(?:\n\n|\Z)", r"(DataError: .*?)(?:\n\n|\Z)"):
        m = re.findall(pat, text, flags=re.S)
        if m:
            return m[-1].strip()[:2000]
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return (lines[-1] if lines else type(e).__name__)[:2000]
