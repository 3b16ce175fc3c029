"""`consent-ivr` commands of the evidence part: keys, checkpoint, verify, export, purge."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from consent_ivr import config as cfg
from consent_ivr.clock import now
from consent_ivr.evidence.report import Report

T = TypeVar("T")


def _config(args: argparse.Namespace) -> cfg.Config:
    from consent_ivr.cli import config_of

    return config_of(args)


@contextmanager
def _database(args: argparse.Namespace) -> Iterator[Any]:
    """The configured database, once it answers and is migrated (else a clear exit 2)."""
    from consent_ivr.cli import checked_database_url
    from consent_ivr.store.db import Database

    db = Database(checked_database_url(args))
    try:
        yield db
    finally:
        db.close()


def _with_session(args: argparse.Namespace, fn: Callable[[Any], T]) -> T:
    """``fn(session)`` reading one moment of the database (see Database.snapshot)."""
    with _database(args) as db, db.snapshot() as session:
        return fn(session)


def cmd_keys_generate(args: argparse.Namespace) -> int:
    from consent_ivr.evidence import keys

    env = _config(args).evidence.signing_key_env
    private, public = keys.generate()
    print(
        f"# The private key: put it in the environment of the service (and of `consent-ivr\n"
        f"# checkpoint`) only, e.g. in a secrets store; never in a file of the repository.\n"
        f"{env}={private}\n"
        f"# The public key (key id {keys.key_id(public)}): put it first under\n"
        f"# evidence.public_keys in config.yaml, and keep the old ones after it, so older\n"
        f"# checkpoints still verify:\n"
        f"#   evidence:\n"
        f"#     public_keys:\n"
        f'#       - "{public}"'
    )
    return 0


def cmd_checkpoint(args: argparse.Namespace) -> int:
    from consent_ivr.evidence import checkpoints, keys

    conf = _config(args)
    signer = keys.signer(conf)
    with _database(args) as db:
        entry = checkpoints.checkpoint(db, Path(conf.evidence.checkpoints), signer)
    if entry is None:
        print("the newest checkpoint already covers the ledger head: nothing to sign")
        return 0
    how = f"signed with key {entry['key_id']}" if entry["signature"] else "NOT signed (no key)"
    print(
        f"checkpoint {entry['id']}: ledger entry {entry['ledger_seq']} {entry['ledger_hash']}, "
        f"{how}; appended to {conf.evidence.checkpoints}"
    )
    return 0


def _print_report(report: Report, as_json: bool, seconds: float) -> int:
    if as_json:
        print(json.dumps({**report.as_dict(), "seconds": round(seconds, 3)}, indent=2))
    else:
        for line in report.lines():
            print(line)
    return 0 if report.ok else 1


def cmd_verify(args: argparse.Namespace) -> int:
    from consent_ivr.evidence import bundle, verify

    target = args.target
    start = time.perf_counter()
    if target and (target.endswith(".zip") or Path(target).is_file()):
        if args.all:
            raise cfg.ConfigError("verify: give a bundle or --all, not both")
        report = bundle.verify_bundle(Path(target), args.public_key)
        return _print_report(report, args.json, time.perf_counter() - start)
    if args.public_key:
        raise cfg.ConfigError(
            "verify --public-key pins the key of a bundle (FILE.zip); the database is checked "
            "against evidence.public_keys of the config"
        )
    if bool(target) == bool(args.all):
        raise cfg.ConfigError("verify: give one RECORD_ID, --all, or a FILE.zip")
    conf = _config(args)
    try:
        report = _with_session(
            args,
            (lambda s: verify.verify_all(s, conf))
            if args.all
            else (lambda s: verify.verify_record(s, conf, target)),
        )
    except LookupError as e:
        print(f"consent-ivr: {e}", file=sys.stderr)
        return 1
    return _print_report(report, args.json, time.perf_counter() - start)


def _since(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise cfg.ConfigError(
            f"--since {text!r}: expected a date or time such as 2026-01-31 or 2026-01-31T12:00Z"
        ) from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def cmd_export(args: argparse.Namespace) -> int:
    conf = _config(args)
    if args.since:
        if args.record_id:
            raise cfg.ConfigError("export: give a RECORD_ID or --since, not both")
        return _export_bulk(conf, args)
    if not args.record_id or not args.output:
        raise cfg.ConfigError(
            "export: give RECORD_ID -o FILE.zip (one record's bundle), or --since DATE "
            "--format jsonl|csv (every record since then)"
        )
    from consent_ivr.evidence import bundle

    try:
        with _database(args) as db:
            report = bundle.export(db, conf, args.record_id, Path(args.output))
    except LookupError as e:
        print(f"consent-ivr: {e}", file=sys.stderr)
        return 1
    print(f"wrote {args.output}")
    for line in report.lines()[:-1]:
        print(line, file=sys.stderr)
    if not report.ok:
        print("the record's evidence has problems: the bundle says so too", file=sys.stderr)
    return 0 if report.ok else 1


def _export_bulk(conf: cfg.Config, args: argparse.Namespace) -> int:
    from consent_ivr.evidence import bulk

    since, at = _since(args.since), now()
    with ExitStack() as stack:
        out = (
            stack.enter_context(open(args.output, "w", encoding="utf-8", newline=""))
            if args.output
            else sys.stdout
        )
        n = _with_session(
            args, lambda s: bulk.write(bulk.rows(s, since, args.campaign, at), out, args.format)
        )
    print(f"{n} record(s)", file=sys.stderr)
    return 0


def cmd_purge(args: argparse.Namespace) -> int:
    from consent_ivr.evidence import checkpoints, keys, purge

    conf = _config(args)
    signer = None if args.dry_run else keys.signer(conf)
    with _database(args) as db:
        result = purge.run(db, conf, dry_run=args.dry_run)
        if result and not args.dry_run:
            checkpoints.checkpoint(db, Path(conf.evidence.checkpoints), signer)
    would = "would " if args.dry_run else ""
    for expiry in result.expiries:
        print(f"{would}mark expired: {expiry}")
    for erasure in result.erasures:
        print(f"{would}erase: {erasure}")
    for path in result.deleted:
        print(f"deleted {path}")
    print(
        f"{len(result.erasures)} record(s) {'to erase' if args.dry_run else 'erased'}, "
        f"{len(result.expiries)} expired consent(s) {'to mark' if args.dry_run else 'marked'}"
    )
    return 0


def add_commands(sub: Any) -> None:
    """Register this part's subcommands on the main parser's subparsers."""
    k = sub.add_parser("keys", help="checkpoint signing keys").add_subparsers(
        dest="keys_command", required=True
    )
    k.add_parser("generate", help="print a new Ed25519 key pair").set_defaults(fn=cmd_keys_generate)

    sub.add_parser(
        "checkpoint", help="sign the ledger head now (in the database and the checkpoint file)"
    ).set_defaults(fn=cmd_checkpoint)

    v = sub.add_parser(
        "verify", help="verify the evidence: one record, the whole database, or a bundle"
    )
    v.add_argument("target", nargs="?", metavar="RECORD_ID|FILE.zip")
    v.add_argument("--all", action="store_true", help="every record, the ledger, checkpoints")
    v.add_argument("--public-key", help="a bundle must verify with this key (base64)")
    v.add_argument("--json", action="store_true")
    v.set_defaults(fn=cmd_verify)

    e = sub.add_parser("export", help="one record's evidence bundle, or every record since a date")
    e.add_argument("record_id", nargs="?")
    e.add_argument("-o", "--output", help="FILE.zip (a bundle), or the jsonl/csv file")
    e.add_argument("--since", help="every record that started at or after this date")
    e.add_argument("--campaign")
    e.add_argument("--format", choices=("jsonl", "csv"), default="jsonl")
    e.set_defaults(fn=cmd_export)

    p = sub.add_parser("purge", help="erase what passed its retention; record expirations")
    p.add_argument("--dry-run", action="store_true", help="list what would be done, change nothing")
    p.set_defaults(fn=cmd_purge)
