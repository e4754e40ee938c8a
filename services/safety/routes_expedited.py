"""Safety's expedited-reporting API: each SAE's SUSAR file (viewers), the sponsor's causality and expectedness
decisions and the narrative edit (officers, audited, signalled through the outbox), and the report drafts
(CIOMS I PDF, ICH E2B(R3) XML) of any version (officers)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, Field, field_validator
from sqlalchemy import Engine
from sqlmodel import Session

from services.safety.expedited import cases
from services.safety.expedited.e2b import gaps, render_e2b
from services.safety.expedited.loading import NoSuchReport, load_report_case
from services.safety.expedited.narrative import draft_narrative
from services.safety.expedited.report_case import ReportCase
from services.safety.models import SusarCase
from shared.audit import lock_audit_chain
from shared.auth import require_role
from shared.consumer_service import ConsumerService
from shared.events import ClinicalEnvelope
from shared.outbox import Outgoing, add_to_outbox
from shared.problems import ProblemError
from shared.protocol import Protocol
from shared.settings import ApiUser

router = APIRouter(prefix="/v1", tags=["expedited reporting"])
Viewer = Annotated[ApiUser, Depends(require_role("viewer"))]
Officer = Annotated[ApiUser, Depends(require_role("officer"))]
PRODUCER = "safety"
CASE = "/trials/{trial_id}/subjects/{subject_id}/aes/{ae_id}"


class CaseView(BaseModel):
    trial_id: str
    subject_id: str
    ae_id: str
    case_id: str
    term: str
    meddra_code: str | None
    site_relatedness: str | None
    sponsor_causality: str | None
    causality_by: str | None
    causality_at: datetime | None
    causality_reason: str | None
    proposed_expectedness: str
    proposed_reason: str
    rsi_version: str
    confirmed_expectedness: str | None
    expectedness_by: str | None
    expectedness_at: datetime | None
    expectedness_reason: str | None
    expectedness: str
    """The one that counts: the officer's, else the RSI's proposal."""
    susar: bool
    fatal_or_life_threatening: bool
    clock_start: datetime | None
    """Day 0 of the expedited-report clock (the sponsor's first awareness of a case meeting all criteria)."""
    clock_basis: str | None
    upgraded_at: datetime | None
    narrative_edited: bool
    narrative_by: str | None
    narrative_at: datetime | None
    updated_at: datetime


class CaseDetail(CaseView):
    narrative: str
    """The text the exports use: the officer's edit, else the generated draft."""
    narrative_draft: str
    report_version: int
    ae_version: int
    e2b_gaps: list[str]
    """What the E2B message sends as a null flavour because the data does not have it."""


class _Reasoned(BaseModel):
    reason: str = Field(min_length=1, max_length=2000, description="Why: kept in the audit trail")

    @field_validator("reason")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if "\x00" in value:
            raise ValueError("the reason contains a NUL character")
        if not value.strip():
            raise ValueError("a reason is required")
        return value.strip()


class CausalityBody(_Reasoned):
    causality: Literal["related", "not_related"]


class ExpectednessBody(_Reasoned):
    expectedness: Literal["expected", "unexpected"]


class NarrativeBody(BaseModel):
    text: str | None = Field(
        max_length=20000, description="The edited narrative; null goes back to the generated draft"
    )

    @field_validator("text")
    @classmethod
    def _clean(cls, value: str | None) -> str | None:
        if value is not None and "\x00" in value:
            raise ValueError("the text contains a NUL character")
        return value.strip() or None if value is not None else None


def _view(case: SusarCase) -> CaseView:
    return CaseView(
        **case.model_dump(exclude={"narrative", "revision", "site_relatedness_version", "signalled_version"}),
        case_id=cases.case_id(case.trial_id, case.subject_id, case.ae_id),
        expectedness=cases.effective_expectedness(case),
        narrative_edited=case.narrative is not None,
    )


def _not_found(detail: str) -> ProblemError:
    return ProblemError(404, "Not found", detail, slug="not-found")


def _check(protocol: Protocol, *ids: str) -> None:
    if any("\x00" in value for value in ids):
        raise _not_found("no such case: an id contains a NUL character")
    if ids and ids[0] != protocol.trial_id:
        raise _not_found(f"this safety service runs trial '{protocol.trial_id}', not '{ids[0]}'")
    if protocol.expedited_reporting is None or protocol.reference_safety_information is None:
        raise _not_found(f"protocol {protocol.trial_id} has no reference safety information and expedited reporting")


@router.get("/trials/{trial_id}/expedited-cases", response_model=list[CaseView])
async def list_cases(
    trial_id: str,
    _user: Viewer,
    request: Request,
    susar: Annotated[bool, Query(description="only cases that are SUSARs now")] = False,
) -> list[CaseView]:
    state = request.app.state
    _check(state.protocol, trial_id)

    def read() -> list[CaseView]:
        with Session(state.engine) as session:
            return [_view(c) for c in cases.cases_for(session, trial_id=trial_id, susar_only=susar)]

    return await asyncio.to_thread(read)


@router.get(CASE + "/expedited", response_model=CaseDetail)
async def get_case(trial_id: str, subject_id: str, ae_id: str, _user: Viewer, request: Request) -> CaseDetail:
    state = request.app.state
    _check(state.protocol, trial_id, subject_id, ae_id)
    return await asyncio.to_thread(_detail, state.engine, state.protocol, trial_id, subject_id, ae_id)


def _detail(engine: Engine, protocol: Protocol, trial_id: str, subject_id: str, ae_id: str) -> CaseDetail:
    with Session(engine) as session:
        case = session.get(SusarCase, (trial_id, subject_id, ae_id))
        try:
            report = load_report_case(
                session, protocol=protocol, trial_id=trial_id, subject_id=subject_id, ae_id=ae_id, version=None
            )
        except NoSuchReport as exc:
            raise _not_found(str(exc)) from None
        assert case is not None  # load_report_case found it
        draft = draft_narrative(report)
        return CaseDetail(
            **_view(case).model_dump(),
            narrative=case.narrative or draft,
            narrative_draft=draft,
            report_version=report.report_version,
            ae_version=report.ae_version,
            e2b_gaps=gaps(report),
        )


Change = Callable[[Session, Protocol, datetime, str], tuple[SusarCase, list[Outgoing]]]


async def _decide(request: Request, trial_id: str, subject_id: str, ae_id: str, change: Change) -> CaseView:
    """One officer decision: its audit rows and signals in one transaction, then wake the outbox relay."""
    state = request.app.state
    _check(state.protocol, trial_id, subject_id, ae_id)
    now = state.clock.now()

    def write() -> tuple[CaseView, bool]:
        with Session(state.engine) as session, session.begin():
            lock_audit_chain(session, service=cases.AUDIT_SERVICE)  # first, as in the consumer's transaction
            try:
                case, signals = change(session, state.protocol, now, state.signals_topic)
            except cases.UnknownCase as exc:
                raise _not_found(str(exc)) from None
            for outgoing in signals:
                add_to_outbox(session, producer=PRODUCER, message=outgoing, now=now)
            session.flush()
            return _view(case), bool(signals)

    view, signalled = await asyncio.to_thread(write)
    consumer: ConsumerService[ClinicalEnvelope] | None = getattr(state, "consumer", None)
    if signalled and consumer is not None:
        consumer.relay.wake()
    return view


@router.post(CASE + "/causality", response_model=CaseView)
async def assess_causality(
    trial_id: str, subject_id: str, ae_id: str, body: CausalityBody, user: Officer, request: Request
) -> CaseView:
    """The sponsor's causality: `related` can make the case a SUSAR (day 0 = now); `not_related` never
    overrides a site that says related (the worst case counts)."""
    keys = {"trial_id": trial_id, "subject_id": subject_id, "ae_id": ae_id}

    def change(session: Session, protocol: Protocol, now: datetime, topic: str) -> tuple[SusarCase, list[Outgoing]]:
        return cases.record_causality(
            session,
            protocol=protocol,
            **keys,
            causality=body.causality,
            actor=user.user,
            reason=body.reason,
            now=now,
            signals_topic=topic,
        )

    return await _decide(request, trial_id, subject_id, ae_id, change)


@router.post(CASE + "/expectedness", response_model=CaseView)
async def assess_expectedness(
    trial_id: str, subject_id: str, ae_id: str, body: ExpectednessBody, user: Officer, request: Request
) -> CaseView:
    """Confirm or override the RSI's proposal; `expected` withdraws a SUSAR (its open reports are cancelled)."""
    keys = {"trial_id": trial_id, "subject_id": subject_id, "ae_id": ae_id}

    def change(session: Session, protocol: Protocol, now: datetime, topic: str) -> tuple[SusarCase, list[Outgoing]]:
        return cases.record_expectedness(
            session,
            protocol=protocol,
            **keys,
            expectedness=body.expectedness,
            actor=user.user,
            reason=body.reason,
            now=now,
            signals_topic=topic,
        )

    return await _decide(request, trial_id, subject_id, ae_id, change)


@router.put(CASE + "/narrative", response_model=CaseView)
async def edit_narrative(
    trial_id: str, subject_id: str, ae_id: str, body: NarrativeBody, user: Officer, request: Request
) -> CaseView:
    """The officer's narrative replaces the generated draft in the latest version's exports (audited)."""

    def change(session: Session, _protocol: Protocol, now: datetime, _topic: str) -> tuple[SusarCase, list[Outgoing]]:
        saved = cases.save_narrative(
            session, trial_id=trial_id, subject_id=subject_id, ae_id=ae_id, text=body.text, actor=user.user, now=now
        )
        return saved, []

    return await _decide(request, trial_id, subject_id, ae_id, change)


VersionQuery = Annotated[int | None, Query(ge=1, description="AE version (default: the latest)")]


def _report(request: Request, trial_id: str, subject_id: str, ae_id: str, version: int | None) -> ReportCase:
    state = request.app.state
    with Session(state.engine) as session:
        try:
            return load_report_case(
                session, protocol=state.protocol, trial_id=trial_id, subject_id=subject_id, ae_id=ae_id, version=version
            )
        except NoSuchReport as exc:
            raise _not_found(str(exc)) from None


def _filename(report_case_id: str, version: int, ext: str) -> dict[str, str]:
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in report_case_id)
    return {"Content-Disposition": f'attachment; filename="{safe}-v{version}.{ext}"'}


@router.get(CASE + "/reports/cioms.pdf", response_class=Response)
async def cioms_pdf(
    trial_id: str, subject_id: str, ae_id: str, _user: Officer, request: Request, version: VersionQuery = None
) -> Response:
    """The CIOMS I form of this AE at `version` (initial = the version that made it serious)."""
    _check(request.app.state.protocol, trial_id, subject_id, ae_id)
    now = request.app.state.clock.now()

    def build() -> tuple[bytes, str, int]:
        # Imported here: the PDF library (fpdf2, with its image and font stack) is 30 MB of resident memory that
        # safety would otherwise carry for a form an officer downloads now and then.
        from services.safety.expedited.cioms import render_cioms

        report = _report(request, trial_id, subject_id, ae_id, version)
        return render_cioms(report, created=now), report.case_id, report.report_version

    body, case_id, report_version = await asyncio.to_thread(build)
    return Response(body, media_type="application/pdf", headers=_filename(case_id, report_version, "pdf"))


@router.get(CASE + "/reports/e2b.xml", response_class=Response)
async def e2b_xml(
    trial_id: str,
    subject_id: str,
    ae_id: str,
    _user: Officer,
    request: Request,
    version: VersionQuery = None,
    recipient: Annotated[str | None, Query(description="protocol recipient id (default: the first regulator)")] = None,
) -> Response:
    """The ICH E2B(R3) ICSR (MCCI_IN200100UV01 / PORR_IN049016UV) of this AE at `version`."""
    protocol: Protocol = request.app.state.protocol
    _check(protocol, trial_id, subject_id, ae_id)
    rules = protocol.expedited_reporting
    assert rules is not None  # _check
    chosen = (
        next((r for r in rules.recipients if r.id == recipient), None)
        if recipient
        else next((r for r in rules.recipients if r.kind == "regulator"), rules.recipients[0])
    )
    if chosen is None:
        ids = [r.id for r in rules.recipients]
        raise ProblemError(422, "Unknown recipient", f"recipient must be one of {ids}", slug="unknown-recipient")
    now = request.app.state.clock.now()

    def build() -> tuple[bytes, str, int]:
        report = _report(request, trial_id, subject_id, ae_id, version)
        return (
            render_e2b(report, created=now, receiver=chosen.e2b_receiver or chosen.id),
            report.case_id,
            report.report_version,
        )

    body, case_id, report_version = await asyncio.to_thread(build)
    return Response(body, media_type="application/xml", headers=_filename(case_id, report_version, "xml"))
