"""A serious AE re-entered under a new AE id keeps the first record's clocks (physician review 6, gaps 2 and 3).

- The SUSAR's expedited day 0 follows the SAE re-entry link (`sae_reentry`, one rule for both clocks): the first
  record's versions are the sponsor's earlier knowledge of the case.
- Across subjects, only the site's explicit `replaced_by` links (an AE entered under a mistyped subject id, deleted
  there naming its re-entry under the right subject), only within the trial, and the same data in either order (the
  two subjects may sit on different partitions) end on the same clock."""

from __future__ import annotations

import itertools
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import Session

from services.safety.models import SusarCase
from services.safety.sae_retraction import SAE_REPLACED_BY_AMBIGUOUS
from shared.events import EnvelopeBase, RecordStatusChanged
from shared.protocol import Protocol
from tests.unit.safety.clinical import Driver, dose, enrol, of_type, status
from tests.unit.safety.test_batch_physician import deliver
from tests.unit.safety.test_clinical_rules import DAY0, TRIAL, at
from tests.unit.safety.test_physician_review_3 import dosed, reaction, site_status
from tests.unit.safety.test_physician_review_6 import febrile_neutropenia, reentry_findings, sae_signals


@pytest.fixture
def driver(tmp_path: Path, protocol: Protocol) -> Driver:
    from shared.db import make_engine

    d = Driver(make_engine(f"sqlite:///{tmp_path}/reentry.db"), protocol)
    d.apply_all(dosed(), now=at(0, 10))
    return d


def day0(driver: Driver, ae_id: str, subject: str = "A-1") -> tuple[bool, datetime | None]:
    with Session(driver.engine) as session:
        case = session.get(SusarCase, (TRIAL, subject, ae_id))
        assert case is not None
        return case.susar, case.clock_start


def susars(signals: list[EnvelopeBase], ae_id: str) -> list[Any]:
    return [s for s in signals if str(getattr(s, "type", "")).startswith("susar.") and s.data.ae_id == ae_id]


# --- 2. the SUSAR's day 0 -------------------------------------------------------------------------------------------


def test_a_susar_re_entered_before_its_deletion_is_processed_moves_day_0_earlier(driver: Driver) -> None:
    """AE-2 (the re-entry) is processed before the deletion of AE-1 (a batch, a rebalance): it opens its own SUSAR file
    on its own receipt; the deletion then links it, and day 0 moves back to AE-1's receipt (`clock_earlier`)."""
    driver.apply(reaction(awareness_at=None), now=at(0, 14))
    [own] = of_type(
        driver.apply(reaction(ae_id="AE-2", received=at(1, 11), awareness_at=None), now=at(1, 11)), "susar.detected"
    )
    assert own.data.clock_start == at(1, 11)
    out = driver.apply(site_status("entered_in_error", at(1, 12), reason="re-entered"), now=at(1, 12))
    [moved] = susars(out, "AE-2")
    assert (moved.data.change, moved.data.clock_start) == ("clock_earlier", at(0, 14))
    assert "AE AE-1 (re-entered as this AE) version 1" in moved.data.clock_basis
    assert [s.data.change for s in susars(out, "AE-1")] == ["withdrawn"]
    assert day0(driver, "AE-2") == (True, at(0, 14))


def test_the_susar_clock_starts_at_the_re_entry_when_the_first_record_was_not_a_susar(driver: Driver) -> None:
    """AE-1 was serious but 'unlikely' (an SAE, not a SUSAR); the site deletes it and re-enters the case as AE-2,
    'probable': the SAE clock is AE-1's, but the sponsor first knew of a *suspected* reaction from AE-2: day 0 is its
    receipt, not AE-1's."""
    driver.apply(reaction(awareness_at=None, relatedness="unlikely"), now=at(0, 14))
    driver.apply(site_status("entered_in_error", at(1), reason="re-entered"), now=at(1))
    out = driver.apply(reaction(ae_id="AE-2", received=at(1, 11), awareness_at=None), now=at(1, 11))
    [sae] = of_type(out, "sae.detected")
    assert sae.data.awareness_at == at(0, 14)
    [susar] = of_type(out, "susar.detected")
    assert susar.data.clock_start == at(1, 11)


def test_restoring_the_first_record_gives_the_re_entry_its_own_day_0_back(driver: Driver) -> None:
    driver.apply(reaction(awareness_at=None), now=at(0, 14))
    driver.apply(site_status("entered_in_error", at(1), reason="re-entered"), now=at(1))
    driver.apply(reaction(ae_id="AE-2", received=at(1, 11), awareness_at=None), now=at(1, 11))
    assert day0(driver, "AE-2") == (True, at(0, 14))
    driver.apply(site_status("restored", at(2), reason="both real"), now=at(2))
    assert day0(driver, "AE-2") == (True, at(1, 11))
    assert day0(driver, "AE-1") == (True, at(0, 14))


@pytest.mark.parametrize("batched", [False, True])
def test_a_re_entered_susar_ends_on_the_first_day_0_in_any_order(
    protocol: Protocol, tmp_path: Path, batched: bool
) -> None:
    events = [
        reaction(awareness_at=None),
        site_status("entered_in_error", at(1), reason="re-entered"),
        reaction(ae_id="AE-2", received=at(1, 11), awareness_at=None),
    ]
    for n, order in enumerate(itertools.permutations(events)):
        run = deliver(
            tmp_path, protocol, f"susar-{batched}-{n}", [dosed(), list(order)], batched=batched, now=at(1, 12)
        )
        assert day0(run.driver, "AE-2") == (True, at(0, 14)), n
        assert day0(run.driver, "AE-1")[0] is False, n
        ids = [s.id for s in run.signals if str(s.type).startswith("susar.")]
        assert len(ids) == len(set(ids)), n


# --- 3. across subjects, by the site's explicit word only ----------------------------------------------------------


def typo_deletion(replaced_by: str | None = "AE-2", *, changed: datetime | None = None) -> RecordStatusChanged:
    """A-2's AE-1 deleted (day 6, 08:00 unless `changed`): it was entered under the wrong subject id, and re-entered
    under A-1 as `replaced_by`."""
    changed = changed or at(6, 8)
    data: dict[str, Any] = {"record_type": "ae", "record_id": "AE-1", "status": "deleted", "reason": "wrong subject"}
    if replaced_by:
        data["replaced_by"] = replaced_by
    return RecordStatusChanged.model_validate(
        status("A-2", "ae", "AE-1", "deleted").model_dump() | {"receivedat": changed, "time": changed} | {"data": data}
    )


def in_a2() -> list[Any]:
    return [enrol("A-2", "A", DAY0), dose("A-2", at(0))]


def first_in_a2() -> Any:
    return febrile_neutropenia("AE-1", onset_day=5, received=at(5, 14), subject="A-2")


def re_entry() -> Any:
    return febrile_neutropenia("AE-2", onset_day=5, received=at(6, 9))


def clock_of(signals: list[EnvelopeBase], ae_id: str) -> datetime:
    return min(s.data.awareness_at for s in sae_signals(signals, ae_id) if s.type != "sae.withdrawn")


@pytest.mark.parametrize("batched", [False, True])
def test_a_subject_id_typo_re_entry_ends_on_the_first_clock_in_either_order(
    protocol: Protocol, tmp_path: Path, batched: bool
) -> None:
    """The deletion in A-2 and the re-entry in A-1, in either order (different partitions), one by one or together:
    A-1's AE-2 ends on A-2's AE-1 receipt, told once, the signals about A-1 keyed to A-1."""
    for n, order in enumerate(itertools.permutations([typo_deletion(), re_entry()])):
        steps = [in_a2() + dosed(), [first_in_a2()], list(order)]
        run = deliver(tmp_path, protocol, f"typo-{batched}-{n}", steps, batched=batched, now=at(6, 9))
        assert clock_of(run.signals, "AE-2") == at(5, 14), n
        [told] = reentry_findings(run.signals)
        assert (told.subject_id, told.record_id) == ("A-1", "AE-2"), n
        assert "AE AE-1 (subject A-2)" in told.detail and "another subject's id" in told.detail
        for signal in sae_signals(run.signals, "AE-2"):
            assert signal.subject == "A-1" and signal.data.subject_id == "A-1", n


def test_the_deletion_processed_after_the_re_entry_moves_its_clock_earlier(driver: Driver) -> None:
    driver.apply_all(in_a2(), now=at(0, 10))
    driver.apply(first_in_a2(), now=at(5, 14))
    [own] = of_type(driver.apply(re_entry(), now=at(6, 9)), "sae.detected")
    assert own.data.awareness_at == at(6, 9)
    out = driver.apply(typo_deletion(), now=at(6, 10))
    [updated] = [s for s in sae_signals(out, "AE-2") if s.type == "sae.updated"]
    assert (updated.data.awareness_at, updated.data.clock_from_ae_id, updated.subject) == (at(5, 14), "AE-1", "A-1")
    assert [s.type for s in sae_signals(out, "AE-1")] == ["sae.withdrawn"]
    assert driver.apply(typo_deletion(), now=at(6, 11)) == [], "the same deletion again: nothing new"


def test_without_replaced_by_nothing_crosses_subjects(driver: Driver) -> None:
    """The same term, the same onset, a day apart, in two subjects: never guessed to be one case."""
    driver.apply_all(in_a2(), now=at(0, 10))
    driver.apply(first_in_a2(), now=at(5, 14))
    driver.apply(typo_deletion(replaced_by=None), now=at(6, 8))
    out = driver.apply(re_entry(), now=at(6, 9))
    [detected] = of_type(out, "sae.detected")
    assert (detected.data.awareness_at, detected.data.clock_from_ae_id) == (at(6, 9), None)
    assert reentry_findings(out) == []


def test_a_replaced_by_naming_the_deleting_subjects_own_ae_stays_in_that_subject(driver: Driver) -> None:
    """A-2 has an AE-2 of its own: the site's 'replaced by AE-2' names it, not A-1's AE-2."""
    driver.apply_all(in_a2(), now=at(0, 10))
    driver.apply(first_in_a2(), now=at(5, 14))
    own = febrile_neutropenia("AE-2", onset_day=5, received=at(6, 7), subject="A-2")
    driver.apply(own, now=at(6, 7))
    driver.apply(typo_deletion(), now=at(6, 8))
    [detected] = of_type(driver.apply(re_entry(), now=at(6, 9)), "sae.detected")
    assert detected.data.awareness_at == at(6, 9)


def test_a_susar_entered_under_the_wrong_subject_keeps_its_day_0_in_the_right_one(driver: Driver) -> None:
    driver.apply_all(in_a2(), now=at(0, 10))
    wrong = reaction(awareness_at=None)
    wrong = wrong.model_copy(update={"subject": "A-2", "id": "wrong-subject-v1"})
    driver.apply(wrong, now=at(0, 14))
    out = driver.apply(typo_deletion(changed=at(1)), now=at(1))
    assert [s.data.change for s in susars(out, "AE-1")] == ["withdrawn"]
    out = driver.apply(reaction(ae_id="AE-2", received=at(1, 11), awareness_at=None), now=at(1, 11))
    [susar] = of_type(out, "susar.detected")
    assert susar.data.clock_start == at(0, 14)
    assert day0(driver, "AE-2") == (True, at(0, 14))


def test_restoring_the_ae_in_the_mistyped_subject_tells_the_right_subject_and_gives_day_0_back(driver: Driver) -> None:
    """The site restores A-2's AE-1 (it was A-2's after all): both stand. A-1's AE-2 is told it is no longer taken as
    its re-entry (the finding thread that linked them), and its SUSAR day 0 is its own receipt again."""
    driver.apply_all(in_a2(), now=at(0, 10))
    wrong = reaction(awareness_at=None).model_copy(update={"subject": "A-2", "id": "wrong-subject-v1"})
    driver.apply(wrong, now=at(0, 14))
    driver.apply(typo_deletion(changed=at(1)), now=at(1))
    driver.apply(reaction(ae_id="AE-2", received=at(1, 11), awareness_at=None), now=at(1, 11))
    restore = typo_deletion(changed=at(2))
    restore = restore.model_copy(
        update={"id": "restore-a2-ae1", "data": restore.data.model_copy(update={"status": "restored"})}
    )
    out = driver.apply(restore, now=at(2))
    [told] = reentry_findings(out)
    assert (told.subject_id, told.record_id) == ("A-1", "AE-2")
    assert "restored AE AE-1 (subject A-2)" in told.detail and "both now stand as SAEs" in told.detail
    assert day0(driver, "AE-2") == (True, at(1, 11))
    assert day0(driver, "AE-1", subject="A-2") == (True, at(0, 14))


# --- 4. an id the deleting subject does not hold and two others do -------------------------------------------------


def susar_in(subject: str, ae_id: str, received: datetime) -> Any:
    """`subject`'s serious, probable, unexpected infusion reaction `ae_id` (a SUSAR), no awareness date."""
    own = reaction(ae_id=ae_id, received=received, awareness_at=None)
    return own.model_copy(update={"subject": subject, "id": f"{subject}-{ae_id}-v1"})


def in_a3() -> list[Any]:
    return [enrol("A-3", "A", DAY0), dose("A-3", at(0))]


def ambiguous(signals: list[EnvelopeBase]) -> list[Any]:
    return [f.data for f in of_type(signals, "data_quality.flagged") if f.data.code == SAE_REPLACED_BY_AMBIGUOUS]


def ended(signals: list[EnvelopeBase], subject: str) -> list[Any]:
    return [f for f in reentry_findings(signals) if f.subject_id == subject and "no longer taken" in f.detail]


def linked_at_some_point(signals: list[EnvelopeBase], subject: str) -> bool:
    return any(
        s.subject == subject and s.type != "sae.withdrawn" and s.data.clock_from_ae_id == "AE-1"
        for s in sae_signals(signals, "AE-2")
    )


@pytest.mark.parametrize("batched", [False, True])
def test_an_id_two_other_subjects_hold_links_neither_in_any_order(
    protocol: Protocol, tmp_path: Path, batched: bool
) -> None:
    """A-2's AE-1 (a SUSAR, day 0 14:00) deleted on day 1 naming 'AE-2'; A-1 and A-3 each report a serious AE-2 the
    same day. In every order, one by one or together: neither AE-2 ends linked (each SUSAR day 0 is its own receipt),
    the stored state is the same, and A-2's site is asked once which AE re-enters AE-1. An AE-2 that was linked
    while it was the only one (A-3's arriving after the deletion and A-1's link) is told the link ended."""
    events = [
        susar_in("A-1", "AE-2", at(1, 11)),
        susar_in("A-3", "AE-2", at(1, 12)),
        typo_deletion(changed=at(1, 9)),
    ]
    states, linked = [], 0
    for n, order in enumerate(itertools.permutations(events)):
        steps = [in_a2() + in_a3(), [susar_in("A-2", "AE-1", at(0, 14))], list(order)]
        run = deliver(tmp_path, protocol, f"ambiguous-{batched}-{n}", steps, batched=batched, now=at(1, 12))
        assert (day0(run.driver, "AE-2"), day0(run.driver, "AE-2", subject="A-3")) == (
            (True, at(1, 11)),
            (True, at(1, 12)),
        ), n
        [asked] = ambiguous(run.signals)
        assert (asked.subject_id, asked.record_id) == ("A-2", "AE-1"), n
        assert "subjects A-1 and A-3 each hold one" in asked.detail, n
        for subject in ("A-1", "A-3"):
            told = ended(run.signals, subject)
            assert len(told) == int(linked_at_some_point(run.signals, subject)), (n, subject)
            assert all("now holds an AE AE-2 too" in f.detail for f in told), n
            linked += len(told)
        states.append(run.state)
    assert all(state == states[0] for state in states)
    assert linked == 4, (
        "linked while the only one, then ended: the two AE-2s on either side of the deletion, or both after it"
    )


def test_the_second_holder_arriving_after_the_link_ends_it(driver: Driver) -> None:
    """A-1's AE-2 linked to A-2's deleted AE-1 (SAE clock and SUSAR day 0 moved to day 0); then A-3 reports an AE-2:
    A-1's link ends (told in its finding thread; its SUSAR reports are reopened on its own day 0), A-3's AE-2 keeps
    its own clocks, and A-2's site is asked which AE re-enters AE-1."""
    driver.apply_all(in_a2() + in_a3(), now=at(0, 10))
    driver.apply(susar_in("A-2", "AE-1", at(0, 14)), now=at(0, 14))
    driver.apply(typo_deletion(changed=at(1, 9)), now=at(1, 9))
    [linked] = of_type(driver.apply(susar_in("A-1", "AE-2", at(1, 11)), now=at(1, 11)), "sae.detected")
    assert linked.data.awareness_at == at(0, 14) and day0(driver, "AE-2") == (True, at(0, 14))
    out = driver.apply(susar_in("A-3", "AE-2", at(1, 12)), now=at(1, 12))
    [told] = ended(out, "A-1")
    assert "no longer taken as the re-entry of AE AE-1 (subject A-2)" in told.detail
    assert "its own clock is 2026-03-03 11:00 UTC" in told.detail
    assert not [s for s in sae_signals(out, "AE-2") if s.subject == "A-1"], "notify keeps the earlier deadline"
    assert [s.data.change for s in susars(out, "AE-2") if s.subject == "A-1"] == ["withdrawn", "detected"]
    assert day0(driver, "AE-2") == (True, at(1, 11))
    [detected] = [s for s in of_type(out, "sae.detected") if s.subject == "A-3"]
    assert (detected.data.awareness_at, detected.data.clock_from_ae_id) == (at(1, 12), None)
    assert [a.subject_id for a in ambiguous(out)] == ["A-2"]


@pytest.mark.parametrize("batched", [False, True])
def test_the_deleting_subjects_own_ae_of_the_id_is_the_link_in_any_order(
    protocol: Protocol, tmp_path: Path, batched: bool
) -> None:
    """A-2's AE-1 deleted naming 'AE-2'; A-1 reports an AE-2, and A-2's own AE-2 comes too: the name is A-2's own
    (its AE-2 takes AE-1's day 0), A-1's AE-2 keeps its own, in every order; when A-1's was linked first (A-2's own
    arriving last), it is told the link ended. Nobody is asked which AE it is: the deleting subject's is."""
    events = [
        susar_in("A-1", "AE-2", at(1, 11)),
        susar_in("A-2", "AE-2", at(1, 12)),
        typo_deletion(changed=at(1, 9)),
    ]
    states, linked = [], 0
    for n, order in enumerate(itertools.permutations(events)):
        steps = [in_a2() + dosed(), [susar_in("A-2", "AE-1", at(0, 14))], list(order)]
        run = deliver(tmp_path, protocol, f"own-{batched}-{n}", steps, batched=batched, now=at(1, 12))
        assert (day0(run.driver, "AE-2"), day0(run.driver, "AE-2", subject="A-2")) == (
            (True, at(1, 11)),
            (True, at(0, 14)),
        ), n
        told = ended(run.signals, "A-1")
        assert len(told) == int(linked_at_some_point(run.signals, "A-1")), n
        assert all("subject A-2 now has an AE AE-2 of its own" in f.detail for f in told), n
        assert ambiguous(run.signals) == [], n
        linked += len(told)
        states.append(run.state)
    assert all(state == states[0] for state in states)
    assert linked == 2, "A-1's AE-2 linked before A-2's own came: the deletion first or second, then A-2's AE-2"
