"""Keeps TensorFlow's start-up probe lines off a user's terminal (``laionprep`` run as a program only).

TensorFlow 2.21 logs through absl before absl's logging is initialised ("WARNING: All log messages before
absl::InitializeLog() is called are written to STDERR"), from C++ static initialisers and its first look at the
devices: "Could not find cuda drivers", "failed call to cuInit", "oneDNN custom operations are on", "Unable to
register cuDNN factory", "computation placer already registered", "TF-TRT Warning"...  Those lines ignore
``TF_CPP_MIN_LOG_LEVEL`` (``laionprep._env`` sets it; it only reaches TensorFlow's own later logging), so no
setting can silence them: they are written straight to file descriptor 2.

:func:`install` therefore puts a pipe on descriptor 2 for the life of the process, and a thread copies
everything to the real stderr as it comes, except complete lines that :data:`PROBE_LINE` matches.  Child
processes that inherit stderr (Beam's local workers) go through the same filter; img2dataset's child writes to
its log file.  Text is forwarded at once unless it may be the start of a probe line (a glog-style header or the
absl notice); such a partial line waits at most ``_HOLD_S`` for its end.
"""
from __future__ import annotations

import atexit
import fcntl
import os
import re
import select
import struct
import sys
import termios
import threading
import time

# What the probe lines say (glog-style: "I0000 00:00:1796229383.93 20754 cudart_stub.cc:31] Could not find cuda...").
# Matched by message, not by source file: JAX (the trainer) logs through the same files, and its real GPU errors
# must stay visible.
_PROBES = (r"Could not find cuda drivers on your machine", r"failed call to cuInit",
           r"oneDNN custom operations are on", r"Unable to register cu(DNN|FFT|BLAS) factory",
           r"computation placer already registered", r"TF-TRT Warning", r"Could not find TensorRT",
           r"This TensorFlow binary is optimized to use available CPU instructions",
           r"To enable the following instructions: .* rebuild TensorFlow", r"Cannot dlopen some GPU libraries",
           r"successful NUMA node read from SysFS had negative value")
_GLOG = r"[IWE]\d{4} [\d:.]+\s+\d+ "  # severity, date, time, thread id
PROBE_LINE = re.compile(r"^(WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
                        r"|" + _GLOG + r"[\w.]+:\d+\] .*(" + "|".join(_PROBES) + r").*"
                        r"|" + _GLOG + r"cuda_diagnostics\.cc:\d+\] .*)$")  # the follow-up of a failed cuInit
_MAYBE_PROBE = re.compile(r"^([IWE]\d{0,4}( [\d:.]*(\s+\d*)?)?|W(A(R(N(I(N(G(:( .*)?)?)?)?)?)?)?)?)$")
_HOLD_S = 0.5
_installed = False
_read_fd = -1
_restore: list = []  # the undo of install(), run once
_busy = threading.Event()  # set while the pump holds data it has read but not yet written


def is_probe_line(line: str) -> bool:
    return bool(PROBE_LINE.match(line.rstrip("\r\n")))


def install() -> None:
    """Filter descriptor 2 for the rest of this process (idempotent); restored, and drained, at exit."""
    global _installed, _read_fd
    if _installed or os.environ.get("LAIONPREP_RAW_STDERR"):
        return
    _installed = True
    try:
        sys.stderr.flush()
    except (AttributeError, ValueError, OSError):
        pass
    try:
        real = os.dup(2)
    except OSError:  # no stderr at all: nothing to filter
        return
    r, w = os.pipe()
    _read_fd = r
    os.dup2(w, 2)
    os.close(w)
    t = threading.Thread(target=_pump, args=(r, real), name="laionprep-stderr-filter", daemon=True)
    t.start()
    _restore.append(lambda: (os.dup2(real, 2), t.join(2.0)))  # dup2 closes our end: the pump ends with the children's
    atexit.register(restore)


def restore() -> None:
    """Put the real stderr back and forward what the filter still holds (idempotent; also run at exit)."""
    try:
        sys.stderr.flush()
    except (AttributeError, ValueError, OSError):
        pass
    while _restore:
        _restore.pop()()


def sync(timeout: float = 0.5) -> None:
    """Wait (briefly) until what was written to stderr so far is on the real stderr, so that stdout written next
    (a summary table after a progress bar) appears after it, as it would without the filter."""
    if not _installed:
        return
    try:
        sys.stderr.flush()
    except (AttributeError, ValueError, OSError):
        pass
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        waiting = struct.unpack("i", fcntl.ioctl(_read_fd, termios.FIONREAD, b"\0\0\0\0"))[0]
        if not waiting and not _busy.is_set():
            return
        time.sleep(0.002)


def _write(fd: int, data: bytes) -> None:
    while data:
        try:
            data = data[os.write(fd, data):]
        except InterruptedError:
            continue
        except OSError:
            return


def _pump(r: int, out: int) -> None:
    pending = b""  # the start of a line not yet forwarded
    mid_line = False  # the current line's start was forwarded: forward the rest as it comes
    while True:
        ready, _, _ = select.select([r], [], [], _HOLD_S if pending else None)
        if not ready:  # a partial line waited long enough: it is not a probe line being written
            _write(out, pending)
            pending, mid_line = b"", True
            continue
        _busy.set()
        chunk = os.read(r, 65536)
        if not chunk:
            _write(out, pending)
            return
        data = pending + chunk
        pending = b""
        while data:
            nl = data.find(b"\n")
            if mid_line:
                if nl < 0:
                    _write(out, data)
                    break
                _write(out, data[:nl + 1])
                data, mid_line = data[nl + 1:], False
                continue
            if nl < 0:
                if _MAYBE_PROBE.match(data.decode("utf-8", "replace")):
                    pending = data
                else:
                    _write(out, data)
                    mid_line = True
                break
            line, data = data[:nl + 1], data[nl + 1:]
            if not is_probe_line(line.decode("utf-8", "replace")):
                _write(out, line)
        _busy.clear()
