"""Safety's lab path: floor grades are stored and page; implausible values and unknown units become data-quality
signals for the site; INR reads the anticoagulation flag; inconsistent seriousness is flagged too."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import Engine
from sqlmodel import Session

from services.safety import models
from services.safety.clinical_events import apply_clinical_event
from services.safety.lab_toxicity import grade_lab, lab_findings
from services.safety.models import LabResult
from shared.db import create_tables
from shared.events import (
    AeData,
    AeReported,
    DataQualityFlagged,
    LabData,
    LabResulted,
    LabToxicity,
    SeriousnessCriteria,
    deterministic_id,
)
from shared.outbox import Outgoing
from shared.protocol import Protocol

SIGNALS = "test.signals.v1"
T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


@pytest.fixture
def session(engine: Engine) -> Iterator[Session]:
    create_tables(engine, models.TABLES)
    with Session(engine) as session, session.begin():
        yield session


def lab(
    n: int,
    test: str,
    value: str,
    unit: str | None,
    *,
    lln: str | None = None,
    uln: str | None = None,
    hours: int = 0,
    baseline: bool = False,
    anticoagulated: bool | None = None,
    flags: list[str] | None = None,
) -> LabResulted:
    sender = f"lab-{n}"
    return LabResulted(
        id=deterministic_id("inbound", "edc", sender),
        source="/sources/edc",
        subject="S-001",
        time=T0,
        trialid="NCT07212335",
        siteid="SITE-1",
        receivedat=T0 + timedelta(hours=hours, minutes=5),
        senderid=sender,
        data=LabData(
            result_id=f"R-{n}",
            test=test,
            value=value,
            unit=unit,
            lln=None if lln is None else Decimal(lln),
            uln=None if uln is None else Decimal(uln),
            collected_at=T0 + timedelta(hours=hours),
            baseline=baseline,
            anticoagulated=anticoagulated,
            flags=flags or [],
        ),
    )


def run(session: Session, protocol: Protocol, envelope: LabResulted | AeReported) -> Sequence[Outgoing]:
    out = apply_clinical_event(session, envelope, T0, protocol=protocol, signals_topic=SIGNALS)
    session.flush()
    return out


def only(out: Sequence[Outgoing], kind: type[LabToxicity] | type[DataQualityFlagged]) -> list[Outgoing]:
    return [o for o in out if isinstance(o.envelope, kind)]


def test_acute_kidney_injury_without_uln_pages_as_at_least_grade_3(session: Session, protocol: Protocol) -> None:
    run(session, protocol, lab(1, "CREAT", "0.8", "mg/dL", baseline=True))
    out = run(session, protocol, lab(2, "CREAT", "3.2", "mg/dL", hours=48))
    [signal] = only(out, LabToxicity)
    assert isinstance(signal.envelope, LabToxicity)
    data = signal.envelope.data
    assert (data.term, data.grade, data.floor) == ("Creatinine increased", 3, True)
    assert data.reason.startswith("at least grade 3")
    assert data.received_at == T0 + timedelta(hours=48, minutes=5)
    stored = session.get(LabResult, ("NCT07212335", "S-001", "R-2"))
    assert stored is not None and (stored.grade, stored.grade_floor) == (3, True)


def test_censored_neutrophils_floor_pages_against_a_lower_baseline(session: Session, protocol: Protocol) -> None:
    run(session, protocol, lab(1, "NEUT", "1.2", "G/L", lln="1.8", baseline=True))
    out = run(session, protocol, lab(2, "NEUT", "<1.0", "x10^9/L", lln="1.8", hours=24))
    [signal] = only(out, LabToxicity)
    assert isinstance(signal.envelope, LabToxicity)
    assert (signal.envelope.data.grade, signal.envelope.data.floor) == (3, True)


def test_haemoglobin_70_g_per_dl_is_a_data_quality_finding_not_polycythaemia(
    session: Session, protocol: Protocol
) -> None:
    out = run(session, protocol, lab(1, "HGB", "70", "g/dL", lln="12", uln="16"))
    assert only(out, LabToxicity) == []
    [flag] = only(out, DataQualityFlagged)
    assert isinstance(flag.envelope, DataQualityFlagged)
    data = flag.envelope.data
    assert (data.code, data.record_type, data.record_id, data.site_id) == ("implausible_value", "lab", "R-1", "SITE-1")
    assert "likely g/L" in data.detail and "grade 3" in data.detail
    stored = session.get(LabResult, ("NCT07212335", "S-001", "R-1"))
    assert stored is not None and stored.grade is None and "implausible" in stored.grade_reason


def test_unknown_unit_is_a_data_quality_finding(session: Session, protocol: Protocol) -> None:
    out = run(session, protocol, lab(1, "PLAT", "20", "Zellen/ml"))
    [flag] = only(out, DataQualityFlagged)
    assert isinstance(flag.envelope, DataQualityFlagged)
    assert flag.envelope.data.code == "unknown_unit"
    assert "'Zellen/ml'" in flag.envelope.data.detail


def test_flag_ids_are_deterministic_and_a_resend_flags_nothing(session: Session, protocol: Protocol) -> None:
    first = lab(1, "PLAT", "20", "Zellen/ml")
    [flag] = only(run(session, protocol, first), DataQualityFlagged)
    assert flag.envelope.id == deterministic_id("signal", first.id, "data_quality", "unknown_unit")
    resent = first.model_copy(update={"id": deterministic_id("inbound", "edc", "again")})
    assert run(session, protocol, resent) == []


def test_range_that_does_not_fit_the_unit_is_not_graded() -> None:
    # HL7 feeds label Dutch mmol/L haemoglobin "g/dL": 7.5 would be grade 3 anaemia; ingest saw the range misfit.
    data = lab(1, "HGB", "7.5", "g/dL", lln="8.5", uln="10.5", flags=["UNIT_RANGE_MISMATCH"]).data
    graded = grade_lab(data)
    assert graded.grade is None
    assert graded.finding is not None and graded.finding.code == "implausible_value"
    assert [f.code for f in lab_findings(data)] == ["implausible_value"]


def test_inr_reads_the_anticoagulation_flag(session: Session, protocol: Protocol) -> None:
    run(session, protocol, lab(1, "INR", "1.0", None, baseline=True))
    run(session, protocol, lab(2, "INR", "1.1", None, hours=24))
    run(session, protocol, lab(3, "INR", "1.1", None, hours=48, anticoagulated=True))
    plain = session.get(LabResult, ("NCT07212335", "S-001", "R-2"))
    anticoagulated = session.get(LabResult, ("NCT07212335", "S-001", "R-3"))
    assert plain is not None and plain.grade == 0
    assert anticoagulated is not None and anticoagulated.grade == 1 and anticoagulated.anticoagulated is True


def test_inconsistent_seriousness_is_flagged_for_the_site(session: Session, protocol: Protocol) -> None:
    ae = AeReported(
        id=deterministic_id("inbound", "edc", "ae-1"),
        source="/sources/edc",
        subject="S-001",
        time=T0,
        trialid="NCT07212335",
        siteid="SITE-1",
        receivedat=T0,
        senderid="ae-1",
        data=AeData(
            ae_id="AE-1",
            version=1,
            term="Pyrexia",
            grade=2,
            serious=False,
            seriousness=SeriousnessCriteria(hospitalization=True),
        ),
    )
    out = run(session, protocol, ae)
    [flag] = only(out, DataQualityFlagged)
    assert isinstance(flag.envelope, DataQualityFlagged)
    data = flag.envelope.data
    assert (data.code, data.record_type, data.record_id) == ("inconsistent_seriousness", "ae", "AE-1")
    assert "serious=false" in data.detail


def test_ambiguous_number_is_flagged_for_the_site(session: Session, protocol: Protocol) -> None:
    out = run(session, protocol, lab(1, "ALT", "1,200", "U/L", lln="7", uln="40"))
    [flag] = only(out, DataQualityFlagged)
    assert isinstance(flag.envelope, DataQualityFlagged)
    assert flag.envelope.data.code == "ambiguous_value"
    assert "as 1200: grade 4" in flag.envelope.data.detail


def test_baseline_from_another_lab_in_another_unit_still_counts(session: Session, protocol: Protocol) -> None:
    run(session, protocol, lab(1, "CREAT", "71", "umol/L", baseline=True))
    out = run(session, protocol, lab(2, "CREAT", "3.2", "mg/dL", hours=48))
    [signal] = only(out, LabToxicity)
    assert isinstance(signal.envelope, LabToxicity)
    assert (signal.envelope.data.grade, signal.envelope.data.floor) == (3, True)


def test_the_trials_population_bound_catches_an_anc_in_cells_per_microlitre(
    session: Session, protocol: Protocol
) -> None:
    out = run(session, protocol, lab(1, "NEUT", "250", "10^9/L", lln="1.8", uln="7.5"))
    [flag] = only(out, DataQualityFlagged)
    assert isinstance(flag.envelope, DataQualityFlagged)
    assert flag.envelope.data.code == "implausible_value"
    assert "as /uL: grade 4" in flag.envelope.data.detail
    stored = session.get(LabResult, ("NCT07212335", "S-001", "R-1"))
    assert stored is not None and stored.grade is None


def test_a_wbc_in_cells_per_microlitre_is_not_read_as_leukocytosis(session: Session, protocol: Protocol) -> None:
    out = run(session, protocol, lab(1, "WBC", "800", "10^9/L", lln="4.0", uln="11.0"))
    assert only(out, LabToxicity) == []
    [flag] = only(out, DataQualityFlagged)
    assert isinstance(flag.envelope, DataQualityFlagged)
    assert "as /uL: grade 4" in flag.envelope.data.detail
