"""Background loops that work when woken (after a commit) and also on a poll interval, as a safety net."""

from __future__ import annotations

import asyncio
import contextlib


class Wakeup:
    def __init__(self, poll_seconds: float) -> None:
        self.poll_seconds = poll_seconds
        self._event = asyncio.Event()

    def set(self) -> None:
        self._event.set()

    async def wait(self) -> None:
        """Return when woken or when the poll interval has passed, whichever is first."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._event.wait(), timeout=self.poll_seconds)
        self._event.clear()
