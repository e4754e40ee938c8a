"""Every service tunes glibc's allocator at start (shared.memory.tune_allocator), leaving alone what the
deployment set itself through glibc's own variables, and the garbage collector (tune_gc)."""

from __future__ import annotations

import gc
import subprocess
import sys

from shared import memory
from shared.memory import GC_YOUNG_THRESHOLD, tune_gc


def test_each_setting_the_environment_already_makes_is_left_to_it() -> None:
    every = memory.allocator_tuning({})
    assert (memory.M_ARENA_MAX, 2) in every and (memory.M_MMAP_THRESHOLD, 128 * 1024) in every
    assert len(every) == 3
    kept = memory.allocator_tuning({"MALLOC_ARENA_MAX": "8", "PATH": "/bin"})
    assert [p for p, _ in kept] == [memory.M_MMAP_THRESHOLD, memory.M_TRIM_THRESHOLD]


def test_ingest_trims_its_heap_later_than_the_consumers() -> None:
    """Ingest gives a large request's memory back itself (release_after): its automatic trim waits for more."""
    assert memory.trim_threshold("safety") == memory.trim_threshold("all") == memory.TRIM_THRESHOLD
    default = dict(memory.allocator_tuning({}))
    ingest = dict(memory.allocator_tuning({}, trim_threshold=memory.trim_threshold("ingest")))
    assert default[memory.M_TRIM_THRESHOLD] == 128 * 1024
    assert ingest[memory.M_TRIM_THRESHOLD] == memory.INGEST_TRIM_THRESHOLD > 128 * 1024
    assert {p: v for p, v in ingest.items() if p != memory.M_TRIM_THRESHOLD} == {
        p: v for p, v in default.items() if p != memory.M_TRIM_THRESHOLD
    }
    assert memory.allocator_tuning({"MALLOC_TRIM_THRESHOLD_": "1"}, trim_threshold=1 << 30) == [
        (memory.M_ARENA_MAX, 2),
        (memory.M_MMAP_THRESHOLD, 128 * 1024),
    ]


def test_glibc_takes_the_settings() -> None:
    """In a process of its own: the settings last for the life of the process that makes them."""
    code = "from shared.memory import tune_allocator; raise SystemExit(0 if tune_allocator({}) else 1)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    if memory._mallopt() is None:  # not glibc: nothing to tune, and it says so
        assert done.returncode == 1
    else:
        assert done.returncode == 0, done.stderr


def test_the_collector_runs_less_often_and_leaves_startup_objects_alone() -> None:
    before = gc.get_threshold()
    try:
        tune_gc()
        assert gc.get_threshold() == (GC_YOUNG_THRESHOLD, *before[1:])
        assert gc.get_freeze_count() > 0  # startup's objects are in the permanent generation
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
