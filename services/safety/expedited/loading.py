"""Read one AE's report case (at a given version) from safety's tables; the caller owns the session."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta

from sqlmodel import Session, col, select

from services.safety.expedited.cases import case_id, effective_expectedness, report_version
from services.safety.expedited.report_case import DoseLine, LabLine, ReportCase, VersionLine, onset_date
from services.safety.models import AeSeriousness, AeVersion, Dose, LabResult, Subject, SusarCase
from services.safety.sae import criteria_of, merge_criteria
from shared.events import AeData
from shared.protocol import Protocol

LABS_AROUND_ONSET = timedelta(days=7)
"""Labs shown with the event: from a week before onset to a week after (all of them when onset is partial)."""


class NoSuchReport(LookupError):
    """No serious AE (or no such version of it): there is nothing to draft."""


def load_report_case(
    session: Session, *, protocol: Protocol, trial_id: str, subject_id: str, ae_id: str, version: int | None
) -> ReportCase:
    key = (trial_id, subject_id, ae_id)
    rsi = protocol.reference_safety_information
    rules = protocol.expedited_reporting
    file = session.get(SusarCase, key)
    seriousness = session.get(AeSeriousness, key)
    subject = session.get(Subject, (trial_id, subject_id))
    if rsi is None or rules is None or file is None or seriousness is None or subject is None:
        raise NoSuchReport(f"no serious AE '{ae_id}' for subject '{subject_id}' in trial '{trial_id}'")
    rows = session.exec(
        select(AeVersion)
        .where(AeVersion.trial_id == trial_id, AeVersion.subject_id == subject_id, AeVersion.ae_id == ae_id)
        .order_by(col(AeVersion.version))
    ).all()
    wanted = version if version is not None else seriousness.latest_version
    upto = [row for row in rows if row.version <= wanted]
    if not upto or upto[-1].version != wanted:
        raise NoSuchReport(f"AE '{ae_id}' has no version {wanted}")
    first_serious = seriousness.first_serious_version or upto[0].version
    if wanted < first_serious:
        raise NoSuchReport(f"AE '{ae_id}' was not serious at version {wanted} (serious from version {first_serious})")
    datas = [(row, AeData.model_validate(row.payload)) for row in upto]
    this_row, this = datas[-1]
    criteria = merge_criteria(*(criteria_of(d) for _row, d in datas))
    grades = [d.grade for _row, d in datas if d.grade is not None]
    course = tuple(
        VersionLine(
            version=d.version,
            received_at=row.received_at,
            grade=d.grade,
            outcome=d.outcome,
            criteria=tuple(sorted(criteria_of(d))),
            relatedness=d.relatedness.value if d.relatedness else None,
        )
        for row, d in datas
    )
    first_received = next((row.received_at for row, d in datas if d.version >= first_serious), this_row.received_at)
    doses = session.exec(
        select(Dose).where(Dose.trial_id == trial_id, Dose.subject_id == subject_id).order_by(col(Dose.administered_at))
    ).all()
    labs = session.exec(
        select(LabResult)
        .where(LabResult.trial_id == trial_id, LabResult.subject_id == subject_id)
        .order_by(col(LabResult.collected_at))
    ).all()
    onset_text = _latest(d.onset for _row, d in datas)
    onset = onset_date(onset_text)
    if onset is not None:
        low, high = onset - LABS_AROUND_ONSET, onset + LABS_AROUND_ONSET
        labs = [lab for lab in labs if lab.baseline or low <= lab.collected_at.date() <= high]
    arm = protocol.arm(subject.arm) if subject.arm else None
    latest = wanted == seriousness.latest_version
    return ReportCase(
        trial_id=trial_id,
        trial_title=protocol.title,
        product=rsi.product,
        route=rsi.route,
        indication=rsi.indication,
        sender_organisation=rules.sender_organisation,
        country=rules.country,
        rsi_document=rsi.document,
        rsi_version=file.rsi_version or rsi.version,
        rsi_date=rsi.date,
        case_id=case_id(trial_id, subject_id, ae_id),
        report_version=report_version(first_serious, wanted),
        ae_version=wanted,
        latest_ae_version=seriousness.latest_version,
        first_received_at=first_received,
        latest_received_at=this_row.received_at,
        subject_id=subject_id,
        site_id=subject.site_id,
        arm=subject.arm,
        arm_label=arm.label if arm else None,
        arm_cells_per_kg=str(arm.cells_per_kg) if arm else None,
        enrolled_at=subject.enrolled_at,
        reported_term=this.term,
        term=file.term,
        meddra_code=file.meddra_code,
        grade=max(grades) if grades else None,
        criteria=tuple(sorted(criteria)),
        onset=onset_text,
        end=_latest(d.end for _row, d in datas),
        outcome=_latest(d.outcome for _row, d in datas),
        site_relatedness=this.relatedness.value if this.relatedness else None,
        awareness_at=seriousness.awareness_at,
        course=course,
        doses=tuple(DoseLine(d.number, d.administered_at, d.administered_on, d.cells_per_kg) for d in doses),
        labs=tuple(
            LabLine(
                collected_at=lab.collected_at,
                test=lab.test or lab.loinc or "",
                value=lab.value,
                unit=lab.unit,
                lln=lab.lln,
                uln=lab.uln,
                term=lab.term,
                grade=lab.grade,
                baseline=lab.baseline,
            )
            for lab in labs
        ),
        sponsor_causality=file.sponsor_causality,
        causality_by=file.causality_by,
        causality_reason=file.causality_reason,
        expectedness=effective_expectedness(file),
        expectedness_basis="officer" if file.confirmed_expectedness else "rsi_proposal",
        expectedness_reason=(file.expectedness_reason if file.confirmed_expectedness else file.proposed_reason) or "",
        susar=file.susar,
        clock_start=file.clock_start,
        edited_narrative=file.narrative if latest else None,
    )


def _latest(values: Iterable[str | None]) -> str | None:
    """A follow-up that leaves a field out does not erase what an earlier version said."""
    known = [v for v in values if v is not None]
    return known[-1] if known else None
