"""`sentinel run ingest` runs under the system allocator (its backfills fragment Python's own), unless the
deployment chose an allocator itself; large requests hand their freed memory back."""

from __future__ import annotations

import sys
from typing import Any

import pytest

from shared import memory


def test_the_system_allocator_is_chosen_only_when_none_is() -> None:
    assert memory.allocator_environment({"PATH": "/bin"}) == {"PATH": "/bin", "PYTHONMALLOC": "malloc"}
    assert memory.allocator_environment({"PYTHONMALLOC": "pymalloc"}) is None


def test_the_same_command_line_is_executed_again_under_it(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, list[str], dict[str, str]]] = []

    def execve(path: str, argv: list[str], env: dict[str, str]) -> Any:
        calls.append((path, argv, env))

    monkeypatch.setattr(memory.os, "execve", execve)
    monkeypatch.setattr(sys, "orig_argv", ["python3", "/venv/bin/sentinel", "run", "ingest"])
    monkeypatch.delenv("PYTHONMALLOC", raising=False)
    memory.run_with_system_allocator()
    [(path, argv, env)] = calls
    assert (path, argv) == (sys.executable, [sys.executable, "/venv/bin/sentinel", "run", "ingest"])
    assert env["PYTHONMALLOC"] == "malloc"
    monkeypatch.setenv("PYTHONMALLOC", "malloc")
    memory.run_with_system_allocator()  # already under it: nothing happens
    assert len(calls) == 1


def test_small_requests_leave_the_heap_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    trimmed: list[int] = []
    monkeypatch.setattr(memory, "_malloc_trim", lambda: trimmed.append)
    memory.release_after(memory.LARGE_REQUEST_RECORDS - 1)
    assert trimmed == []
    memory.release_after(memory.LARGE_REQUEST_RECORDS)
    assert trimmed == [0]
