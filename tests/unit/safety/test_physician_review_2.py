"""The safety physician's second review (NCT07212335, the shipped protocol): the SUSAR clock made order-independent
today, and the two dose/eligibility changes, through safety's consumer (one event per transaction, or one batch).

Regulatory answers the cases are held to:
- SUSAR = serious + suspected (possible, probable, definite) + unexpected against the RSI (ICH E2A II.A.1-3, III.A.1;
  EU CTR Art. 2(2)(33)); the sponsor may not downgrade the investigator's causality (EU CT-3 7.2.3.1).
- Day 0 = the sponsor's first receipt of information making the case one (ICH E2A III.A.2; CT-3 7.2.3.3; 21 CFR
  312.32(c)(1)): a receipt time, never a processing time; 7 days when fatal or life-threatening, else 15 (EU CTR
  Art. 42(2)(a)-(b)); fatal or life-threatening learnt later: 7 days from that knowledge (Art. 42(2)(c)).
- An AE the site takes back as entered in error is no case (ICH E2B(R3) C.1.11: nullification of a sent report).

A case where the system is right passes; one where it is wrong is xfail(strict) with the divergence in its reason.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import Session, select

from services.safety import eligibility
from services.safety.expedited import cases
from services.safety.models import Dose, LabResult, Subject, SusarCase
from shared.events import ClinicalEnvelope, EnvelopeBase
from shared.protocol import Protocol
from tests.unit.safety.clinical import Driver, dose, enrol, lab, of_type, status
from tests.unit.safety.test_batch_physician import (
    Run,
    Step,
    arm_a_dosed,
    deliver,
    deviations,
    handle,
    single_and_batched,
)
from tests.unit.safety.test_clinical_rules import DAY0, TRIAL, at, related_ae

ONSET = DAY0 + timedelta(days=9)
HOSP = {"hospitalization": True}
LIFE = {"hospitalization": True, "life_threatening": True}
FATAL = {"hospitalization": True, "life_threatening": True, "death": True}


def pneumonitis(version: int, day: int, *, grade: int = 3, hour: int = 10, **data: Any) -> ClinicalEnvelope:
    """A version of A-1's pneumonitis (not in the RSI: unexpected), received on `day` at `hour` UTC."""
    return related_ae("A-1", ONSET, version=version, grade=grade, received=at(day, hour), **data)  # type: ignore[no-any-return]


def file_of(run: Run) -> tuple[Any, ...]:
    """(susar, day 0, fatal or life-threatening, 7-day start, signalled version) of A-1's AE-1."""
    with Session(run.driver.engine) as session:
        case = session.exec(select(SusarCase)).one()
        return (case.susar, case.clock_start, case.fatal_or_life_threatening, case.upgraded_at, case.signalled_version)


def susar_signals(signals: Sequence[EnvelopeBase]) -> list[tuple[str, datetime | None]]:
    """(type or change, day 0) of every SUSAR signal, in the order given (a withdrawal has no day 0 to speak of)."""
    out = []
    for s in signals:
        kind = str(getattr(s, "type", ""))
        if kind.startswith("susar."):
            data: Any = getattr(s, "data", None)
            day0 = None if kind == "susar.withdrawn" else data.clock_start
            out.append((data.change if kind == "susar.updated" else kind, day0))
    return out


def assess(run: Run, what: str, value: str, now: datetime) -> list[EnvelopeBase]:
    """The sponsor's causality or expectedness decision through the case service (as the officer API calls it)."""
    with Session(run.driver.engine) as session, session.begin():
        common: dict[str, Any] = {
            "protocol": run.driver.protocol,
            "trial_id": TRIAL,
            "subject_id": "A-1",
            "ae_id": "AE-1",
            "actor": "sponsor-physician@example",
            "reason": "medical review",
            "now": now,
            "signals_topic": "test.signals.v1",
        }
        if what == "causality":
            _c, out = cases.record_causality(session, causality=value, **common)  # type: ignore[arg-type]
        else:
            _c, out = cases.record_expectedness(session, expectedness=value, **common)  # type: ignore[arg-type]
    signals = [o.envelope for o in out]
    run.signals += signals
    return signals


# --- 1. versions out of order, in one batch -------------------------------------------------------------------


def four_versions() -> list[ClinicalEnvelope]:
    """Grade 2 (day 9), hospitalised (day 10), life-threatening (day 11), fatal (day 13)."""
    return [
        pneumonitis(1, 9, grade=2),
        pneumonitis(2, 10, seriousness=HOSP),
        pneumonitis(3, 11, grade=4, seriousness=LIFE),
        pneumonitis(4, 13, grade=5, seriousness=FATAL, outcome="fatal"),
    ]


def test_four_versions_in_any_order_and_cut_end_in_the_receipt_orders_file(protocol: Protocol, tmp_path: Path) -> None:
    """Right: day 0 is the hospitalised v2's receipt (day 10: serious + possible + not in the RSI), the 7-day clock
    starts at the life-threatening v3's receipt (day 11, Art. 42(2)(c)), whatever order or batch they come in; one
    detection, never a withdrawal (the case never stopped qualifying)."""
    base: list[Step] = [arm_a_dosed("A-1")]
    reference = deliver(tmp_path, protocol, "in-order", [*base, four_versions()], batched=False)
    assert file_of(reference) == (True, at(10), True, at(11), 4)
    for n, order in enumerate(itertools.islice(itertools.permutations(range(4)), 0, 24, 5)):
        versions = [four_versions()[i] for i in order]
        for batched in (False, True):
            run = deliver(tmp_path, protocol, f"p{n}-{batched}", [*base, versions[:2], versions[2:]], batched=batched)
            assert file_of(run) == file_of(reference), (order, batched)
            kinds = [k for k, _ in susar_signals(run.signals)]
            assert kinds.count("susar.detected") == 1 and "susar.withdrawn" not in kinds, (order, batched, kinds)


# --- 2. relatedness downgraded, then restored -------------------------------------------------------------------


def test_a_downgrade_then_a_restored_relatedness_starts_again_at_the_restoring_version_in_any_order(
    protocol: Protocol, tmp_path: Path
) -> None:
    """v1 'possible' (day 10), v2 'not related' (day 12), v3 'probable' (day 14), all hospitalised. Right: a SUSAR
    from day 10, none from day 12 (the investigator revised their own causality: the case no longer qualifies), one
    again from day 14: as for a non-serious case made serious by follow-up, day 0 is the receipt of the information
    that makes it reportable again (ICH E2A III.A.2). The late v2 processed after v3 gives the same file, and says
    so as in order: withdrawn, then detected from day 14."""
    v1 = pneumonitis(1, 10, seriousness=HOSP)
    v2 = pneumonitis(2, 12, seriousness=HOSP, relatedness="not_related")
    v3 = pneumonitis(3, 14, seriousness=HOSP, relatedness="probable")
    base: list[Step] = [arm_a_dosed("A-1")]
    in_order = deliver(tmp_path, protocol, "in-order", [*base, [v1], [v2], [v3]], batched=False)
    assert susar_signals(in_order.signals) == [
        ("susar.detected", at(10)),
        ("susar.withdrawn", None),
        ("susar.detected", at(14)),
    ]
    for batched in (False, True):
        late = deliver(tmp_path, protocol, f"late-{batched}", [*base, [v1, v3], [v2]], batched=batched)
        assert file_of(late) == file_of(in_order) == (True, at(14), False, None, 3)
        assert susar_signals(late.signals)[-2:] == [("susar.withdrawn", None), ("susar.detected", at(14))]


def test_an_older_version_received_after_a_newer_one_does_not_downgrade(protocol: Protocol, tmp_path: Path) -> None:
    """The EDC retries v2 ('not related') after it already delivered v3 ('probable'). Right: the site's latest word
    is v3 (version order, not receipt order): no gap, day 0 stays at v1's receipt, no withdrawal."""
    v1 = pneumonitis(1, 10, seriousness=HOSP)
    v3 = pneumonitis(3, 11, seriousness=HOSP, relatedness="probable")
    v2 = pneumonitis(2, 12, seriousness=HOSP, relatedness="not_related")
    run = deliver(tmp_path, protocol, "retried", [arm_a_dosed("A-1"), [v1], [v3], [v2]], batched=False)
    assert file_of(run) == (True, at(10), False, None, 3)
    assert [k for k, _ in susar_signals(run.signals)] == ["susar.detected", "follow_up"]


# --- 3. the sponsor's decision between deliveries -------------------------------------------------------------


def test_the_sponsor_cannot_downgrade_the_investigators_possible(protocol: Protocol, tmp_path: Path) -> None:
    """Site 'possible' (day 10); the sponsor says 'not related' on day 11. Right: still a SUSAR from day 10 (CT-3
    7.2.3.1: the investigator's causality cannot be downgraded by the sponsor); no signal. When the site itself
    then says 'unlikely' (v2, day 12), neither says related: withdrawn."""
    run = deliver(
        tmp_path, protocol, "sponsor", [arm_a_dosed("A-1"), [pneumonitis(1, 10, seriousness=HOSP)]], batched=False
    )
    assert assess(run, "causality", "not_related", at(11)) == []
    assert file_of(run) == (True, at(10), False, None, 1)
    run.signals += run.driver.apply(pneumonitis(2, 12, seriousness=HOSP, relatedness="unlikely"), now=at(12))
    assert susar_signals(run.signals)[-1] == ("susar.withdrawn", None)
    assert file_of(run)[0] is False


def test_the_sponsors_related_between_two_deliveries_and_a_version_received_before_it_processed_after(
    protocol: Protocol, tmp_path: Path
) -> None:
    """Site 'unlikely' (v1, day 10, hospitalised): no SUSAR. The sponsor says 'related' on day 12 (day 0 = the
    decision, 21 CFR 312.32(c)(1) 'determines that the information qualifies'). v2 'possible', received on day 11
    but processed on day 13: the sponsor held a qualifying case from day 11, so day 0 moves there (clock_earlier)."""
    run = deliver(
        tmp_path,
        protocol,
        "decision",
        [arm_a_dosed("A-1"), [pneumonitis(1, 10, seriousness=HOSP, relatedness="unlikely")]],
        batched=False,
    )
    assert susar_signals(assess(run, "causality", "related", at(12))) == [("susar.detected", at(12))]
    late = run.driver.apply(pneumonitis(2, 11, seriousness=HOSP, relatedness="possible"), now=at(13))
    assert susar_signals(late) == [("clock_earlier", at(11))]
    assert file_of(run) == (True, at(11), False, None, 2)


def test_a_sponsor_decision_between_batches_ends_the_same_batched_or_one_by_one(
    protocol: Protocol, tmp_path: Path
) -> None:
    """Site 'unlikely' (v1, day 10); the sponsor says 'related' on day 12; then one batch brings v3 ('not related',
    received day 13) and v2 ('possible', received day 11) in that order. Right, by receipt: related from day 11 (the
    site's v2), still a SUSAR after v3 (the sponsor's 'related' stands: worst of the two), so day 0 is day 11; the
    same batched or one by one, and the same SUSAR signals."""

    def sponsor_related(driver: Driver) -> None:
        with Session(driver.engine) as session, session.begin():
            cases.record_causality(
                session,
                protocol=driver.protocol,
                trial_id=TRIAL,
                subject_id="A-1",
                ae_id="AE-1",
                causality="related",
                actor="sponsor-physician@example",
                reason="medical review",
                now=at(12),
                signals_topic="test.signals.v1",
            )

    steps: list[Step] = [
        arm_a_dosed("A-1"),
        [pneumonitis(1, 10, seriousness=HOSP, relatedness="unlikely")],
        sponsor_related,
        [
            pneumonitis(3, 13, seriousness=HOSP, relatedness="not_related"),
            pneumonitis(2, 11, seriousness=HOSP, relatedness="possible"),
        ],
    ]
    single, batched = single_and_batched(tmp_path, protocol, steps)
    assert file_of(single) == file_of(batched) == (True, at(11), False, None, 3)
    assert susar_signals(batched.signals) == susar_signals(single.signals)


# --- 4. entered in error --------------------------------------------------------------------------------------


def test_an_ae_entered_in_error_after_its_susar_was_detected_withdraws_it(protocol: Protocol, tmp_path: Path) -> None:
    run = deliver(
        tmp_path, protocol, "eie", [arm_a_dosed("A-1"), [pneumonitis(1, 10, seriousness=HOSP)]], batched=False
    )
    assert file_of(run)[:2] == (True, at(10))
    out = run.driver.apply(status("A-1", "ae", "AE-1"), now=at(11))
    assert [k for k, _ in susar_signals(out)] == ["susar.withdrawn"]
    assert file_of(run)[0] is False


def test_an_ae_restored_after_entered_in_error_is_a_susar_again_from_its_first_receipt(
    protocol: Protocol, tmp_path: Path
) -> None:
    """The site took the AE back by mistake and restored it: the case never stopped being what its versions say,
    so it is detected again with its first receipt as day 0 (notify reopens the reports it cancelled)."""
    run = deliver(
        tmp_path, protocol, "restored", [arm_a_dosed("A-1"), [pneumonitis(1, 10, seriousness=HOSP)]], batched=False
    )
    run.driver.apply(status("A-1", "ae", "AE-1"), now=at(11))
    out = run.driver.apply(status("A-1", "ae", "AE-1", "restored"), now=at(12))
    assert [k for k, _ in susar_signals(out)] == ["susar.detected"]
    assert file_of(run)[:2] == (True, at(10))


def test_a_susar_for_an_ae_already_entered_in_error_is_never_detected(protocol: Protocol, tmp_path: Path) -> None:
    for batched in (False, True):
        steps: list[Step] = [arm_a_dosed("A-1"), [status("A-1", "ae", "AE-1"), pneumonitis(1, 10, seriousness=HOSP)]]
        run = deliver(tmp_path, protocol, f"eie-first-{batched}", steps, batched=batched)
        assert not of_type(run.signals, "susar.detected"), f"batched={batched}"


# --- 5. not serious until v3, a v2 arriving late ---------------------------------------------------------------


def test_serious_at_v3_and_a_late_v2_not_serious_changes_nothing(protocol: Protocol, tmp_path: Path) -> None:
    """v1 grade 2 (day 9), v3 hospitalised (day 13); v2 grade 2, not serious (day 11) processed last. Right: day 0
    is v3's receipt, the late v2 brings nothing that qualifies: no signal at all."""
    base: list[Step] = [arm_a_dosed("A-1"), [pneumonitis(1, 9, grade=2), pneumonitis(3, 13, seriousness=HOSP)]]
    run = deliver(tmp_path, protocol, "late-v2", base, batched=False)
    late = run.driver.apply(pneumonitis(2, 11, grade=2), now=at(14))
    assert susar_signals(late) == []
    assert file_of(run) == (True, at(13), False, None, 3)


def test_serious_at_v3_and_a_late_serious_v2_moves_day_0_to_its_receipt(protocol: Protocol, tmp_path: Path) -> None:
    """The late v2 was already hospitalised (received day 11): the sponsor knew a qualifying case on day 11, so day 0
    moves there (clock_earlier), in one batch as one by one."""
    base: list[Step] = [arm_a_dosed("A-1"), [pneumonitis(1, 9, grade=2), pneumonitis(3, 13, seriousness=HOSP)]]
    for batched in (False, True):
        run = deliver(
            tmp_path,
            protocol,
            f"serious-v2-{batched}",
            [*base, [pneumonitis(2, 11, seriousness=HOSP)]],
            batched=batched,
        )
        assert susar_signals(run.signals) == [("susar.detected", at(13)), ("clock_earlier", at(11))]
        assert file_of(run) == (True, at(11), False, None, 3)


# --- 6. fatal known first, life-threatening received earlier arriving later -------------------------------------


def test_fatal_known_first_and_the_earlier_life_threatening_version_arriving_later(
    protocol: Protocol, tmp_path: Path
) -> None:
    """v1 hospitalised (day 10), v2 life-threatening (day 11), v3 fatal (day 13); v2 processed last (day 14). Right:
    day 0 day 10, the 7-day clock from day 11 (the first knowledge of 'life-threatening', Art. 42(2)(c)), not day
    13; the late v2 says so with clock_earlier naming the 7-day start."""
    v1 = pneumonitis(1, 10, seriousness=HOSP)
    v2 = pneumonitis(2, 11, grade=4, seriousness=LIFE)
    v3 = pneumonitis(3, 13, grade=5, seriousness=FATAL, outcome="fatal")
    run = deliver(tmp_path, protocol, "fatal-first", [arm_a_dosed("A-1"), [v1], [v3]], batched=False)
    assert file_of(run) == (True, at(10), True, at(13), 3)
    late = run.driver.apply(v2, now=at(14))
    [earlier] = of_type(late, "susar.updated")
    assert (earlier.data.change, earlier.data.clock_start, earlier.data.upgraded_at) == (
        "clock_earlier",
        at(10),
        at(11),
    )
    assert file_of(run) == (True, at(10), True, at(11), 3)


# --- 7. duplicate redelivery ---------------------------------------------------------------------------------


def test_a_version_redelivered_days_later_under_another_id_keeps_day_0(protocol: Protocol, tmp_path: Path) -> None:
    """The EDC re-sends v1 on day 20 under another delivery id (its webhook retried). Right: the sponsor first
    received it on day 10; the re-send is no new information: no signal, day 0 stays."""
    v1 = pneumonitis(1, 10, seriousness=HOSP)
    resent = v1.model_copy(update={"id": "edc-retry", "receivedat": at(20), "time": at(20)})
    run = deliver(tmp_path, protocol, "resent", [arm_a_dosed("A-1"), [v1]], batched=False)
    assert susar_signals(run.driver.apply(resent, now=at(20))) == []
    assert file_of(run) == (True, at(10), False, None, 1)


def test_the_same_version_twice_in_one_polled_batch_is_one_detection(protocol: Protocol, tmp_path: Path) -> None:
    """Kafka re-delivers v2 inside one polled batch (same event id) and the EDC re-sends it: one detection."""
    from shared.db import make_engine

    v2 = pneumonitis(2, 10, seriousness=HOSP)
    driver = Driver(make_engine(f"sqlite:///{tmp_path}/dup.db"), protocol)
    rejected, kinds = handle(
        driver, [*arm_a_dosed("A-1"), pneumonitis(1, 9, grade=2), v2, v2, v2.model_copy(update={"id": "again"})]
    )
    assert rejected == [] and kinds.count("susar.detected") == 1 and kinds.count("susar.updated") == 0


def test_a_version_re_sent_with_other_content_is_not_dropped_silently(protocol: Protocol, tmp_path: Path) -> None:
    v1 = pneumonitis(1, 9, grade=2)
    changed = pneumonitis(1, 10, seriousness=HOSP).model_copy(update={"id": "edc-same-version-new-content"})
    run = deliver(tmp_path, protocol, "same-version", [arm_a_dosed("A-1"), [v1]], batched=False)
    out = run.driver.apply(changed, now=at(10))
    [flagged] = of_type(out, "data_quality.flagged")
    assert flagged.data.code == "conflicting_resend" and "hospitalization" in flagged.data.detail
    assert "as a new version" in flagged.data.detail, "the site is told how to send the change"
    assert run.driver.apply(v1.model_copy(update={"id": "edc-plain-redelivery"}), now=at(10)) == [], "same content"


# --- 8. expected at grade 2, unexpected at grade 4 -------------------------------------------------------------


def reaction(version: int, day: int, grade: int, term: str = "Infusion related reaction") -> ClinicalEnvelope:
    """A hospitalised, probably related reaction the RSI expects up to grade 2 (infusion-related reaction; a
    verbatim 'Pyrexia' is the listed Fever)."""
    return related_ae(  # type: ignore[no-any-return]
        "A-1",
        ONSET,
        ae_id="AE-1",
        version=version,
        term=term,
        grade=grade,
        seriousness=HOSP,
        relatedness="probable",
        received=at(day),
    )


@pytest.mark.parametrize("term", ["Infusion related reaction", "Pyrexia"])
def test_an_expected_reaction_becomes_a_susar_at_grade_4_and_stays_one_when_it_improves(
    protocol: Protocol, tmp_path: Path, term: str
) -> None:
    """Grade 2 (day 10): serious but expected (RSI up to grade 2): no SUSAR. Grade 4 (day 12): greater severity than
    the RSI lists is unexpected (ICH E2A II.A.3): day 0 day 12. Grade 2 again (day 14, resolving): the event's
    severity is its worst grade, still a SUSAR (a follow-up). The grade-2 v3 processed before the grade-4 v2 ends
    the same."""
    v1, v2, v3 = reaction(1, 10, 2, term), reaction(2, 12, 4, term), reaction(3, 14, 2, term)
    base: list[Step] = [arm_a_dosed("A-1")]
    in_order = deliver(tmp_path, protocol, "grades", [*base, [v1], [v2], [v3]], batched=False)
    assert [k for k, _ in susar_signals(in_order.signals)] == ["susar.detected", "follow_up"]
    assert file_of(in_order) == (True, at(12), False, None, 3)
    for batched in (False, True):
        late = deliver(tmp_path, protocol, f"grade4-late-{batched}", [*base, [v1, v3], [v2]], batched=batched)
        assert file_of(late) == file_of(in_order), f"batched={batched}"
        assert [k for k, _ in susar_signals(late.signals)] == ["susar.detected"]


# --- 9. the site's midnight --------------------------------------------------------------------------------------


def test_day_0_is_the_receipt_instant_not_a_utc_date(protocol: Protocol, tmp_path: Path) -> None:
    """Received 23:30 on 11 March at a site on UTC-5 (04:30 UTC on the 12th). Right: day 0 is that instant; the
    deadlines count from it (a UTC date would make day 0 the 12th, a day later than the site's and the sponsor's
    calendar). The 15-day report is due 26 March 23:30 at the site: inside calendar day 15 there."""
    site = timezone(timedelta(hours=-5))
    received = datetime(2026, 3, 11, 23, 30, tzinfo=site)
    v1 = related_ae("A-1", ONSET, seriousness=HOSP, received=received)
    run = deliver(tmp_path, protocol, "midnight", [arm_a_dosed("A-1"), [v1]], batched=False)
    [detected] = of_type(run.signals, "susar.detected")
    assert detected.data.clock_start == received
    from services.notify.susar_alerts import report_due

    rules = protocol.expedited_reporting
    assert rules is not None
    due = report_due(detected.data, rules).astimezone(site)
    assert (due.date(), due.time().isoformat()) == (datetime(2026, 3, 26).date(), "23:30:00")


# --- 10. the eligibility judge reads results up to the first infusion -------------------------------------------


def alt(subject: str, rid: str, value: str, collected_at: datetime) -> ClinicalEnvelope:
    event = lab(subject, result_id=rid, test="ALT", value=value, unit="U/L", collected_at=collected_at)
    return event.model_copy(update={"data": event.data.model_copy(update={"uln": 40})})


def judged(run: Run, subject: str = "A-1") -> str | None:
    with Session(run.driver.engine) as session:
        row = session.get(Subject, (TRIAL, subject))
        return row.eligibility_signalled if row is not None else None


def judge_directly(run: Run, protocol: Protocol, subject: str = "A-1") -> str:
    """The verdict of `eligibility.judge` on every stored result (no pre-filter): what the change must not alter."""
    rules = protocol.eligibility
    assert rules is not None
    with Session(run.driver.engine) as session:
        row = session.get(Subject, (TRIAL, subject))
        assert row is not None
        labs = session.exec(select(LabResult).where(LabResult.subject_id == subject)).all()
        first = min(session.exec(select(Dose).where(Dose.subject_id == subject)).all(), key=lambda d: d.administered_at)
        verdict = eligibility.judge(
            rules,
            first_dose_at=first.administered_at,
            first_dose_on=first.administered_on or first.administered_at.date(),
            car_t_infused_on=row.car_t_infused_on,
            history=[],
            labs=[eligibility.LabReading(r.test, r.loinc, r.value, r.unit, r.uln, r.collected_at) for r in labs],
        )
    kind = verdict.deviation_kind
    return f"{kind}: {'; '.join(verdict.failed)}"[:2000] if kind else "eligible"


@pytest.mark.parametrize(
    ("name", "minutes"),
    [("at-the-infusion", 0), ("a-minute-before", -1), ("a-minute-after", 1), ("a-day-after", 24 * 60)],
)
def test_an_alt_at_the_boundary_of_the_first_infusion_is_judged_as_the_judge_alone_would(
    protocol: Protocol, tmp_path: Path, name: str, minutes: int
) -> None:
    """ALT 160 U/L (4 x ULN: exclusion) drawn at, just before, just after or a day after the first infusion, at a
    site on UTC+2 (the infusion at 08:00 local = 06:00 UTC). Right: a result drawn at or before the infusion is a
    screening result (excluded: dosed while not eligible), one drawn after is not (ICH E6: eligibility is judged on
    pre-dose data). The pre-filter must give the judge's own verdict, batched or not."""
    site = timezone(timedelta(hours=2))
    infused = datetime(2026, 3, 2, 8, 0, tzinfo=site)
    result = alt("A-1", "ALT0", "160", infused + timedelta(minutes=minutes))
    steps: list[Step] = [[enrol("A-1", "A", DAY0), dose("A-1", infused), result]]
    single, batched = single_and_batched(tmp_path, protocol, steps)
    assert judged(single) == judged(batched) == judge_directly(single, protocol)
    excluded = judged(batched) is not None and "ALT" in (judged(batched) or "")
    assert excluded is (minutes <= 0), judged(batched)


def test_a_first_infusion_corrected_to_before_the_screening_alt_is_judged_as_the_judge_alone_would(
    protocol: Protocol, tmp_path: Path
) -> None:
    """The infusion keyed at 10:00, an ALT 160 U/L drawn at 09:00 (pre-dose: excluded); the site corrects the
    infusion to 08:00 in the next batch, so the ALT was drawn after it and is no screening result. Right: the
    verdict follows the corrected infusion (the judge's own: [first dose - 14 days, first dose]), batched or not."""
    first = dose("A-1", at(0, 10))
    steps: list[Step] = [
        [enrol("A-1", "A", DAY0), first, alt("A-1", "ALT0", "160", at(0, 9))],
        [corrected(first, at(0, 8), "dose-time-fixed")],
    ]
    single, batched = single_and_batched(tmp_path, protocol, steps)
    assert judged(single) == judged(batched) == judge_directly(single, protocol)
    assert "ALT" not in (judged(batched) or ""), judged(batched)


# --- 11. a dose's own checks from the batch's records ----------------------------------------------------------


def doses_for(subject: str, days: Sequence[float], *, start: int = 1) -> list[ClinicalEnvelope]:
    return [dose(subject, at(0) + timedelta(days=d), number=n) for n, d in enumerate(days, start=start)]


def corrected(event: ClinicalEnvelope, administered_at: datetime, sender: str) -> ClinicalEnvelope:
    data: Any = event.data
    return event.model_copy(update={"id": sender, "data": data.model_copy(update={"administered_at": administered_at})})


DOSE_CASES: dict[str, list[Step]] = {
    # Arm C, four infusions in one backfill: the third 10 days after the second, the fourth 4 days after the third.
    "arm-c-backfill": [[enrol("C-1", "C", DAY0), *doses_for("C-1", [0, 7, 17, 21])]],
    # The same four, reversed (the EDC sent the latest first).
    "arm-c-reversed": [[enrol("C-1", "C", DAY0), *reversed(doses_for("C-1", [0, 7, 17, 21]))]],
    # Arm A given a second infusion, both in one batch.
    "arm-a-two-doses": [[enrol("A-1", "A", DAY0), *doses_for("A-1", [0, 7])]],
    # Arm A's extra infusion and the site's 'entered in error' for it, in one batch, either order.
    "extra-then-eie": [
        [enrol("A-1", "A", DAY0), *doses_for("A-1", [0])],
        [dose("A-1", at(7), number=2), status("A-1", "dose", "A-1-D2")],
    ],
    "eie-then-extra": [
        [enrol("A-1", "A", DAY0), *doses_for("A-1", [0])],
        [status("A-1", "dose", "A-1-D2"), dose("A-1", at(7), number=2)],
    ],
    # Arm A's infusion entered in error and given again the next day under a new dose id.
    "eie-and-regiven": [
        [enrol("A-1", "A", DAY0)],
        [
            dose("A-1", at(0)),
            status("A-1", "dose", "A-1-D1"),
            dose("A-1", at(1), number=1).model_copy(
                update={"id": "regiven", "data": dose("A-1", at(1)).data.model_copy(update={"dose_id": "A-1-D1b"})}
            ),
        ],
    ],
    # Arm B's second infusion keyed on day 12 (out of window), corrected to day 7 in the same batch, and the reverse.
    "b-corrected-into-window": [
        [enrol("B-1", "B", DAY0), dose("B-1", at(0))],
        [dose("B-1", at(12), number=2), corrected(dose("B-1", at(12), number=2), at(7), "fix-1")],
    ],
    "b-corrected-out-of-window": [
        [enrol("B-1", "B", DAY0), dose("B-1", at(0))],
        [dose("B-1", at(7), number=2), corrected(dose("B-1", at(7), number=2), at(12), "fix-2")],
    ],
    # Arm B at a site on UTC-5: the second infusion at 23:30 local, 9 site days after the first (10 UTC dates).
    "b-site-midnight": [
        [enrol("B-1", "B", DAY0), dose("B-1", datetime(2026, 3, 2, 8, 0, tzinfo=timezone(timedelta(hours=-5))))],
        [dose("B-1", datetime(2026, 3, 11, 23, 30, tzinfo=timezone(timedelta(hours=-5))), number=2)],
    ],
}


@pytest.mark.parametrize("name", sorted(DOSE_CASES))
def test_dose_schedule_deviations_are_the_same_batched_as_one_event_per_transaction(
    protocol: Protocol, tmp_path: Path, name: str
) -> None:
    """Right: a dose's deviations (extra infusion, interval out of the +/- 2 day window) depend on the subject's
    infusions and the site's statuses, not on how the consumer cut the stream."""
    single, batched = single_and_batched(tmp_path, protocol, DOSE_CASES[name])
    assert deviations(batched.signals) == deviations(single.signals)


def test_the_dose_cases_find_what_a_physician_expects(protocol: Protocol, tmp_path: Path) -> None:
    """The differential above is only worth something if the cases raise deviations: spot-check them."""
    found = {}
    names = (
        "arm-c-backfill",
        "arm-a-two-doses",
        "extra-then-eie",
        "eie-then-extra",
        "eie-and-regiven",
        "b-site-midnight",
    )
    for name in names:
        run = deliver(tmp_path, protocol, f"spot-{name}", DOSE_CASES[name], batched=True)
        schedule = {"extra_infusion", "interval_out_of_window"}
        found[name] = sorted({kind for _s, kind, _p in deviations(run.signals) if kind in schedule})
    assert found == {
        "arm-c-backfill": ["interval_out_of_window"],
        "arm-a-two-doses": ["extra_infusion"],
        "extra-then-eie": ["extra_infusion"],  # checked before the site took it back, as one by one
        "eie-then-extra": [],
        "eie-and-regiven": [],
        "b-site-midnight": [],  # 9 site days (2 -> 11 March): inside 7 +/- 2; UTC dates would say 10, a false deviation
    }
