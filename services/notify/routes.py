"""Officer API: list and read alerts and obligations; acknowledge, comment, snooze; record the filed
report; cancel an obligation (admin). Every change is written to the audit trail in its transaction."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Annotated, Literal, TypeVar

from fastapi import APIRouter, Depends, Query, Request
from pydantic import AfterValidator, AwareDatetime, BaseModel, Field
from sqlmodel import Session

from services.notify import alert_actions, store
from services.notify.models import Alert, Delivery, Obligation, Timer
from services.notify.obligations import DLT_REVIEW, OPEN_STATES, ObligationConflict
from services.notify.runtime import NotifyRuntime
from shared.auth import require_role
from shared.clock import utc_or_invalid
from shared.problems import ProblemError
from shared.settings import ApiUser

UtcTime = Annotated[AwareDatetime, AfterValidator(utc_or_invalid)]
router = APIRouter(prefix="/v1")
Viewer = Annotated[ApiUser, Depends(require_role("viewer"))]
Officer = Annotated[ApiUser, Depends(require_role("officer"))]
Admin = Annotated[ApiUser, Depends(require_role("admin"))]
Limit = Annotated[int, Query(ge=1, le=1000)]
Comment = Annotated[str, Field(max_length=2000)]
T = TypeVar("T")


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
    overdue_at: datetime | None
    completed_at: datetime | None
    completed_by: str | None
    reference: str | None
    cancelled_at: datetime | None
    cancelled_by: str | None
    cancel_reason: str | None

    @classmethod
    def of(cls, row: Obligation, now: datetime) -> ObligationPublic:
        """Overdue shows the instant the deadline passes, even before the overdue timer has persisted it."""
        open_ = row.state in OPEN_STATES
        state = "overdue" if open_ and now > row.due_at else row.state
        left = (row.due_at - now) // timedelta(seconds=1) if open_ else None
        return cls.model_validate({**row.model_dump(), "state": state, "seconds_left": left})


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


class TimerPublic(BaseModel):
    """What will happen next, and when, unless someone acts."""

    kind: str
    step: int
    due_at: datetime
    obligation_id: str | None

    @classmethod
    def of(cls, row: Timer) -> TimerPublic:
        return cls.model_validate(row.model_dump())


class AlertPublic(BaseModel):
    id: str
    kind: str
    trial_id: str
    site_id: str
    subject_id: str
    title: str
    state: Literal["open", "acknowledged", "resolved"]
    details: dict[str, object]
    created_at: datetime
    updated_at: datetime
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    escalation_step: int
    snoozed_until: datetime | None
    snoozed_by: str | None
    snooze_reason: str | None
    obligations: list[ObligationPublic]
    deliveries: list[DeliveryPublic] = Field(default_factory=list)
    history: list[HistoryPublic] = Field(default_factory=list)
    scheduled: list[TimerPublic] = Field(default_factory=list)


class AckRequest(BaseModel):
    comment: Comment | None = None


class CommentRequest(BaseModel):
    text: Annotated[str, Field(min_length=1, max_length=2000)]


class SnoozeRequest(BaseModel):
    reason: Annotated[str, Field(min_length=1, max_length=2000, description="Why paging may wait")]
    until: UtcTime = Field(description="When escalation pages resume (at most 7 days ahead)")


class CompleteRequest(BaseModel):
    reference: Annotated[str, Field(min_length=1, max_length=200, description="The filed report's reference")]
    comment: Comment | None = None


class CancelRequest(BaseModel):
    reason: Annotated[str, Field(min_length=1, max_length=2000)]


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
            "history": [
                HistoryPublic(at=h.at, actor=h.actor, action=h.action, detail=h.detail)
                for h in store.history_for(session, alert_id=alert.id)
            ],
            "scheduled": [TimerPublic.of(t) for t in store.pending_timers(session, alert_id=alert.id)],
        }
    return AlertPublic.model_validate({**alert.model_dump(), "obligations": obligations, **extra})


async def _change(runtime: NotifyRuntime, work: Callable[[Session, datetime], T]) -> T:
    """One officer action: one transaction (audit lock first), committed before the answer."""

    def run() -> T:
        now = runtime.clock.now()
        with Session(runtime.engine, expire_on_commit=False) as session, session.begin():
            store.lock_audit(session)
            return work(session, now)

    return await asyncio.to_thread(run)


@router.get("/alerts", response_model=list[AlertPublic])
async def list_alerts(
    runtime: Runtime,
    _user: Viewer,
    trial: str | None = None,
    subject: str | None = None,
    state: Literal["open", "acknowledged", "resolved"] | None = None,
    due_before: Annotated[UtcTime | None, Query(description="with an open obligation due before")] = None,
    limit: Limit = 100,
) -> list[AlertPublic]:
    def query() -> list[AlertPublic]:
        now = runtime.clock.now()
        with Session(runtime.engine) as session:
            rows = store.list_alerts(
                session, trial_id=trial, subject_id=subject, state=state, due_before=due_before, limit=limit
            )
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
    """Stops paging (escalation steps). Reminders and overdue pages of open obligations continue."""

    def work(session: Session, now: datetime) -> tuple[AlertPublic, timedelta | None]:
        alert = _alert_or_404(session, alert_id)
        took = alert_actions.acknowledge(
            session, alert=alert, actor=user.user, comment=body.comment if body else None, now=now
        )
        session.flush()
        return _alert_public(session, alert, now, full=True), took

    public, took = await _change(runtime, work)
    if took is not None:
        runtime.metrics.time_to_acknowledge.labels(kind=public.kind).observe(took.total_seconds())
    return public


@router.post("/alerts/{alert_id}/comments", response_model=AlertPublic, status_code=201)
async def add_comment(alert_id: str, body: CommentRequest, runtime: Runtime, user: Officer) -> AlertPublic:
    def work(session: Session, now: datetime) -> AlertPublic:
        alert = _alert_or_404(session, alert_id)
        alert_actions.comment(session, alert=alert, actor=user.user, text=body.text, now=now)
        return _alert_public(session, alert, now, full=True)

    return await _change(runtime, work)


@router.post("/alerts/{alert_id}/snooze", response_model=AlertPublic)
async def snooze(alert_id: str, body: SnoozeRequest, runtime: Runtime, user: Officer) -> AlertPublic:
    """Holds escalation pages until `until`; never an open obligation's reminders or overdue pages."""

    def work(session: Session, now: datetime) -> AlertPublic:
        alert = _alert_or_404(session, alert_id)
        try:
            alert_actions.snooze(session, alert=alert, actor=user.user, reason=body.reason, until=body.until, now=now)
        except alert_actions.ActionRefused as exc:
            raise ProblemError(
                422, "Invalid snooze", str(exc), slug="invalid-field", errors=[{"pointer": "/body/until"}]
            ) from exc
        session.flush()
        return _alert_public(session, alert, now, full=True)

    return await _change(runtime, work)


@router.get("/obligations", response_model=list[ObligationPublic])
async def list_obligations(
    runtime: Runtime,
    _user: Viewer,
    trial: str | None = None,
    subject: str | None = None,
    state: Literal["open", "overdue", "completed", "cancelled"] | None = None,
    due_before: UtcTime | None = None,
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
    """Records the filed report: the only thing (besides cancelling) that stops the obligation's clock."""
    done: list[tuple[str, timedelta]] = []

    def work(session: Session, now: datetime) -> ObligationPublic:
        obligation = _obligation_or_404(session, obligation_id)
        if obligation.state == "completed" and obligation.reference == body.reference:
            return ObligationPublic.of(obligation, now)  # a retried request: same answer
        alert = _alert_or_404(session, obligation.alert_id)
        if obligation.kind == DLT_REVIEW and obligation.state not in ("completed", "cancelled"):
            dlt_id = alert.details.get("dlt_id", "{id}")
            raise ProblemError(
                409,
                "Decided in safety",
                f"a suspected DLT is confirmed or rejected in safety (POST /v1/dlts/{dlt_id}/confirm or /reject), "
                "which closes this review; it cannot be completed here",
                slug="decided-in-safety",
            )
        try:
            took = alert_actions.complete(
                session,
                alert=alert,
                obligation=obligation,
                actor=user.user,
                reference=body.reference,
                comment=body.comment,
                at=now,
                now=now,
            )
        except ObligationConflict as exc:
            raise _conflict(obligation) from exc
        done.append((obligation.kind, took))
        return ObligationPublic.of(obligation, now)

    public = await _change(runtime, work)
    for kind, took in done:
        runtime.metrics.time_to_complete.labels(kind=kind).observe(took.total_seconds())
    return public


@router.post("/obligations/{obligation_id}/cancel", response_model=ObligationPublic)
async def cancel_obligation(obligation_id: str, body: CancelRequest, runtime: Runtime, user: Admin) -> ObligationPublic:
    """An obligation that no longer applies (e.g. the AE was entered in error): admins only, with a reason."""

    def work(session: Session, now: datetime) -> ObligationPublic:
        obligation = _obligation_or_404(session, obligation_id)
        alert = _alert_or_404(session, obligation.alert_id)
        try:
            alert_actions.cancel(
                session, alert=alert, obligation=obligation, actor=user.user, reason=body.reason, now=now
            )
        except ObligationConflict as exc:
            raise _conflict(obligation) from exc
        return ObligationPublic.of(obligation, now)

    return await _change(runtime, work)


def _conflict(obligation: Obligation) -> ProblemError:
    if obligation.state == "completed":
        detail = f"completed by {obligation.completed_by} with reference '{obligation.reference}'"
        return ProblemError(409, "Already completed", detail, slug="already-completed")
    detail = f"cancelled by {obligation.cancelled_by}: {obligation.cancel_reason}"
    return ProblemError(409, "Already cancelled", detail, slug="already-cancelled")


def _alert_or_404(session: Session, alert_id: str) -> Alert:
    alert = session.get(Alert, alert_id)
    if alert is None:
        raise ProblemError(404, "Not found", f"no alert '{alert_id}'", slug="not-found")
    return alert


def _obligation_or_404(session: Session, obligation_id: str) -> Obligation:
    obligation = session.get(Obligation, obligation_id)
    if obligation is None:
        raise ProblemError(404, "Not found", f"no obligation '{obligation_id}'", slug="not-found")
    return obligation
