"""Officer API: list and read alerts and obligations, acknowledge, record the filed report."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request
from pydantic import AwareDatetime, BaseModel, Field
from sqlmodel import Session

from services.notify import store
from services.notify.models import Alert, AlertHistory, Delivery, Obligation
from services.notify.runtime import NotifyRuntime
from shared.auth import require_role
from shared.problems import ProblemError
from shared.settings import ApiUser

router = APIRouter(prefix="/v1")
Viewer = Annotated[ApiUser, Depends(require_role("viewer"))]
Officer = Annotated[ApiUser, Depends(require_role("officer"))]
Limit = Annotated[int, Query(ge=1, le=1000)]


class ObligationPublic(BaseModel):
    id: str
    alert_id: str
    kind: str
    trial_id: str
    subject_id: str
    description: str
    clock_started_at: datetime
    clock_basis: str
    due_at: datetime
    state: Literal["open", "overdue", "completed", "cancelled"]
    seconds_left: int | None
    completed_at: datetime | None
    completed_by: str | None
    reference: str | None

    @classmethod
    def of(cls, row: Obligation, now: datetime) -> ObligationPublic:
        open_ = row.state == "open"
        state = "overdue" if open_ and now > row.due_at else row.state
        return cls.model_validate(
            {
                **row.model_dump(),
                "state": state,
                "seconds_left": int((row.due_at - now).total_seconds()) if open_ else None,
            }
        )


class DeliveryPublic(BaseModel):
    channel: str
    recipient: str
    status: str
    attempts: int
    last_error: str | None
    sent_at: datetime | None

    @classmethod
    def of(cls, row: Delivery) -> DeliveryPublic:
        return cls.model_validate(row.model_dump())


class HistoryPublic(BaseModel):
    at: datetime
    actor: str
    action: str
    detail: str

    @classmethod
    def of(cls, row: AlertHistory) -> HistoryPublic:
        return cls.model_validate(row.model_dump())


class AlertPublic(BaseModel):
    id: str
    kind: str
    trial_id: str
    site_id: str
    subject_id: str
    title: str
    state: str
    details: dict[str, object]
    created_at: datetime
    updated_at: datetime
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    obligations: list[ObligationPublic]
    deliveries: list[DeliveryPublic] = Field(default_factory=list)
    history: list[HistoryPublic] = Field(default_factory=list)


class AckRequest(BaseModel):
    comment: Annotated[str, Field(max_length=2000)] | None = None


class CompleteRequest(BaseModel):
    reference: Annotated[str, Field(min_length=1, max_length=200, description="The filed report's reference")]
    comment: Annotated[str, Field(max_length=2000)] | None = None


def _runtime(request: Request) -> NotifyRuntime:
    runtime: NotifyRuntime = request.app.state.runtime
    return runtime


Runtime = Annotated[NotifyRuntime, Depends(_runtime)]


def _alert_public(session: Session, alert: Alert, now: datetime, *, full: bool) -> AlertPublic:
    obligations = [ObligationPublic.of(o, now) for o in store.obligations_for(session, alert_ids=[alert.id])]
    extra: dict[str, object] = {}
    if full:
        extra = {
            "deliveries": [DeliveryPublic.of(d) for d in store.deliveries_for(session, alert_id=alert.id)],
            "history": [HistoryPublic.of(h) for h in store.history_for(session, alert_id=alert.id)],
        }
    return AlertPublic.model_validate({**alert.model_dump(), "obligations": obligations, **extra})


@router.get("/alerts", response_model=list[AlertPublic])
async def list_alerts(
    runtime: Runtime,
    _user: Viewer,
    trial: str | None = None,
    subject: str | None = None,
    state: Literal["open", "acknowledged"] | None = None,
    limit: Limit = 100,
) -> list[AlertPublic]:
    def query() -> list[AlertPublic]:
        now = runtime.clock.now()
        with Session(runtime.engine) as session:
            rows = store.list_alerts(session, trial_id=trial, subject_id=subject, state=state, limit=limit)
            return [_alert_public(session, a, now, full=False) for a in rows]

    return await asyncio.to_thread(query)


@router.get("/alerts/{alert_id}", response_model=AlertPublic)
async def get_alert(alert_id: str, runtime: Runtime, _user: Viewer) -> AlertPublic:
    def query() -> AlertPublic:
        with Session(runtime.engine) as session:
            alert = _alert_or_404(session, alert_id)
            return _alert_public(session, alert, runtime.clock.now(), full=True)

    return await asyncio.to_thread(query)


@router.post("/alerts/{alert_id}/ack", response_model=AlertPublic)
async def acknowledge(alert_id: str, runtime: Runtime, user: Officer, body: AckRequest | None = None) -> AlertPublic:
    def change() -> AlertPublic:
        now = runtime.clock.now()
        with Session(runtime.engine) as session, session.begin():
            alert = _alert_or_404(session, alert_id)
            if alert.state != "acknowledged":
                alert.state = "acknowledged"
                alert.acknowledged_at = now
                alert.acknowledged_by = user.user
                session.add(alert)
            comment = f": {body.comment}" if body and body.comment else ""
            store.add_history(
                session,
                alert_id=alert.id,
                actor=user.user,
                action="acknowledged",
                detail=f"acknowledged{comment}",
                now=now,
            )
            return _alert_public(session, alert, now, full=True)

    return await asyncio.to_thread(change)


@router.get("/obligations", response_model=list[ObligationPublic])
async def list_obligations(
    runtime: Runtime,
    _user: Viewer,
    trial: str | None = None,
    subject: str | None = None,
    state: Literal["open", "overdue", "completed", "cancelled"] | None = None,
    due_before: AwareDatetime | None = None,
    limit: Limit = 100,
) -> list[ObligationPublic]:
    def query() -> list[ObligationPublic]:
        now = runtime.clock.now()
        with Session(runtime.engine) as session:
            rows = store.list_obligations(
                session, trial_id=trial, subject_id=subject, state=state, due_before=due_before, now=now, limit=limit
            )
            return [ObligationPublic.of(o, now) for o in rows]

    return await asyncio.to_thread(query)


@router.post("/obligations/{obligation_id}/complete", response_model=ObligationPublic)
async def complete_obligation(
    obligation_id: str, body: CompleteRequest, runtime: Runtime, user: Officer
) -> ObligationPublic:
    def change() -> ObligationPublic:
        now = runtime.clock.now()
        with Session(runtime.engine) as session, session.begin():
            obligation = session.get(Obligation, obligation_id)
            if obligation is None:
                raise ProblemError(404, "Not found", f"no obligation '{obligation_id}'", slug="not-found")
            if obligation.state == "completed":
                if obligation.reference == body.reference:
                    return ObligationPublic.of(obligation, now)  # a retried request: same answer
                raise ProblemError(
                    409,
                    "Already completed",
                    f"completed by {obligation.completed_by} with reference '{obligation.reference}'",
                    slug="already-completed",
                )
            late = now > obligation.due_at
            obligation.state = "completed"
            obligation.completed_at = now
            obligation.completed_by = user.user
            obligation.reference = body.reference
            session.add(obligation)
            comment = f"; {body.comment}" if body.comment else ""
            store.add_history(
                session,
                alert_id=obligation.alert_id,
                actor=user.user,
                action="report_filed",
                detail=f"{obligation.kind} filed as '{body.reference}'{' after the deadline' if late else ''}{comment}",
                now=now,
            )
            return ObligationPublic.of(obligation, now)

    return await asyncio.to_thread(change)


def _alert_or_404(session: Session, alert_id: str) -> Alert:
    alert = session.get(Alert, alert_id)
    if alert is None:
        raise ProblemError(404, "Not found", f"no alert '{alert_id}'", slug="not-found")
    return alert
