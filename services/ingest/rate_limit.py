"""Per-source token buckets on the injected clock: a runaway sender gets 429 with Retry-After, not our broker."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from services.ingest.sources import RateLimit
from shared.clock import Clock


@dataclass
class TokenBucket:
    rate_per_second: float
    capacity: float
    tokens: float
    updated_at: datetime

    def take(self, now: datetime) -> float:
        """Take one token; return 0 when allowed, else the seconds until one is available."""
        elapsed = max((now - self.updated_at).total_seconds(), 0.0)
        self.tokens = min(self.capacity, self.tokens + elapsed * self.rate_per_second)
        self.updated_at = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate_per_second


class RateLimiter:
    def __init__(self, clock: Clock, limits: Mapping[str, RateLimit]) -> None:
        self._clock = clock
        self._limits = dict(limits)
        self._buckets: dict[str, TokenBucket] = {}

    def retry_after(self, source_id: str) -> int | None:
        """None when the request may proceed; else whole seconds to wait (at least 1)."""
        limit = self._limits.get(source_id)
        if limit is None:
            return None
        now = self._clock.now()
        bucket = self._buckets.get(source_id)
        if bucket is None:
            rate = float(limit.requests_per_minute) / 60.0
            bucket = TokenBucket(
                rate_per_second=rate, capacity=float(limit.burst), tokens=float(limit.burst), updated_at=now
            )
            self._buckets[source_id] = bucket
        wait = bucket.take(now)
        return None if wait == 0 else max(1, math.ceil(wait))
