"""Safety's read-only listings for the console and DSMB/SRC packets: the trial's subjects, every AE, graded lab
toxicities, one subject's blood-count series (with CTCAE bands) and visit schedule, and the audit trail of a
subject, a DLT or the cohorts. Viewers may read all of it; nothing here changes state."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel
from sqlalchemy import Engine, or_
from sqlmodel import Session, col, select

from services.safety import protocol_engine, store
from services.safety.assessments import missing_kinds, schedule
from services.safety.lab_series import lab_series
from services.safety.models import AeSeriousness, MissedAssessment, Subject
from shared.audit import AuditEntry
from shared.auth import require_role
from shared.problems import ProblemError
from shared.protocol import Protocol
from shared.settings import ApiUser

router = APIRouter(prefix="/v1")
Viewer = Annotated[ApiUser, Depends(require_role("viewer"))]
Limit = Annotated[int, Query(ge=1, le=5000)]


class SubjectSummary(BaseModel):
    subject_id: str
    site_id: str
    arm: str | None
    enrolled_at: date | None
    first_infusion_at: datetime | None
    infusions: int
    window_state: Literal["open", "closed"] | None
    window_end: datetime | None
    study_day: int | None
    adverse_events: int
    serious: int
    dlt_suspected: int
    dlt_confirmed: int


class AeListing(BaseModel):
    subject_id: str
    site_id: str
    arm: str | None
    ae_id: str
    term: str
    ctcae_term: str | None
    grade: int | None
    """The latest version's grade."""
    max_grade: int | None
    serious: bool
    criteria: list[str]
    relatedness: str | None
    onset: str | None
    end: str | None
    outcome: str | None
    awareness_at: datetime | None
    latest_version: int
    first_received_at: datetime
    last_received_at: datetime
    status: str | None
    dlt_state: str | None
    dlt_id: str | None


class LabToxicityListing(BaseModel):
    subject_id: str
    site_id: str
    arm: str | None
    result_id: str
    test: str | None
    term: str | None
    value: str
    unit: str | None
    lln: str | None
    uln: str | None
    collected_at: datetime
    grade: int
    baseline: bool
    baseline_grade: int | None
    grade_reason: str


class PointView(BaseModel):
    result_id: str
    collected_at: datetime
    value: Decimal
    censored: str | None
    grade: int | None
    baseline: bool


class BandView(BaseModel):
    grade: int
    below: Decimal


class SeriesView(BaseModel):
    name: str
    term: str
    unit: str
    points: list[PointView]
    bands: list[BandView]
    baseline: Decimal | None


class VisitView(BaseModel):
    name: str
    due_from: datetime
    due_until: datetime
    """Exclusive."""
    kinds: list[str]
    state: Literal["upcoming", "due", "done", "missed"]
    missing: list[str]
    flagged_at: datetime | None


class AuditView(BaseModel):
    seq: int
    at: datetime
    actor: str
    action: str
    entity: str
    detail: dict[str, Any]


def _state(request: Request) -> tuple[Engine, Protocol, datetime]:
    state = request.app.state
    return state.engine, state.protocol, state.clock.now()


def _known_trial(protocol: Protocol, trial_id: str) -> None:
    if trial_id != protocol.trial_id:
        raise ProblemError(
            404,
            "Not found",
            f"this safety service runs trial '{protocol.trial_id}', not '{trial_id}'",
            slug="not-found",
        )


def _subject_or_404(session: Session, trial_id: str, subject_id: str) -> Subject:
    subject = None if "\x00" in subject_id else session.get(Subject, (trial_id, subject_id))
    if subject is None:
        raise ProblemError(404, "Not found", f"no subject '{subject_id}' in trial '{trial_id}'", slug="not-found")
    return subject


@router.get("/trials/{trial_id}/subjects", response_model=list[SubjectSummary])
async def list_subjects(trial_id: str, _user: Viewer, request: Request) -> list[SubjectSummary]:
    engine, protocol, now = _state(request)
    _known_trial(protocol, trial_id)

    def query() -> list[SubjectSummary]:
        with Session(engine) as session:
            doses = defaultdict(list)
            for dose in store.doses(session, trial_id=trial_id):
                doses[dose.subject_id].append(dose)
            inactive = store.inactive_in_trial(session, trial_id=trial_id, record_type="dose")
            aes = session.exec(select(AeSeriousness).where(AeSeriousness.trial_id == trial_id)).all()
            dlts = store.dlt_records(session, trial_id=trial_id)
            found = []
            for subject in store.subjects(session, trial_id=trial_id):
                sid = subject.subject_id
                given = [d for d in doses[sid] if (sid, d.dose_id) not in inactive]
                window = protocol_engine.window_of(session, protocol=protocol, subject=subject)
                mine = [d for d in dlts if d.subject_id == sid]
                found.append(
                    SubjectSummary(
                        subject_id=sid,
                        site_id=subject.site_id,
                        arm=subject.arm,
                        enrolled_at=subject.enrolled_at,
                        first_infusion_at=given[0].administered_at if given else None,
                        infusions=len(given),
                        window_state=window.state(now) if window else None,
                        window_end=window.end if window else None,
                        study_day=window.study_day(now.date()) if window else None,
                        adverse_events=sum(1 for a in aes if a.subject_id == sid),
                        serious=sum(1 for a in aes if a.subject_id == sid and a.criteria),
                        dlt_suspected=sum(1 for d in mine if d.state == "suspected"),
                        dlt_confirmed=sum(1 for d in mine if d.state == "confirmed"),
                    )
                )
            return found

    return await asyncio.to_thread(query)


def _text(payload: dict[str, object], key: str) -> str | None:
    value = payload.get(key)
    return None if value is None else str(value)


@router.get("/trials/{trial_id}/adverse-events", response_model=list[AeListing])
async def list_adverse_events(
    trial_id: str,
    _user: Viewer,
    request: Request,
    subject: str | None = None,
    serious: bool | None = None,
) -> list[AeListing]:
    """Every AE of the trial as its latest version says, with its folded seriousness and any DLT review."""
    engine, protocol, _now = _state(request)
    _known_trial(protocol, trial_id)

    def query() -> list[AeListing]:
        with Session(engine) as session:
            subjects = {s.subject_id: s for s in store.subjects(session, trial_id=trial_id)}
            states = {
                (a.subject_id, a.ae_id): a
                for a in session.exec(select(AeSeriousness).where(AeSeriousness.trial_id == trial_id))
            }
            statuses = store.inactive_in_trial(session, trial_id=trial_id, record_type="ae")
            dlts = {(d.subject_id, d.ae_id): d for d in store.dlt_records(session, trial_id=trial_id)}
            versions = defaultdict(list)
            for version in store.ae_versions(session, trial_id=trial_id, subject_id=subject):
                versions[(version.subject_id, version.ae_id)].append(version)
            found = []
            for key, rows in sorted(versions.items()):
                sid, ae_id = key
                latest = max(rows, key=lambda v: v.version)
                state = states.get(key)
                criteria = list(state.criteria) if state else []
                if serious is not None and bool(criteria) != serious:
                    continue
                owner = subjects.get(sid)
                payload = latest.payload
                dlt = dlts.get(key)
                grade = payload.get("grade")
                found.append(
                    AeListing(
                        subject_id=sid,
                        site_id=owner.site_id if owner else "",
                        arm=owner.arm if owner else None,
                        ae_id=ae_id,
                        term=str(payload.get("term") or payload.get("ctcae_term") or ""),
                        ctcae_term=_text(payload, "ctcae_term"),
                        grade=grade if isinstance(grade, int) else None,
                        max_grade=state.max_grade if state else None,
                        serious=bool(criteria),
                        criteria=criteria,
                        relatedness=_text(payload, "relatedness"),
                        onset=_text(payload, "onset"),
                        end=_text(payload, "end"),
                        outcome=_text(payload, "outcome"),
                        awareness_at=state.awareness_at if state else None,
                        latest_version=latest.version,
                        first_received_at=min(v.received_at for v in rows),
                        last_received_at=max(v.received_at for v in rows),
                        status=statuses.get(key),
                        dlt_state=dlt.state if dlt else None,
                        dlt_id=dlt.dlt_id if dlt else None,
                    )
                )
            return found

    return await asyncio.to_thread(query)


@router.get("/trials/{trial_id}/lab-toxicities", response_model=list[LabToxicityListing])
async def list_lab_toxicities(
    trial_id: str,
    _user: Viewer,
    request: Request,
    subject: str | None = None,
    min_grade: Annotated[int, Query(ge=1, le=5)] = 1,
) -> list[LabToxicityListing]:
    """Graded lab results at or above `min_grade`, retracted results left out, with the subject's baseline grade."""
    engine, protocol, _now = _state(request)
    _known_trial(protocol, trial_id)

    def query() -> list[LabToxicityListing]:
        with Session(engine) as session:
            subjects = {s.subject_id: s for s in store.subjects(session, trial_id=trial_id)}
            inactive = store.inactive_in_trial(session, trial_id=trial_id, record_type="lab")
            baselines: dict[str, dict[str, int]] = {}
            found = []
            for lab in store.labs(session, trial_id=trial_id, subject_id=subject):
                if lab.grade is None or lab.grade < min_grade or (lab.subject_id, lab.result_id) in inactive:
                    continue
                if lab.subject_id not in baselines:
                    baselines[lab.subject_id] = store.baseline_grades(
                        session, trial_id=trial_id, subject_id=lab.subject_id
                    )
                owner = subjects.get(lab.subject_id)
                found.append(
                    LabToxicityListing(
                        subject_id=lab.subject_id,
                        site_id=owner.site_id if owner else "",
                        arm=owner.arm if owner else None,
                        result_id=lab.result_id,
                        test=lab.test or lab.loinc,
                        term=lab.term,
                        value=lab.value,
                        unit=lab.unit,
                        lln=lab.lln,
                        uln=lab.uln,
                        collected_at=lab.collected_at,
                        grade=lab.grade,
                        baseline=lab.baseline,
                        baseline_grade=baselines[lab.subject_id].get(lab.term or ""),
                        grade_reason=lab.grade_reason,
                    )
                )
            return found

    return await asyncio.to_thread(query)


@router.get("/trials/{trial_id}/subjects/{subject_id}/lab-series", response_model=list[SeriesView])
async def get_lab_series(trial_id: str, subject_id: str, _user: Viewer, request: Request) -> list[SeriesView]:
    """Neutrophils, platelets, haemoglobin in CTCAE's unit, with the grade thresholds and the baseline."""
    engine, _protocol, _now = _state(request)

    def query() -> list[SeriesView]:
        with Session(engine) as session:
            _subject_or_404(session, trial_id, subject_id)
            inactive = store.inactive_records(session, trial_id=trial_id, subject_id=subject_id, record_type="lab")
            labs = [
                lab
                for lab in store.labs(session, trial_id=trial_id, subject_id=subject_id)
                if lab.result_id not in inactive
            ]
        return [
            SeriesView(
                name=s.name,
                term=s.term,
                unit=s.unit,
                points=[PointView.model_validate(p, from_attributes=True) for p in s.points],
                bands=[BandView(grade=b.grade, below=b.below) for b in s.bands],
                baseline=s.baseline,
            )
            for s in lab_series(labs)
        ]

    return await asyncio.to_thread(query)


@router.get("/trials/{trial_id}/subjects/{subject_id}/visits", response_model=list[VisitView])
async def get_visits(trial_id: str, subject_id: str, _user: Viewer, request: Request) -> list[VisitView]:
    """The protocol's visits for this subject from the DLT anchor: upcoming, due now, done, or missed."""
    engine, protocol, now = _state(request)
    _known_trial(protocol, trial_id)

    def query() -> list[VisitView]:
        with Session(engine) as session:
            subject = _subject_or_404(session, trial_id, subject_id)
            window = protocol_engine.window_of(session, protocol=protocol, subject=subject)
            if window is None:
                return []
            keys = {"trial_id": trial_id, "subject_id": subject_id}
            lab_out = store.inactive_records(session, **keys, record_type="lab")
            lab_times = [lab.collected_at for lab in store.labs(session, **keys) if lab.result_id not in lab_out]
            ae_times = [v.received_at for v in store.ae_versions(session, **keys)]
            flagged = {
                m.assessment: m
                for m in session.exec(
                    select(MissedAssessment).where(
                        MissedAssessment.trial_id == trial_id, MissedAssessment.subject_id == subject_id
                    )
                )
            }
        found = []
        for visit in schedule(protocol.assessments, calendar=window.calendar):
            missing = missing_kinds(visit, lab_times=lab_times, ae_times=ae_times)
            state: Literal["upcoming", "due", "done", "missed"]
            if not missing:
                state = "done"
            elif now < visit.due_from:
                state = "upcoming"
            elif now < visit.due_until:
                state = "due"
            else:
                state = "missed"
            mark = flagged.get(visit.name)
            found.append(
                VisitView(
                    name=visit.name,
                    due_from=visit.due_from,
                    due_until=visit.due_until,
                    kinds=list(visit.kinds),
                    state=state,
                    missing=missing if state in ("due", "missed") else [],
                    flagged_at=mark.flagged_at if mark else None,
                )
            )
        return found

    return await asyncio.to_thread(query)


@router.get("/trials/{trial_id}/audit", response_model=list[AuditView])
async def get_audit(
    trial_id: str,
    _user: Viewer,
    request: Request,
    subject: str | None = None,
    dlt: str | None = None,
    cohorts: bool = False,
    limit: Limit = 500,
) -> list[AuditView]:
    """Safety's audit trail of one subject (its DLT reviews and corrected records), one DLT, or the cohorts'
    decisions (the escalation history), oldest first. Exactly one of `subject`, `dlt`, `cohorts`."""
    engine, protocol, _now = _state(request)
    _known_trial(protocol, trial_id)
    if sum((subject is not None, dlt is not None, cohorts)) != 1:
        raise ProblemError(
            422,
            "Invalid query",
            "give exactly one of subject, dlt or cohorts=true",
            slug="invalid-field",
            errors=[{"pointer": "/query/subject"}],
        )

    def query() -> list[AuditView]:
        with Session(engine) as session:
            entities: list[Any] = []
            if dlt is not None:
                entities.append(col(AuditEntry.entity) == f"dlt/{dlt}")
            elif cohorts:
                entities.append(col(AuditEntry.entity).startswith(f"cohort/{trial_id}/", autoescape=True))
            elif subject is not None:
                ids = [d.dlt_id for d in store.dlt_records(session, trial_id=trial_id, subject_id=subject)]
                if ids:
                    entities.append(col(AuditEntry.entity).in_([f"dlt/{i}" for i in ids]))
                entities.append(col(AuditEntry.entity).contains(f"/{trial_id}/{subject}/", autoescape=True))
            rows = session.exec(
                select(AuditEntry)
                .where(AuditEntry.service == protocol_engine.AUDIT_SERVICE, or_(*entities))
                .order_by(col(AuditEntry.seq))
                .limit(limit)
            ).all()
            return [AuditView.model_validate(r.model_dump()) for r in rows]

    return await asyncio.to_thread(query)
