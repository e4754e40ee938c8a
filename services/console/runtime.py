"""What the console's request handlers need, built once in main.py and held on app.state."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import httpx
from fastapi.templating import Jinja2Templates

from services.console.settings import ConsoleSettings, OidcSettings
from shared.clock import Clock
from shared.protocol import Protocol
from shared.settings import ApiUser


@dataclass
class ConsoleRuntime:
    settings: ConsoleSettings
    oidc: OidcSettings
    protocol: Protocol
    clock: Clock
    templates: Jinja2Templates
    client: httpx.AsyncClient
    oidc_metadata: dict[str, Any] = field(default_factory=dict)
    """The identity provider's discovery document, fetched on first use."""

    @property
    def idle(self) -> timedelta:
        return timedelta(minutes=self.settings.session_idle_minutes)

    @property
    def max_age(self) -> timedelta:
        return timedelta(hours=self.settings.session_max_hours)

    @property
    def tokens(self) -> Mapping[str, ApiUser]:
        return self.settings.api_tokens
