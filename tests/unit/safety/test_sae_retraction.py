"""An SAE whose AE the site takes back (entered in error, deleted) or restores, through safety's consumer.

Held to: only the site's retraction withdraws an SAE (ICH E2B(R3) nullification); a later non-serious version does
not (ICH E2A: seriousness, once reported, stays reportable); a restore brings the SAE back with the awareness it
always had (the 24 h clock never restarts later); the same data in any order and any batching ends in the same
state, and a retraction processed before the AE's first version means no SAE is ever signalled.
"""

from __future__ import annotations

import itertools
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlmodel import Session, select

from services.safety.models import AeSeriousness, RecordStatus
from services.safety.sae import SaeSignalKind, SaeState, assess_ae, reportable, status_change_signal
from services.safety.sae_retraction import VERSION_OF_RETRACTED_AE
from shared.db import make_engine
from shared.events import (
    AeData,
    ClinicalEnvelope,
    EnvelopeBase,
    RecordStatusChanged,
    RecordStatusData,
    deterministic_id,
)
from shared.protocol import Protocol
from tests.unit.safety.clinical import Driver, ae, of_type
from tests.unit.safety.test_batch_settle import apply_in_batches

T0 = datetime(2026, 3, 10, 8, 0, tzinfo=UTC)
HOSP = {"hospitalization": True}
SAE_TYPES = ("sae.detected", "sae.updated", "sae.withdrawn")


def hour(n: float) -> datetime:
    return T0 + timedelta(hours=n)


def pneumonitis(version: int, received: datetime, **data: Any) -> ClinicalEnvelope:
    payload: dict[str, Any] = {"seriousness": HOSP, "awareness_at": received - timedelta(hours=1)} | data
    return ae("S-1", version=version, received=received, **payload)  # type: ignore[no-any-return]


def site_status(value: str, changed: datetime, *, ae_id: str = "AE-1", reason: str | None = None) -> ClinicalEnvelope:
    data = RecordStatusData(record_type="ae", record_id=ae_id, status=value, reason=reason, changed_at=changed)  # type: ignore[arg-type]
    return RecordStatusChanged(
        id=deterministic_id("inbound", "status", ae_id, value, changed.isoformat()),
        source="/sources/edc",
        subject="S-1",
        time=changed,
        trialid="NCT07212335",
        siteid="SITE-1",
        receivedat=changed,
        senderid=f"status-{ae_id}-{value}-{changed.isoformat()}",
        data=data,
    )


def sae_signals(signals: list[EnvelopeBase]) -> list[tuple[str, datetime | None]]:
    """(type, awareness) of every SAE signal, in order."""
    found: list[Any] = [s for s in signals if str(getattr(s, "type", "")) in SAE_TYPES]
    return [(str(s.type), s.data.awareness_at) for s in found]


# --- the pure decision -----------------------------------------------------------------------------------------

SERIOUS = SaeState(frozenset({"hospitalization"}), 3, 1, None, T0, None, 1)
NOT_SERIOUS = SaeState(frozenset(), 2, 1, None)


@pytest.mark.parametrize(
    ("state", "was", "now", "expected"),
    [
        (SERIOUS, False, True, SaeSignalKind.WITHDRAWN),  # taken back
        (SERIOUS, True, False, SaeSignalKind.DETECTED),  # restored: the SAE comes back
        (SERIOUS, True, True, None),  # entered in error, then deleted: withdrawn once
        (SERIOUS, False, False, None),  # restored twice, or a restore of a record never taken back
        (NOT_SERIOUS, False, True, None),  # a non-serious AE has no SAE to withdraw
        (NOT_SERIOUS, True, False, None),
        (None, False, True, None),  # the status before any version: nothing was signalled
        (None, True, False, None),
    ],
)
def test_status_change_signal(state: SaeState | None, was: bool, now: bool, expected: SaeSignalKind | None) -> None:
    assert status_change_signal(state, was_taken_back=was, taken_back=now) is expected
    assert reportable(state, taken_back=now) is (state is not None and state.serious and not now)


def test_a_version_of_a_taken_back_ae_folds_its_awareness_but_signals_nothing() -> None:
    version = AeData(ae_id="AE-1", version=1, term="Pneumonitis", grade=3, seriousness=HOSP, awareness_at=hour(-5))  # type: ignore[arg-type]
    quiet = assess_ae(None, version, received_at=T0, taken_back=True)
    loud = assess_ae(None, version, received_at=T0)
    assert quiet.signal is None and loud.signal is SaeSignalKind.DETECTED
    assert quiet.state == loud.state and quiet.state.awareness_at == hour(-5), "a restore brings back this clock"


# --- through the consumer --------------------------------------------------------------------------------------


@pytest.fixture
def driver(engine: Engine, protocol: Protocol) -> Driver:
    return Driver(engine, protocol)


def test_taken_back_withdraws_the_sae_and_a_restore_brings_it_back_with_its_clock(driver: Driver) -> None:
    driver.apply(pneumonitis(1, hour(0)), now=hour(0))
    [withdrawn] = of_type(
        driver.apply(site_status("entered_in_error", hour(2), reason="duplicate of AE-2"), now=hour(2)), "sae.withdrawn"
    )
    data = withdrawn.data
    assert (data.ae_id, data.ae_version, data.status) == ("AE-1", 1, "entered_in_error")
    assert data.reason == "duplicate of AE-2"
    assert (data.awareness_at, data.changed_at, data.received_at) == (hour(-1), hour(2), hour(2))
    restored = driver.apply(site_status("restored", hour(30)), now=hour(30))
    assert sae_signals(restored) == [("sae.detected", hour(-1))], "the original awareness: the clock does not restart"


def test_a_retraction_before_the_first_version_never_opens_an_sae(driver: Driver) -> None:
    out = driver.apply(site_status("entered_in_error", hour(2)), now=hour(2))
    out += driver.apply_all([pneumonitis(1, hour(0)), pneumonitis(2, hour(1), grade=4)], now=hour(3))
    assert sae_signals(out) == []
    assert not of_type(out, "data_quality.flagged"), "versions the site sent before retracting: nothing to ask"
    assert sae_signals(driver.apply(site_status("restored", hour(5)), now=hour(5))) == [("sae.detected", hour(-1))]


def test_status_then_restore_then_versions_is_a_normal_sae(driver: Driver) -> None:
    out = driver.apply_all([site_status("entered_in_error", hour(0)), site_status("restored", hour(1))])
    out += driver.apply(pneumonitis(1, hour(2)), now=hour(2))
    assert sae_signals(out) == [("sae.detected", hour(1))]


def test_a_new_version_after_the_retraction_without_a_restore_is_stored_not_paged(driver: Driver) -> None:
    """The site's retraction stands until it restores the AE; a version sent after it is kept (a restore brings it
    back with it) and the site is asked to restore the AE or report the event under a new id."""
    driver.apply(pneumonitis(1, hour(0)), now=hour(0))
    driver.apply(site_status("deleted", hour(2)), now=hour(2))
    out = driver.apply(pneumonitis(2, hour(4), grade=5, outcome="fatal"), now=hour(4))
    assert sae_signals(out) == []
    [flag] = of_type(out, "data_quality.flagged")
    assert flag.data.code == VERSION_OF_RETRACTED_AE and "death" in flag.data.detail and "restore" in flag.data.detail
    [back] = of_type(driver.apply(site_status("restored", hour(6)), now=hour(6)), "sae.detected")
    assert (back.data.ae_version, back.data.grade, back.data.awareness_at) == (2, 5, hour(-1))
    assert "death" in back.data.criteria


@pytest.mark.parametrize("retraction_first", [True, False])
def test_a_version_sent_after_the_retraction_is_flagged_whichever_is_processed_first(
    protocol: Protocol, tmp_path: Path, retraction_first: bool
) -> None:
    """v1 (hour 0), the site's 'deleted' (hour 2), v2 sent at hour 4: the site is asked about v2 once, whether the
    retraction or v2 is processed first (the bulk lane may reorder them); no SAE is held open either way."""
    driver = Driver(make_engine(f"sqlite:///{tmp_path}/{retraction_first}.db"), protocol)
    retraction, v2 = site_status("deleted", hour(2)), pneumonitis(2, hour(4), grade=4)
    out = driver.apply(pneumonitis(1, hour(0)), now=hour(0))
    out += driver.apply_all([retraction, v2] if retraction_first else [v2, retraction], now=hour(5))
    flags = [f.data for f in of_type(out, "data_quality.flagged") if f.data.code == VERSION_OF_RETRACTED_AE]
    assert [(f.record_id, "version 2" in f.detail) for f in flags] == [("AE-1", True)]
    assert not held_open(out)


def test_entered_in_error_then_deleted_withdraws_once(driver: Driver) -> None:
    driver.apply(pneumonitis(1, hour(0)), now=hour(0))
    out = driver.apply_all([site_status("entered_in_error", hour(1)), site_status("deleted", hour(2))])
    assert [k for k, _ in sae_signals(out)] == ["sae.withdrawn"]
    out = driver.apply_all([site_status("restored", hour(3)), site_status("restored", hour(4))])
    assert [k for k, _ in sae_signals(out)] == ["sae.detected"]


def test_a_non_serious_follow_up_does_not_withdraw_the_sae(driver: Driver) -> None:
    """ICH E2A: once reported serious, the case stays reportable; only the site's retraction withdraws it."""
    driver.apply(pneumonitis(1, hour(0)), now=hour(0))
    out = driver.apply(pneumonitis(2, hour(5), seriousness=None, serious=False, grade=1), now=hour(5))
    assert "sae.withdrawn" not in [k for k, _ in sae_signals(out)]
    with Session(driver.engine) as session:
        assert session.exec(select(AeSeriousness)).one().criteria == ["hospitalization"]


def test_a_stale_retraction_changes_nothing(driver: Driver) -> None:
    """The site restored the AE at hour 5; its older 'entered in error' (hour 2) processed late does not stand."""
    driver.apply(pneumonitis(1, hour(0)), now=hour(0))
    driver.apply(site_status("restored", hour(5)), now=hour(5))
    assert sae_signals(driver.apply(site_status("entered_in_error", hour(2)), now=hour(6))) == []


def test_a_non_serious_ae_taken_back_signals_no_sae(driver: Driver) -> None:
    driver.apply(pneumonitis(1, hour(0), seriousness=None, grade=2), now=hour(0))
    assert sae_signals(driver.apply(site_status("entered_in_error", hour(1)), now=hour(1))) == []


# --- order independence ----------------------------------------------------------------------------------------


def stream() -> list[ClinicalEnvelope]:
    """v1 (hospitalised, hour 0), v2 (grade 4, hour 1), the site's 'entered in error' (hour 2), its restore (hour 3),
    a non-serious v3 (hour 4)."""
    return [
        pneumonitis(1, hour(0)),
        pneumonitis(2, hour(1), grade=4),
        site_status("entered_in_error", hour(2), reason="wrong subject"),
        site_status("restored", hour(3)),
        pneumonitis(3, hour(4), seriousness=None, grade=2),
    ]


def end_state(engine: Engine) -> tuple[Any, ...]:
    with Session(engine) as session:
        s = session.exec(select(AeSeriousness)).one()
        status = session.exec(select(RecordStatus)).one()
        return (s.criteria, s.max_grade, s.latest_version, s.awareness_at, s.first_serious_version, status.status)


def held_open(signals: list[EnvelopeBase]) -> bool:
    """What notify holds at the end: the last SAE signal is not a withdrawal (and there was one)."""
    kinds = [k for k, _ in sae_signals(signals)]
    return bool(kinds) and kinds[-1] != "sae.withdrawn"


@pytest.mark.parametrize("cut", [3, 4])
def test_shuffled_streams_end_in_the_same_state_with_the_same_sae_held(
    protocol: Protocol, tmp_path: Path, cut: int
) -> None:
    """Every order of the first `cut` events (the rest after), one per transaction or in random batches: the stored
    seriousness and status are the same, notify ends holding the SAE open exactly when it is reportable, and any
    SAE signalled carries the earliest awareness. Without the restore (cut=3), a retraction read first opens none."""
    events = stream()[:cut] if cut == 3 else stream()
    head, tail = events[:cut], events[cut:]
    rng = random.Random(cut)
    reference: tuple[Any, ...] | None = None
    for n, order in enumerate(itertools.permutations(head)):
        for batched in (False, True):
            engine = make_engine(f"sqlite:///{tmp_path}/{cut}-{n}-{batched}.db")
            driver = Driver(engine, protocol)
            stream_ = [*order, *tail]
            if batched:
                sizes = [rng.randint(1, 3) for _ in stream_]
                out = apply_in_batches(driver, stream_, sizes, now=hour(10))
            else:
                out = driver.apply_all(stream_, now=hour(10))
            state = end_state(engine)
            reference = reference or state
            assert state == reference, (order, batched)
            assert held_open(out) is (state[-1] == "restored"), (order, batched, sae_signals(out))
            if held_open(out):
                assert sae_signals(out)[-1][1] == hour(-1), "notify ends on one clock: the earliest awareness"
            if cut == 3 and isinstance(order[0], RecordStatusChanged):
                assert sae_signals(out) == [], "retracted before any version: never opened, never paged"
