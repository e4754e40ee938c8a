"""Safety configuration (SENTINEL_* environment variables)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from shared.settings import ApiSettings, CommonSettings


class SafetySettings(CommonSettings, ApiSettings):
    safety_port: int = 8001
    safety_group_id: str = "sentinel-safety"
    safety_failpoint: Literal["none", "crash_before_offset_commit"] = "none"
    """Test-only fault injection: SIGKILL after the DB commit and before the offset commit."""
    safety_sweep_seconds: float = Field(default=300, gt=0)
    """How often missed assessments and time-closed DLT windows are swept (SENTINEL_SAFETY_SWEEP_SECONDS)."""
