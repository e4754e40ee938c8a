"""Clinical event streams for the benchmarks: a trial of subjects, each enrolled, dosed, then mostly labs.

Deterministic for a seed. Values are mostly normal with some grade 1-3 findings (these subjects enter with
cytopenias), and an AE every 25 events, a few of them grade 3 and possibly related (suspected DLTs).
"""

from __future__ import annotations

import random
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from services.ingest.normalise import CanonicalEvent, to_envelope
from shared.events import INBOUND_DATA, ClinicalEnvelopeBase, InboundHeader, message_key

TRIAL = "NCT07212335"
ARMS = ("A", "B", "C")
START = datetime(2026, 9, 1, 8, 0, tzinfo=UTC)
LABS: tuple[tuple[str, str, str, str, float, float], ...] = (
    # test, unit, lln, uln, typical low, typical high
    ("NEUT", "10^9/L", "1.8", "7.5", 0.4, 6.0),
    ("PLAT", "10^9/L", "150", "400", 20, 300),
    ("HGB", "g/L", "120", "160", 70, 150),
    ("ALT", "U/L", "7", "40", 10, 90),
    ("CREAT", "umol/L", "60", "110", 50, 160),
)


@dataclass(frozen=True)
class Message:
    key: bytes
    value: bytes
    urgent: bool = False


def envelope(event_id: str, kind: str, subject: str, data: dict[str, Any], at: datetime) -> ClinicalEnvelopeBase:
    header = InboundHeader.model_validate(
        {"id": event_id, "type": kind, "study": TRIAL, "site": "101", "subject": subject, "data": data}
    )
    event = CanonicalEvent(header=header, data=INBOUND_DATA[header.type].model_validate(data))
    return to_envelope("bench", event, at)


def subject_events(subject: str, count: int, rng: random.Random, *, labs_only: bool = False) -> list[Message]:
    """`count` events of one subject in the order a site would send them."""
    arm = ARMS[zlib.crc32(subject.encode()) % len(ARMS)]  # not hash(): salted per process
    enrolled = START + timedelta(days=rng.randint(0, 60))
    out: list[ClinicalEnvelopeBase] = []
    if not labs_only:
        enrolment = {"arm": arm, "enrolled_at": str(enrolled.date())}
        out.append(envelope(f"{subject}-enrol", "enrollment", subject, enrolment, enrolled))
        first_dose = enrolled + timedelta(days=1)
        dose = {"dose_id": f"{subject}-D1", "number": 1, "administered_at": first_dose.isoformat()}
        out.append(envelope(f"{subject}-dose1", "dose", subject, dose, first_dose))
    n = 0
    while len(out) < count:
        n += 1
        at = enrolled + timedelta(days=1, hours=6 * n)
        if not labs_only and n % 25 == 0:
            out.append(envelope(f"{subject}-ae{n}", "ae", subject, _ae(n, rng, at), at))
            continue
        test, unit, lln, uln, low, high = LABS[n % len(LABS)]
        value = Decimal(str(round(rng.uniform(low, high), 1)))
        lab = {
            "result_id": f"{subject}-L{n}",
            "test": test,
            "value": str(value),
            "unit": unit,
            "lln": lln,
            "uln": uln,
            "collected_at": at.isoformat(),
            "baseline": n <= len(LABS),
        }
        out.append(envelope(f"{subject}-lab{n}", "lab", subject, lab, at))
    key = message_key(TRIAL, subject)
    return [Message(key, e.model_dump_json().encode()) for e in out[:count]]


def _ae(n: int, rng: random.Random, at: datetime) -> dict[str, Any]:
    severe = rng.random() < 0.1
    return {
        "ae_id": f"AE-{n}",
        "version": 1,
        "term": rng.choice(["Fatigue", "Nausea", "Headache", "Pyrexia", "Rash maculo-papular"]),
        "grade": 3 if severe else rng.choice([1, 2]),
        "relatedness": "possible" if severe else "unlikely",
        "serious": False,
        "onset": str(at.date()),
    }


def trial_events(
    subjects: int, per_subject: int, *, seed: int = 11, labs_only: bool = False, first: int = 0
) -> list[Message]:
    """Subjects' streams interleaved round-robin, as many sites posting at once would be. `first`: the number of
    the first subject (another set of subjects of the same trial)."""
    rng = random.Random(seed)
    numbers = range(first, first + subjects)
    streams = [subject_events(f"101-{s:04d}", per_subject, rng, labs_only=labs_only) for s in numbers]
    return [stream[i] for i in range(per_subject) for stream in streams if i < len(stream)]


def serious_ae(subject: str, tag: str, at: datetime) -> Message:
    """A hospitalisation SAE: what must page at once."""
    data = {
        "ae_id": f"SAE-{tag}",
        "version": 1,
        "term": "Pneumonitis",
        "grade": 3,
        "serious": True,
        "seriousness": {"hospitalization": True},
        "relatedness": "possible",
        "onset": str(at.date()),
        "awareness_at": at.isoformat(),
    }
    e = envelope(f"{subject}-sae-{tag}", "ae", subject, data, at)
    return Message(message_key(TRIAL, subject), e.model_dump_json().encode(), urgent=True)
