"""Safety's API: a subject's timeline (labs graded, AEs with every version, the DLT window), cohorts and DLTs
for viewers; confirming or rejecting a suspected DLT for officers (audited, signalled through the outbox)."""

from __future__ import annotations

import asyncio
from datetime import date, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field, field_validator
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from services.safety import acute_window, protocol_engine, store
from services.safety.dlt import DltState
from services.safety.models import (
    AeReview,
    AeSeriousness,
    AeVersion,
    DltRecord,
    Dose,
    LabResult,
    Subject,
    SubjectOutcomeRow,
    VitalSigns,
)
from shared.audit import lock_audit_chain
from shared.auth import require_role
from shared.clock import Clock
from shared.consumer_service import ConsumerService
from shared.events import ClinicalEnvelope, CohortDecisionName
from shared.outbox import add_to_outbox
from shared.problems import ProblemError
from shared.protocol import DltAnchor, Protocol
from shared.settings import ApiUser

router = APIRouter(prefix="/v1")
Viewer = Annotated[ApiUser, Depends(require_role("viewer"))]
Officer = Annotated[ApiUser, Depends(require_role("officer"))]
PRODUCER = "safety"


class DoseView(BaseModel):
    dose_id: str
    number: int
    administered_at: datetime
    administered_on: date | None
    cells_per_kg: str | None


class LabView(BaseModel):
    result_id: str
    test: str | None
    loinc: str | None
    value: str
    unit: str | None
    lln: str | None
    uln: str | None
    collected_at: datetime
    baseline: bool
    term: str | None
    grade: int | None
    grade_floor: bool = False
    """The grade is the lowest the data allows ("at least"): a limit was missing or the value censored."""
    grade_reason: str


class AeVersionView(BaseModel):
    version: int
    received_at: datetime
    payload: dict[str, object]
    flags: list[str]


class AeView(BaseModel):
    ae_id: str
    status: str | None
    """The site's status for this AE (entered_in_error, deleted, restored), if it sent one."""
    serious: bool
    criteria: list[str]
    max_grade: int | None
    latest_version: int
    awareness_at: datetime | None
    awareness_basis: str | None
    versions: list[AeVersionView]


class DltWindowView(BaseModel):
    basis: DltAnchor
    start: datetime
    end: datetime
    """Exclusive: the first instant after the last DLT day at the site."""
    first_day: date
    """The anchor's date at the site (study day 0 or 1, as the protocol's study_days says)."""
    last_day: date
    """The last DLT day: an AE with onset up to this date is inside."""
    days: int
    state: Literal["open", "closed"]
    study_day: int
    """Today's study day."""


class DltView(BaseModel):
    dlt_id: str
    trial_id: str
    subject_id: str
    arm: str | None
    ae_id: str
    ae_version: int
    state: DltState
    criterion: str | None
    term: str
    grade: int | None
    relatedness: str | None
    reason: str
    window_start: datetime | None
    window_end: datetime | None
    suspected_at: datetime
    updated_at: datetime
    decided_by: str | None
    decided_at: datetime | None
    decision_reason: str | None
    revision: int
    """Moves with every decision and every change a follow-up makes: what a decision names in `expected_revision`."""
    decided_relatedness: str | None = None
    """The AE's relatedness when the officer decided."""
    divergence: str | None = None
    """How the AE's data now stand against the decision (`no_longer_meets`, `now_meets`, `more_related`,
    `other_event`, `recoded`); null: as it relied on. The DLT's officers were told when it appeared
    (`decided_dlt_data_changed`)."""
    decided_state: str | None = None
    """The officer's decision on file ('confirmed', 'rejected'): a suspected DLT with one was reopened by new data."""
    decided_term: str | None = None
    """The AE's term when the officer decided: the event the decision is about."""


class StatusView(BaseModel):
    record_type: str
    record_id: str
    status: str
    reason: str | None
    changed_at: datetime


class AcuteReactionView(BaseModel):
    """An AE with onset within the acute window after an infusion, at or above the alert grade."""

    ae_id: str
    ae_version: int
    term: str
    grade: int
    dose_id: str
    dose_number: int
    infusion_at: datetime
    onset: str | None
    onset_at: datetime | None
    onset_precision: str
    hours_after_infusion: str | None
    dlt_grade: bool
    reason: str
    signalled_at: datetime
    ae_status: str | None = None
    """The AE's record status when the site took it back (entered_in_error, deleted): no longer a reaction."""


class VitalSignsView(BaseModel):
    vitals_id: str
    measured_at: datetime
    temperature_c: str | None
    systolic_bp: str | None
    diastolic_bp: str | None
    heart_rate: str | None
    respiratory_rate: str | None
    spo2: str | None
    dose_id: str | None


class AeReviewView(BaseModel):
    review_id: str
    assessed_at: datetime
    visit: str | None
    new_aes: bool


class SubjectView(BaseModel):
    trial_id: str
    subject_id: str
    site_id: str
    arm: str | None
    enrolled_at: date | None
    doses: list[DoseView]
    labs: list[LabView]
    adverse_events: list[AeView]
    dlt_window: DltWindowView | None
    """None until the protocol's anchor (first infusion or enrolment) is recorded."""
    evaluable: bool
    """For the cohort: the window has closed, or the subject had a confirmed DLT."""
    dlts: list[DltView]
    record_statuses: list[StatusView]
    acute_reactions: list[AcuteReactionView] = []
    vital_signs: list[VitalSignsView] = []
    ae_reviews: list[AeReviewView] = []


class CohortView(BaseModel):
    arm: str
    enrolled: int
    evaluable: int
    dlt_confirmed: int
    dlt_suspected: int
    decision: CohortDecisionName
    stopping_rule: bool
    """Confirmed plus suspected DLTs reach the protocol's stopping number."""
    next_arm: str | None
    reason: str
    not_evaluable: int = 0
    """Subjects who can no longer be evaluated (withdrawn without a DLT, infusions missing): to be replaced."""
    replacements_needed: int = 0


class DecisionBody(BaseModel):
    reason: str = Field(min_length=1, max_length=2000, description="Why: kept in the audit trail")
    expected_state: DltState | None = Field(
        default=None,
        description=(
            "The DLT's state as the officer saw it when deciding; 409 if it has changed since. Required to "
            "confirm a DLT that a follow-up withdrew, and to revise a decision: the other decision with the one "
            "it reverses here (audited as dlt.revised; the arm's 3+3 is reassessed)."
        ),
    )
    expected_revision: int | None = Field(
        default=None,
        ge=0,
        description=(
            "The DLT's revision as the officer saw it (GET /v1/trials/{trial}/dlts); 409 if it has moved since. "
            "A revision should send it: the state alone cannot tell a page from before another officer's two "
            "revisions (confirmed -> rejected -> confirmed) from a current one."
        ),
    )

    @field_validator("reason")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if "\x00" in value:  # PostgreSQL text cannot hold NUL: refuse it here rather than fail on insert
            raise ValueError("the reason contains a NUL character")
        if not value.strip():
            raise ValueError("a reason is required")
        return value.strip()


def _engine(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


def _protocol(request: Request) -> Protocol:
    protocol: Protocol = request.app.state.protocol
    return protocol


def _clock(request: Request) -> Clock:
    clock: Clock = request.app.state.clock
    return clock


def _has_nul(*values: str) -> bool:
    """PostgreSQL text cannot hold NUL; no stored id contains one, and querying with it fails (a 500)."""
    return any("\x00" in value for value in values)


EngineDep = Annotated[Engine, Depends(_engine)]
ProtocolDep = Annotated[Protocol, Depends(_protocol)]
ClockDep = Annotated[Clock, Depends(_clock)]


def _known_trial(protocol: Protocol, trial_id: str) -> None:
    if trial_id != protocol.trial_id:
        raise ProblemError(
            404,
            "Not found",
            f"this safety service runs trial '{protocol.trial_id}', not '{trial_id}'",
            slug="not-found",
        )


@router.get("/trials/{trial_id}/subjects/{subject_id}", response_model=SubjectView)
async def get_subject(
    trial_id: str, subject_id: str, _user: Viewer, engine: EngineDep, protocol: ProtocolDep, clock: ClockDep
) -> SubjectView:
    return await asyncio.to_thread(_subject_view, engine, protocol, clock.now(), trial_id, subject_id)


def _subject_view(engine: Engine, protocol: Protocol, now: datetime, trial_id: str, subject_id: str) -> SubjectView:
    with Session(engine) as session:
        subject = None if _has_nul(trial_id, subject_id) else session.get(Subject, (trial_id, subject_id))
        if subject is None:
            raise ProblemError(404, "Not found", f"no subject '{subject_id}' in trial '{trial_id}'", slug="not-found")
        mine = {"trial_id": trial_id, "subject_id": subject_id}
        doses = session.exec(select(Dose).filter_by(**mine).order_by(col(Dose.administered_at))).all()
        labs = session.exec(select(LabResult).filter_by(**mine).order_by(col(LabResult.collected_at))).all()
        states = session.exec(select(AeSeriousness).filter_by(**mine).order_by(col(AeSeriousness.ae_id))).all()
        versions = session.exec(select(AeVersion).filter_by(**mine).order_by(col(AeVersion.version))).all()
        statuses = store.record_statuses(session, **mine)
        ae_status = {s.record_id: s.status for s in statuses if s.record_type == "ae"}
        dlts = [DltView.model_validate(r.model_dump()) for r in store.dlt_records(session, **mine)]
        window = (
            protocol_engine.window_of(session, protocol=protocol, subject=subject)
            if trial_id == protocol.trial_id
            else None
        )
        window_view = None
        if window is not None:
            window_view = DltWindowView(
                basis=window.basis,
                start=window.start,
                end=window.end,
                first_day=window.anchor_day,
                last_day=window.last_day,
                days=window.days,
                state=window.state(now),
                study_day=window.study_day(window.site_date(now)),
            )
        confirmed = any(d.state is DltState.CONFIRMED for d in dlts)
        return SubjectView(
            trial_id=trial_id,
            subject_id=subject_id,
            site_id=subject.site_id,
            arm=subject.arm,
            enrolled_at=subject.enrolled_at,
            doses=[DoseView.model_validate(d.model_dump()) for d in doses],
            labs=[LabView.model_validate(lab.model_dump()) for lab in labs],
            adverse_events=[
                AeView(
                    ae_id=state.ae_id,
                    status=ae_status.get(state.ae_id),
                    serious=bool(state.criteria),
                    criteria=state.criteria,
                    max_grade=state.max_grade,
                    latest_version=state.latest_version,
                    awareness_at=state.awareness_at,
                    awareness_basis=state.awareness_basis,
                    versions=[AeVersionView.model_validate(v.model_dump()) for v in versions if v.ae_id == state.ae_id],
                )
                for state in states
            ],
            dlt_window=window_view,
            evaluable=_evaluable(session, trial_id, subject_id, confirmed=confirmed),
            dlts=dlts,
            record_statuses=[StatusView.model_validate(s.model_dump()) for s in statuses],
            acute_reactions=[
                AcuteReactionView.model_validate({**r.model_dump(), "ae_status": ae_status.get(r.ae_id)})
                for r in acute_window.subject_reactions(session, **mine)
            ],
            vital_signs=[
                VitalSignsView.model_validate(v.model_dump())
                for v in session.exec(select(VitalSigns).filter_by(**mine).order_by(col(VitalSigns.measured_at)))
            ],
            ae_reviews=[
                AeReviewView.model_validate(r.model_dump())
                for r in session.exec(select(AeReview).filter_by(**mine).order_by(col(AeReview.assessed_at)))
            ],
        )


@router.get("/trials/{trial_id}/cohorts", response_model=list[CohortView])
async def get_cohorts(
    trial_id: str, _user: Viewer, engine: EngineDep, protocol: ProtocolDep, clock: ClockDep
) -> list[CohortView]:
    """Each arm in escalation order, as last decided from the subjects' stored outcomes (events and the sweep keep
    them current: a window closing with time is picked up by the next sweep)."""
    _known_trial(protocol, trial_id)
    return await asyncio.to_thread(_cohorts_view, engine, protocol, clock.now())


def _evaluable(session: Session, trial_id: str, subject_id: str, *, confirmed: bool) -> bool:
    """As the 3+3 counts the subject (stored outcome: all infusions, window ended, required visits, or a DLT)."""
    row = session.get(SubjectOutcomeRow, (trial_id, subject_id))
    return confirmed or (row is not None and row.outcome in ("evaluable", "dlt"))


def _cohorts_view(engine: Engine, protocol: Protocol, now: datetime) -> list[CohortView]:
    with Session(engine) as session:
        arms = protocol_engine.current_arms(session, protocol=protocol).arms
    return [
        CohortView(
            arm=a.arm,
            enrolled=a.enrolled,
            evaluable=a.evaluable,
            dlt_confirmed=a.dlt_confirmed,
            dlt_suspected=a.dlt_suspected,
            decision=a.decision,
            stopping_rule=a.stopping,
            next_arm=a.next_arm,
            reason=a.reason,
            not_evaluable=a.not_evaluable,
            replacements_needed=a.replacements_needed,
        )
        for a in arms
    ]


@router.get("/trials/{trial_id}/dlts", response_model=list[DltView])
async def get_dlts(
    trial_id: str,
    _user: Viewer,
    engine: EngineDep,
    protocol: ProtocolDep,
    state: Annotated[DltState | None, Query(description="only DLTs in this state")] = None,
) -> list[DltView]:
    _known_trial(protocol, trial_id)
    return await asyncio.to_thread(_dlts_view, engine, trial_id, state)


def _dlts_view(engine: Engine, trial_id: str, state: DltState | None) -> list[DltView]:
    with Session(engine) as session:
        query = select(DltRecord).where(DltRecord.trial_id == trial_id)
        if state is not None:
            query = query.where(DltRecord.state == state.value)
        rows = session.exec(query.order_by(col(DltRecord.suspected_at), col(DltRecord.dlt_id))).all()
        return [DltView.model_validate(r.model_dump()) for r in rows]


@router.post("/dlts/{dlt_id}/confirm", response_model=DltView)
async def confirm_dlt(dlt_id: str, body: DecisionBody, user: Officer, request: Request) -> DltView:
    return await _decide(request, dlt_id, "confirmed", user, body)


@router.post("/dlts/{dlt_id}/reject", response_model=DltView)
async def reject_dlt(dlt_id: str, body: DecisionBody, user: Officer, request: Request) -> DltView:
    return await _decide(request, dlt_id, "rejected", user, body)


async def _decide(
    request: Request, dlt_id: str, decision: protocol_engine.Decision, user: ApiUser, body: DecisionBody
) -> DltView:
    state = request.app.state
    view, signalled = await asyncio.to_thread(
        _decide_in_transaction,
        state.engine,
        state.protocol,
        state.clock.now(),
        state.signals_topic,
        dlt_id,
        decision,
        user,
        body,
    )
    consumer: ConsumerService[ClinicalEnvelope] | None = getattr(state, "consumer", None)
    if signalled and consumer is not None:
        consumer.relay.wake()
    return view


def _decide_in_transaction(
    engine: Engine,
    protocol: Protocol,
    now: datetime,
    signals_topic: str,
    dlt_id: str,
    decision: protocol_engine.Decision,
    user: ApiUser,
    body: DecisionBody,
) -> tuple[DltView, bool]:
    """The decision, its audit row, its signals (DltDecided, any cohort change) in one transaction."""
    if _has_nul(dlt_id):
        raise ProblemError(404, "Not found", "no DLT with a NUL character in its id", slug="not-found")
    with Session(engine) as session, session.begin():
        lock_audit_chain(
            session, service=protocol_engine.AUDIT_SERVICE
        )  # before any row lock, as in the consumer's transaction
        try:
            outcome = protocol_engine.decide_dlt(
                session,
                protocol=protocol,
                dlt_id=dlt_id,
                decision=decision,
                actor=user.user,
                reason=body.reason,
                now=now,
                signals_topic=signals_topic,
                expected_state=body.expected_state,
                expected_revision=body.expected_revision,
            )
        except protocol_engine.UnknownDlt:
            raise ProblemError(404, "Not found", f"no DLT '{dlt_id}'", slug="not-found") from None
        except protocol_engine.DltAlreadyDecided as exc:
            raise ProblemError(409, "Conflict", str(exc), slug="dlt-already-decided", state=exc.record.state) from None
        except protocol_engine.DltStateChanged as exc:
            raise ProblemError(409, "Conflict", str(exc), slug="dlt-state-changed", state=exc.record.state) from None
        for outgoing in outcome.signals:
            add_to_outbox(session, producer=PRODUCER, message=outgoing, now=now)
        return DltView.model_validate(outcome.record.model_dump()), bool(outcome.signals)
