"""`consent-ivr` commands of the SMS part: `sms send` (a marketing text, consent permitting)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

# A refusal to contact, as `consent-ivr call` answers one.
EXIT_NOT_ALLOWED = 3


def add_commands(sub: Any) -> None:
    """Register this part's subcommands on the main parser's subparsers."""
    sms = sub.add_parser("sms", help="SMS").add_subparsers(dest="sms_command", required=True)
    send = sms.add_parser(
        "send",
        help="queue a marketing SMS; refused (exit 3) unless the person's consent allows it",
    )
    send.add_argument("--phone", required=True)
    send.add_argument("--purpose", required=True, help="the purpose the text is sent for")
    send.add_argument("--text", required=True, help="sent as it is, in one SMS of up to 6 parts")
    send.set_defaults(fn=cmd_send)


def cmd_send(args: argparse.Namespace) -> int:
    """Exit 0 with the job id; 3 when the person's consent does not allow it (the refusal is
    kept); 1 when the text cannot be sent to that number; 2 for a configuration error."""
    from consent_ivr import config as cfg
    from consent_ivr.cli import checked_database_url, config_of, phone_of
    from consent_ivr.clock import now
    from consent_ivr.sms import marketing
    from consent_ivr.sms.models import FAILED
    from consent_ivr.store.db import Database

    conf = config_of(args)
    phone = phone_of(args, conf)
    if args.purpose not in conf.purposes:
        raise cfg.ConfigError(
            f"--purpose {args.purpose!r}: unknown purpose (configured: "
            f"{', '.join(sorted(conf.purposes))})"
        )
    name, campaign = conf.campaign(None)
    if not conf.sms.enabled:
        raise cfg.ConfigError("sms.enabled is false: no SMS is sent")
    db = Database(checked_database_url(args))
    try:
        with db.session() as session:
            job, verdict = marketing.enqueue(
                session,
                phone=phone,
                purpose=args.purpose,
                text=args.text,
                campaign=name,
                language=campaign.language,
                at=now(),
                sms=conf.sms,
                region=conf.default_region,
            )
            outcome = (job.id, job.status, job.error) if job else None
    finally:
        db.close()
    if outcome is None:
        print(f"consent-ivr: not sending to {phone}: {verdict.reason}", file=sys.stderr)
        return EXIT_NOT_ALLOWED
    job_id, status, error = outcome
    if status == FAILED:
        print(f"consent-ivr: SMS {job_id} cannot be sent: {error}", file=sys.stderr)
        return 1
    print(job_id)
    return 0
