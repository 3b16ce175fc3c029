"""`consent-ivr` commands that place calls: one outbound consent call."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from consent_ivr.cli import config_of, phone_of, with_db
from consent_ivr.config import ConfigError


def cmd_call(args: argparse.Namespace) -> int:
    """Place an outbound consent call through the running service's ARI app."""
    from consent_ivr.ari.client import AriClient
    from consent_ivr.clock import now
    from consent_ivr.store import lifecycle

    conf = config_of(args)
    phone = phone_of(args, conf)
    try:
        name, campaign = conf.campaign(args.campaign)
    except KeyError:
        raise ConfigError(
            f"--campaign {args.campaign!r}: unknown campaign (configured: "
            f"{', '.join(sorted(conf.campaigns))})"
        ) from None
    language = args.language or campaign.language
    if language not in campaign.languages:
        raise ConfigError(
            f"--language {language!r}: campaign {name} speaks {', '.join(campaign.languages)}"
        )

    def check(session: Any) -> list[str]:
        at = now()
        refusals = []
        for pid in campaign.purposes:
            verdict = lifecycle.may_contact(session, phone, pid, "call", asking=True, at=at)
            if not verdict.allowed:
                refusals.append(f"{pid}: {verdict.reason}")
                lifecycle.suppressed(session, phone, pid, "call", verdict.reason, at, campaign=name)
        return refusals

    refusals = with_db(args, check)
    if refusals:
        print(f"consent-ivr: not calling {phone}: " + "; ".join(refusals), file=sys.stderr)
        return 3
    endpoint = args.endpoint.format(number=phone, digits=phone.lstrip("+"))

    async def go() -> str:
        ari = AriClient(conf.ari.url, conf.ari.user, conf.ari.password, conf.ari.app)
        await ari.start(events=False)
        try:
            # Through dialplan/consent-inbound.conf's consent-outbound context, which starts
            # the recording when the person answers and hands the call to the app.
            chan = await ari.originate(
                endpoint,
                context="consent-outbound",
                extension=phone.lstrip("+"),
                variables={"CONSENT_CAMPAIGN": name, "CONSENT_LANGUAGE": language},
            )
            return str(chan["id"])
        finally:
            await ari.close()

    print(asyncio.run(go()))
    return 0


def add_commands(sub: Any) -> None:
    o = sub.add_parser("call", help="place an outbound consent call")
    o.add_argument("phone")
    o.add_argument(
        "--endpoint",
        required=True,
        help="Asterisk dial string, {number}/{digits} filled in, e.g. PJSIP/{digits}@trunk",
    )
    o.add_argument("--campaign")
    o.add_argument("--language")
    o.set_defaults(fn=cmd_call)
