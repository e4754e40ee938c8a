"""What notify's integration and e2e tests share: safety signals as notify consumes them, and a channel that
records what it was asked to send."""

from __future__ import annotations

import asyncio
import threading
import uuid
from datetime import datetime, timedelta
from email.message import EmailMessage
from typing import Any

from shared.events import (
    AwarenessBasis,
    LabToxicity,
    LabToxicityData,
    SaeData,
    SaeDetected,
    SaeWithdrawalData,
    SaeWithdrawn,
)

TRIAL = "NCT07212335"


class RecordingChannel:
    """Records each delivery id it sends; safe to share between dispatchers running in several threads."""

    sender = "sentinel@test"

    def __init__(self) -> None:
        self.sent: list[str] = []
        self._lock = threading.Lock()

    async def send(self, message: EmailMessage) -> None:
        await asyncio.sleep(0.001)  # let another dispatcher interleave
        with self._lock:
            self.sent.append(str(message["X-Sentinel-Delivery"]))


def sae_detected(subject: str, *, aware: datetime, signal_id: str | None = None, **data: Any) -> SaeDetected:
    """A first-time SAE for `subject` with site awareness at `aware`; keyword overrides go into `data`."""
    payload: dict[str, Any] = {
        "site_id": "101",
        "subject_id": subject,
        "ae_id": "AE-1",
        "ae_version": 1,
        "term": "Cytokine release syndrome",
        "grade": 3,
        "criteria": ["hospitalization"],
        "relatedness": None,
        "outcome": None,
        "onset": None,
        "awareness_at": aware,
        "awareness_basis": AwarenessBasis.SITE,
        "received_at": aware,
        "source_event_id": f"src-{subject}",
    }
    payload.update(data)
    return SaeDetected(
        id=signal_id or str(uuid.uuid4()),
        source="/services/safety",
        subject=subject,
        time=aware,
        trialid=TRIAL,
        data=SaeData.model_validate(payload),
    )


def sae_withdrawn(
    subject: str, *, aware: datetime, at: datetime, signal_id: str | None = None, **data: Any
) -> SaeWithdrawn:
    """The site took `subject`'s AE-1 back (entered in error) at `at`; keyword overrides go into `data`."""
    payload: dict[str, Any] = {
        "site_id": "101",
        "subject_id": subject,
        "ae_id": "AE-1",
        "ae_version": 1,
        "term": "Cytokine release syndrome",
        "status": "entered_in_error",
        "reason": "entered for the wrong subject",
        "changed_at": at,
        "awareness_at": aware,
        "awareness_basis": AwarenessBasis.SITE,
        "received_at": at,
        "source_event_id": f"status-{subject}",
    }
    payload.update(data)
    return SaeWithdrawn(
        id=signal_id or str(uuid.uuid4()),
        source="/services/safety",
        subject=subject,
        time=at,
        trialid=TRIAL,
        data=SaeWithdrawalData.model_validate(payload),
    )


def grade4_platelets(n: int, *, at: datetime, site: str = "101") -> LabToxicity:
    """A backfilled grade-4 platelet count of subject BF-<n>, collected 30 days before `at`: one lab page each."""
    subject = f"BF-{n:04d}"
    data = LabToxicityData(
        site_id=site,
        subject_id=subject,
        result_id=f"R-{n}",
        test="PLAT",
        term="Platelet count decreased",
        grade=4,
        baseline_grade=None,
        previous_grade=None,
        value="12",
        unit="10^9/L",
        reason="PLAT 12 x10^9/L: grade 4 (< 25)",
        collected_at=at - timedelta(days=30),
        source_event_id=f"lab-{n}",
        received_at=at,
    )
    return LabToxicity(
        id=f"lab-signal-{n}", source="/services/safety", subject=subject, time=at, trialid=TRIAL, data=data
    )
