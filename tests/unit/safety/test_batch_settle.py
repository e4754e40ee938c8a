"""Safety's consumer batch (`ClinicalBatch`): each subject the batch changed is reassessed once, at the end, from
its stored data. The same data must end in the same state whether it comes one event per transaction, in one
batch, or in any split of batches, in any order; and an enrolment must still see the arms as the events before it
left them."""

from __future__ import annotations

import random
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine
from sqlmodel import Session, select

from services.safety.clinical_events import ClinicalBatch
from services.safety.models import (
    AcuteReactionRow,
    AeSeriousness,
    CohortState,
    DltRecord,
    LabTermState,
    ResponseStateRow,
    SubjectOutcomeRow,
)
from shared.db import make_engine
from shared.events import ClinicalEnvelope, EnvelopeBase
from shared.protocol import Protocol
from tests.unit.safety.clinical import SIGNALS, Driver, ae, ae_review, dose, enrol, lab, of_type, status
from tests.unit.safety.test_clinical_rules import DAY0, at, related_ae


def apply_in_batches(
    driver: Driver, envelopes: Sequence[ClinicalEnvelope], sizes: Sequence[int], *, now: Any
) -> list[EnvelopeBase]:
    """What the consumer does with a polled batch: one transaction, each record's rule, then the deferred step."""
    out: list[EnvelopeBase] = []
    start = 0
    for size in sizes:
        chunk = envelopes[start : start + size]
        start += size
        with Session(driver.engine) as session, session.begin():
            batch = ClinicalBatch(session, now, protocol=driver.protocol, signals_topic=SIGNALS, envelopes=chunk)
            for envelope in chunk:
                out += [o.envelope for o in batch.apply(envelope)]
            out += [o.envelope for _, o in batch.finish()]
    assert start >= len(envelopes)
    return out


def random_sizes(total: int, rng: random.Random) -> list[int]:
    sizes = []
    while sum(sizes) < total:
        sizes.append(rng.randint(1, 9))
    return sizes


def trial_stream() -> list[ClinicalEnvelope]:
    """Arms A and B: baselines, infusions, visits with labs and AE reviews, a suspected DLT (related grade 3), a
    serious AE that gets worse, an infusion reaction, a neutropenia, and a result the site took back."""
    events: list[ClinicalEnvelope] = []
    plans = {"A-1": ("A", 1), "A-2": ("A", 1), "A-3": ("A", 1), "B-1": ("B", 2)}
    for subject, (arm, infusions) in plans.items():
        events.append(enrol(subject, arm, DAY0))
        events += [
            lab(subject, result_id=f"{subject}-N0", test="NEUT", value="0.9", lln="2.0", collected_at=at(-2)),
            lab(subject, result_id=f"{subject}-P0", test="PLAT", value="25", collected_at=at(-2), baseline=True),
        ]
        events += [dose(subject, at(7 * n), number=n + 1) for n in range(infusions)]
        for day in (7, 14, 28):
            value = "0.3" if (subject, day) == ("A-2", 14) else "2.5"
            events.append(
                lab(subject, result_id=f"{subject}-N{day}", test="NEUT", value=value, lln="2.0", collected_at=at(day))
            )
            events.append(ae_review(subject, at(day)))
    events.append(related_ae("A-1", DAY0 + timedelta(days=9)))
    events.append(ae("A-3", ae_id="AE-7", term="Pneumonitis", grade=2, onset=str(DAY0 + timedelta(days=3))))
    events.append(
        ae(
            "A-3",
            ae_id="AE-7",
            version=2,
            term="Pneumonitis",
            grade=3,
            onset=str(DAY0 + timedelta(days=3)),
            serious=True,
            seriousness={"hospitalization": True},
        )
    )
    reaction = {"ae_id": "AE-IR", "term": "Infusion related reaction", "onset_at": at(7, hour=11).isoformat()}
    events += [ae("B-1", version=1, grade=2, **reaction), ae("B-1", version=2, grade=3, **reaction)]
    events.append(status("B-1", "lab", "B-1-N14"))
    return events


def final_state(engine: Engine) -> Any:
    with Session(engine) as session:

        def rows(model: Any, *fields: str) -> list[tuple[Any, ...]]:
            return sorted(tuple(getattr(r, f) for f in fields) for r in session.exec(select(model)))

        return {
            "outcomes": rows(
                SubjectOutcomeRow,
                "subject_id",
                "outcome",
                "dlt_confirmed",
                "dlt_suspected",
                "infusions_given",
                "evaluable_at",
                "changes_at",
            ),
            "dlts": [
                r for r in rows(DltRecord, "subject_id", "ae_id", "state", "grade", "criterion") if r[2] != "withdrawn"
            ],
            "arms": rows(CohortState, "arm", "decision", "enrolled", "evaluable", "dlt_confirmed", "dlt_suspected"),
            "saes": rows(AeSeriousness, "subject_id", "ae_id", "max_grade", "latest_version"),
            "terms": rows(LabTermState, "subject_id", "term", "baseline_grade"),
            "acute": rows(AcuteReactionRow, "subject_id", "ae_id", "grade", "dose_id"),
            "response": rows(ResponseStateRow, "subject_id", "point", "level"),
        }


def fresh(tmp_path: Path, name: str, protocol: Protocol) -> Driver:
    return Driver(make_engine(f"sqlite:///{tmp_path}/{name}.db"), protocol)


def test_batches_of_any_size_end_where_one_event_per_transaction_ends(protocol: Protocol, tmp_path: Path) -> None:
    events = trial_stream()
    now = at(40)
    one_by_one = fresh(tmp_path, "one-by-one", protocol)
    one_by_one.apply_all(events, now=now)
    expected = final_state(one_by_one.engine)
    assert [(d[0], d[2]) for d in expected["dlts"]] == [
        ("A-1", "suspected"),
        ("A-2", "suspected"),
        ("A-3", "suspected"),
        ("B-1", "suspected"),
    ]
    assert expected["arms"][0][:2] == ("A", "hold"), "three suspected DLTs in arm A"
    assert expected["acute"] == [("B-1", "AE-IR", 3, "B-1-D2")], "the reaction after B-1's second infusion"
    for seed, sizes in [
        ("whole", [len(events)]),
        *((f"seed-{s}", random_sizes(len(events), random.Random(s))) for s in range(4)),
    ]:
        driver = fresh(tmp_path, f"batches-{seed}", protocol)
        apply_in_batches(driver, events, sizes, now=now)
        assert final_state(driver.engine) == expected, f"batches {seed}: {sizes}"


def test_shuffled_and_batched_ends_in_the_same_state(protocol: Protocol, tmp_path: Path) -> None:
    events = trial_stream()
    now = at(40)
    in_order = fresh(tmp_path, "in-order", protocol)
    in_order.apply_all(events, now=now)
    expected = final_state(in_order.engine)
    for seed in range(4):
        rng = random.Random(seed)
        shuffled = list(events)
        rng.shuffle(shuffled)
        driver = fresh(tmp_path, f"shuffled-{seed}", protocol)
        apply_in_batches(driver, shuffled, random_sizes(len(shuffled), rng), now=now)
        state = final_state(driver.engine)
        for part in ("outcomes", "dlts", "arms", "saes", "acute", "response"):
            assert state[part] == expected[part], f"order {seed}: {part}"


def test_record_signals_are_the_same_in_a_batch(protocol: Protocol, tmp_path: Path) -> None:
    """A record's own signals (the SAE, a lab toxicity, the acute reaction at each worse grade) are the same however
    it is batched."""
    events = trial_stream()
    now = at(40)
    single = fresh(tmp_path, "single", protocol).apply_all(events, now=now)
    batched = apply_in_batches(fresh(tmp_path, "batched", protocol), events, [len(events)], now=now)

    def kinds(signals: list[EnvelopeBase], kind: str) -> list[str]:
        return sorted(str(getattr(s.data, "ae_id", getattr(s.data, "result_id", ""))) for s in of_type(signals, kind))

    for kind in ("sae.detected", "sae.updated", "lab.toxicity", "acute_reaction.detected", "dlt.suspected"):
        assert kinds(batched, kind) == kinds(single, kind), kind
    assert of_type(batched, "sae.detected"), "the stream has an SAE"
    assert [s.data.grade for s in of_type(batched, "acute_reaction.detected")] == [2, 3]


def test_an_enrolment_sees_the_arm_as_the_events_before_it_in_the_batch_left_it(
    protocol: Protocol, tmp_path: Path
) -> None:
    """A-1's suspected DLT and B-1's enrolment arrive in one batch: B-1 is enrolled above an arm awaiting its DLT
    review (a paging deviation), exactly as if each had been its own transaction."""
    driver = fresh(tmp_path, "enrolment", protocol)
    for subject in ("A-1", "A-2", "A-3"):
        driver.apply_all([enrol(subject, "A", DAY0), dose(subject, at(0))], now=at(1))
    out = apply_in_batches(
        driver,
        [related_ae("A-1", DAY0 + timedelta(days=9)), enrol("B-1", "B", DAY0 + timedelta(days=10))],
        [2],
        now=at(10),
    )
    [deviation] = of_type(out, "protocol.deviation")
    assert deviation.data.kind == "enrolled_above_arm_awaiting_dlt_review" and deviation.data.pages
    assert [s.data.decision for s in of_type(out, "cohort.decision") if s.data.arm == "A"] == ["awaiting_dlt_review"]


def test_a_subject_changed_many_times_in_a_batch_is_reassessed_once(
    protocol: Protocol, tmp_path: Path, monkeypatch: Any
) -> None:
    from services.safety import protocol_engine

    calls: list[str] = []
    original = protocol_engine.reassess_subject

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(kwargs["subject_id"])
        return original(*args, **kwargs)

    driver = fresh(tmp_path, "once", protocol)
    events = [e for e in trial_stream() if e.subject in ("A-1", "A-2")]
    enrolments = [e for e in events if e.type == "subject.enrolled"]
    driver.apply_all(enrolments, now=at(1))
    monkeypatch.setattr(protocol_engine, "reassess_subject", counting)
    rest = [e for e in events if e not in enrolments]
    apply_in_batches(driver, rest, [len(rest)], now=at(40))
    assert sorted(calls) == ["A-1", "A-2"]
    assert {r[0] for r in final_state(driver.engine)["outcomes"]} == {"A-1", "A-2"}


def test_an_enrolment_backfill_counts_the_subjects_enrolled_before_it_and_settles_each_once(
    protocol: Protocol, tmp_path: Path, monkeypatch: Any
) -> None:
    """Seven enrolments into arm A in one batch: each is checked against the arm with the ones before it counted
    (over the cohort size, then over capacity), exactly as one per transaction; each new subject is reassessed
    once, at the end, not also before each next enrolment."""
    from services.safety import protocol_engine

    enrolments = [enrol(f"A-{n}", "A", DAY0 + timedelta(days=n)) for n in range(1, 8)]
    single = fresh(tmp_path, "single", protocol)
    expected_signals = single.apply_all(enrolments, now=at(10))
    calls: list[str] = []
    original = protocol_engine.reassess_subject

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(kwargs["subject_id"])
        return original(*args, **kwargs)

    monkeypatch.setattr(protocol_engine, "reassess_subject", counting)
    batched = fresh(tmp_path, "batched", protocol)
    out = apply_in_batches(batched, enrolments, [len(enrolments)], now=at(10))

    def deviations(signals: list[EnvelopeBase]) -> list[tuple[str, str]]:
        return sorted((s.data.subject_id, s.data.kind) for s in of_type(signals, "protocol.deviation"))

    assert deviations(out) == deviations(expected_signals)
    assert {kind for _, kind in deviations(out)} >= {"over_cohort_size", "arm_over_capacity"}
    assert sorted(calls) == [f"A-{n}" for n in range(1, 8)]
    assert final_state(batched.engine) == final_state(single.engine)
