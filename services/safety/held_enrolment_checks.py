"""Enrolment checks held to the end of a consumer batch.

An enrolment is judged on the other subjects' outcomes as the events before it in the batch left them. A subject
changed before the enrolment and with nothing more to come in the batch ends the batch as it stood then, so its
outcome can be read once the batch settles it, rather than settled (a round of queries for those subjects) before
each enrolment. A batch of new subjects read partition by partition had one such round per partition: about a
sixth of a batch on PostgreSQL.

A held check keeps the outcomes it saw of every other subject (they may change later in the batch) and the
subjects it waits for; each is resolved when that subject is settled, whenever that happens, so the check sees
exactly what settling before the enrolment would have shown it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from services.safety.protocol_engine import OutcomeFacts
from shared.events import SubjectEnrolled


@dataclass
class HeldCheck:
    envelope: SubjectEnrolled
    facts: dict[str, OutcomeFacts]
    """Subject id -> its outcome as the enrolment's check reads it."""
    waiting: set[str] = field(default_factory=set)
    """Subjects whose outcome at the enrolment is the one their next settle stores."""


class HeldChecks:
    def __init__(self) -> None:
        self._held: list[HeldCheck] = []
        self._waiting: set[str] = set()

    def __contains__(self, subject_id: object) -> bool:
        """Whether a held check still waits for this subject's settle."""
        return subject_id in self._waiting

    def hold(self, envelope: SubjectEnrolled, facts: dict[str, OutcomeFacts], waiting: Iterable[str]) -> None:
        check = HeldCheck(envelope, dict(facts), set(waiting))
        self._held.append(check)
        self._waiting |= check.waiting

    def settled(self, subject_id: str, facts: OutcomeFacts | None) -> None:
        """The subject was settled: `facts`, its outcome as stored now (None: none stored) is what each check
        waiting for it reads of it."""
        if subject_id not in self._waiting:
            return
        self._waiting.discard(subject_id)
        for check in self._held:
            if subject_id in check.waiting:
                check.waiting.discard(subject_id)
                if facts is None:
                    check.facts.pop(subject_id, None)
                else:
                    check.facts[subject_id] = facts

    def unchanged(self, subject_id: str) -> None:
        """The subject's settle stored nothing (no state to settle): the checks read what they saw of it."""
        if subject_id in self._waiting:
            self._waiting.discard(subject_id)
            for check in self._held:
                check.waiting.discard(subject_id)

    def release(self) -> list[HeldCheck]:
        """The held checks in the order of their enrolments, once every subject is settled."""
        held, self._held = self._held, []
        if self._waiting:
            raise RuntimeError(f"enrolment checks released before their subjects settled: {sorted(self._waiting)}")
        return held
