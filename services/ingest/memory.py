"""Give the memory a large request used back to the system once it is answered.

A 20,000-row backfill builds tens of megabytes of records, envelopes and SQL parameters; Python frees them when
the request ends, but glibc keeps the freed heap mapped, so the process stayed that much larger for good (the RSS
after a backfill was what the issue measured). `malloc_trim` returns the free pages; it costs a few milliseconds,
so it runs only after requests of at least `LARGE_REQUEST_RECORDS` records. Elsewhere than glibc it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Callable
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
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
