"""Every automatic transition and officer action lands in the hash-chained audit trail, which is also each
alert's history; `sentinel audit verify` finds an edited row by its seq."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, text, update
from sqlmodel import Session, col, select

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
    # the test's own checkpoints, never those a demo left in the working directory's var/audit
    monkeypatch.setenv("SENTINEL_AUDIT_CHECKPOINT_DIR", str(db.parent / "audit"))
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


# --- issue 15, defect 2: a truncated trail used to verify as OK ----------------------------------------


@pytest.fixture
async def anchored(
    clean_env: None, notifier: Notifier, make_sae: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Path:
    """60+ audit rows of notify, signed with a real key, and a checkpoint of their head outside the database."""
    from shared.audit import AuditKey, bind_audit_key

    key = "q8Vb2m7ZtR4xK1pW9sYc3nH6jL0fD5gA"
    bind_audit_key(notifier.engine, AuditKey(key.encode()))
    for n in range(20):
        notifier.apply(make_sae(ae_id=f"AE-{n}", signal_id=f"sig-{n}"))
    await notifier.at(START)
    db = Path(str(notifier.engine.url.database))
    monkeypatch.setenv("SENTINEL_DATABASE_URL", f"sqlite:///{db}")
    monkeypatch.setenv("SENTINEL_ENVIRONMENT", "production")
    monkeypatch.setenv("SENTINEL_AUDIT_KEY", key)
    monkeypatch.setenv("SENTINEL_AUDIT_CHECKPOINT_DIR", str(tmp_path / "checkpoints"))
    assert main(["audit", "checkpoint", "--service", "notify"]) == 0
    return db


def _verify(capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    capsys.readouterr()
    code = main(["audit", "verify", "--service", "notify"])
    return code, capsys.readouterr().out


async def test_verify_passes_an_intact_anchored_trail(anchored: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = _verify(capsys)
    assert code == 0, out
    assert "notify: 60 rows checked, OK; 1 checkpoint(s)" in out


async def test_deleting_the_newest_50_rows_fails(anchored: Path, capsys: pytest.CaptureFixture[str]) -> None:
    engine = make_engine(f"sqlite:///{anchored}")
    with Session(engine) as session, session.begin():
        newest = session.exec(select(AuditEntry.seq).order_by(col(AuditEntry.seq).desc()).limit(50)).all()
        session.execute(delete(AuditEntry).where(col(AuditEntry.seq).in_(newest)))
    engine.dispose()
    code, out = _verify(capsys)
    assert code == 1
    assert "notify: 10 rows checked, 1 problem(s)" in out and "rows were deleted" in out


async def test_deleting_all_of_notifys_rows_fails(anchored: Path, capsys: pytest.CaptureFixture[str]) -> None:
    engine = make_engine(f"sqlite:///{anchored}")
    with Session(engine) as session, session.begin():
        session.execute(delete(AuditEntry).where(col(AuditEntry.service) == "notify"))
    engine.dispose()
    code, out = _verify(capsys)
    assert code == 1
    assert "notify: 0 rows checked, 1 problem(s)" in out and "no row is left" in out


async def test_dropping_the_audit_table_fails(anchored: Path, capsys: pytest.CaptureFixture[str]) -> None:
    engine = make_engine(f"sqlite:///{anchored}")
    with engine.begin() as connection:
        connection.execute(text("DROP TABLE audit_log"))
    engine.dispose()
    code, out = _verify(capsys)
    assert code == 1
    assert "notify: no audit table" in out


async def test_verify_with_the_wrong_key_fails(
    anchored: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SENTINEL_AUDIT_KEY", "another-key-that-is-long-enough-000000")
    code, out = _verify(capsys)
    assert code == 1
    assert "checkpoint signature invalid" in out and "content does not match its hash" in out


def test_production_without_an_audit_key_refuses_to_verify(
    clean_env: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SENTINEL_ENVIRONMENT", "production")
    monkeypatch.setenv("SENTINEL_AUDIT_KEY", "changeme")
    assert main(["audit", "verify"]) == 1
    err = capsys.readouterr().err
    assert "SENTINEL_AUDIT_KEY: the audit key must be at least 32 random characters" in err
    assert "changeme" not in err
