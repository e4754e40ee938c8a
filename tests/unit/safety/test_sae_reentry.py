"""A serious AE re-entered under a new AE id keeps the first record's clock (ICH E2D 5.2: day 0 is the sponsor's first
receipt of the case), and a version the EDC delivered late is told by the site's entry time, not our receipt.

The pure rules (`sae_reentry.reentry_of`, `sae.site_entry_time`), then safety's consumer (one event per transaction
or one batch, in every order) on the physician review's reaction (NCT07212335, the shipped protocol)."""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from services.safety.sae import site_entry_time
from services.safety.sae_reentry import REENTRY_CLOCK, Retraction, StoredVersion, reentry_of
from services.safety.sae_retraction import VERSION_OF_RETRACTED_AE
from shared.events import AwarenessBasis, EnvelopeBase, RecordStatusChanged
from shared.protocol import Protocol
from tests.unit.safety.clinical import Driver, of_type
from tests.unit.safety.test_batch_physician import deliver
from tests.unit.safety.test_clinical_rules import at
from tests.unit.safety.test_physician_review_3 import dosed, reaction, site_status

WEEK = timedelta(days=7)
HOSP = {"hospitalization": True}


def version(ae_id: str, received: datetime, *, term: str = "Infusion related reaction", **data: Any) -> StoredVersion:
    payload: dict[str, Any] = {"ae_id": ae_id, "version": 1, "term": term, "grade": 3, "seriousness": HOSP} | data
    return StoredVersion(ae_id, payload, received)


def retracted(ae_id: str, changed: datetime, *, replaced_by: str | None = None) -> Retraction:
    return Retraction(ae_id, "entered_in_error", changed, "re-entered", replaced_by)


def link(
    ae_id: str, own: datetime, versions: list[StoredVersion], retractions: list[Retraction], lookback: timedelta = WEEK
) -> tuple[str, datetime, AwarenessBasis, bool] | None:
    found = reentry_of(ae_id, own_clock=own, versions=versions, retractions=retractions, lookback=lookback)
    return None if found is None else (found.withdrawn.ae_id, found.awareness_at, found.awareness_basis, found.explicit)


@pytest.fixture
def driver(tmp_path: Path, protocol: Protocol) -> Driver:
    from shared.db import make_engine

    d = Driver(make_engine(f"sqlite:///{tmp_path}/reentry.db"), protocol)
    d.apply_all(dosed(), now=at(0, 10))
    return d


# --- the pure rule --------------------------------------------------------------------------------------------------


def test_a_serious_ae_of_the_same_term_taken_back_the_day_before_gives_its_first_receipt() -> None:
    versions = [version("AE-1", at(0, 14)), version("AE-2", at(1, 11))]
    assert link("AE-2", at(1, 11), versions, [retracted("AE-1", at(1))]) == (
        "AE-1",
        at(0, 14),
        AwarenessBasis.RECEIPT,
        False,
    )


def test_the_withdrawn_aes_site_awareness_is_its_clock_when_it_had_one() -> None:
    versions = [version("AE-1", at(0, 14), awareness_at=at(0, 9).isoformat()), version("AE-2", at(1, 11))]
    found = link("AE-2", at(1, 11), versions, [retracted("AE-1", at(1))])
    assert found == ("AE-1", at(0, 9), AwarenessBasis.SITE, False)


@pytest.mark.parametrize(
    ("mine", "theirs"),
    [("Infusion-related reaction", "infusion related reaction"), ("Oedema limbs", "Edema limbs")],
)
def test_terms_match_whatever_the_case_punctuation_or_spelling(mine: str, theirs: str) -> None:
    versions = [version("AE-1", at(0, 14), term=theirs), version("AE-2", at(1, 11), term=mine)]
    assert link("AE-2", at(1, 11), versions, [retracted("AE-1", at(1))]) is not None


def test_the_ctcae_term_the_site_chose_matches_too() -> None:
    versions = [
        version("AE-1", at(0, 14), term="IRR after CAR-T", ctcae_term="Infusion related reaction"),
        version("AE-2", at(1, 11), term="Infusion related reaction"),
    ]
    assert link("AE-2", at(1, 11), versions, [retracted("AE-1", at(1))]) is not None


@pytest.mark.parametrize(
    ("why", "versions", "retractions", "own"),
    [
        ("another term", [version("AE-1", at(0, 14)), version("AE-2", at(1), term="Fever")], [at(1)], at(1)),
        ("taken back 8 days before", [version("AE-1", at(0, 14)), version("AE-2", at(9))], [at(1)], at(9)),
        ("never serious", [version("AE-1", at(0, 14), seriousness=None), version("AE-2", at(1))], [at(1)], at(1)),
        ("own clock already earlier", [version("AE-1", at(0, 14)), version("AE-2", at(1))], [at(1)], at(0, 8)),
        ("nothing taken back", [version("AE-1", at(0, 14)), version("AE-2", at(1))], [], at(1)),
    ],
)
def test_no_link(why: str, versions: list[StoredVersion], retractions: list[datetime], own: datetime) -> None:
    assert link("AE-2", own, versions, [retracted("AE-1", r) for r in retractions]) is None, why


def test_the_earliest_of_several_withdrawn_candidates_is_the_clock() -> None:
    versions = [version("AE-1", at(0, 14)), version("AE-3", at(0, 10)), version("AE-2", at(1, 11))]
    found = link("AE-2", at(1, 11), versions, [retracted("AE-1", at(1)), retracted("AE-3", at(0, 12))])
    assert found is not None and found[:2] == ("AE-3", at(0, 10))


def test_the_sites_replaced_by_links_whatever_the_term_and_the_window() -> None:
    """The site said AE-1 was re-entered as AE-2 (recoded to another term, three weeks later): that is the link."""
    versions = [version("AE-1", at(0, 14)), version("AE-2", at(21), term="Cytokine release syndrome")]
    assert link("AE-2", at(21), versions, [retracted("AE-1", at(20), replaced_by="AE-2")]) == (
        "AE-1",
        at(0, 14),
        AwarenessBasis.RECEIPT,
        True,
    )


def test_a_retraction_naming_another_replacement_is_not_guessed_at() -> None:
    versions = [version("AE-1", at(0, 14)), version("AE-2", at(1, 11)), version("AE-3", at(1, 12))]
    assert link("AE-2", at(1, 11), versions, [retracted("AE-1", at(1), replaced_by="AE-3")]) is None
    assert link("AE-3", at(1, 12), versions, [retracted("AE-1", at(1), replaced_by="AE-3")]) is not None


def test_a_zero_lookback_turns_the_same_term_link_off_but_not_the_sites_own() -> None:
    versions = [version("AE-1", at(0, 14)), version("AE-2", at(1, 11))]
    assert link("AE-2", at(1, 11), versions, [retracted("AE-1", at(1))], lookback=timedelta(0)) is None
    explicit = [retracted("AE-1", at(1), replaced_by="AE-2")]
    assert link("AE-2", at(1, 11), versions, explicit, lookback=timedelta(0)) is not None


def test_the_lookback_is_read_from_the_protocol_with_a_default(protocol: Protocol) -> None:
    from shared.protocol import SaeRules

    assert protocol.sae.reentry_lookback_hours == 168
    assert SaeRules().reentry_lookback_hours == 168
    with pytest.raises(ValueError, match="greater than or equal to 0"):
        SaeRules(reentry_lookback_hours=-1)


# --- the site's entry time ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("time", "expected"),
    [
        (at(1, 9), at(1, 9)),  # the sender's own time of the version, before our receipt
        (at(0, 13), None),  # ingest's `time` for an AE: the site's awareness, not when this version was entered
        (at(1, 11), None),  # ingest's `time` without an awareness: our receipt
        (at(1, 12), None),  # after our receipt: a clock slip
    ],
)
def test_the_site_entry_time_is_the_envelope_time_only_when_it_is_neither_awareness_nor_receipt(
    time: datetime, expected: datetime | None
) -> None:
    envelope = reaction(2, received=at(1, 11)).model_copy(update={"time": time})
    assert envelope.data.awareness_at == at(0, 13)
    assert site_entry_time(envelope) == expected


# --- through safety's consumer --------------------------------------------------------------------------------------


def sae_of(signals: list[EnvelopeBase], ae_id: str) -> list[EnvelopeBase]:
    return [s for s in signals if str(getattr(s, "type", "")).startswith("sae.") and s.data.ae_id == ae_id]  # type: ignore[attr-defined]


def reentry_findings(signals: list[EnvelopeBase]) -> list[Any]:
    return [f.data for f in of_type(signals, "data_quality.flagged") if f.data.code == REENTRY_CLOCK]


def test_the_re_entry_is_detected_on_the_first_clock_and_the_officer_told_what_was_linked(driver: Driver) -> None:
    driver.apply(reaction(awareness_at=None), now=at(0, 14))
    driver.apply(site_status("entered_in_error", at(1), reason="re-entered as AE-2"), now=at(1))
    out = driver.apply(reaction(ae_id="AE-2", received=at(1, 11), awareness_at=None), now=at(1, 11))
    [detected] = of_type(out, "sae.detected")
    assert (detected.data.awareness_at, detected.data.awareness_basis) == (at(0, 14), AwarenessBasis.RECEIPT)
    assert detected.data.clock_from_ae_id == "AE-1"
    [finding] = reentry_findings(out)
    assert (finding.record_type, finding.record_id, finding.site_id) == ("ae", "AE-2", "SITE-1")
    for words in (
        "AE AE-2 is taken as the re-entry of serious AE AE-1",
        "entered in error (re-entered as AE-2)",
        "same term ('infusion related reaction')",
        "first receipt, 2026-03-02 14:00 UTC, not at 2026-03-03 11:00 UTC",
        "restore AE AE-1",
    ):
        assert words in finding.detail, words
    again = driver.apply(reaction(2, ae_id="AE-2", received=at(1, 15), awareness_at=None, grade=4), now=at(1, 15))
    [updated] = of_type(again, "sae.updated")
    assert updated.data.awareness_at == at(0, 14), "a follow-up of the re-entry keeps the first clock"
    assert not reentry_findings(again), "told once, when the SAE opened"


def test_a_re_entry_processed_before_the_retraction_gets_the_first_clock_when_it_comes(driver: Driver) -> None:
    """The site enters AE-2 first and marks AE-1 entered in error an hour later: AE-2 opens on its own receipt, and the
    retraction moves its clock to AE-1's (notify moves the deadline earlier, never later)."""
    driver.apply(reaction(awareness_at=None), now=at(0, 14))
    first = driver.apply(reaction(ae_id="AE-2", received=at(1, 11), awareness_at=None), now=at(1, 11))
    assert [s.data.awareness_at for s in of_type(first, "sae.detected")] == [at(1, 11)]
    out = driver.apply(site_status("entered_in_error", at(1, 12), reason="duplicate of AE-2"), now=at(1, 12))
    [withdrawn] = of_type(out, "sae.withdrawn")
    [updated] = of_type(out, "sae.updated")
    assert withdrawn.data.ae_id == "AE-1"
    assert (updated.data.ae_id, updated.data.awareness_at, updated.data.clock_from_ae_id) == ("AE-2", at(0, 14), "AE-1")
    assert [f.record_id for f in reentry_findings(out)] == ["AE-2"]
    again = driver.apply(site_status("deleted", at(1, 13)), now=at(1, 13))
    assert not of_type(again, "sae.updated") and not reentry_findings(again), "entered in error, then deleted: once"


def test_a_late_serious_version_of_the_withdrawn_ae_gives_the_re_entry_its_earlier_clock(driver: Driver) -> None:
    """The retraction came first (of an AE never received), then AE-2, then AE-1's version received on day 0 but
    processed last: AE-2's clock moves to AE-1's first receipt."""
    driver.apply(site_status("entered_in_error", at(1)), now=at(1))
    driver.apply(reaction(ae_id="AE-2", received=at(1, 11), awareness_at=None), now=at(1, 11))
    out = driver.apply(reaction(awareness_at=None), now=at(1, 12))
    [updated] = of_type(out, "sae.updated")
    assert (updated.data.ae_id, updated.data.awareness_at) == ("AE-2", at(0, 14))
    assert [f.record_id for f in reentry_findings(out)] == ["AE-2"]
    assert not [f for f in of_type(out, "data_quality.flagged") if f.data.code == VERSION_OF_RETRACTED_AE], (
        "received before the retraction: nothing to ask"
    )


def explicit_status(ae_id: str, changed: datetime, replaced_by: str) -> RecordStatusChanged:
    envelope = site_status("entered_in_error", changed, ae_id=ae_id, reason="recoded")
    data = envelope.data.model_copy(update={"replaced_by": replaced_by})
    return envelope.model_copy(update={"data": data})


def test_the_sites_replaced_by_links_a_recoded_re_entry(driver: Driver) -> None:
    driver.apply(reaction(awareness_at=None), now=at(0, 14))
    driver.apply(explicit_status("AE-1", at(1), "AE-2"), now=at(1))
    crs = reaction(ae_id="AE-2", received=at(1, 11), awareness_at=None, term="Cytokine release syndrome")
    out = driver.apply(crs, now=at(1, 11))
    [detected] = of_type(out, "sae.detected")
    assert (detected.data.awareness_at, detected.data.clock_from_ae_id) == (at(0, 14), "AE-1")
    [finding] = reentry_findings(out)
    assert "the site's retraction of AE AE-1 names AE AE-2 as its replacement" in finding.detail


def test_the_sites_replaced_by_sent_after_the_re_entry_moves_its_clock(driver: Driver) -> None:
    """AE-2 (recoded as CRS) paged on its own receipt; the site's retraction of AE-1 then names AE-2: its clock moves
    to AE-1's first receipt, whatever the term."""
    driver.apply(reaction(awareness_at=None), now=at(0, 14))
    crs = reaction(ae_id="AE-2", received=at(1, 11), awareness_at=None, term="Cytokine release syndrome")
    assert [s.data.awareness_at for s in of_type(driver.apply(crs, now=at(1, 11)), "sae.detected")] == [at(1, 11)]
    out = driver.apply(explicit_status("AE-1", at(1, 12), "AE-2"), now=at(1, 12))
    [updated] = of_type(out, "sae.updated")
    assert (updated.data.ae_id, updated.data.awareness_at, updated.data.clock_from_ae_id) == ("AE-2", at(0, 14), "AE-1")
    [finding] = reentry_findings(out)
    assert "names AE AE-2 as its replacement" in finding.detail


def test_the_same_term_in_another_subject_or_not_serious_is_no_re_entry(driver: Driver) -> None:
    driver.apply(reaction(awareness_at=None), now=at(0, 14))
    driver.apply(site_status("entered_in_error", at(1)), now=at(1))
    mild = driver.apply(reaction(ae_id="AE-2", received=at(1, 11), seriousness=None, grade=2), now=at(1, 11))
    assert not sae_of(mild, "AE-2") and not reentry_findings(mild)
    later = driver.apply(reaction(ae_id="AE-3", received=at(9), awareness_at=None), now=at(9))
    [detected] = of_type(later, "sae.detected")
    assert (detected.data.awareness_at, detected.data.clock_from_ae_id) == (at(9), None), "8 days later: its own"


def test_a_restore_of_the_first_record_brings_it_back_on_its_clock_and_tells_notify_nothing_later(
    driver: Driver,
) -> None:
    driver.apply(reaction(awareness_at=None), now=at(0, 14))
    driver.apply(site_status("entered_in_error", at(1)), now=at(1))
    driver.apply(reaction(ae_id="AE-2", received=at(1, 11), awareness_at=None), now=at(1, 11))
    out = driver.apply(site_status("restored", at(2)), now=at(2))
    assert [(s.data.ae_id, s.data.awareness_at) for s in of_type(out, "sae.detected")] == [("AE-1", at(0, 14))]
    assert not sae_of(out, "AE-2"), "AE-2's SAE keeps the deadline notify has; both AEs now stand"
    [finding] = reentry_findings(out)
    assert finding.record_id == "AE-2"
    for words in ("The site restored AE AE-1", "no longer taken as its re-entry", "its own clock is 2026-03-03 11:00"):
        assert words in finding.detail, words
    assert "mark one entered in error" in finding.detail
    again = driver.apply(site_status("entered_in_error", at(3)), now=at(3))
    assert [f.record_id for f in reentry_findings(again)] == ["AE-2"], "taken back again: linked again"
    assert [s.data.awareness_at for s in of_type(again, "sae.updated")] == [at(0, 14)]


def test_a_restore_with_no_re_entry_says_nothing_of_one(driver: Driver) -> None:
    driver.apply(reaction(awareness_at=None), now=at(0, 14))
    driver.apply(site_status("entered_in_error", at(1)), now=at(1))
    driver.apply(reaction(ae_id="AE-2", received=at(1, 11), term="Fever", awareness_at=None), now=at(1, 11))
    assert not reentry_findings(driver.apply(site_status("restored", at(2)), now=at(2)))


@pytest.mark.parametrize("batched", [False, True])
def test_the_re_entry_ends_on_the_first_clock_in_any_order(protocol: Protocol, tmp_path: Path, batched: bool) -> None:
    """AE-1 (day 0, 14:00), its retraction (day 1), AE-2 (day 1, 11:00), none with an awareness date, in every order,
    one per transaction or in one batch: the same stored state, and the last SAE signal of AE-2 notify holds is on
    AE-1's first receipt, with one finding about AE-2."""
    events = [
        reaction(awareness_at=None),
        site_status("entered_in_error", at(1), reason="re-entered as AE-2"),
        reaction(ae_id="AE-2", received=at(1, 11), awareness_at=None),
    ]
    reference: dict[str, Any] | None = None
    for n, order in enumerate(itertools.permutations(events)):
        run = deliver(tmp_path, protocol, f"reentry-{batched}-{n}", [dosed(), list(order)], batched=batched, now=at(2))
        state = run.state
        reference = reference or state
        for part in ("saes", "dlts", "outcomes", "arms"):  # as the review's order test (acute, SUSAR: see there)
            assert state[part] == reference[part], (part, n)
        signals = run.signals
        second = sae_of(signals, "AE-2")
        assert second and min(s.data.awareness_at for s in second) == at(0, 14), (n, [type(e).__name__ for e in order])
        assert second[-1].data.awareness_at == at(0, 14), n  # type: ignore[attr-defined]
        assert sae_of(signals, "AE-1")[-1:] == [] or str(sae_of(signals, "AE-1")[-1].type) == "sae.withdrawn", n  # type: ignore[attr-defined]
        assert [f.record_id for f in reentry_findings(signals)] == ["AE-2"], n


# --- the version the EDC delivered late -----------------------------------------------------------------------------


def flags_of_retracted(signals: list[EnvelopeBase]) -> list[Any]:
    return [f for f in of_type(signals, "data_quality.flagged") if f.data.code == VERSION_OF_RETRACTED_AE]


def test_a_real_follow_up_timed_as_ingest_times_it_is_still_asked_about(driver: Driver) -> None:
    """Ingest sets an AE's `time` to the site's awareness (day 0, 13:00, repeated in every version): that is not when
    v2 was entered, and v2 received after the deletion is asked about, as before."""
    driver.apply(reaction(), now=at(0, 14))
    driver.apply(site_status("deleted", at(1, 10)), now=at(1, 10))
    follow_up = reaction(2, received=at(1, 11), grade=4).model_copy(update={"time": at(0, 13)})
    assert len(flags_of_retracted(driver.apply(follow_up, now=at(1, 11)))) == 1


@pytest.mark.parametrize("entered", [at(1, 9), at(1, 10) + timedelta(minutes=30)])
def test_the_late_delivered_version_is_judged_by_its_entry_time_in_either_order(
    protocol: Protocol, tmp_path: Path, entered: datetime
) -> None:
    """v2 entered at `entered`, received at 11:00; the deletion at 10:00. Entered before it: no question to the site,
    whether the deletion or v2 is processed first. Entered after it: asked once, in either order."""
    v2 = reaction(2, received=at(1, 11), grade=4).model_copy(update={"time": entered})
    deletion = site_status("deleted", at(1, 10))
    counts = set()
    for n, order in enumerate([[deletion, v2], [v2, deletion]]):
        run = deliver(tmp_path, protocol, f"late-{n}", [dosed(), [reaction()], *([e] for e in order)], batched=False)
        counts.add(len(flags_of_retracted(run.signals)))
    assert counts == {0 if entered < at(1, 10) else 1}


def test_the_new_fields_are_on_the_wire_only_when_they_say_something(driver: Driver) -> None:
    """A consumer deployed before `clock_from_ae_id` / `replaced_by` (extra="forbid") still reads every message that
    has no link: the fields are left out while None."""
    [plain] = of_type(driver.apply(reaction(), now=at(0, 14)), "sae.detected")
    assert "clock_from_ae_id" not in plain.model_dump_json()
    assert "replaced_by" not in site_status("deleted", at(1)).model_dump_json()
    assert '"replaced_by":"AE-2"' in explicit_status("AE-1", at(1), "AE-2").model_dump_json()
