"""What notify's request handlers need, held on app.state."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine

from shared.clock import Clock


@dataclass(frozen=True)
class NotifyRuntime:
    engine: Engine
    clock: Clock
