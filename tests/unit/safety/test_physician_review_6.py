"""A safety physician (review 6) tries to break two features of the day as a review committee would: the findings
that tell a DLT's officers when the data their decision relied on moved (`dlt_decision_basis`), and the 24 h SAE
clock a serious AE re-entered under a new AE id inherits (`sae_reentry`), with cases from NCT07212335 (the shipped
protocol) and from sites' real practice. A case the system gets right passes; one it gets wrong is a strict xfail
whose reason says the clinical divergence."""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from services.safety.dlt_decision_basis import DECIDED_DLT_DATA_CHANGED
from services.safety.sae_reentry import REENTRY_CLOCK, Retraction, StoredVersion, reentry_of
from services.safety.sae_retraction import SAE_REPLACED_BY_NON_SERIOUS
from shared.events import EnvelopeBase, RecordStatusChanged
from shared.protocol import Protocol
from tests.unit.safety.clinical import Driver, ae, dose, enrol, lab, of_type, status, types
from tests.unit.safety.test_batch_physician import deliver
from tests.unit.safety.test_clinical_rules import DAY0, at, cohort, neut, related_ae, subject_in
from tests.unit.safety.test_physician_review_3 import dosed, reaction, site_status
from tests.unit.safety.test_physician_review_4 import decide, record, three_in_a

HOSP = {"hospitalization": True}


@pytest.fixture
def driver(engine: Engine, protocol: Protocol) -> Driver:
    return Driver(engine, protocol)


def findings(signals: list[EnvelopeBase]) -> list[Any]:
    return [s.data for s in of_type(signals, "data_quality.flagged") if s.data.code == DECIDED_DLT_DATA_CHANGED]


def pneumonitis(version: int, relatedness: str | None, **data: Any) -> Any:
    """Subject A-1's grade 3 pneumonitis on day 9 (non-haematological: the relatedness threshold 'possible')."""
    return related_ae("A-1", DAY0 + timedelta(days=9), version=version, relatedness=relatedness, **data)


# --- 1. decided-DLT divergence ------------------------------------------------------------------------------------


def test_a_confirmed_dlt_whose_grade_alone_falls_to_2_raises_no_finding(driver: Driver) -> None:
    """The investigator's follow-up says grade 2 (the pneumonitis settled on steroids): CTCAE grades an AE by its worst
    grade (`dlt.py`), so the grade 3 reached still meets the criterion: recovery is not a correction, nothing to tell.
    (A site that mis-graded must say so: a new version cannot tell a correction from an improvement.)"""
    three_in_a(driver, "A-1")
    decide(driver, "A-1", "confirmed", now=at(11))
    assert findings(driver.apply(pneumonitis(2, "possible", grade=2), now=at(14))) == []
    dlt = record(driver, "A-1")
    assert (dlt.state, dlt.grade, dlt.divergence, cohort(driver).dlt_confirmed) == ("confirmed", 3, None, 1)


@pytest.mark.parametrize("word", ["unlikely", "not_related"])
def test_both_words_below_possible_take_a_confirmed_dlt_out_of_the_criterion(driver: Driver, word: str) -> None:
    """The protocol's threshold is 'possible': 'unlikely' is as much below it as 'not related'."""
    three_in_a(driver, "A-1")
    decide(driver, "A-1", "confirmed", now=at(11))
    [finding] = findings(driver.apply(pneumonitis(2, word), now=at(14)))
    assert f"relatedness from possible to {word.replace('_', ' ')}" in finding.detail
    assert record(driver, "A-1").divergence == "no_longer_meets"


def test_a_rejection_on_not_related_is_not_reopened_by_unlikely(driver: Driver) -> None:
    """Rejected on 'possible'; the investigator then says 'not related', later 'unlikely' (a rise, still below the
    protocol's 'possible'): the AE meets no criterion, nothing contradicts the rejection, and telling would be noise."""
    three_in_a(driver)
    driver.apply(pneumonitis(1, "possible"), now=at(10))
    decide(driver, "A-1", "rejected", reason="SRC: CMV pneumonitis on BAL", now=at(11))
    back = findings(driver.apply(pneumonitis(2, "not_related"), now=at(12)))
    assert back == [], "rejected on 'possible' (met); 'not related' only agrees with the rejection"
    assert findings(driver.apply(pneumonitis(3, "unlikely"), now=at(13))) == []
    assert record(driver, "A-1").divergence is None


def test_a_rejection_decided_on_unlikely_is_told_when_the_investigator_says_possible(driver: Driver) -> None:
    """The DLT was withdrawn by an 'unlikely' follow-up and the committee rejected it as it stood; the investigator
    then says 'possible': the AE now meets the criterion it did not meet when rejected."""
    three_in_a(driver, "A-1")
    driver.apply(pneumonitis(2, "unlikely"), now=at(10, 12))
    decide(driver, "A-1", "rejected", reason="not related per site", now=at(11))
    assert record(driver, "A-1").decided_met is False
    [news] = findings(driver.apply(pneumonitis(3, "possible"), now=at(12)))
    assert "now meets DLT criterion 'non_haematological_grade3', which it did not when rejected" in news.detail
    assert record(driver, "A-1").state == "rejected", "the committee decides; the rule only tells"


def test_febrile_neutropenia_confirmed_then_called_not_related_still_meets_its_criterion(driver: Driver) -> None:
    """Febrile neutropenia counts whatever its causality (the protocol: life-threatening in this population): the
    investigator blaming the CAR-T changes nothing the DLT rests on, so no finding."""
    subject_in(driver, "A-1", "A")
    fn = ae("A-1", term="Febrile neutropenia", grade=3, relatedness="possible", onset=at(15).date().isoformat())
    [suspected] = of_type(driver.apply(fn, now=at(15)), "dlt.suspected")
    assert suspected.data.criterion == "febrile_neutropenia"
    decide(driver, "A-1", "confirmed", now=at(16))
    later = fn.model_copy(
        update={"id": "fn-v2", "data": fn.data.model_copy(update={"version": 2, "relatedness": "not_related"})}
    )
    assert findings(driver.apply(later, now=at(17))) == []
    assert record(driver, "A-1").divergence is None


def test_a_confirmed_dlt_turning_fatal_and_not_related_still_meets_grade_5(driver: Driver) -> None:
    """Death within the window is a DLT whatever its causality: the 'not related' death certificate does not take the
    confirmed DLT out of every criterion."""
    three_in_a(driver, "A-1")
    decide(driver, "A-1", "confirmed", now=at(11))
    out = driver.apply(pneumonitis(2, "not_related", grade=5, outcome="fatal"), now=at(14))
    assert findings(out) == []
    assert record(driver, "A-1").divergence is None


def anc(rid: str, value: str, day: int) -> Any:
    return neut("A-1", rid, value, day)


def test_a_confirmed_lab_dlt_whose_grade_4_count_is_corrected_to_grade_3_is_told(driver: Driver) -> None:
    """Grade 3 neutropenia at entry (0.8), grade 4 on day 5 (0.3): a worsening, confirmed. The lab corrects the
    day-5 count to 0.6 (a dilution error): grade 3, no worse than baseline, so the confirmed DLT no longer meets its
    criterion."""
    driver.apply(neut("A-1", "B0", "0.8", -2, baseline=True))
    subject_in(driver, "A-1", "A", visit=False)
    [suspected] = of_type(driver.apply(anc("N5", "0.3", 5)), "dlt.suspected")
    decide(driver, "A-1", "confirmed", ae_id=suspected.data.ae_id, now=at(6))
    [finding] = findings(driver.apply(anc("N5", "0.6", 5), now=at(7)))
    assert (finding.record_type, finding.record_id) == ("lab", suspected.data.ae_id)
    assert "no longer meets the DLT criterion 'haematological'" in finding.detail
    stored = record(driver, "A-1", suspected.data.ae_id)
    assert (stored.state, stored.divergence) == ("confirmed", "no_longer_meets")
    [back] = findings(driver.apply(anc("N5", "0.3", 5), now=at(8)))
    assert "meets DLT criterion 'haematological' again" in back.detail


@pytest.mark.parametrize("batched", [False, True])
def test_a_rejection_on_unlikely_ends_in_one_state_whatever_the_order_of_the_follow_ups(
    protocol: Protocol, tmp_path: Path, batched: bool
) -> None:
    """Rejected on v2 'unlikely'; v3 'possible' and v4 'not_related' (the site's last word) in either order, one by
    one or in one batch: the same stored record, nothing diverging, whatever was told on the way."""
    base = [enrol("A-1", "A", DAY0), dose("A-1", at(0)), pneumonitis(1, "possible")]
    stored = set()
    for n, order in enumerate(itertools.permutations([pneumonitis(3, "possible"), pneumonitis(4, "not_related")])):
        steps = [base, [pneumonitis(2, "unlikely")], lambda d: decide(d, "A-1", "rejected", now=at(11)), list(order)]
        run = deliver(tmp_path, protocol, f"rej-{batched}-{n}", steps, batched=batched, now=at(12))
        dlt = record(run.driver, "A-1")
        stored.add((dlt.state, dlt.relatedness, dlt.divergence, dlt.decided_met, dlt.decided_relatedness))
    assert stored == {("rejected", "not_related", None, False, "unlikely")}


def test_a_confirmed_dlt_taken_back_and_restored_with_a_not_related_follow_up_is_told_after_the_restore(
    driver: Driver,
) -> None:
    """The site takes the AE back (its own finding), sends 'not related' while it is taken back, then restores it:
    once the AE stands again the committee learns its confirmation no longer meets the criterion."""
    three_in_a(driver, "A-1")
    decide(driver, "A-1", "confirmed", now=at(11))
    driver.apply(status("A-1", "ae", "AE-1"), now=at(12))
    driver.apply(pneumonitis(2, "not_related"), now=at(13))
    out = driver.apply(status("A-1", "ae", "AE-1", "restored"), now=at(14))
    [finding] = findings(out)
    assert "relatedness from possible to not related" in finding.detail
    assert record(driver, "A-1").divergence == "no_longer_meets"


# --- 2. the SAE re-entry clock ------------------------------------------------------------------------------------


def reentry_findings(signals: list[EnvelopeBase]) -> list[Any]:
    return [f.data for f in of_type(signals, "data_quality.flagged") if f.data.code == REENTRY_CLOCK]


def sae_signals(signals: list[EnvelopeBase], ae_id: str) -> list[Any]:
    return [s for s in signals if str(getattr(s, "type", "")).startswith("sae.") and s.data.ae_id == ae_id]


def febrile_neutropenia(
    ae_id: str, *, onset_day: int, received: datetime, term: str = "Febrile neutropenia", subject: str = "A-1"
) -> Any:
    """A hospitalised grade 3 febrile neutropenia, no awareness date (the clock is our first receipt)."""
    return ae(
        subject,
        ae_id=ae_id,
        received=received,
        term=term,
        grade=3,
        relatedness="not_related",
        onset=at(onset_day).date().isoformat(),
        seriousness=HOSP,
    )


def test_two_distinct_febrile_neutropenias_the_first_deleted_for_a_wrong_date_keep_their_own_clocks(
    driver: Driver,
) -> None:
    """Episode 1 (AE-1, onset day 5, received day 5) and a new episode 2 (AE-2, onset day 12, received day 12); on day
    13 the site deletes AE-1 for a wrong date and re-enters it as AE-3 (onset day 4). AE-3 is AE-1's re-entry (its
    clock is day 5); AE-2 began a week after AE-1 was reported: it cannot be the event reported on day 5, so it keeps
    its own clock (day 12), and the officer is not told to treat it as a duplicate (one report filed for two SAEs)."""
    driver.apply_all(dosed(), now=at(0, 10))
    driver.apply(febrile_neutropenia("AE-1", onset_day=5, received=at(5, 14)), now=at(5, 14))
    driver.apply(febrile_neutropenia("AE-2", onset_day=12, received=at(12, 9)), now=at(12, 9))
    out = driver.apply(site_status("deleted", at(13), reason="wrong onset date"), now=at(13))
    out += driver.apply(febrile_neutropenia("AE-3", onset_day=4, received=at(13, 11)), now=at(13, 11))
    assert not sae_signals(out, "AE-2"), "AE-2's deadline (day 13, 09:00) stands"
    assert [f.record_id for f in reentry_findings(out)] == ["AE-3"]
    [detected] = of_type(sae_signals(out, "AE-3"), "sae.detected")
    assert (detected.data.awareness_at, detected.data.clock_from_ae_id) == (at(5, 14), "AE-1")


@pytest.mark.parametrize("batched", [False, True])
def test_two_distinct_episodes_and_a_re_entry_end_on_the_same_clocks_in_any_order(
    protocol: Protocol, tmp_path: Path, batched: bool
) -> None:
    events = [
        febrile_neutropenia("AE-2", onset_day=12, received=at(12, 9)),
        site_status("deleted", at(13), reason="wrong onset date"),
        febrile_neutropenia("AE-3", onset_day=4, received=at(13, 11)),
    ]
    for n, order in enumerate(itertools.permutations(events)):
        first = [febrile_neutropenia("AE-1", onset_day=5, received=at(5, 14))]
        run = deliver(tmp_path, protocol, f"fn-{batched}-{n}", [dosed(), first, list(order)], batched=batched)
        clocks = {
            ae_id: min(s.data.awareness_at for s in sae_signals(run.signals, ae_id) if s.type != "sae.withdrawn")
            for ae_id in ("AE-2", "AE-3")
        }
        assert clocks == {"AE-2": at(12, 9), "AE-3": at(5, 14)}, n
        assert sorted(f.record_id for f in reentry_findings(run.signals)) == ["AE-3"], n


def test_a_re_entry_under_a_synonym_of_the_term_keeps_the_first_clock(driver: Driver) -> None:
    """AE-1 'Febrile neutropenia' deleted (wrong form); the site re-enters the same episode the next morning as
    'Neutropenic fever' (the CTCAE term it maps to is Febrile neutropenia): the same case, day 0 its first receipt."""
    driver.apply_all(dosed(), now=at(0, 10))
    driver.apply(febrile_neutropenia("AE-1", onset_day=5, received=at(5, 14)), now=at(5, 14))
    driver.apply(site_status("entered_in_error", at(6, 8), reason="wrong form"), now=at(6, 8))
    synonym = febrile_neutropenia("AE-2", onset_day=5, received=at(6, 9), term="Neutropenic fever")
    out = driver.apply(synonym, now=at(6, 9))
    [detected] = of_type(out, "sae.detected")
    assert (detected.data.awareness_at, detected.data.clock_from_ae_id) == (at(5, 14), "AE-1")
    assert [f.record_id for f in reentry_findings(out)] == ["AE-2"]


def test_a_re_entry_in_the_right_subject_after_a_subject_id_typo_keeps_the_first_clock(driver: Driver) -> None:
    driver.apply_all([enrol("A-2", "A", DAY0), dose("A-2", at(0))], now=at(0, 10))
    driver.apply_all(dosed(), now=at(0, 10))
    driver.apply(febrile_neutropenia("AE-1", onset_day=5, received=at(5, 14), subject="A-2"), now=at(5, 14))
    typo = RecordStatusChanged.model_validate(
        status("A-2", "ae", "AE-1", "deleted").model_dump()
        | {"receivedat": at(6, 8), "time": at(6, 8)}
        | {"data": {"record_type": "ae", "record_id": "AE-1", "status": "deleted", "replaced_by": "AE-2"}}
    )
    driver.apply(typo, now=at(6, 8))
    out = driver.apply(febrile_neutropenia("AE-2", onset_day=5, received=at(6, 9)), now=at(6, 9))
    [detected] = of_type(out, "sae.detected")
    assert detected.data.awareness_at == at(5, 14)


def explicit_retraction(changed: datetime, replaced_by: str) -> Any:
    envelope = site_status("entered_in_error", changed, reason="re-entered")
    return envelope.model_copy(update={"data": envelope.data.model_copy(update={"replaced_by": replaced_by})})


def replacement_events() -> list[Any]:
    """AE-1, a hospitalised febrile neutropenia; the site's retraction naming AE-2; AE-2 entered not serious."""
    mild = febrile_neutropenia("AE-2", onset_day=5, received=at(6, 9))
    return [
        febrile_neutropenia("AE-1", onset_day=5, received=at(5, 14)),
        explicit_retraction(at(6, 8), "AE-2"),
        mild.model_copy(update={"data": mild.data.model_copy(update={"seriousness": None})}),
    ]


def downgrades(signals: list[EnvelopeBase]) -> list[Any]:
    return [f.data for f in of_type(signals, "data_quality.flagged") if f.data.code == SAE_REPLACED_BY_NON_SERIOUS]


def test_replaced_by_naming_a_non_serious_ae_tells_the_officer_the_seriousness_was_dropped(driver: Driver) -> None:
    """The site retracts a hospitalised SAE naming AE-2 as its replacement, and AE-2 is entered not serious (the site
    left seriousness unticked): the SAE is withdrawn and its report obligation cancelled. Safety never lets a
    follow-up downgrade seriousness, so the officer and the site are told the replacement dropped it (fixed:
    `sae_retraction.non_serious_replacement`)."""
    driver.apply_all(dosed(), now=at(0, 10))
    out = driver.apply_all(replacement_events(), now=at(6, 9))
    assert [s.type for s in sae_signals(out, "AE-1")] == ["sae.detected", "sae.withdrawn"]
    [told] = downgrades(out)
    assert (told.record_type, told.record_id) == ("ae", "AE-2")
    for words in ("Serious AE AE-1 (hospitalization)", "names AE AE-2 as its replacement", "not reported serious"):
        assert words in told.detail, words


@pytest.mark.parametrize("batched", [False, True])
def test_a_non_serious_replacement_is_told_once_in_any_order(protocol: Protocol, tmp_path: Path, batched: bool) -> None:
    for n, order in enumerate(itertools.permutations(replacement_events())):
        run = deliver(tmp_path, protocol, f"repl-{batched}-{n}", [dosed(), list(order)], batched=batched)
        assert [f.record_id for f in downgrades(run.signals)] == ["AE-2"], n


def test_a_serious_replacement_raises_no_such_finding(driver: Driver) -> None:
    driver.apply_all(dosed(), now=at(0, 10))
    events = replacement_events()
    events[2] = febrile_neutropenia("AE-2", onset_day=5, received=at(6, 9))
    assert downgrades(driver.apply_all(events, now=at(6, 9))) == []


def test_replaced_by_a_non_serious_ae_that_becomes_serious_takes_the_first_clock(driver: Driver) -> None:
    driver.apply_all(dosed(), now=at(0, 10))
    driver.apply(febrile_neutropenia("AE-1", onset_day=5, received=at(5, 14)), now=at(5, 14))
    driver.apply(explicit_retraction(at(6, 8), "AE-2"), now=at(6, 8))
    mild = febrile_neutropenia("AE-2", onset_day=5, received=at(6, 9))
    driver.apply(mild.model_copy(update={"data": mild.data.model_copy(update={"seriousness": None})}), now=at(6, 9))
    v2 = febrile_neutropenia("AE-2", onset_day=5, received=at(7, 9))
    v2 = v2.model_copy(update={"id": "ae2-v2", "data": v2.data.model_copy(update={"version": 2})})
    [detected] = of_type(driver.apply(v2, now=at(7, 9)), "sae.detected")
    assert (detected.data.awareness_at, detected.data.clock_from_ae_id) == (at(5, 14), "AE-1")


@pytest.mark.parametrize(("hours", "linked"), [(168, True), (169, False)])
def test_the_lookback_counts_exactly_seven_days(driver: Driver, hours: int, linked: bool) -> None:
    """ "Within 7 days (either side)": a re-entry received exactly 168 h after the deletion is linked, 169 h is not."""
    driver.apply_all(dosed(), now=at(0, 10))
    driver.apply(febrile_neutropenia("AE-1", onset_day=5, received=at(5, 14)), now=at(5, 14))
    driver.apply(site_status("deleted", at(6, 8)), now=at(6, 8))
    received = at(6, 8) + timedelta(hours=hours)
    out = driver.apply(febrile_neutropenia("AE-2", onset_day=5, received=received), now=received)
    [detected] = of_type(out, "sae.detected")
    assert detected.data.awareness_at == (at(5, 14) if linked else received)


def test_a_lab_toxicity_and_the_dlt_it_raises_both_signal_for_the_same_grade_4(driver: Driver) -> None:
    """The same day-5 grade 4 neutrophil count is a lab toxicity (routine lane) and the basis of a suspected
    haematological DLT (signals lane): both are raised, so neither page depends on the other's lane."""
    driver.apply(neut("A-1", "B0", "0.8", -2, baseline=True))
    subject_in(driver, "A-1", "A", visit=False)
    out = driver.apply(lab("A-1", result_id="N5", test="NEUT", value="0.3", lln="2.0", collected_at=at(5)))
    assert "dlt.suspected" in types(out) and "lab.toxicity" in types(out)


@pytest.mark.parametrize("batched", [False, True])
def test_a_synonym_re_entry_ends_on_the_first_clock_in_any_order(
    protocol: Protocol, tmp_path: Path, batched: bool
) -> None:
    """'Febrile neutropenia' (AE-1), its deletion, 'Neutropenic fever' (AE-2) in every order: AE-2's last SAE signal is
    on AE-1's first receipt, with one finding naming AE-2."""
    events = [
        febrile_neutropenia("AE-1", onset_day=5, received=at(5, 14)),
        site_status("entered_in_error", at(6, 8), reason="wrong form"),
        febrile_neutropenia("AE-2", onset_day=5, received=at(6, 9), term="Neutropenic fever"),
    ]
    for n, order in enumerate(itertools.permutations(events)):
        run = deliver(tmp_path, protocol, f"syn-{batched}-{n}", [dosed(), list(order)], batched=batched)
        second = sae_signals(run.signals, "AE-2")
        assert second and second[-1].data.awareness_at == at(5, 14), n
        assert [f.record_id for f in reentry_findings(run.signals)] == ["AE-2"], n


def test_a_re_entry_with_only_a_month_of_onset_is_still_linked(driver: Driver) -> None:
    """An onset of '2026-03' cannot show the re-entry began after the first record: the conservative link stands."""
    driver.apply_all(dosed(), now=at(0, 10))
    driver.apply(febrile_neutropenia("AE-1", onset_day=5, received=at(5, 14)), now=at(5, 14))
    driver.apply(site_status("deleted", at(6, 8)), now=at(6, 8))
    partial = febrile_neutropenia("AE-2", onset_day=5, received=at(6, 9))
    partial = partial.model_copy(update={"data": partial.data.model_copy(update={"onset": "2026-03"})})
    [detected] = of_type(driver.apply(partial, now=at(6, 9)), "sae.detected")
    assert (detected.data.awareness_at, detected.data.clock_from_ae_id) == (at(5, 14), "AE-1")


def test_a_second_episode_named_by_the_sites_replaced_by_takes_the_first_clock(driver: Driver) -> None:
    """The site's own word wins over the onset: it says AE-2 replaces AE-1, so AE-2 keeps AE-1's clock (and the finding
    lets the officer question it)."""
    driver.apply_all(dosed(), now=at(0, 10))
    driver.apply(febrile_neutropenia("AE-1", onset_day=5, received=at(5, 14)), now=at(5, 14))
    driver.apply(explicit_retraction(at(13), "AE-2"), now=at(13))
    out = driver.apply(febrile_neutropenia("AE-2", onset_day=12, received=at(13, 9)), now=at(13, 9))
    [detected] = of_type(out, "sae.detected")
    assert (detected.data.awareness_at, detected.data.clock_from_ae_id) == (at(5, 14), "AE-1")
    assert [f.record_id for f in reentry_findings(out)] == ["AE-2"]


@pytest.mark.parametrize(("onset_day", "linked"), [(5, True), (6, True), (7, False)])
def test_the_onset_guard_gives_a_day_of_slack_for_the_sites_time_zone(onset_day: int, linked: bool) -> None:
    """AE-1 first received on day 5 (23:30 UTC: already day 6 east of Greenwich): a re-entry with onset day 6 may be
    the same event, one with onset day 7 began after AE-1 was reported."""

    def fn(ae_id: str, received: datetime, onset: int) -> StoredVersion:
        payload = {"ae_id": ae_id, "version": 1, "term": "Febrile neutropenia", "grade": 3, "seriousness": HOSP}
        return StoredVersion(ae_id, payload | {"onset": at(onset).date().isoformat()}, received)

    versions = [fn("AE-1", at(5, 23) + timedelta(minutes=30), 5), fn("AE-2", at(8), onset_day)]
    found = reentry_of(
        "AE-2",
        own_clock=at(8),
        versions=versions,
        retractions=[Retraction("AE-1", "deleted", at(7), None, None)],
        lookback=timedelta(days=7),
    )
    assert (found is not None) is linked


def test_a_re_entered_susar_keeps_the_first_records_expedited_day_0(driver: Driver) -> None:
    driver.apply_all(dosed(), now=at(0, 10))
    [first] = of_type(driver.apply(reaction(awareness_at=None), now=at(0, 14)), "susar.detected")
    assert first.data.clock_start == at(0, 14)
    driver.apply(site_status("entered_in_error", at(1), reason="re-entered"), now=at(1))
    out = driver.apply(reaction(ae_id="AE-2", received=at(1, 11), awareness_at=None), now=at(1, 11))
    [sae] = of_type(out, "sae.detected")
    assert sae.data.awareness_at == at(0, 14), "the SAE clock is inherited"
    [susar] = of_type(out, "susar.detected")
    assert susar.data.clock_start == at(0, 14)


def test_a_confirmed_dlt_whose_ae_is_re_entered_counts_the_subject_once(driver: Driver) -> None:
    """A-1's confirmed pneumonitis DLT: the site deletes AE-1 naming AE-2 as its replacement and re-enters it. The
    committee is told the confirmed DLT's AE was taken back; AE-2 raises its own suspicion; the 3+3 counts subjects,
    so A-1 is one subject with a DLT, not two DLTs that would fire the stopping rule."""
    three_in_a(driver, "A-1")
    decide(driver, "A-1", "confirmed", now=at(11))
    out = driver.apply(explicit_retraction(at(12), "AE-2"), now=at(12))
    codes = [s.data.code for s in of_type(out, "data_quality.flagged")]
    assert "confirmed_dlt_ae_retracted" in codes
    out = driver.apply(related_ae("A-1", DAY0 + timedelta(days=9), ae_id="AE-2"), now=at(12, 12))
    assert "dlt.suspected" in types(out) and "stopping_rule.fired" not in types(out)
    arm = cohort(driver)
    assert (arm.subjects_confirmed, arm.stopping) == (1, False)


def test_a_rejected_dlt_recoded_to_an_infusion_reaction_is_reopened_for_its_new_criterion(driver: Driver) -> None:
    """Rejected as 'Dyspnea, possible' (the committee: fluid overload, not the product); the site recodes it to a
    grade 3 'Infusion related reaction', which counts whatever its causality: the rejection's ground (causality) no
    longer decides it, so the DLT is reopened as a suspicion under its new criterion (with its own review clock)."""
    three_in_a(driver)
    dyspnea = related_ae("A-1", DAY0, term="Dyspnea", grade=3, relatedness="possible")
    driver.apply(dyspnea, now=at(0, 14))
    decide(driver, "A-1", "rejected", reason="SRC: fluid overload", now=at(1))
    recoded = related_ae("A-1", DAY0, version=2, term="Infusion related reaction", grade=3, relatedness="unlikely")
    out = driver.apply(recoded, now=at(2))
    [reopened] = [s for s in of_type(out, "dlt.suspected") if s.data.ae_id == "AE-1"]
    assert reopened.data.criterion == "infusion_reaction_grade3"
    assert findings(out) == [], "told by its suspicion, not by a finding"
    assert record(driver, "A-1").state == "suspected"


def hb_baseline(value: str = "65") -> Any:
    """Haemoglobin at screening, 65 g/L: grade 3 anaemia (the trial's entry criterion is <= 70 g/L)."""
    return lab(
        "A-1", result_id="HB0", test="HGB", value=value, unit="g/L", lln="120", collected_at=at(-2), baseline=True
    )


def test_a_confirmed_dlt_recoded_to_anaemia_no_worse_than_baseline_is_told(driver: Driver) -> None:
    """Confirmed as a grade 3 'Pneumonitis'; the site recodes the AE to 'Anemia' grade 3, in a subject who entered at
    grade 3 (Hb 65 g/L): a cytopenia no worse than baseline meets no criterion: told, still confirmed."""
    driver.apply(hb_baseline())
    three_in_a(driver, "A-1")
    decide(driver, "A-1", "confirmed", now=at(11))
    [finding] = findings(driver.apply(pneumonitis(2, "possible", term="Anemia"), now=at(14)))
    assert "no longer meets the DLT criterion 'non_haematological_grade3'" in finding.detail
    assert record(driver, "A-1").state == "confirmed"


def test_a_confirmed_dlt_whose_ae_now_meets_only_another_criterion_is_told(driver: Driver) -> None:
    three_in_a(driver, "A-1")
    decide(driver, "A-1", "confirmed", now=at(11))
    out = driver.apply(pneumonitis(2, "possible", term="Anemia"), now=at(14))
    assert record(driver, "A-1").criterion == "haematological"
    assert findings(out), "the committee hears the AE it confirmed is now another event under another criterion"


def test_a_confirmed_lab_dlt_whose_screening_count_arrives_late_at_grade_4_is_told(driver: Driver) -> None:
    """No screening count on record: the day-5 neutrophils 0.3 (grade 4) are judged against a normal baseline and the
    DLT is confirmed. The site then enters the screening count, 0.3 on day -2 (grade 4 at entry: the disease under
    study, which the protocol does not count): the confirmed DLT no longer meets its criterion, and the committee
    is told."""
    subject_in(driver, "A-1", "A", visit=False)
    [suspected] = of_type(driver.apply(anc("N5", "0.3", 5)), "dlt.suspected")
    decide(driver, "A-1", "confirmed", ae_id=suspected.data.ae_id, now=at(6))
    [finding] = findings(driver.apply(neut("A-1", "B0", "0.3", -2, baseline=True), now=at(7)))
    assert "no longer meets the DLT criterion 'haematological'" in finding.detail
    assert record(driver, "A-1", suspected.data.ae_id).state == "confirmed"
