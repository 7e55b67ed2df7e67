"""Image batches handed from the Grain loader's worker processes to the training process in reused shared memory.

Grain copies every array of an element into a fresh shared-memory segment, which the training process maps and
unlinks.  Fresh pages cost a fault (and zeroing) on both sides: on this project's VM creating, filling, mapping and
reading a 4.8 MB segment took ~7 ms, where copying into memory already mapped took 0.17 ms -- ~200 us per 224 px
image, the largest cost the Grain loader paid over tf.data (BENCHMARKS.md).

Here the training process creates, per worker, a few segments ("slots") of one image batch each, and keeps them
mapped.  A worker copies its batch into its lowest free slot and hands over a :class:`SlotRef` of a few bytes; the
training process gives out a numpy view of the slot.  Byte 0 of a slot is its state: the worker sets it (1) before
writing, and the training process clears it (0) only when nothing references the view any more (a finalizer on
the view's owner; a JAX array that aliases the buffer keeps the view alive), so a batch is never overwritten while
anyone can read it.  With every slot in use the worker hands over the plain array (Grain's own copy).

The training process owns the segments: they are registered with multiprocessing's resource tracker (cleaned up
after a kill -9 of the training process) and unlinked by :meth:`SlotPool.close`; views handed out stay valid after
that (the mapping lives until the last view is gone).  A kill -9 of the whole process group takes the tracker with
it: the next pool unlinks the slots of training processes that are gone (:func:`sweep_stale`).

The segments live in /dev/shm, a tmpfs that containers keep small (Docker's default is 64 MB).  Writing to a page
tmpfs has no room for kills the writer with SIGBUS, so the pool checks the room for all its slots up front, and a
worker reserves each slot's pages (``posix_fallocate``) before its first write: either way a full /dev/shm is a
clear error naming the fix, not a dead worker.
"""
from __future__ import annotations

import ctypes
import errno
import mmap
import os
import re
import secrets
import weakref
from multiprocessing import resource_tracker

import _posixshmem  # CPython's POSIX shm_open/shm_unlink, which multiprocessing.shared_memory uses
import numpy as np

from laionprep.errors import UsageError

SHM_DIR = "/dev/shm"  # where Linux's shm_open keeps the segments
HEADER = 64  # byte 0: the slot's state; the batch starts 64 bytes in (aligned)
FREE, HANDED = 0, 1


class SlotRef:
    """Which slot holds a batch, and its array type (what a worker sends instead of the batch)."""

    __slots__ = ("worker", "slot", "shape", "dtype")

    def __init__(self, worker: int, slot: int, shape: tuple, dtype: str):
        self.worker, self.slot, self.shape, self.dtype = worker, slot, tuple(shape), dtype

    def __reduce__(self):
        return SlotRef, (self.worker, self.slot, self.shape, self.dtype)


class _Mapping:
    """One segment mapped read/write into this process; unmapped when nothing references it."""

    def __init__(self, name: str, size: int, *, create: bool = False, reserve: bool = False):
        flags = os.O_RDWR | (os.O_CREAT | os.O_EXCL if create else 0)
        fd = _posixshmem.shm_open(name, flags, mode=0o600)
        try:
            if create:
                os.ftruncate(fd, size)  # sparse: pages are allocated when first written
            if reserve:
                try:
                    os.posix_fallocate(fd, 0, size)
                except OSError as e:
                    if e.errno != errno.ENOSPC:
                        raise
                    raise _no_room(size, _free_bytes(), f"slot {name}") from None
            self.mm = mmap.mmap(fd, size)
        finally:
            os.close(fd)
        self._anchor = ctypes.c_char.from_buffer(self.mm)  # for the address; released before unmapping
        self.address = ctypes.addressof(self._anchor)

    def __del__(self):
        self._anchor = None
        try:
            self.mm.close()
        except (BufferError, AttributeError):  # a worker's np view still exports it (that process is ending)
            pass


class _HandedBatch:
    """numpy's base for the view of one slot: while it lives the slot stays HANDED."""

    def __init__(self, mapping: _Mapping, ref: SlotRef, live: set):
        self._mapping = mapping  # keeps the mapping (the view's memory) alive as long as the view
        self.__array_interface__ = {"shape": ref.shape, "typestr": np.dtype(ref.dtype).str, "version": 3,
                                    "data": (mapping.address + HEADER, False)}
        self.key = key = (ref.worker, ref.slot)
        live.add(key)
        weakref.finalize(self, _release, mapping, live, key)


def _release(mapping: _Mapping, live: set, key) -> None:
    live.discard(key)
    mapping.mm[0] = FREE


class SlotPool:
    """The training process's side: ``slots`` segments of ``nbytes`` for each of ``workers`` worker processes.
    Unused tmpfs pages cost no memory: only the slots a worker has written are resident."""

    def __init__(self, workers: int, slots: int, nbytes: int):
        self.nbytes = int(nbytes)
        sweep_stale()
        need, free = workers * slots * _pages(HEADER + self.nbytes), _free_bytes()
        if need > free:  # every slot may be written: check now, not with a SIGBUS later
            raise _no_room(need, free, f"{workers} worker(s) x {slots} batches of {self.nbytes / 2**20:.1f} MiB")
        tag = f"lp{os.getpid():x}{secrets.token_hex(3)}"  # the pid first: see sweep_stale
        self.names = [[f"/{tag}w{w}s{k}" for k in range(slots)] for w in range(workers)]
        self._maps: dict[tuple[int, int], _Mapping] = {}
        self._live: set = set()
        # before the first segment: a failure part-way (no room in /dev/shm) unlinks those already made
        self._finalizer = weakref.finalize(self, _unlink_all, [n for ns in self.names for n in ns])
        try:
            for w, names in enumerate(self.names):
                for k, name in enumerate(names):
                    self._maps[w, k] = _Mapping(name, HEADER + self.nbytes, create=True)
                    resource_tracker.register(name, "shared_memory")
        except BaseException:
            self.close()
            raise

    def view(self, ref: SlotRef) -> np.ndarray:
        """The batch in ``ref``'s slot, without a copy; the slot is reused once this array and every view of it
        are gone."""
        return np.asarray(_HandedBatch(self._maps[ref.worker, ref.slot], ref, self._live))

    def close(self) -> None:
        """Unlink the segments (views handed out stay valid)."""
        self._finalizer()


def _unlink_all(names) -> None:
    for name in names:
        try:
            _posixshmem.shm_unlink(name)
        except FileNotFoundError:
            pass
        try:
            resource_tracker.unregister(name, "shared_memory")
        except Exception:  # noqa: BLE001 - the tracker may already be gone at interpreter exit
            pass


def _pages(n: int) -> int:
    return -(-n // mmap.PAGESIZE) * mmap.PAGESIZE


def _free_bytes(directory: str = SHM_DIR) -> int:
    st = os.statvfs(directory)
    return st.f_bavail * st.f_frsize


def _no_room(need: int, free: int, what: str) -> UsageError:
    return UsageError(f"shared memory is too small for the Grain loader's batches ({what}: {need / 2**20:.0f} MiB; "
                      f"{free / 2**20:.0f} MiB of {SHM_DIR} free)", where=SHM_DIR,
                      fix="give the machine or container more shared memory (docker run --shm-size=..., or a "
                          "Kubernetes emptyDir with medium: Memory mounted at /dev/shm), or use fewer "
                          "--config.data.grain_workers or a smaller per-process batch")


_SLOT_NAME = re.compile(r"lp([0-9a-f]+)[0-9a-f]{6}w\d+s\d+")  # SlotPool's names: pid, 6 random hex digits, slot


def sweep_stale(directory: str = SHM_DIR) -> list[str]:
    """Unlink this user's slots whose training process is gone (the names start with its pid) -> their names.

    A kill -9 of the whole process group kills multiprocessing's resource tracker too, which would otherwise unlink
    them; left alone they hold tmpfs memory until a reboot.  A live pid's slots are never touched (pids are those of
    this pid namespace: containers that share /dev/shm but not pids would need their own shm or IPC namespace, as
    Docker and Kubernetes give by default)."""
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return []
    gone = []
    for e in entries:
        m = _SLOT_NAME.fullmatch(e.name)
        if not m:
            continue
        try:
            if e.stat(follow_symlinks=False).st_uid != os.getuid() or _alive(int(m.group(1), 16)):
                continue
            _posixshmem.shm_unlink("/" + e.name)
        except (FileNotFoundError, PermissionError):  # another pool swept it first, or not ours after all
            continue
        gone.append(e.name)
    return gone


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a process of another user: alive
        pass
    return True


class WorkerSlots:
    """A worker's side: its slots, mapped on first use; :meth:`put` copies a batch into the lowest free one."""

    def __init__(self, worker: int, names: list[str], nbytes: int):
        self.worker, self.names, self.nbytes = worker, names, nbytes
        self._maps: dict[int, _Mapping] = {}

    def put(self, array: np.ndarray) -> SlotRef | None:
        """``array``'s copy in a free slot, or None (every slot handed out, or the batch does not fit)."""
        if array.nbytes > self.nbytes or not array.flags.c_contiguous:
            return None
        for k, name in enumerate(self.names):
            m = self._maps.get(k)
            if m is None:  # reserve its pages now: writing to a page a full tmpfs lacks is a SIGBUS
                m = self._maps[k] = _Mapping(name, HEADER + self.nbytes, reserve=True)
            if m.mm[0] == FREE:
                m.mm[0] = HANDED
                dst = np.ndarray(array.shape, array.dtype, buffer=m.mm, offset=HEADER)
                np.copyto(dst, array, casting="no")
                del dst
                return SlotRef(self.worker, k, array.shape, array.dtype.str)
        return None


__all__ = ["SlotPool", "SlotRef", "WorkerSlots", "HEADER", "sweep_stale"]
