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


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_ARENA_MAX = -1, -3, -8  # glibc's mallopt parameters (malloc.h)
TRIM_THRESHOLD = 128 * 1024
TUNING = {
    "MALLOC_ARENA_MAX": (M_ARENA_MAX, 2),
    "MALLOC_MMAP_THRESHOLD_": (M_MMAP_THRESHOLD, 128 * 1024),
    "MALLOC_TRIM_THRESHOLD_": (M_TRIM_THRESHOLD, TRIM_THRESHOLD),
}
"""glibc's own environment variable for each setting, and (parameter, value)."""
INGEST_TRIM_THRESHOLD = 8 * 1024 * 1024
"""Ingest's: it trims after each large request itself (`release_after`), and under the system allocator every
object of a post comes from malloc, so trimming whenever 128 KiB were free at the heap's top gave pages back
that the next post faulted in again: 4% of a 100-event post's throughput (same-session A/B)."""


def trim_threshold(service: str) -> int:
    """The trim threshold `sentinel run <service>` tunes the allocator with (`all`: the consumers' one)."""
    return INGEST_TRIM_THRESHOLD if service == "ingest" else TRIM_THRESHOLD


def allocator_tuning(environ: Mapping[str, str], *, trim_threshold: int = TRIM_THRESHOLD) -> list[tuple[int, int]]:
    """The settings to apply: each one the environment does not set itself (glibc read those at start)."""
    return [
        (parameter, trim_threshold if parameter == M_TRIM_THRESHOLD else value)
        for variable, (parameter, value) in TUNING.items()
        if variable not in environ
    ]


def tune_allocator(environ: Mapping[str, str] = os.environ, *, trim_threshold: int = TRIM_THRESHOLD) -> bool:
    """Keep a long-running service's heap from holding on to what a backlog used (called once, at start).

    glibc's defaults suit short programs: after a large block is freed the mmap threshold rises (up to 32 MB), so
    later large buffers (a Kafka fetch, a batch's rows) come from the heap and their pages stay mapped; and each
    thread that allocates (the pool behind `asyncio.to_thread`) gets an arena of its own, holding its own freed
    pages. A fixed 128 KiB threshold, trimmed at 128 KiB, and two arenas: safety after draining 20,000 events
    settles at 133 MB instead of 142, at no measurable cost in throughput. False where there is no glibc."""
    mallopt = _mallopt()
    if mallopt is None:
        return False
    tuning = allocator_tuning(environ, trim_threshold=trim_threshold)
    return all(mallopt(parameter, value) == 1 for parameter, value in tuning)


@cache
def _mallopt() -> Callable[[int, int], int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        mallopt: Callable[[int, int], int] = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):
        return None
    return mallopt


GC_YOUNG_THRESHOLD = 20_000
"""Net allocations of containers between two collections of the young generation (CPython's default: 700)."""


def tune_gc() -> None:
    """Collect reference cycles less often, and never scan again what startup built (called once, at start).

    A consumer batch allocates hundreds of thousands of objects (rows, envelopes, SQL parameters), nearly all freed
    by reference counting, not by the collector; at CPython's 700 allocations per young collection, collecting was
    13-16% of safety's CPU (381 -> 312 us an event at 50 x 10 with 20,000) and about 5% of a single-event post's
    in ingest. The young generation still collects dozens of times a batch, so cycles do not pile up. Startup's
    objects (modules, the protocol, SQLAlchemy's mappers) go to the permanent generation no collection walks."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)
