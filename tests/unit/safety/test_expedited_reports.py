"""Report drafts for the demo SAE: the CIOMS I PDF and the E2B(R3) message, initial and follow-up versions."""

from __future__ import annotations

import json
import re
import zlib
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlmodel import Session

from services.devstack.scenario import scenario_events
from services.ingest.normalise import parse_body, to_envelope
from services.safety.expedited.cioms import BLANK, render_cioms
from services.safety.expedited.e2b import gaps, render_e2b
from services.safety.expedited.loading import NoSuchReport, load_report_case
from services.safety.expedited.narrative import draft_narrative
from services.safety.expedited.report_case import ReportCase
from shared.protocol import Protocol
from tests.unit.safety.clinical import Driver
from tests.unit.safety.e2b_structure import ICSR, NS, REACTION, first, parse, problems

NOW = datetime(2026, 3, 12, 9, 0, tzinfo=UTC)
TRIAL = "NCT07212335"
SUBJECT = "101-001"


def replay_demo(driver: Driver, *, extra: list[dict[str, Any]] = ()) -> list[Any]:  # type: ignore[assignment]
    """The demo scenario's events, normalised by ingest's own code, one minute apart."""
    signals = []
    for i, event in enumerate([*scenario_events(TRIAL, NOW), *extra]):
        [canonical] = parse_body(json.dumps(event).encode())
        at = NOW - timedelta(minutes=30) + timedelta(minutes=i)
        signals += driver.apply(to_envelope("edc", canonical, at), now=at)  # type: ignore[arg-type]
    return signals


def report(engine: Engine, protocol: Protocol, version: int | None = None) -> ReportCase:
    with Session(engine) as session:
        return load_report_case(
            session, protocol=protocol, trial_id=TRIAL, subject_id=SUBJECT, ae_id="AE-1", version=version
        )


def pdf_text(pdf: bytes) -> str:
    """The text operators of every content stream (fpdf2 deflates them)."""
    chunks = []
    for match in re.finditer(rb"stream\r?\n(.*?)\r?\nendstream", pdf, re.S):
        try:
            chunks.append(zlib.decompress(match.group(1)).decode("latin-1"))
        except zlib.error:
            chunks.append(match.group(1).decode("latin-1"))
    return "".join("".join(re.findall(r"\((.*?)\)\s*Tj", chunk)) for chunk in chunks).replace("\\", "")


@pytest.fixture
def demo(engine: Engine, protocol: Protocol) -> Driver:
    driver = Driver(engine, protocol)
    signals = replay_demo(driver)
    [susar] = [s for s in signals if s.type == "susar.detected"]
    assert susar.data.term == "Infusion related reaction" and susar.data.grade == 3  # above the RSI's grade 2
    return driver


def test_the_demo_sae_cioms_form_has_the_data_and_marks_the_blanks(demo: Driver, protocol: Protocol) -> None:
    case = report(demo.engine, protocol)
    pdf = render_cioms(case, created=NOW)
    assert pdf.startswith(b"%PDF-") and pdf.count(b"/Type /Page\n") + pdf.count(b"/Type /Page/") >= 1
    text = pdf_text(pdf)
    for expected in (
        "SUSPECT ADVERSE REACTION REPORT",
        "Infusion related reaction",
        "10051792",
        "Umbilical-cord mesenchymal stromal cells (UC-MSC)",
        "intravenous",
        "Prolonged cytopenia after CAR-T cell therapy",
        "2 x 10^6 cells/kg",
        "NCT07212335-101-001-AE-1",
        "[X] INITIAL",
        BLANK,  # date of birth, sex, weight, dechallenge...
        "NEUT",  # labs around onset on the continuation page
    ):
        assert expected in text, expected
    assert case.report_version == 1 and not case.follow_up  # version 2 first made it serious: the initial report


def test_the_demo_sae_e2b_message_has_the_mandatory_elements(demo: Driver, protocol: Protocol) -> None:
    case = report(demo.engine, protocol)
    xml = render_e2b(case, created=NOW, receiver="regulator")
    assert problems(xml) == []
    root = parse(xml)
    reaction = first(root, f"{REACTION}/hl7:value")
    assert reaction is not None and reaction.get("code") == "10051792"
    hospital = first(root, f"{REACTION}/hl7:outboundRelationship2/hl7:observation?code=33/hl7:value")
    assert hospital is not None and hospital.get("value") == "true"
    death = first(root, f"{REACTION}/hl7:outboundRelationship2/hl7:observation?code=34/hl7:value")
    assert death is not None and death.get("nullFlavor") == "NI"
    expedited = first(root, f"{ICSR}/hl7:component/hl7:observationEvent?code=23/hl7:value")
    assert expedited is not None and expedited.get("value") == "true"  # a SUSAR
    assert root.find(f"{ICSR}/hl7:text", NS).text == draft_narrative(case)  # type: ignore[union-attr]
    assert any("D.2" in gap for gap in gaps(case))


def test_a_follow_up_version_is_report_version_2(demo: Driver, protocol: Protocol, engine: Engine) -> None:
    follow_up = {
        "id": f"{SUBJECT}-ae-1-v3",
        "type": "ae",
        "study": TRIAL,
        "site": "101",
        "subject": SUBJECT,
        "data": {
            "ae_id": "AE-1",
            "version": 3,
            "term": "Fever and rigors after infusion, hypotension",
            "ctcae_term": "Infusion related reaction",
            "grade": 3,
            "serious": True,
            "seriousness": {"hospitalization": True},
            "relatedness": "probable",
            "outcome": "recovered",
            "end": (NOW + timedelta(days=2)).date().isoformat(),
        },
    }
    [canonical] = parse_body(json.dumps(follow_up).encode())
    demo.apply(to_envelope("edc", canonical, NOW + timedelta(days=2)), now=NOW + timedelta(days=2))  # type: ignore[arg-type]
    initial, latest = report(engine, protocol, version=2), report(engine, protocol)
    assert (initial.report_version, latest.report_version) == (1, 2)
    assert "[X] FOLLOWUP" in pdf_text(render_cioms(latest, created=NOW))
    xml = render_e2b(latest, created=NOW, receiver="regulator")
    assert problems(xml) == []
    root = parse(xml)
    assert root.find("hl7:PORR_IN049016UV/hl7:id", NS).get("extension").endswith("-v2")  # type: ignore[union-attr]
    outcome = first(root, f"{REACTION}/hl7:outboundRelationship2/hl7:observation?code=27/hl7:value")
    assert outcome is not None and outcome.get("code") == "1"  # recovered
    with pytest.raises(NoSuchReport, match="not serious at version 1"):
        report(engine, protocol, version=1)


def test_the_structural_check_fails_a_message_missing_a_mandatory_element(demo: Driver, protocol: Protocol) -> None:
    xml = render_e2b(report(demo.engine, protocol), created=NOW, receiver="regulator").decode()
    broken = re.sub(r'<id extension="[^"]*" root="2\.16\.840\.1\.113883\.3\.989\.2\.1\.3\.2" />', "", xml, count=1)
    assert broken != xml
    assert any(p.startswith("C.1.8.1") for p in problems(broken.encode()))
    uncoded = xml.replace('code="10051792"', 'nullFlavor="NI"', 1)
    assert any(p.startswith("E.i.2.1b") for p in problems(uncoded.encode()))
