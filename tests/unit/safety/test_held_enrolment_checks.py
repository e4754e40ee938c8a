"""An enrolment's check held to the end of its batch (`held_enrolment_checks`) must see exactly what settling the
subjects before it would have shown: the same deviations as one event per transaction, in any batching, whether
the batch knows its events up front (the consumer) or not (a caller applying more), and with fewer settle rounds
when the subjects changed before an enrolment have nothing more in the batch (a poll read partition by
partition)."""

from __future__ import annotations

import random
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import Session

from services.safety import clinical_events, subject_store
from services.safety.clinical_events import ClinicalBatch
from shared.db import make_engine
from shared.events import ClinicalEnvelope, EnvelopeBase
from shared.protocol import Protocol
from tests.unit.safety.clinical import SIGNALS, Driver, dose, enrol, lab, of_type
from tests.unit.safety.test_batch_settle import random_sizes
from tests.unit.safety.test_clinical_rules import DAY0, at, related_ae

NOW = at(60)


def per_subject() -> dict[str, list[ClinicalEnvelope]]:
    """Arm A fills and draws a suspected DLT (A-1) and a second one later (A-2); B and C are enrolled around them,
    one of them (B-1) while A's DLT awaits review, one (A-4) into a full arm."""
    streams: dict[str, list[ClinicalEnvelope]] = {}
    for n in (1, 2, 3):
        subject = f"A-{n}"
        streams[subject] = [enrol(subject, "A", DAY0), dose(subject, at(0))]
    streams["A-1"].append(related_ae("A-1", DAY0 + timedelta(days=9)))
    streams["A-2"] += [
        lab("A-2", result_id="A-2-N14", test="NEUT", value="0.3", lln="2.0", collected_at=at(14)),
        related_ae("A-2", DAY0 + timedelta(days=20), ae_id="AE-2"),
    ]
    streams["B-1"] = [enrol("B-1", "B", DAY0 + timedelta(days=10)), dose("B-1", at(10))]
    streams["A-4"] = [enrol("A-4", "A", DAY0 + timedelta(days=12))]
    streams["B-2"] = [enrol("B-2", "B", DAY0 + timedelta(days=25))]
    streams["C-1"] = [enrol("C-1", "C", DAY0 + timedelta(days=40))]
    return streams


def interleaved(rng: random.Random, streams: dict[str, list[ClinicalEnvelope]] | None = None) -> list[ClinicalEnvelope]:
    """The subjects' streams (`per_subject` by default) merged at random, each subject's own order kept (what a
    topic's partitions allow)."""
    queues = {subject: list(events) for subject, events in (streams or per_subject()).items()}
    out: list[ClinicalEnvelope] = []
    while queues:
        subject = rng.choice(sorted(queues))
        out.append(queues[subject].pop(0))
        if not queues[subject]:
            del queues[subject]
    return out


def by_partition(partitions: int) -> list[ClinicalEnvelope]:
    """Each partition's subjects in turn, all of one partition's events before the next's (a poll's order)."""
    streams = per_subject()
    subjects = sorted(streams)
    return [e for p in range(partitions) for s in subjects[p::partitions] for e in streams[s]]


def deviations(signals: Sequence[EnvelopeBase]) -> list[tuple[str, str, str]]:
    """The enrolments' deviations (a settle's own, such as screening data missing, name the event that settled it,
    which batching moves)."""
    found = of_type(signals, "protocol.deviation")
    return sorted((s.id, s.data.kind, s.data.detail) for s in found if s.data.detail.startswith("enrolled "))


def in_batches(
    protocol: Protocol, path: Path, events: Sequence[ClinicalEnvelope], sizes: Sequence[int], *, known: bool
) -> list[EnvelopeBase]:
    """`known`: each batch is told its events up front, as the consumer does; otherwise it learns them one by one."""
    engine = Driver(make_engine(f"sqlite:///{path}"), protocol).engine  # its tables made
    out: list[EnvelopeBase] = []
    start = 0
    for size in sizes:
        chunk = events[start : start + size]
        start += size
        with Session(engine) as session, session.begin():
            batch = ClinicalBatch(
                session, NOW, protocol=protocol, signals_topic=SIGNALS, envelopes=chunk if known else ()
            )
            for envelope in chunk:
                out += [o.envelope for o in batch.apply(envelope)]
            out += [o.envelope for _, o in batch.finish()]
    return out


def one_by_one(protocol: Protocol, path: Path, events: Sequence[ClinicalEnvelope]) -> list[EnvelopeBase]:
    return Driver(make_engine(f"sqlite:///{path}"), protocol).apply_all(events, now=NOW)


@pytest.mark.parametrize("known", [True, False], ids=["known", "learnt"])
def test_held_checks_find_what_one_event_per_transaction_finds(protocol: Protocol, tmp_path: Path, known: bool) -> None:
    orders = [("partitions-2", by_partition(2)), ("partitions-3", by_partition(3))]
    orders += [(f"seed-{seed}", interleaved(random.Random(seed))) for seed in range(6)]
    kinds: set[str] = set()
    for name, events in orders:
        expected = deviations(one_by_one(protocol, tmp_path / f"{name}-single.db", events))
        kinds |= {kind for _, kind, _ in expected}
        rng = random.Random(name)
        for split, sizes in [("whole", [len(events)]), ("random", random_sizes(len(events), rng))]:
            got = deviations(in_batches(protocol, tmp_path / f"{name}-{split}-{known}.db", events, sizes, known=known))
            assert got == expected, f"{name}, {split} {sizes}"
    assert "enrolled_above_arm_awaiting_dlt_review" in kinds, "the stream must make held checks matter"
    assert len(kinds) >= 2, kinds


def test_a_poll_read_partition_by_partition_settles_its_subjects_once(
    protocol: Protocol, tmp_path: Path, monkeypatch: Any
) -> None:
    """New subjects of two partitions in one batch: the second partition's enrolments wait for the first's
    subjects rather than settle them first, so each subject's stored data is loaded once, in one round."""
    rounds: list[set[str]] = []
    original = subject_store.load_subject_states

    def counting(session: Session, *, trial_id: str, subject_ids: Any) -> Any:
        rounds.append(set(subject_ids))
        return original(session, trial_id=trial_id, subject_ids=subject_ids)

    monkeypatch.setattr(subject_store, "load_subject_states", counting)
    events = by_partition(2)
    expected = deviations(one_by_one(protocol, tmp_path / "single.db", events))
    rounds.clear()
    got = deviations(in_batches(protocol, tmp_path / "batch.db", events, [len(events)], known=True))
    assert got == expected and expected
    assert len(rounds) == 1, rounds


def test_a_subject_waited_for_that_changes_again_is_settled_first(
    protocol: Protocol, tmp_path: Path, monkeypatch: Any
) -> None:
    """Told nothing up front, a batch holds B-1's check waiting for A-1 (its suspected DLT); A-1's next event then
    settles A-1 before it changes: the check reads A-1 as the DLT left it, not as the later events do."""
    settled: list[str] = []
    original = clinical_events.ClinicalBatch._settle_subjects

    def spying(self: ClinicalBatch, *, keep: Any = ()) -> None:
        settled.extend(s for s in self._pending if s not in keep)
        original(self, keep=keep)

    monkeypatch.setattr(clinical_events.ClinicalBatch, "_settle_subjects", spying)
    setup = [e for n in (1, 2, 3) for e in (enrol(f"A-{n}", "A", DAY0), dose(f"A-{n}", at(0)))]
    events = [
        *setup,
        related_ae("A-1", DAY0 + timedelta(days=9)),
        enrol("B-1", "B", DAY0 + timedelta(days=10)),
        lab("A-1", result_id="A-1-N14", test="NEUT", value="2.5", lln="2.0", collected_at=at(14)),
    ]
    expected = deviations(one_by_one(protocol, tmp_path / "single.db", events))
    assert [kind for _, kind, _ in expected] == ["enrolled_above_arm_awaiting_dlt_review"]
    settled.clear()
    got = deviations(in_batches(protocol, tmp_path / "batch.db", events, [len(setup), 3], known=False))
    assert got == expected
    assert settled[-3:] == ["A-1", "B-1", "A-1"], "A-1 before its lab (for the held check), then both at the end"
