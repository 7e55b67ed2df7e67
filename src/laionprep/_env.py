"""Process-wide set-up that must happen before TensorFlow, tensorflow-io or JAX are imported.

TensorFlow only feeds data in this project: it runs on the CPU and never grabs an accelerator, which belongs to
JAX.  tensorflow-io (imported by img2dataset's TFRecord writer) prints plugin-loading warnings on TF 2.21 whose
plugins it cannot load; they are harmless for the local and gs:// paths TF handles itself, so they are silenced.
The settings are environment variables so that worker processes (img2dataset's multiprocessing / Spark workers,
Beam's DirectRunner workers) inherit them.
"""
from __future__ import annotations

import os
import warnings

_DONE = False


def setup_environment() -> None:
    global _DONE
    if _DONE:
        return
    _DONE = True
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # no INFO/WARNING spam from TF's C++ side
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    if os.environ.get("STORAGE_EMULATOR_HOST", "") not in ("", "default"):
        # gcsfs's plain JSON client, not its gRPC bucket-layout probe (see laionprep.fs.configure_gcs)
        os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # img2dataset imports albumentations: no update check
    # tensorflow-io's "unable to open file: libtensorflow_io_plugins.so" / "file system plugins are not loaded".
    flt = "ignore::UserWarning:tensorflow_io.python.ops"
    current = os.environ.get("PYTHONWARNINGS", "")
    if flt not in current:
        os.environ["PYTHONWARNINGS"] = ",".join(x for x in (current, flt) if x)
    warnings.filterwarnings("ignore", category=UserWarning, module=r"tensorflow_io(\..*)?")
    warnings.filterwarnings("ignore", message=r".*(libtensorflow_io|file system plugins are not loaded).*")


def import_tf():
    """Import TensorFlow for data work only: CPU, quiet, accelerators hidden from it."""
    setup_environment()
    import tensorflow as tf

    try:
        tf.config.set_visible_devices([], "GPU")
        tf.config.set_visible_devices([], "TPU")
    except (RuntimeError, ValueError):  # already initialised, or no such device type: nothing to hide
        pass
    return tf
