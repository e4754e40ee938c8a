"""The cross-subject re-entry link (`reentry_links`) on SQLite and PostgreSQL: a serious AE entered under a mistyped
subject id, deleted there naming its re-entry under the right subject, ends on the first record's SAE clock and SUSAR
day 0 whichever subject's event is processed first."""

from __future__ import annotations

import pytest
from sqlmodel import Session

from services.safety.models import SusarCase
from shared.db import make_engine
from shared.protocol import load_protocol
from tests.unit.safety.clinical import Driver
from tests.unit.safety.test_clinical_rules import TRIAL, at
from tests.unit.safety.test_physician_review_3 import dosed, reaction
from tests.unit.safety.test_physician_review_6 import sae_signals
from tests.unit.safety.test_reentry_clocks import in_a2, typo_deletion

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("deletion_first", [True, False])
def test_a_subject_id_typo_re_entry_keeps_both_first_clocks_in_either_order(
    database_url: str, deletion_first: bool
) -> None:
    engine = make_engine(database_url)
    try:
        driver = Driver(engine, load_protocol(None))
        driver.apply_all([*in_a2(), *dosed()], now=at(0, 10))
        wrong = reaction(awareness_at=None).model_copy(update={"subject": "A-2", "id": "wrong-subject-v1"})
        driver.apply(wrong, now=at(0, 14))
        events = [typo_deletion(changed=at(1)), reaction(ae_id="AE-2", received=at(1, 11), awareness_at=None)]
        for event in events if deletion_first else reversed(events):
            driver.apply(event, now=at(1, 12))
        signals = [o.envelope for o in driver.signals]
        last = [s for s in sae_signals(signals, "AE-2") if s.subject == "A-1"][-1]
        assert (last.data.awareness_at, last.data.clock_from_ae_id) == (at(0, 14), "AE-1")
        with Session(engine) as session:
            case = session.get(SusarCase, (TRIAL, "A-1", "AE-2"))
            assert case is not None and (case.susar, case.clock_start) == (True, at(0, 14))
            first = session.get(SusarCase, (TRIAL, "A-2", "AE-1"))
            assert first is not None and first.susar is False
        assert len({o.envelope.id for o in driver.signals}) == len(driver.signals)
    finally:
        engine.dispose()
