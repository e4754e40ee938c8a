"""Every service tunes glibc's allocator at start (shared.memory.tune_allocator), leaving alone what the
deployment set itself through glibc's own variables."""

from __future__ import annotations

import subprocess
import sys

from shared import memory


def test_each_setting_the_environment_already_makes_is_left_to_it() -> None:
    every = memory.allocator_tuning({})
    assert (memory.M_ARENA_MAX, 2) in every and (memory.M_MMAP_THRESHOLD, 128 * 1024) in every
    assert len(every) == 3
    kept = memory.allocator_tuning({"MALLOC_ARENA_MAX": "8", "PATH": "/bin"})
    assert [p for p, _ in kept] == [memory.M_MMAP_THRESHOLD, memory.M_TRIM_THRESHOLD]


def test_glibc_takes_the_settings() -> None:
    """In a process of its own: the settings last for the life of the process that makes them."""
    code = "from shared.memory import tune_allocator; raise SystemExit(0 if tune_allocator({}) else 1)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    if memory._mallopt() is None:  # not glibc: nothing to tune, and it says so
        assert done.returncode == 1
    else:
        assert done.returncode == 0, done.stderr
