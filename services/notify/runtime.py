"""What notify's request handlers need, held on app.state."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine

from services.notify.metrics import ResponseMetrics
from shared.clock import Clock
from shared.protocol import Protocol


@dataclass(frozen=True)
class NotifyRuntime:
    engine: Engine
    clock: Clock
    protocol: Protocol
    metrics: ResponseMetrics
