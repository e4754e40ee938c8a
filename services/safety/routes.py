"""Safety's read API: what the service knows about a subject, with every lab graded."""

from __future__ import annotations

import asyncio
from datetime import date, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from services.safety.models import AeSeriousness, AeVersion, Dose, LabResult, Subject
from shared.auth import require_role
from shared.problems import ProblemError
from shared.settings import ApiUser

router = APIRouter(prefix="/v1")
Viewer = Annotated[ApiUser, Depends(require_role("viewer"))]


class DoseView(BaseModel):
    dose_id: str
    number: int
    administered_at: datetime
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
    grade_reason: str


class AeVersionView(BaseModel):
    version: int
    received_at: datetime
    payload: dict[str, object]
    flags: list[str]


class AeView(BaseModel):
    ae_id: str
    serious: bool
    criteria: list[str]
    max_grade: int | None
    latest_version: int
    awareness_at: datetime | None
    awareness_basis: str | None
    versions: list[AeVersionView]


class SubjectView(BaseModel):
    trial_id: str
    subject_id: str
    site_id: str
    arm: str | None
    enrolled_at: date | None
    doses: list[DoseView]
    labs: list[LabView]
    adverse_events: list[AeView]


def _engine(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


@router.get("/trials/{trial_id}/subjects/{subject_id}", response_model=SubjectView)
async def get_subject(
    trial_id: str, subject_id: str, _user: Viewer, engine: Annotated[Engine, Depends(_engine)]
) -> SubjectView:
    return await asyncio.to_thread(_subject_view, engine, trial_id, subject_id)


def _subject_view(engine: Engine, trial_id: str, subject_id: str) -> SubjectView:
    with Session(engine) as session:
        subject = session.get(Subject, (trial_id, subject_id))
        if subject is None:
            raise ProblemError(404, "Not found", f"no subject '{subject_id}' in trial '{trial_id}'", slug="not-found")
        mine = {"trial_id": trial_id, "subject_id": subject_id}
        doses = session.exec(select(Dose).filter_by(**mine).order_by(col(Dose.administered_at))).all()
        labs = session.exec(select(LabResult).filter_by(**mine).order_by(col(LabResult.collected_at))).all()
        states = session.exec(select(AeSeriousness).filter_by(**mine).order_by(col(AeSeriousness.ae_id))).all()
        versions = session.exec(select(AeVersion).filter_by(**mine).order_by(col(AeVersion.version))).all()
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
        )
