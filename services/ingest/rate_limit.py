"""Per-source token buckets on the injected clock: a runaway sender gets 429 with Retry-After, not our broker.

A source's own bucket is charged only for authenticated requests, so nobody else can use it up; failed
authentications draw from a separate bucket per source, which bounds guessing and floods of unsigned requests.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from services.ingest.sources import RateLimit
from shared.clock import Clock

AUTH_FAILURE_LIMIT = RateLimit(requests_per_minute=Decimal(30), burst=10)


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
    def __init__(
        self, clock: Clock, limits: Mapping[str, RateLimit], failure_limit: RateLimit = AUTH_FAILURE_LIMIT
    ) -> None:
        self._clock = clock
        self._limits = dict(limits)
        self._failure_limit = failure_limit
        self._buckets: dict[str, TokenBucket] = {}
        self._failure_buckets: dict[str, TokenBucket] = {}

    def retry_after(self, source_id: str) -> int | None:
        """Charge an authenticated request: None when it may proceed; else whole seconds to wait (at least 1)."""
        limit = self._limits.get(source_id)
        if limit is None:
            return None
        return self._take(self._buckets, source_id, limit)

    def failure_retry_after(self, source_id: str) -> int | None:
        """Charge a failed authentication: None while the source's failure budget lasts; else seconds to wait."""
        return self._take(self._failure_buckets, source_id, self._failure_limit)

    def _take(self, buckets: dict[str, TokenBucket], source_id: str, limit: RateLimit) -> int | None:
        now = self._clock.now()
        bucket = buckets.get(source_id)
        if bucket is None:
            rate = float(limit.requests_per_minute) / 60.0
            bucket = TokenBucket(
                rate_per_second=rate, capacity=float(limit.burst), tokens=float(limit.burst), updated_at=now
            )
            buckets[source_id] = bucket
        wait = bucket.take(now)
        return None if wait == 0 else max(1, math.ceil(wait))
