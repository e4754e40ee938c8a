"""A safety physician's review of the notice that the data under a DLT decision changed (safety's
dlt_decision_basis): the DLT's roles and the data manager are told once, in words that ask for a review of the
decision rather than a correction of a record; the data returning is told on the same thread; a replay tells no one."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

from services.notify.data_quality_alerts import plan_data_quality
from services.notify.models import Alert, Obligation
from shared.db import make_engine
from shared.events import DataQualityData, DataQualityFlagged
from shared.protocol import DataQualityAlerts, Protocol
from tests.unit.conftest import START
from tests.unit.notify.conftest import Notifier
from tests.unit.notify.test_obligations import MM, SO, to
from tests.unit.safety.clinical import Driver, of_type
from tests.unit.safety.test_clinical_rules import DAY0, at, related_ae
from tests.unit.safety.test_physician_review_4 import decide, three_in_a

DM = "data.manager@sentinel.example"


def safety(tmp_path: Path, protocol: Protocol) -> Driver:
    """Arm A with A-1's confirmed pneumonitis DLT (possibly related, grade 3)."""
    driver = Driver(make_engine(f"sqlite:///{tmp_path}/safety.db"), protocol)
    three_in_a(driver, "A-1")
    decide(driver, "A-1", "confirmed", reason="CT: drug pneumonitis", now=at(11))
    return driver


def follow_up(driver: Driver, version: int, relatedness: str) -> list[Any]:
    ae = related_ae("A-1", DAY0 + timedelta(days=9), version=version, relatedness=relatedness)
    return of_type(driver.apply(ae, now=at(12 + version)), "data_quality.flagged")


def body(notifier: Notifier) -> str:
    mail = notifier.channel.sent[-1]
    return str(mail.get_body(preferencelist=("plain",)).get_content())  # type: ignore[union-attr]


async def test_a_not_related_follow_up_is_mailed_once_to_the_dlt_roles_and_the_data_manager(
    notifier: Notifier, tmp_path: Path
) -> None:
    driver = safety(tmp_path, notifier.protocol)
    [finding] = follow_up(driver, 2, "not_related")
    notifier.apply(finding)
    sent = await notifier.at(START)
    assert to(sent) == [DM, MM, SO]
    subject = str(notifier.channel.sent[-1]["Subject"])
    assert subject == "[NCT07212335] Data quality: Data under a DLT decision changed (ae AE-1), subject A-1"
    text = body(notifier)
    for fact in (
        "the data a DLT decision rests on changed",
        "relatedness from possible to not related",
        "was confirmed by olga",
        "with expected_state 'confirmed'",
        "The decision stands until an officer revises it",
    ):
        assert fact in text, fact
    assert "Please correct the record" not in text, "the record is not wrong: the decision needs a review"
    assert notifier.rows(Obligation) == [] and notifier.pending() == [], "a notice: no clock, no escalation"

    notifier.apply(finding)  # re-delivered past the inbox
    assert follow_up(driver, 3, "unlikely") == [], "safety says it once"
    assert to(await notifier.at(START + timedelta(hours=1))) == [], "and notify mails it once"


async def test_the_data_returning_is_mailed_on_the_same_thread(notifier: Notifier, tmp_path: Path) -> None:
    driver = safety(tmp_path, notifier.protocol)
    notifier.apply(follow_up(driver, 2, "not_related")[0])
    await notifier.at(START)
    [back] = follow_up(driver, 3, "possible")
    notifier.apply(back)
    assert to(await notifier.at(START + timedelta(hours=1))) == [DM, MM, SO]
    assert "again (relatedness possible)" in body(notifier)
    alert = notifier.only(Alert)
    assert [h.action for h in notifier.history(alert.id)].count("updated") == 1


async def test_the_dlt_roles_hear_of_it_whatever_the_data_quality_routing(notifier: Notifier, tmp_path: Path) -> None:
    """A protocol that routes data-quality findings to the data manager only (no code_roles) still tells the people
    who decide DLTs: the finding asks for a decision to be reviewed. The same holds for a retracted AE."""
    notifier.protocol = notifier.protocol.model_copy(update={"data_quality": DataQualityAlerts()})
    assert notifier.protocol.data_quality.code_roles == {}
    driver = safety(tmp_path, notifier.protocol)
    notifier.apply(follow_up(driver, 2, "not_related")[0])
    assert set(to(await notifier.at(START))) >= {MM, SO}


def test_a_retracted_ae_under_a_confirmed_dlt_reaches_the_dlt_roles_without_code_roles(notifier: Notifier) -> None:
    protocol = notifier.protocol.model_copy(update={"data_quality": DataQualityAlerts()})
    signal = DataQualityFlagged(
        id="sig-retracted",
        source="/services/safety",
        subject="A-1",
        time=START,
        trialid="NCT07212335",
        data=DataQualityData(
            site_id="SITE-1",
            subject_id="A-1",
            record_type="ae",
            record_id="AE-1",
            code="confirmed_dlt_ae_retracted",
            detail="The site marked AE AE-1 entered in error, but its DLT was confirmed",
            source_event_id="src-1",
        ),
    )
    recipients = {m.recipient for m in plan_data_quality(signal, protocol).messages}
    assert recipients >= {MM, SO}
