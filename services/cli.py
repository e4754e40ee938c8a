"""`sentinel`: the one command-line entry point."""

from __future__ import annotations

import argparse
import asyncio
import io
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from services.runner import RUNNABLE, SERVICES, build_app, configure_logging, serve

if TYPE_CHECKING:
    from shared.protocol import Protocol


def _run(args: argparse.Namespace) -> int:
    if args.service == "ingest":  # its backfills fragment Python's own allocator (see shared.memory)
        from shared.memory import run_with_system_allocator

        run_with_system_allocator()
    from shared.memory import trim_threshold, tune_allocator, tune_gc

    # before any thread starts: the arena limit holds for all of them
    tune_allocator(trim_threshold=trim_threshold(args.service))
    configure_logging(args.log_level)
    names = RUNNABLE if args.service == "all" else (args.service,)
    apps = [build_app(name) for name in names]
    tune_gc()  # once what every service imports and builds at start is there
    asyncio.run(serve(apps, log_level=args.log_level))
    return 0


DEV_ONLY = "this command is for development: install the dev extra (`make venv`, or pip install 'safety-sentinel[dev]')"


def _kafka(args: argparse.Namespace) -> int:
    try:
        from services.devstack import kafka_broker
    except ImportError:
        print(f"error: {DEV_ONLY}", file=sys.stderr)
        return 1
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
    vitals, acute = protocol.infusion_vitals, protocol.acute_reactions
    if vitals is not None:
        print(
            f"  Infusion-day vitals every {vitals.interval_minutes} min for {vitals.infusion_minutes} min + "
            f"{vitals.observe_after_minutes} min after (+/- {vitals.tolerance_minutes} min), checked "
            f"{vitals.entry_grace_hours} h after; findings signalled from "
            + ", ".join(f"{term} grade {grade}" for term, grade in vitals.min_grade.items())
            + (f"; hypotension screen systolic < {s}" if (s := vitals.hypotension_systolic_below) else "")
        )
    if acute is not None:
        print(
            f"  Acute reactions: onset within {acute.window_hours} h of an infusion, alerted from grade "
            f"{acute.min_grade}; date-only onsets {acute.date_only_onset}"
        )
    print(f"  Visit AE assessment by: {', '.join(protocol.ae_assessment.evidence)}")
    _print_conformance(protocol)
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


def _print_conformance(protocol: Protocol) -> None:
    """One line each for eligibility, dosing and product release (issue 13), when the protocol has them."""
    if (rules := protocol.eligibility) is not None:
        car_t = f", cytopenia >= {rules.car_t_min_days} days after CAR-T" if rules.car_t_min_days is not None else ""
        print(
            f"  eligibility at the first dose: screening labs within {rules.screening_window_days} days{car_t}; "
            f"{len(rules.cytopenia_any)} inclusion count(s), {len(rules.exclude_labs)} lab exclusion(s), "
            f"{len(rules.history)} history exclusion(s); deviations page {', '.join(rules.notify_roles)}"
        )
    if (dosing := protocol.dosing) is not None:
        premed = dosing.premedication
        said = f"{premed.drug} {premed.dose_mg} mg {premed.minutes_before} min before" if premed else "no premedication"
        print(
            f"  dosing: cells/kg +/- {dosing.cells_per_kg_tolerance_percent}%, repeats +/- "
            f"{dosing.interval_window_days} days, {said}"
        )
    if (release := protocol.product_release) is not None:
        print(
            f"  product release: viability >= {release.min_viability_percent}%, "
            f"{', '.join(release.required_tests) or 'no tests'} passed; pages {', '.join(release.notify_roles)}"
        )


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
    try:
        from services.devstack.demo import run_demo
    except ImportError:
        print(f"error: {DEV_ONLY}", file=sys.stderr)
        return 1
    return run_demo(keep_running=not args.once)


def _mailcatcher(args: argparse.Namespace) -> int:
    try:
        from services.devstack import mail_catcher
    except ImportError:
        print(f"error: {DEV_ONLY}", file=sys.stderr)
        return 1
    return mail_catcher.main(["--port", str(args.port), "--dir", args.dir])


AUDITED_SERVICES = ("notify", "safety")


def _audit_verify(args: argparse.Namespace) -> int:
    """Check each service's audit chain (links, keyed MACs) against its signed checkpoints; exit 1 when a row
    was edited or deleted, a checkpointed row is missing (the chain was cut), or the table or database is gone."""
    from sqlalchemy import inspect

    from shared.audit import AuditEntry, ChainProblem, checkpoint_path, read_checkpoints, verify_audit
    from shared.db import make_engine
    from shared.settings import CommonSettings

    settings = CommonSettings()
    try:
        key = settings.audit_signing_key()
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if key.development:
        print(
            "note: no SENTINEL_AUDIT_KEY: checking against the development key, which anyone can use", file=sys.stderr
        )
    directory = settings.audit_checkpoint_directory()
    healthy = True
    for service in args.service or AUDITED_SERVICES:
        checkpoints, problems = read_checkpoints(directory, service=service)
        url = settings.database_url_for(service)
        if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).exists():
            print(f"{service}: no database at {url.removeprefix('sqlite:///')}", file=sys.stderr)
            healthy = False
            continue
        engine = make_engine(url)
        try:
            if not inspect(engine).has_table(AuditEntry.__tablename__):
                print(
                    f"{service}: no audit table: it was dropped, or the database was never migrated "
                    "(sentinel db upgrade)"
                )
                healthy = False
                continue
            report = verify_audit(engine, service=service, key=key, checkpoints=checkpoints)
        finally:
            engine.dispose()
        problems = [*problems, *report.problems]
        where = checkpoint_path(directory, service)
        if report.rows and not checkpoints and settings.environment == "production":
            problems.append(ChainProblem(None, f"no checkpoint in {where}: the tail of the chain is not anchored"))
        status = "OK" if not problems else f"{len(problems)} problem(s)"
        print(f"{service}: {report.rows} rows checked, {status}; {report.checkpoints} checkpoint(s) from {where}")
        if report.unkeyed_rows:
            print(f"  the first {report.unkeyed_rows} rows were written before the chain was keyed")
        for problem in problems:
            print(f"  seq {problem.seq}: {problem.problem}" if problem.seq is not None else f"  {problem.problem}")
        healthy = healthy and not problems
    return 0 if healthy else 1


def _audit_checkpoint(args: argparse.Namespace) -> int:
    """Write a signed checkpoint of each service's chain head now (the services also do it periodically)."""
    from sqlalchemy import inspect

    from shared.audit import AuditEntry, write_checkpoint
    from shared.clock import SystemClock
    from shared.db import make_engine
    from shared.settings import CommonSettings

    settings = CommonSettings()
    try:
        key = settings.audit_signing_key()
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    directory = settings.audit_checkpoint_directory()
    for service in args.service or AUDITED_SERVICES:
        engine = make_engine(settings.database_url_for(service))
        try:
            if not inspect(engine).has_table(AuditEntry.__tablename__):
                print(f"{service}: no audit table", file=sys.stderr)
                return 1
            written = write_checkpoint(engine, service=service, key=key, directory=directory, now=SystemClock().now())
        finally:
            engine.dispose()
        print(f"{service}: " + (f"checkpoint at seq {written.seq} ({written.rows} rows)" if written else "unchanged"))
    return 0


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

    run = commands.add_parser("run", help="run a service (or all four in one process)")
    run.add_argument("service", choices=[*RUNNABLE, "all"])
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
        "verify", help="check the audit chain's links, keyed MACs and signed checkpoints (exit 1 on a problem)"
    )
    verify.add_argument("--service", action="append", choices=AUDITED_SERVICES, help="only this service (repeatable)")
    verify.set_defaults(func=_audit_verify)
    checkpoint = audit_cmds.add_parser(
        "checkpoint", help="write a signed checkpoint of each chain's head (SENTINEL_AUDIT_CHECKPOINT_DIR)"
    )
    checkpoint.add_argument(
        "--service", action="append", choices=AUDITED_SERVICES, help="only this service (repeatable)"
    )
    checkpoint.set_defaults(func=_audit_checkpoint)

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
