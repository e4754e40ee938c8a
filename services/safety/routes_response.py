"""Read-only: a subject's haematological response (live, and as recorded at the protocol's timepoints), with
the transfusions and samples it rests on. `GET /v1/trials/{trial}/subjects/{subject}/response`."""

from __future__ import annotations

import asyncio
from datetime import datetime
from decimal import Decimal

from fastapi import APIRouter
from pydantic import BaseModel
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from services.safety import response_tracking, store
from services.safety.models import SampleRecord, Subject, TransfusionRecord
from services.safety.response import ResponseAssessment
from services.safety.routes import ClockDep, EngineDep, ProtocolDep, Viewer, _has_nul, _known_trial
from shared.events import ResponseLevel
from shared.problems import ProblemError
from shared.protocol import Protocol

router = APIRouter(prefix="/v1", tags=["response"])


class ResponseStateView(BaseModel):
    level: ResponseLevel
    """complete (CR), partial (PR) or none."""
    since: datetime | None
    """The first of the two qualifying counts: the response's duration runs from it."""
    confirmed_at: datetime | None
    duration_days: Decimal | None
    awaiting: ResponseLevel
    """A level reached by one count and awaiting its confirming count ("none" if no such run)."""
    awaiting_since: datetime | None
    reason: str
    as_of: datetime


class TimepointView(ResponseStateView):
    name: str


class TransfusionView(BaseModel):
    transfusion_id: str
    product: str
    administered_at: datetime
    units: str | None
    volume_ml: str | None
    status: str | None


class SampleView(BaseModel):
    sample_id: str
    kind: str
    collected_at: datetime
    visit: str | None
    status: str | None


class ResponseView(BaseModel):
    trial_id: str
    subject_id: str
    current: ResponseStateView
    timepoints: list[TimepointView]
    transfusions: list[TransfusionView]
    samples: list[SampleView]


def _state(result: ResponseAssessment, as_of: datetime) -> dict[str, object]:
    return {
        "level": result.level,
        "since": result.since,
        "confirmed_at": result.confirmed_at,
        "duration_days": result.duration_days,
        "awaiting": result.awaiting,
        "awaiting_since": result.awaiting_since,
        "reason": result.reason,
        "as_of": as_of,
    }


@router.get("/trials/{trial_id}/subjects/{subject_id}/response", response_model=ResponseView)
async def get_response(
    trial_id: str, subject_id: str, _user: Viewer, engine: EngineDep, protocol: ProtocolDep, clock: ClockDep
) -> ResponseView:
    _known_trial(protocol, trial_id)
    return await asyncio.to_thread(_response_view, engine, protocol, clock.now(), trial_id, subject_id)


def _response_view(engine: Engine, protocol: Protocol, now: datetime, trial_id: str, subject_id: str) -> ResponseView:
    with Session(engine) as session:
        subject = None if _has_nul(trial_id, subject_id) else session.get(Subject, (trial_id, subject_id))
        if subject is None:
            raise ProblemError(404, "Not found", f"no subject '{subject_id}' in trial '{trial_id}'", slug="not-found")
        assessed = response_tracking.assess_subject(session, protocol=protocol, subject=subject, now=now)
        if assessed is None:
            raise ProblemError(
                404, "Not found", f"protocol {protocol.trial_id} defines no haematological response", slug="not-found"
            )
        mine = {"trial_id": trial_id, "subject_id": subject_id}
        statuses = {(s.record_type, s.record_id): s.status for s in store.record_statuses(session, **mine)}
        given = session.exec(
            select(TransfusionRecord).filter_by(**mine).order_by(col(TransfusionRecord.administered_at))
        ).all()
        samples = session.exec(select(SampleRecord).filter_by(**mine).order_by(col(SampleRecord.collected_at))).all()
        return ResponseView(
            trial_id=trial_id,
            subject_id=subject_id,
            current=ResponseStateView.model_validate(_state(assessed.current, now)),
            timepoints=[
                TimepointView.model_validate({"name": name, **_state(result, moment)})
                for name, (moment, result) in assessed.timepoints.items()
            ],
            transfusions=[
                TransfusionView.model_validate(
                    {**t.model_dump(), "status": statuses.get(("transfusion", t.transfusion_id))}
                )
                for t in given
            ],
            samples=[
                SampleView.model_validate({**s.model_dump(), "status": statuses.get(("sample", s.sample_id))})
                for s in samples
            ],
        )
