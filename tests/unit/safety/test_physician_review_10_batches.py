"""A safety physician (review 10) against enrolment checks held to the end of a consumer batch
(`held_enrolment_checks`, `ClinicalBatch`): the claim is that the protocol deviations of enrolments are exactly those
of one event per transaction, for any batching. Tried with streams from NCT07212335's dose escalation (arm A one
infusion, B two, C four; 3+3, a suspected DLT holds escalation until reviewed): a suspected DLT in arm A downgraded in
the batch that enrols into B, a death from a related fatal AE and a withdrawal, a subject moved from arm A to B by
the site, an enrolment entered in error, same-day enrolments, re-deliveries, a subject whose next events arrive after
the enrolment, batches the consumer cuts at its transaction time limit, and all of it interleaved at random."""

from __future__ import annotations

import random
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

from sqlmodel import Session

from services.safety.clinical_events import ClinicalBatch
from shared.db import make_engine
from shared.events import ClinicalEnvelope, EnvelopeBase
from shared.protocol import Protocol
from tests.unit.safety.clinical import SIGNALS, Driver, ae_review, dose, enrol, of_type, status
from tests.unit.safety.test_clinical_rules import DAY0, at, neut, related_ae, subject_status
from tests.unit.safety.test_held_enrolment_checks import deviations, in_batches, interleaved, one_by_one

NOW = at(60)


def arm_a(*subjects: str) -> list[ClinicalEnvelope]:
    """Arm A's first cohort enrolled on day 0 and infused; week-4 visit done (ANC 2.5, AE review)."""
    return [
        e
        for s in subjects
        for e in (enrol(s, "A", DAY0), dose(s, at(0)), neut(s, f"{s}-W4", "2.5", 28), ae_review(s, at(28)))
    ]


def enrolment_kinds(signals: Sequence[EnvelopeBase], subject: str) -> list[str]:
    found = of_type(signals, "protocol.deviation")
    return sorted(s.data.kind for s in found if s.data.subject_id == subject and s.data.detail.startswith("enrolled "))


def every_split(protocol: Protocol, tmp_path: Path, events: Sequence[ClinicalEnvelope], seed: int) -> None:
    """The enrolments' deviations in one batch, in random splits, told up front or not, equal one by one's."""
    expected = deviations(one_by_one(protocol, tmp_path / "single.db", events))
    rng = random.Random(seed)
    splits = [[len(events)], *(_random_sizes(len(events), rng) for _ in range(3))]
    for n, sizes in enumerate(splits):
        for known in (True, False):
            got = deviations(in_batches(protocol, tmp_path / f"b{n}-{known}.db", events, sizes, known=known))
            assert got == expected, (sizes, known)


def _random_sizes(total: int, rng: random.Random) -> list[int]:
    sizes: list[int] = []
    while sum(sizes) < total:
        sizes.append(rng.randint(1, 6))
    return sizes


def cut_by_time(
    protocol: Protocol, path: Path, events: Sequence[ClinicalEnvelope], cuts: Sequence[int]
) -> list[EnvelopeBase]:
    """What `TransactionalHandler._commit` does when a transaction runs out of time: the batch is opened with every
    event still to do, applies only a prefix (`cuts`: how many each time), finishes, and the rest opens the next."""
    engine = Driver(make_engine(f"sqlite:///{path}"), protocol).engine
    out: list[EnvelopeBase] = []
    rest = list(events)
    for cut in [*cuts, len(events)]:
        if not rest:
            break
        with Session(engine) as session, session.begin():
            batch = ClinicalBatch(session, NOW, protocol=protocol, signals_topic=SIGNALS, envelopes=rest)
            for envelope in rest[:cut]:
                out += [o.envelope for o in batch.apply(envelope)]
            out += [o.envelope for _, o in batch.finish()]
        rest = rest[cut:]
    return out


def test_enrolment_into_b_while_a_suspected_dlt_is_downgraded_later_in_the_batch(
    protocol: Protocol, tmp_path: Path
) -> None:
    """A-1's related grade 3 pneumonitis on day 9 is a suspected DLT: arm A awaits review. B-1 is enrolled on day 10;
    later in the same delivery the investigator's version 2 says 'not related' (the suspicion ends). When B-1 was
    enrolled the arm below was under review: the paging deviation must reach the officer however the consumer
    batched it, exactly as one event per transaction (the 3 a.m. question: who let B-1 in?)."""
    events = [
        *arm_a("A-1", "A-2", "A-3"),
        related_ae("A-1", DAY0 + timedelta(days=9)),
        enrol("B-1", "B", DAY0 + timedelta(days=10)),
        related_ae("A-1", DAY0 + timedelta(days=9), version=2, relatedness="not_related"),
    ]
    single = one_by_one(protocol, tmp_path / "s.db", events)
    assert enrolment_kinds(single, "B-1") == ["enrolled_above_arm_awaiting_dlt_review"]
    every_split(protocol, tmp_path, events, seed=1)


def test_enrolment_into_b_after_a_death_and_a_withdrawal_in_arm_a(protocol: Protocol, tmp_path: Path) -> None:
    """A-2 dies on day 12 of a related grade 5 pneumonitis (a DLT) and A-3 withdraws consent on day 5 before the
    week-4 visit (not evaluable): B-1 is then enrolled on day 30. The enrolment is above an arm with a DLT under
    review, whatever the batching; the death and the withdrawal come in the batch before B-1's enrolment and
    nothing more of them follows (the checks wait for their settle)."""
    events = [
        *[e for s in ("A-1", "A-2", "A-3") for e in (enrol(s, "A", DAY0), dose(s, at(0)))],
        subject_status("A-3", "withdrawn", DAY0 + timedelta(days=5)),
        related_ae("A-2", DAY0 + timedelta(days=12), grade=5, seriousness={"death": True}, outcome="fatal"),
        subject_status("A-2", "died", DAY0 + timedelta(days=12)),
        enrol("B-1", "B", DAY0 + timedelta(days=30)),
    ]
    single = one_by_one(protocol, tmp_path / "s.db", events)
    assert "enrolled_above_arm_awaiting_dlt_review" in enrolment_kinds(single, "B-1")
    every_split(protocol, tmp_path, events, seed=2)


def test_a_subject_moved_from_a_to_b_and_an_enrolment_into_a_on_the_same_day(
    protocol: Protocol, tmp_path: Path
) -> None:
    """Arm A has A-1..A-3. The site corrects A-3's arm to B (randomisation slip) and, the same day, enrols A-4 into
    A: A-3's move frees a place in arm A but it jumps arm A's first cohort (B-enrolment above an arm not yet cleared).
    Both enrolments' deviations, in any batching, are those of one by one."""
    events = [
        *[e for s in ("A-1", "A-2", "A-3") for e in (enrol(s, "A", DAY0), dose(s, at(0)))],
        enrol("A-3", "B", DAY0, sender="arm-corrected"),
        enrol("A-4", "A", DAY0 + timedelta(days=1)),
        enrol("B-2", "B", DAY0 + timedelta(days=1)),
    ]
    single = one_by_one(protocol, tmp_path / "s.db", events)
    assert enrolment_kinds(single, "A-3"), "moving a subject above an uncleared arm is a deviation"
    every_split(protocol, tmp_path, events, seed=3)


def test_an_enrolment_entered_in_error_between_two_enrolments_in_one_batch(protocol: Protocol, tmp_path: Path) -> None:
    """A-1..A-4 enrolled into A (A-4 is over the first cohort); A-2's enrolment is then marked entered in error, and
    A-5 is enrolled. One by one, A-4 is over capacity and A-5 is not (A-2's place is free again); batched, the same."""
    events: list[ClinicalEnvelope] = [
        *[enrol(f"A-{n}", "A", DAY0 + timedelta(days=n)) for n in (1, 2, 3, 4)],
        status("A-2", "enrollment", "A-2"),
        enrol("A-5", "A", DAY0 + timedelta(days=6)),
    ]
    single = one_by_one(protocol, tmp_path / "s.db", events)
    assert enrolment_kinds(single, "A-4") == ["over_cohort_size"]
    every_split(protocol, tmp_path, events, seed=4)


def test_a_subjects_later_events_arriving_after_the_enrolment_in_the_batch(protocol: Protocol, tmp_path: Path) -> None:
    """B-1 is enrolled on day 10 between A-1's suspected DLT and A-1's later data in the same batch (its week-4 ANC
    and AE review, then the AE taken back by the site): the enrolment reads A-1 as the DLT left it (settled first),
    not as the end of the batch does; the paging deviation stands in any batching."""
    events = [
        *arm_a("A-2", "A-3"),
        enrol("A-1", "A", DAY0),
        dose("A-1", at(0)),
        related_ae("A-1", DAY0 + timedelta(days=9)),
        enrol("B-1", "B", DAY0 + timedelta(days=10)),
        neut("A-1", "A-1-W4", "2.5", 28),
        ae_review("A-1", at(28)),
        status("A-1", "ae", "AE-1"),
    ]
    single = one_by_one(protocol, tmp_path / "s.db", events)
    assert enrolment_kinds(single, "B-1") == ["enrolled_above_arm_awaiting_dlt_review"]
    every_split(protocol, tmp_path, events, seed=5)


def test_re_deliveries_in_one_batch(protocol: Protocol, tmp_path: Path) -> None:
    """The EDC re-sends A-1's DLT AE and B-1's enrolment under new delivery ids in the same poll (and the very same
    event twice): the re-sends change nothing, and the one deviation of B-1's enrolment is raised once, as one by
    one (a duplicate page at 3 a.m. erodes trust in every page)."""
    ae1 = related_ae("A-1", DAY0 + timedelta(days=9))
    b1 = enrol("B-1", "B", DAY0 + timedelta(days=10))
    events = [
        *arm_a("A-1", "A-2", "A-3"),
        ae1,
        b1,
        ae1.model_copy(update={"id": f"{ae1.id}-again"}),
        b1.model_copy(update={"id": f"{b1.id}-again"}),
        b1,
    ]
    single = one_by_one(protocol, tmp_path / "s.db", events)
    assert enrolment_kinds(single, "B-1") == ["enrolled_above_arm_awaiting_dlt_review"]
    every_split(protocol, tmp_path, events, seed=6)


def stream() -> dict[str, list[ClinicalEnvelope]]:
    """Every subject's own events, in order: the cases above together."""
    per: dict[str, list[ClinicalEnvelope]] = {}
    for s in ("A-1", "A-2", "A-3"):
        per[s] = [enrol(s, "A", DAY0), dose(s, at(0))]
    per["A-1"] += [
        related_ae("A-1", DAY0 + timedelta(days=9)),
        related_ae("A-1", DAY0 + timedelta(days=9), version=2, relatedness="not_related"),
    ]
    per["A-2"] += [
        related_ae("A-2", DAY0 + timedelta(days=12), ae_id="AE-2", grade=5, seriousness={"death": True}),
        subject_status("A-2", "died", DAY0 + timedelta(days=12)),
    ]
    per["A-3"] += [enrol("A-3", "B", DAY0 + timedelta(days=2), sender="arm-corrected")]
    per["A-4"] = [enrol("A-4", "A", DAY0 + timedelta(days=3)), status("A-4", "enrollment", "A-4")]
    per["A-5"] = [enrol("A-5", "A", DAY0 + timedelta(days=4))]
    per["B-1"] = [enrol("B-1", "B", DAY0 + timedelta(days=10)), dose("B-1", at(10))]
    per["B-2"] = [enrol("B-2", "B", DAY0 + timedelta(days=10))]
    per["C-1"] = [enrol("C-1", "C", DAY0 + timedelta(days=13))]
    return per


def test_the_whole_escalation_interleaved_in_any_batching_and_cut_by_the_time_limit(
    protocol: Protocol, tmp_path: Path
) -> None:
    """All of it at once, the subjects' streams interleaved at random (what partitions allow), batched at random,
    told up front or not, and batches cut by the consumer's transaction time limit (opened with every event still to
    do, finished after a prefix): the enrolments' deviations never differ from one event per transaction."""
    seen: set[str] = set()
    for seed in range(5):
        rng = random.Random(seed)
        events = interleaved(rng, stream())
        expected = deviations(one_by_one(protocol, tmp_path / f"{seed}-single.db", events))
        seen |= {kind for _, kind, _ in expected}
        got = deviations(
            in_batches(protocol, tmp_path / f"{seed}-b.db", events, _random_sizes(len(events), rng), known=True)
        )
        assert got == expected, seed
        cuts = [rng.randint(1, 5) for _ in range(6)]
        assert deviations(cut_by_time(protocol, tmp_path / f"{seed}-cut.db", events, cuts)) == expected, (seed, cuts)
    assert {"enrolled_above_arm_awaiting_dlt_review", "over_cohort_size"} <= seen, seen
