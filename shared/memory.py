"""Give the memory a large request (or a consumer's backlog) used back to the system once it is done.

A 25,000-row backfill builds tens of megabytes of records, envelopes and SQL parameters; Python frees them when
the request ends, but the memory stayed mapped, so the process stayed that much larger for good (the RSS after a
backfill was what the issue measured: 198 MB after four 25,000-row posts). Two causes, two remedies:
- Python's small-object allocator keeps a 1 MiB arena as long as one object in it lives, and a request's
  objects interleave with longer-lived ones: `sentinel run ingest` runs with `PYTHONMALLOC=malloc` (the system
  allocator; no measurable CPU cost here), unless the environment already chose an allocator;
- glibc keeps freed heap pages: `malloc_trim` returns them after requests of at least `LARGE_REQUEST_RECORDS`
  records (it costs a few milliseconds). Elsewhere than glibc it does nothing.
With both, four 25,000-row posts leave ingest at about 130 MB instead of 168 (trim alone) or 198 (neither).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import os
import sys
from collections.abc import Callable, Mapping
from functools import cache

LARGE_REQUEST_RECORDS = 1000


@cache
def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        trim: Callable[[int], int] = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):  # not glibc (musl, macOS)
        return None
    return trim


def release_after(records: int) -> None:
    """After a request of `records` records: hand freed heap pages back if the request was a large one."""
    if records < LARGE_REQUEST_RECORDS:
        return
    release()


def release() -> None:
    """Free what is left in reference cycles, then hand freed heap pages back (a consumer does it when a backlog
    it worked through is drained: its batches' rows and states are garbage by then)."""
    gc.collect()  # what the request left in reference cycles is freed now, not at some later full collection
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


ALLOCATOR = "PYTHONMALLOC"


def allocator_environment(environ: Mapping[str, str]) -> dict[str, str] | None:
    """The environment to run ingest under, if it differs from this one: the system allocator unless one is set
    (a deployment may choose another, `PYTHONMALLOC=pymalloc` for instance, and is then left alone)."""
    if ALLOCATOR in environ:
        return None
    return {**environ, ALLOCATOR: "malloc"}


def run_with_system_allocator() -> None:
    """Re-execute this very command line under `allocator_environment`, or return if it is already so. Called by
    `sentinel run ingest` before anything starts (same pid, so a supervisor's signals still reach it)."""
    environment = allocator_environment(os.environ)
    if environment is not None:
        os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], environment)
