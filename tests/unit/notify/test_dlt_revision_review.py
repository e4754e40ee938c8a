"""A safety physician's review of the notice a revised DLT decision sends: the roles paged for the suspicion are
told once, with who reversed what and why; a first decision sends nothing; a replay sends nothing more."""

from __future__ import annotations

from datetime import timedelta

from services.notify.models import Alert, Obligation
from shared.events import DltDecided, DltDecisionData, StoppingRuleFired
from tests.unit.conftest import START, TRIAL
from tests.unit.notify.conftest import Notifier
from tests.unit.notify.test_obligations import MM, SO, cohort, dlt, to


def decision(n: int, decision: str, revises: str | None, *, by: str, reason: str) -> DltDecided:
    return DltDecided(
        id=f"sig-decided-{n}",
        source="/services/safety",
        subject="101-001",
        time=START + timedelta(hours=n),
        trialid=TRIAL,
        data=DltDecisionData(
            dlt_id="DLT-1",
            subject_id="101-001",
            arm="A",
            decision=decision,  # type: ignore[arg-type]
            decided_by=by,
            reason=reason,
            decided_at=START + timedelta(hours=n),
            revises=revises,  # type: ignore[arg-type]
        ),
    )


async def test_the_first_decision_is_not_mailed_and_its_reversal_is_with_who_and_why(notifier: Notifier) -> None:
    notifier.apply(dlt())
    assert to(await notifier.at(START)) == [MM, SO]
    notifier.apply(decision(1, "confirmed", None, by="olga", reason="CT: drug pneumonitis"))
    assert to(await notifier.at(START + timedelta(hours=1))) == [], "the decision closes the review they were paged for"

    src = "SRC 2026-04-02: CMV pneumonitis on BAL, not the product"
    notifier.apply(decision(2, "rejected", "confirmed", by="dr.src", reason=src))
    sent = await notifier.at(START + timedelta(hours=2))
    assert to(sent) == [MM, SO]
    mail = notifier.channel.sent[-1]
    body = mail.get_body(preferencelist=("plain",)).get_content()  # type: ignore[union-attr]
    assert str(mail["Subject"]) == f"[{TRIAL}] DLT decision revised: confirmed -> rejected, subject 101-001"
    for fact in ("dr.src", src, "DLT-1", "Earlier decision: confirmed", "Decision now: rejected", "Arm: A"):
        assert fact in body, fact
    assert notifier.only(Alert).state != "open", "a notice: nothing is reopened, no clock starts"
    assert [t.kind for t in notifier.pending()] == []


async def test_a_replayed_revision_is_mailed_once_and_a_revision_back_is_mailed_again(notifier: Notifier) -> None:
    notifier.apply(dlt())
    await notifier.at(START)
    notifier.apply(decision(1, "confirmed", None, by="olga", reason="CT"))
    revised = decision(2, "rejected", "confirmed", by="otto", reason="SRC: CMV")
    notifier.apply(revised)
    notifier.apply(revised)  # applied twice past the inbox (which drops a re-delivery): the mail ids still dedupe
    assert to(await notifier.at(START + timedelta(hours=2))) == [MM, SO]
    notifier.apply(decision(3, "confirmed", "rejected", by="mona", reason="SRC: CMV PCR negative"))
    sent = await notifier.at(START + timedelta(hours=3))
    assert to(sent) == [MM, SO] and all("rejected -> confirmed" in subject for _, subject in sent)
    revisions = {h.detail for h in notifier.history() if h.action == "dlt_revised"}
    assert revisions == {
        "DLT rejected by otto (revising the earlier decision: confirmed): SRC: CMV",
        "DLT confirmed by mona (revising the earlier decision: rejected): SRC: CMV PCR negative",
    }


async def test_a_revision_notify_never_saw_suspected_is_still_told(notifier: Notifier) -> None:
    notifier.apply(decision(2, "confirmed", "rejected", by="dr.src", reason="SRC re-adjudicated"))
    assert to(await notifier.at(START + timedelta(hours=2))) == [MM, SO]


async def test_a_stop_lifted_by_a_revision_is_mailed_with_its_why_and_its_review_is_still_owed(
    notifier: Notifier,
) -> None:
    """Judgement: the stopping rule did fire and sites may have paused on it; its review (the committee's record of
    what it decided and why) is still owed after a revision lifts it, so the obligation stays open."""
    notifier.apply(cohort(StoppingRuleFired, signal_id="sig-stop"))
    await notifier.at(START)
    notifier.apply(decision(2, "rejected", "confirmed", by="dr.src", reason="SRC: CMV, not the product"))
    lifted = cohort(signal_id="sig-lifted", decision="expand", previous_decision="stop", dlt_confirmed=1)
    notifier.apply(lifted)
    sent = await notifier.at(START + timedelta(hours=2))
    subjects = sorted(subject for _, subject in sent)
    assert any("Cohort decision for arm A: expand" in s for s in subjects), "the arm's move is mailed"
    assert any("DLT decision revised: confirmed -> rejected" in s for s in subjects), "and why it moved"
    [review] = [o for o in notifier.rows(Obligation) if o.kind == "stopping_rule_review"]
    assert review.state == "open"
