"""Every automatic transition and officer action lands in the hash-chained audit trail, which is also each
alert's history; `sentinel audit verify` finds an edited row by its seq."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update
from sqlmodel import Session

from services.cli import main
from shared.audit import AuditEntry, verify_chain
from shared.db import make_engine
from tests.unit.conftest import START
from tests.unit.notify.conftest import Notifier, act


async def test_each_transition_is_one_chained_audit_row(notifier: Notifier, make_sae: Any) -> None:
    notifier.apply(make_sae())
    await notifier.at(START + timedelta(minutes=30))
    act(notifier, "acknowledge", actor="dr.so", comment="on it")
    act(notifier, "comment", actor="dr.so", text="site called")
    act(notifier, "complete", actor="dr.so", reference="MW-1")
    actions = [h.action for h in notifier.history()]
    assert actions[0] == "opened"
    for expected in ("delivered", "escalated", "acknowledged", "commented", "report_filed"):
        assert expected in actions
    checked, problems = verify_chain(notifier.engine, service="notify")
    assert (checked, problems) == (len(actions), [])
    officer = [h for h in notifier.history() if h.actor == "dr.so"]
    assert [h.action for h in officer] == ["acknowledged", "commented", "report_filed"]


def _cli(monkeypatch: pytest.MonkeyPatch, db: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    monkeypatch.setenv("SENTINEL_DATABASE_URL", f"sqlite:///{db}")
    code = main(["audit", "verify", "--service", "notify"])
    return code, capsys.readouterr().out


async def test_audit_verify_command(
    clean_env: None,
    notifier: Notifier,
    make_sae: Any,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    notifier.apply(make_sae())
    await notifier.at(START)
    db = Path(str(notifier.engine.url.database))
    code, out = _cli(monkeypatch, db, capsys)
    assert code == 0
    assert "notify: 3 rows checked, OK" in out
    engine = make_engine(f"sqlite:///{db}")
    with Session(engine) as session, session.begin():
        session.execute(update(AuditEntry).where(AuditEntry.seq == 2).values(actor="someone else"))  # type: ignore[arg-type]
    engine.dispose()
    code, out = _cli(monkeypatch, db, capsys)
    assert code == 1
    assert "seq 2: content does not match its hash" in out


def test_audit_verify_without_a_database_fails(
    clean_env: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["audit", "verify"]) == 1
    assert "notify: no database at var/notify.db" in capsys.readouterr().err
