"""`sentinel`: the one command-line entry point."""

from __future__ import annotations

import argparse
import asyncio
import io
import sys
from collections.abc import Sequence
from pathlib import Path

from services.runner import SERVICES, build_app, configure_logging, serve


def _run(args: argparse.Namespace) -> int:
    configure_logging(args.log_level)
    names = SERVICES if args.service == "all" else (args.service,)
    apps = [build_app(name) for name in names]
    asyncio.run(serve(apps, log_level=args.log_level))
    return 0


def _kafka(args: argparse.Namespace) -> int:
    from services.devstack import kafka_broker

    return kafka_broker.main([args.action])


def _protocol_check(args: argparse.Namespace) -> int:
    from shared.protocol import ProtocolError, load_protocol

    try:
        protocol = load_protocol(Path(args.file))
    except ProtocolError as exc:
        print(f"{exc.source}: {len(exc.problems)} problem(s)", file=sys.stderr)
        for problem in exc.problems:
            print(f"  - {problem}", file=sys.stderr)
        return 1
    arms = ", ".join(f"{a.id} ({a.infusions} infusion{'s' if a.infusions > 1 else ''})" for a in protocol.arms)
    anchor = {
        "first_infusion": "from first infusion",
        "last_planned_infusion": "after the last planned infusion",
        "per_infusion": "after each infusion",
        "enrolment": "from enrolment",
    }[protocol.dlt.anchor]
    day = protocol.study_days.removeprefix("anchor_is_").replace("_", " ")
    rules = protocol.cohort
    print(
        f"{args.file}: OK — trial {protocol.trial_id}; arms {arms}; DLT window {protocol.dlt.window_days} days "
        f"{anchor} (anchor = {day}), {len(protocol.dlt.criteria)} criteria; cohorts {rules.initial_size}+"
        f"{rules.expanded_size - rules.initial_size} counting {rules.count}, stop at {rules.stop_at_dlts} DLTs;"
        " SAE report within "
        f"{protocol.sae.report_within_hours} h; {len(protocol.contacts)} contact(s)"
    )
    rsi, expedited = protocol.reference_safety_information, protocol.expedited_reporting
    if rsi is not None:
        print(
            f"  RSI: {rsi.product}, {rsi.document} v{rsi.version} ({rsi.date.isoformat()}), "
            f"{len(rsi.expected_reactions)} expected reaction(s)"
        )
    if expedited is not None:
        recipients = ", ".join(f"{r.id} ({r.kind})" for r in expedited.recipients)
        print(
            f"  SUSAR reports to {recipients}: {expedited.fatal_days} days if fatal or life-threatening "
            f"(complete by {expedited.completion_days}), else {expedited.other_days}; follow-ups "
            + (f"{expedited.follow_up_days} days" if expedited.follow_up_reports else "not tracked")
        )
    if protocol.response is not None:
        response = protocol.response
        levels = "; ".join(
            f"{name} CR >= {lineage.complete_min}, PR > {lineage.partial_above}"
            for name, lineage in response.lineages.items()
        )
        points = ", ".join(f"{t.name} (day {t.day})" for t in response.timepoints) or "none"
        print(
            f"  response: {levels}; two counts >= {response.confirm_min_hours} h apart, "
            f"{response.transfusion_free_days} days without {', '.join(response.transfusion_products)}; "
            f"recorded at {points}"
        )
    for schedule in protocol.samples:
        visits = ", ".join(
            f"{v.name} (day {v.day - v.window_days} to the first infusion)"
            if v.before_first_infusion
            else f"{v.name} (day {v.day} +/- {v.window_days})"
            for v in schedule.visits
        )
        print(f"  {schedule.kind} samples: {visits}; missed ones to {', '.join(schedule.notify_roles)}")
    return 0


def _grade_csv(args: argparse.Namespace) -> int:
    from services.safety.ctcae.batch import CsvFormatError, grade_csv

    graded = io.StringIO()  # nothing is written unless the whole file is well-formed
    try:
        with open(args.file, newline="", encoding="utf-8-sig") as reader:
            rows = grade_csv(reader, graded)
    except OSError as exc:
        print(f"error: cannot read {args.file}: {exc.strerror}", file=sys.stderr)
        return 1
    except CsvFormatError as exc:
        print(f"error: {args.file}: {exc}", file=sys.stderr)
        return 1
    if args.output:
        Path(args.output).write_text(graded.getvalue(), encoding="utf-8", newline="")
    else:
        sys.stdout.write(graded.getvalue())
    print(f"graded {rows} row(s)", file=sys.stderr)
    return 0


def _demo(args: argparse.Namespace) -> int:
    from services.devstack.demo import run_demo

    return run_demo(keep_running=not args.once)


def _mailcatcher(args: argparse.Namespace) -> int:
    from services.devstack import mail_catcher

    return mail_catcher.main(["--port", str(args.port), "--dir", args.dir])


AUDITED_SERVICES = ("notify", "safety")


def _audit_verify(args: argparse.Namespace) -> int:
    """Recompute each service's audit chain; exit 1 when any link is broken or a database is missing."""
    from sqlalchemy import inspect

    from shared.audit import AuditEntry, verify_chain
    from shared.db import make_engine
    from shared.settings import CommonSettings

    settings = CommonSettings()
    healthy = True
    for service in args.service or AUDITED_SERVICES:
        url = settings.database_url_for(service)
        if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).exists():
            print(f"{service}: no database at {url.removeprefix('sqlite:///')}", file=sys.stderr)
            healthy = False
            continue
        engine = make_engine(url)
        try:
            if not inspect(engine).has_table(AuditEntry.__tablename__):
                print(f"{service}: 0 rows checked (no audit table yet)")
                continue
            checked, problems = verify_chain(engine, service=service)
        finally:
            engine.dispose()
        print(f"{service}: {checked} rows checked, {'OK' if not problems else f'{len(problems)} problem(s)'}")
        for problem in problems:
            print(f"  seq {problem.seq}: {problem.problem}")
        healthy = healthy and not problems
    return 0 if healthy else 1


def _db_upgrade(args: argparse.Namespace) -> int:
    """Migrate each service's database (one shared PostgreSQL, or the per-service SQLite files) to head."""
    from services.runner import migration_components
    from shared.db import make_engine
    from shared.db_migrations import upgrade
    from shared.settings import CommonSettings

    settings = CommonSettings()
    for service in args.service or SERVICES:
        url = settings.database_url_for(service)
        engine = make_engine(url)
        try:
            for component, before, after in upgrade(migration_components(service), engine):
                change = f"{before or 'empty'} -> {after}" if before != after else f"at {after}"
                print(f"{service}: {component} {change}")
        finally:
            engine.dispose()
    return 0


def _sources_check(args: argparse.Namespace) -> int:
    from services.ingest.sources import check_sources_command

    return check_sources_command(Path(args.file))


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="sentinel", description="Safety Sentinel: trial safety surveillance.")
    commands = root.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run a service (or all three in one process)")
    run.add_argument("service", choices=[*SERVICES, "all"])
    run.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    run.set_defaults(func=_run)

    kafka = commands.add_parser("kafka", help="a local single-node Kafka broker (KRaft) for development and tests")
    kafka.add_argument("action", choices=["up", "down", "status"])
    kafka.set_defaults(func=_kafka)

    protocol = commands.add_parser("protocol", help="protocol files")
    protocol_cmds = protocol.add_subparsers(dest="protocol_command", required=True)
    check = protocol_cmds.add_parser("check", help="validate a protocol file and explain every error")
    check.add_argument("file")
    check.set_defaults(func=_protocol_check)

    ctcae = commands.add_parser("ctcae", help="CTCAE v5.0 grading")
    ctcae_cmds = ctcae.add_subparsers(dest="ctcae_command", required=True)
    grade = ctcae_cmds.add_parser("grade-csv", help="grade lab rows of a CSV file; writes the rows plus grade, reason")
    grade.add_argument("file")
    grade.add_argument("-o", "--output", help="write here instead of standard output")
    grade.set_defaults(func=_grade_csv)

    demo = commands.add_parser("demo", help="start everything locally and replay a sample scenario")
    demo.add_argument("--once", action="store_true", help="stop after showing the results (no Ctrl-C wait)")
    demo.set_defaults(func=_demo)

    audit = commands.add_parser("audit", help="the hash-chained audit trail")
    audit_cmds = audit.add_subparsers(dest="audit_command", required=True)
    verify = audit_cmds.add_parser(
        "verify", help="check every link of the audit chain (SENTINEL_DATABASE_URL, else var/<service>.db)"
    )
    verify.add_argument("--service", action="append", choices=AUDITED_SERVICES, help="only this service (repeatable)")
    verify.set_defaults(func=_audit_verify)

    db = commands.add_parser("db", help="database schema")
    db_cmds = db.add_subparsers(dest="db_command", required=True)
    db_upgrade = db_cmds.add_parser("upgrade", help="migrate to the latest schema (SENTINEL_DATABASE_URL or var/*.db)")
    db_upgrade.add_argument("--service", action="append", choices=SERVICES, help="only this service (repeatable)")
    db_upgrade.set_defaults(func=_db_upgrade)

    sources = commands.add_parser("sources", help="ingest sources files")
    sources_cmds = sources.add_subparsers(dest="sources_command", required=True)
    sources_check = sources_cmds.add_parser("check", help="validate a sources file and explain every error")
    sources_check.add_argument("file")
    sources_check.set_defaults(func=_sources_check)

    mail = commands.add_parser("mailcatcher", help="a local SMTP server that saves mails under a folder")
    mail.add_argument("--port", type=int, default=1025)
    mail.add_argument("--dir", default="var/mail")
    mail.set_defaults(func=_mailcatcher)
    return root


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    raise SystemExit(main())
