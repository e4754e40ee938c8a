"""The SUSAR file through safety's consumer, in any order and batching: the physician's fatal pneumonitis and
the physician's whole stream, shuffled and cut into batches, end in the SUSAR file of the receipt order, and a
reordered delivery says so once (one detection, then `clock_earlier`), never a second detection."""

from __future__ import annotations

import random
from pathlib import Path

from shared.db import make_engine
from shared.protocol import Protocol
from tests.unit.safety.clinical import Driver, of_type
from tests.unit.safety.test_batch_physician import (
    NOW,
    Step,
    arm_a_dosed,
    deliver,
    fatal_pneumonitis,
    physician_stream,
    shuffle_keeping_record_order,
    snapshot,
)
from tests.unit.safety.test_batch_settle import apply_in_batches
from tests.unit.safety.test_clinical_rules import at


def test_every_order_and_cut_of_the_fatal_pneumonitis_ends_in_the_same_susar_file(
    protocol: Protocol, tmp_path: Path
) -> None:
    base: list[Step] = [arm_a_dosed("A-1")]
    expected = deliver(tmp_path, protocol, "in-order", [*base, fatal_pneumonitis("A-1")], batched=False)
    [case] = expected.state["susars"]
    assert case[3:] == (True, at(10), True, 3), "day 0 at the hospitalised v2, fatal, v3 signalled"
    for seed in range(6):
        versions = fatal_pneumonitis("A-1")
        random.Random(seed).shuffle(versions)
        cut = random.Random(seed).randint(1, 2)
        for batched in (False, True):
            run = deliver(
                tmp_path, protocol, f"s{seed}-{batched}", [*base, versions[:cut], versions[cut:]], batched=batched
            )
            assert run.state["susars"] == expected.state["susars"], (seed, batched)
            detected = of_type(run.signals, "susar.detected")
            assert len(detected) == 1, "one case, one detection, whatever the order"
            assert not of_type(run.signals, "susar.withdrawn")


def test_the_fatal_version_first_is_detected_fatal_then_its_day_0_moves_earlier(
    protocol: Protocol, tmp_path: Path
) -> None:
    v1, v2, v3 = fatal_pneumonitis("A-1")
    run = deliver(tmp_path, protocol, "reversed", [arm_a_dosed("A-1"), [v1], [v3, v2]], batched=False)
    [detected] = of_type(run.signals, "susar.detected")
    assert (detected.data.clock_start, detected.data.fatal_or_life_threatening) == (at(12), True)
    [earlier] = of_type(run.signals, "susar.updated")
    assert earlier.data.change == "clock_earlier"
    assert (earlier.data.clock_start, earlier.data.upgraded_at) == (at(10), at(12))
    assert "AE version 2" in earlier.data.clock_basis


def test_the_physicians_whole_stream_in_any_order_and_batching_ends_in_the_same_susar_files(
    protocol: Protocol, tmp_path: Path
) -> None:
    events = physician_stream()
    reference = deliver(tmp_path, protocol, "reference", [events], batched=False).state["susars"]
    assert [row[:2] for row in reference if row[3]] == [("A-1", "AE-1")]
    for seed in range(4):
        rng = random.Random(seed)
        shuffled = shuffle_keeping_record_order(events, rng)
        driver = Driver(make_engine(f"sqlite:///{tmp_path}/shuffled-{seed}.db"), protocol)
        sizes: list[int] = []
        while sum(sizes) < len(shuffled):
            sizes.append(rng.randint(1, 12))
        apply_in_batches(driver, shuffled, sizes, now=NOW)
        assert snapshot(driver.engine)["susars"] == reference, seed
