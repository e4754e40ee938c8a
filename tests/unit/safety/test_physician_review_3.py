"""The safety physician's third review (NCT07212335, the shipped protocol): SAE withdrawal on the site's retraction,
through safety's consumer (one event per transaction, or one batch), tried with what sites and sponsors send.

Regulatory answers the cases are held to:
- Only the site can take a case back: an AE it marks entered in error or deleted is no case (ICH E2B(R3) C.1.11,
  nullification); a later non-serious version is not a retraction (ICH E2A: the case stays reportable).
- The 24 h clock runs from the site's awareness (ICH E2A III.A.2, E2D 5.2: day 0 is the first receipt of the
  minimum information); a restore never restarts it, and neither should re-entering the same event under a new id.
- Whatever one AE made of itself (SAE, SUSAR, suspected DLT and its 3+3 tally, acute-reaction alert) goes when the
  AE goes and comes back when it comes back: one retraction, one consistent state.

A case where the system is right passes; one where it is wrong is xfail(strict) with the divergence in its reason.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import Session, select

from services.safety.models import CohortState, DltRecord, RecordStatus
from services.safety.sae_retraction import VERSION_OF_RETRACTED_AE
from shared.events import ClinicalEnvelope, EnvelopeBase, RecordStatusChanged, RecordStatusData, deterministic_id
from shared.protocol import Protocol
from tests.unit.safety.clinical import Driver, ae, dose, enrol, of_type, types
from tests.unit.safety.test_batch_physician import deliver, single_and_batched
from tests.unit.safety.test_clinical_rules import DAY0, TRIAL, at

HOSP = {"hospitalization": True}
INFUSED = at(0, 10)
"""A-1, arm A, infused on day 0 at 10:00 UTC."""
REPORTED = at(0, 14)
"""The reaction's first report reached us on day 0 at 14:00 UTC (the site aware at 13:00)."""


def reaction(version: int = 1, *, received: datetime = REPORTED, ae_id: str = "AE-1", **data: Any) -> ClinicalEnvelope:
    """A grade 3 infusion-related reaction 2 h after the infusion, hospitalised, 'probable': an SAE; a SUSAR (the RSI
    lists it up to grade 2 only); a suspected DLT (grade >= 3, related); an acute reaction (onset within 24 h)."""
    payload: dict[str, Any] = {
        "term": "Infusion related reaction",
        "grade": 3,
        "relatedness": "probable",
        "onset": DAY0.isoformat(),
        "onset_at": at(0, 12).isoformat(),
        "seriousness": HOSP,
        "awareness_at": at(0, 13),
    } | data
    return ae("A-1", ae_id=ae_id, version=version, received=received, **payload)  # type: ignore[no-any-return]


def site_status(
    value: str, changed: datetime, *, ae_id: str = "AE-1", reason: str | None = None, sender: str | None = None
) -> ClinicalEnvelope:
    data = RecordStatusData(record_type="ae", record_id=ae_id, status=value, reason=reason, changed_at=changed)  # type: ignore[arg-type]
    sender_id = sender or f"status-{ae_id}-{value}-{changed.isoformat()}"
    return RecordStatusChanged(
        id=deterministic_id("inbound", "edc", TRIAL, "A-1", sender_id),
        source="/sources/edc",
        subject="A-1",
        time=changed,
        trialid=TRIAL,
        siteid="SITE-1",
        receivedat=changed,
        senderid=sender_id,
        data=data,
    )


def dosed() -> list[ClinicalEnvelope]:
    return [enrol("A-1", "A", DAY0), dose("A-1", INFUSED)]


def kinds(signals: Sequence[EnvelopeBase], prefixes: tuple[str, ...] = ("sae.", "susar.", "dlt.")) -> list[str]:
    return [t for t in types(signals) if t.startswith(prefixes)]


def arm_a(signals: Sequence[EnvelopeBase]) -> str:
    [decision] = of_type(signals, "cohort.decision")[-1:]
    return str(decision.data.decision)


@pytest.fixture
def driver(tmp_path: Path, protocol: Protocol) -> Driver:
    from shared.db import make_engine

    d = Driver(make_engine(f"sqlite:///{tmp_path}/review3.db"), protocol)
    d.apply_all(dosed(), now=INFUSED)
    return d


# --- 1. one AE that is an SAE, a SUSAR, a suspected DLT and an acute reaction -----------------------------------


def test_one_retraction_withdraws_the_sae_the_susar_and_the_dlt_and_a_restore_brings_all_back_on_their_clocks(
    driver: Driver,
) -> None:
    """Right: the site's 'entered in error' withdraws the SAE (its 24 h obligation), the SUSAR (its 7/15-day
    reports) and the suspected DLT (arm A no longer awaits a review); nothing asks the site about the version it
    sent before retracting. The restore brings back the SAE with the site's awareness (day 0, 13:00), the SUSAR with
    its first receipt (day 0, 14:00), the suspected DLT, and arm A awaiting its review again."""
    first = driver.apply(reaction(), now=at(0, 14))
    assert kinds(first) == ["sae.detected", "susar.detected", "dlt.suspected"]
    assert arm_a(first) == "awaiting_dlt_review"
    out = driver.apply(site_status("entered_in_error", at(0, 15), reason="wrong subject"), now=at(0, 15))
    assert sorted(kinds(out)) == ["dlt.withdrawn", "sae.withdrawn", "susar.withdrawn"]
    assert arm_a(out) == "enrolling", "the 3+3 tally no longer holds the arm for this DLT"
    assert not of_type(out, "data_quality.flagged"), "v1 was sent before the retraction: nothing to ask the site"
    [withdrawn] = of_type(out, "sae.withdrawn")
    assert (withdrawn.data.awareness_at, withdrawn.data.reason, withdrawn.data.site_id) == (
        at(0, 13),
        "wrong subject",
        "SITE-1",
    )
    back = driver.apply(site_status("restored", at(3)), now=at(3))
    assert sorted(kinds(back)) == ["dlt.suspected", "sae.detected", "susar.detected"]
    [sae] = of_type(back, "sae.detected")
    [susar] = of_type(back, "susar.detected")
    assert sae.data.awareness_at == at(0, 13), "the SAE clock does not restart on restore"
    assert susar.data.clock_start == at(0, 14), "nor does the SUSAR's day 0"
    assert arm_a(back) == "awaiting_dlt_review"


def test_the_acute_reaction_of_a_retracted_ae_is_withdrawn_with_it(driver: Driver) -> None:
    """The acute-reaction alert carries a review obligation with escalation (24 h, then overdue pages every hour to
    the officer, the monitor and the PI). Everything else the AE raised is withdrawn on its retraction; the acute
    reaction should be too, and come back on restore."""
    driver.apply(reaction(), now=at(0, 14))
    out = driver.apply(site_status("entered_in_error", at(0, 15)), now=at(0, 15))
    [withdrawn] = of_type(out, "acute_reaction.withdrawn")
    assert (withdrawn.data.ae_id, withdrawn.data.grade, withdrawn.data.status) == ("AE-1", 3, "entered_in_error")
    back = driver.apply(site_status("restored", at(1)), now=at(1))
    [restored] = of_type(back, "acute_reaction.detected")
    assert (restored.data.ae_id, restored.data.grade) == ("AE-1", 3)
    again = driver.apply(site_status("restored", at(2)), now=at(2))
    assert not of_type(again, "acute_reaction.detected"), "a second restore brings nothing back again"


def test_the_officer_is_told_when_the_ae_behind_a_confirmed_dlt_is_retracted(
    driver: Driver, protocol: Protocol
) -> None:
    """The officer confirmed A-1's DLT on day 1; on day 2 the site marks the AE entered in error ('wrong subject').
    The design keeps an officer's confirmation final (the DLT still counts: arm A expands), and the officer cannot
    undo it through the API either. Right: a 3+3 decision resting on an event the site says did not happen to this
    subject is put in front of the officer and the monitor, once, naming the AE, the arm and who confirmed it. Was:
    the SAE and SUSAR were withdrawn and nothing at all was said about the confirmed DLT."""
    from services.safety.retracted_dlt import CONFIRMED_DLT_AE_RETRACTED
    from tests.unit.safety.test_clinical_rules import decide

    driver.apply(reaction(), now=REPORTED)
    decide(driver, "A-1", "confirmed", now=at(1))
    out = driver.apply(site_status("entered_in_error", at(2), reason="wrong subject"), now=at(2))
    [flag] = [f.data for f in of_type(out, "data_quality.flagged") if f.data.code == CONFIRMED_DLT_AE_RETRACTED]
    for words in ("AE AE-1", "entered in error (wrong subject)", "officer@site", "arm A's 3+3 tally", "review"):
        assert words in flag.detail, words
    with Session(driver.engine) as session:
        [arm] = [c for c in session.exec(select(CohortState)) if c.arm == "A"]
        assert (arm.decision, arm.dlt_confirmed) == ("expand", 1), "the confirmation stands; the officer decides"
    assert protocol.data_quality.code_roles[CONFIRMED_DLT_AE_RETRACTED] == ["safety_officer", "medical_monitor"]
    again = driver.apply(site_status("deleted", at(3)), now=at(3))
    assert not of_type(again, "data_quality.flagged"), "entered in error, then deleted: told once"


# --- 2. deleted and entered in error: the same withdrawal -------------------------------------------------------


@pytest.mark.parametrize("word", ["entered_in_error", "deleted"])
def test_entered_in_error_and_deleted_withdraw_alike(protocol: Protocol, tmp_path: Path, word: str) -> None:
    """A FHIR server says entered-in-error; ODM/OpenClinica says Removed, REDCap's sync says deleted (the adapters
    map each to one of these two words). Right: the same signals, differing only in the status they name."""
    run = deliver(
        tmp_path, protocol, word, [dosed(), [reaction()], [site_status(word, at(0, 15))]], batched=False, now=at(0, 15)
    )
    [withdrawn] = of_type(run.signals, "sae.withdrawn")
    assert withdrawn.data.status == word
    assert sorted(kinds(run.signals)[3:]) == ["dlt.withdrawn", "sae.withdrawn", "susar.withdrawn"]


# --- 3. retract, restore, retract again -------------------------------------------------------------------------


def test_retract_restore_retract_ends_withdrawn_with_one_signal_per_transition(
    protocol: Protocol, tmp_path: Path
) -> None:
    """Right: withdrawn, back, withdrawn again, each a signal of its own (distinct ids: notify must not take the
    second withdrawal for a redelivery of the first); one event per transaction or all in one batch ends alike."""
    steps = [
        dosed(),
        [reaction()],
        [
            site_status("entered_in_error", at(1)),
            site_status("restored", at(2)),
            site_status("deleted", at(3), reason="duplicate"),
        ],
    ]
    single, batched = single_and_batched(tmp_path, protocol, steps, now=at(3))
    for run in (single, batched):
        sae = [s for s in run.signals if str(getattr(s, "type", "")).startswith("sae.")]
        assert [str(s.type) for s in sae] == ["sae.detected", "sae.withdrawn", "sae.detected", "sae.withdrawn"]
        assert len({s.id for s in sae}) == 4
        assert {s.data.awareness_at for s in sae} == {at(0, 13)}
        with Session(run.driver.engine) as session:
            assert session.exec(select(RecordStatus)).one().status == "deleted"
            assert {d.state for d in session.exec(select(DltRecord))} == {"withdrawn"}
    assert single.state == batched.state


# --- 4. re-sent, stale, unknown ----------------------------------------------------------------------------------


def test_the_same_retraction_re_sent_by_the_edc_withdraws_once(driver: Driver) -> None:
    """The EDC retries the status webhook under a new delivery id (same record, status and time). Right: one
    withdrawal, no second notice, no data-quality flag."""
    driver.apply(reaction(), now=at(0, 14))
    first = driver.apply(site_status("deleted", at(1), sender="try-1"), now=at(1))
    again = driver.apply(site_status("deleted", at(1), sender="try-2"), now=at(1, 11))
    assert kinds(first).count("sae.withdrawn") == 1
    assert kinds(again) == [] and not of_type(again, "data_quality.flagged")


def test_a_retraction_of_an_ae_never_received_signals_nothing_and_keeps_the_ae_out_when_it_comes(
    driver: Driver,
) -> None:
    """The site deletes AE-9 we never received (the EDC created and deleted it between two syncs). Right: nothing
    signalled; when its (pre-deletion) version arrives late, no SAE is opened, no flag, and no DLT is suspected."""
    assert driver.apply(site_status("deleted", at(1), ae_id="AE-9"), now=at(1)) == []
    late = driver.apply(reaction(ae_id="AE-9", received=at(0, 14)), now=at(1, 12))
    assert kinds(late) == [] and not of_type(late, "data_quality.flagged")


def test_a_non_serious_dlt_retracted_withdraws_the_dlt_and_no_sae(driver: Driver) -> None:
    """Grade 3 pneumonitis, possibly related, not serious: a suspected DLT and no SAE. Right: its retraction
    withdraws the DLT only (no SAE or SUSAR signal to withdraw)."""
    pneumonitis = ae("A-1", term="Pneumonitis", grade=3, relatedness="possible", onset=at(5).date().isoformat())
    pneumonitis = pneumonitis.model_copy(update={"receivedat": at(5), "time": at(5)})
    assert kinds(driver.apply(pneumonitis, now=at(5))) == ["dlt.suspected"]
    assert kinds(driver.apply(site_status("entered_in_error", at(6)), now=at(6))) == ["dlt.withdrawn"]


def test_a_non_serious_non_dlt_ae_retracted_signals_nothing(driver: Driver) -> None:
    fatigue = ae("A-1", term="Fatigue", grade=1, relatedness="unlikely", onset=at(5).date().isoformat())
    fatigue = fatigue.model_copy(update={"receivedat": at(5), "time": at(5)})
    driver.apply(fatigue, now=at(5))
    assert driver.apply(site_status("deleted", at(6)), now=at(6)) == []


# --- 5. the same event re-reported under a new AE id --------------------------------------------------------------


def test_re_reported_under_a_new_id_with_the_sites_awareness_keeps_the_first_clock(driver: Driver) -> None:
    """The site entered the reaction on the wrong form (AE-1), marks it entered in error and re-enters it as AE-2
    with the awareness date it had. Right, and what the code does: AE-2's clock starts at that awareness (day 0,
    13:00), so the report is due when it always was; AE-1's SAE is withdrawn."""
    driver.apply(reaction(), now=at(0, 14))
    out = driver.apply(site_status("entered_in_error", at(1), reason="re-entered as AE-2"), now=at(1))
    out += driver.apply(reaction(ae_id="AE-2", received=at(1, 11)), now=at(1, 11))
    [withdrawn] = of_type(out, "sae.withdrawn")
    [detected] = of_type(out, "sae.detected")
    assert (withdrawn.data.ae_id, detected.data.ae_id) == ("AE-1", "AE-2")
    assert detected.data.awareness_at == at(0, 13)


def test_re_reported_under_a_new_id_without_awareness_inherits_the_first_receipt(driver: Driver) -> None:
    driver.apply(reaction(awareness_at=None), now=at(0, 14))
    driver.apply(site_status("entered_in_error", at(1), reason="re-entered as AE-2"), now=at(1))
    out = driver.apply(reaction(ae_id="AE-2", received=at(1, 11), awareness_at=None), now=at(1, 11))
    [detected] = of_type(out, "sae.detected")
    assert detected.data.awareness_at == at(0, 14)


# --- 6. order independence ---------------------------------------------------------------------------------------


def sae_held_open(signals: Sequence[EnvelopeBase]) -> bool:
    sae = [t for t in types(signals) if t.startswith("sae.")]
    return bool(sae) and sae[-1] != "sae.withdrawn"


def susar_held_open(signals: Sequence[EnvelopeBase]) -> bool:
    susar = [t for t in types(signals) if t.startswith("susar.")]
    return bool(susar) and susar[-1] != "susar.withdrawn"


def dlt_held_open(signals: Sequence[EnvelopeBase]) -> bool:
    dlt = [t for t in types(signals) if t.startswith("dlt.")]
    return bool(dlt) and dlt[-1] != "dlt.withdrawn"


@pytest.mark.parametrize("batched", [False, True])
@pytest.mark.parametrize("restored", [False, True])
def test_the_same_data_in_any_order_ends_in_one_safety_state(
    protocol: Protocol, tmp_path: Path, restored: bool, batched: bool
) -> None:
    """v1 (grade 3, day 0), v2 (grade 4, day 1), the site's 'entered in error' (day 2), [its restore (day 3)], in
    every order after the infusion, one per transaction or all in one batch. Right: the same stored state (SAE,
    SUSAR file, DLTs, the subject's outcome, arm A); notify ends holding the SAE, the SUSAR and the DLT open exactly
    when the AE stands; any SAE signalled carries the site's awareness."""
    events = [
        reaction(),
        reaction(2, received=at(1), grade=4),
        site_status("entered_in_error", at(2)),
        *([site_status("restored", at(3))] if restored else []),
    ]
    reference: dict[str, Any] | None = None
    for n, order in enumerate(itertools.permutations(events)):
        name = f"{restored}-{batched}-{n}"
        run = deliver(tmp_path, protocol, name, [dosed(), list(order)], batched=batched, now=at(4))
        state = run.state
        reference = reference or state
        for part in ("saes", "dlts", "outcomes", "arms"):  # the acute reaction: see the xfail below
            assert state[part] == reference[part], (part, [type(e).__name__ for e in order])
        # the SUSAR file, less `signalled_version` (which version notify was last told of: a record of what was
        # said, which differs when v2 came before or after the retraction; a restore says the latest either way)
        assert [r[:-1] for r in state["susars"]] == [r[:-1] for r in reference["susars"]], n
        signals = run.signals
        assert sae_held_open(signals) is restored, (n, kinds(signals))
        assert susar_held_open(signals) is restored, (n, kinds(signals))
        assert dlt_held_open(signals) is restored, (n, kinds(signals))
        sae = [s for s in signals if str(getattr(s, "type", "")).startswith("sae.")]
        assert all(s.data.awareness_at == at(0, 13) for s in sae), n
        if restored:  # what notify holds at the end is the latest version, grade 4, on the first clocks
            [last_sae] = sae[-1:]
            [last_susar] = [s for s in signals if str(getattr(s, "type", "")).startswith("susar.")][-1:]
            assert (last_sae.data.grade, last_sae.data.ae_version) == (4, 2), (n, kinds(signals))
            assert (last_susar.data.grade, last_susar.data.clock_start) == (4, at(0, 14)), (n, kinds(signals))


def test_a_worse_version_sent_while_retracted_reaches_the_acute_alert_on_restore(driver: Driver) -> None:
    driver.apply(reaction(), now=at(0, 14))
    driver.apply(site_status("entered_in_error", at(1)), now=at(1))
    driver.apply(reaction(2, received=at(1, 12), grade=4), now=at(1, 12))
    out = driver.apply(site_status("restored", at(2)), now=at(2))
    assert [s.data.grade for s in of_type(out, "acute_reaction.detected")] == [4]


# --- 7. the data-quality question to the site ---------------------------------------------------------------------


def test_a_follow_up_sent_after_the_retraction_asks_the_site_once(driver: Driver) -> None:
    """The site deleted AE-1 on day 1 and, on day 2, sends a fatal follow-up of it (it forgot the deletion, or the
    deletion was a mistake). Right: no SAE page (the retraction stands until a restore), and one question to the
    site naming the AE, its version, the deletion and the seriousness, telling it what to do."""
    driver.apply(reaction(), now=at(0, 14))
    driver.apply(site_status("deleted", at(1)), now=at(1))
    out = driver.apply(reaction(2, received=at(2), grade=5, outcome="fatal"), now=at(2))
    assert kinds(out) == []
    [flag] = [f for f in of_type(out, "data_quality.flagged") if f.data.code == VERSION_OF_RETRACTED_AE]
    detail = flag.data.detail
    for words in ("AE AE-1 version 2", "deleted", "death", "restore it", "new AE id"):
        assert words in detail, words


def test_a_version_the_edc_delivered_late_is_not_taken_for_one_sent_after_the_retraction(driver: Driver) -> None:
    """v2 (grade 4) was entered on day 1 at 09:00, its webhook failed and the EDC retried it at 11:00; the site had
    deleted the AE at 10:00 (delivered at once). The version's CloudEvents `time` says when it was entered; only its
    receipt is after the deletion. Right: v2 is history the deletion covers; nothing to ask the site."""
    driver.apply(reaction(), now=at(0, 14))
    driver.apply(site_status("deleted", at(1, 10)), now=at(1, 10))
    late = reaction(2, received=at(1, 11), grade=4).model_copy(update={"time": at(1, 9)})
    out = driver.apply(late, now=at(1, 11))
    assert not [f for f in of_type(out, "data_quality.flagged") if f.data.code == VERSION_OF_RETRACTED_AE]


def test_the_case_begins_with_its_lowest_serious_version_whatever_the_order() -> None:
    """v2 and v1, both hospitalised with the same awareness, processed v2 first. Right: the case began with v1 (the
    SUSAR report numbering counts from it: `report_version`), as in order. Was: v2, the first one processed."""
    from services.safety.sae import assess_ae
    from shared.events import AeData

    def version(n: int) -> AeData:
        return AeData.model_validate(
            {"ae_id": "AE-1", "version": n, "term": "Pneumonitis", "grade": 3, "seriousness": HOSP}
            | {"awareness_at": at(0, 13)}
        )

    in_order = assess_ae(assess_ae(None, version(1), received_at=at(1)).state, version(2), received_at=at(2)).state
    late = assess_ae(assess_ae(None, version(2), received_at=at(2)).state, version(1), received_at=at(3)).state
    assert in_order.first_serious_version == late.first_serious_version == 1
    assert in_order == late


# --- 8. the retraction as the adapters read it ----------------------------------------------------------------------


@pytest.mark.parametrize("how", ["backport_modifier_extension", "r5_status_element"])
def test_a_fhir_adverse_event_entered_in_error_is_a_retraction_of_the_same_ae_id(how: str) -> None:
    """The HL7 AE research backport says entered-in-error in a status modifierExtension; an R5 server in AdverseEvent's
    own `status` (a modifier element: a reader must not take the resource as a live AE). Right: both become the AE's
    'entered_in_error' status under the id its versions carry, so safety withdraws the same SAE. Was: the R5 form read
    as a new serious version of the AE (the SAE re-asserted instead of withdrawn)."""
    import json

    from services.ingest.adapters.fhir import parse_fhir
    from tests.unit.ingest.conftest import fixture_bytes
    from tests.unit.ingest.test_fhir import SOURCE

    resource = json.loads(fixture_bytes("fhir/ae_backport_serious.json"))
    [live] = parse_fhir(json.dumps(resource).encode(), source=SOURCE).records
    if how == "backport_modifier_extension":
        resource["modifierExtension"][0]["valueCode"] = "entered-in-error"
    else:
        resource.pop("modifierExtension")
        resource["status"] = "entered-in-error"
    [record] = parse_fhir(json.dumps(resource).encode(), source=SOURCE).records
    data = record.event.data
    assert isinstance(data, RecordStatusData)
    assert live.event.data.ae_id == data.record_id  # type: ignore[union-attr]
    assert (data.record_type, data.status) == ("ae", "entered_in_error")
    assert record.record_key == live.record_key
