"""`consent-ivr` commands that place calls: one outbound consent call, and campaigns."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from functools import partial
from pathlib import Path
from typing import Any

from sqlalchemy import select

from consent_ivr.calls import BadArgs, pick_campaign
from consent_ivr.cli import config_of, phone_of, with_db
from consent_ivr.config import Campaign, Config, ConfigError

# Exit codes: 0 done, 3 the number may not be called, 4 nobody answered (call) or numbers are
# left to dial (campaign run stopped, or waiting for the calling window with --no-wait).
REFUSED, NOT_DONE = 3, 4


def campaign_of(conf: Config, name: str | None, language: str | None) -> tuple[str, Campaign, str]:
    try:
        return pick_campaign(conf, name, language)
    except BadArgs as e:
        value = name if e.key == "campaign" else language
        raise ConfigError(f"--{e.key} {value!r}: {e}") from None


def dialing_of(campaign_name: str, campaign: Campaign, endpoint: str | None) -> Any:
    from pydantic import ValidationError

    from consent_ivr.dialing.config import Dialing

    dialing = campaign.dialing
    if endpoint is not None:
        try:
            dialing = Dialing.model_validate({**dialing.model_dump(), "endpoint": endpoint})
        except ValidationError as e:
            raise ConfigError(f"--endpoint: {e.errors()[0]['msg']}") from None
    if not dialing.endpoint:
        raise ConfigError(
            f"campaign {campaign_name} has no dialing.endpoint: set "
            f"campaigns.{campaign_name}.dialing.endpoint (e.g. PJSIP/{{digits}}@trunk) "
            f"or pass --endpoint"
        )
    return dialing


def cmd_call(args: argparse.Namespace) -> int:
    """Place one outbound consent call, wait for it, and say what became of it."""
    from consent_ivr.clock import now
    from consent_ivr.dialing import store

    conf = config_of(args)
    phone = phone_of(args, conf)
    name, campaign, language = campaign_of(conf, args.campaign, args.language)
    dialing = dialing_of(name, campaign, args.endpoint)
    refused = with_db(
        args, lambda s: store.refusals(s, phone, list(campaign.purposes), name, now())
    )
    if refused:
        print(f"consent-ivr: not calling {phone}: " + "; ".join(refused), file=sys.stderr)
        return REFUSED
    attempt, outcomes = asyncio.run(_one_call(conf, name, language, dialing, phone, args.wait))
    detail = f" ({attempt.describe()})" if attempt.describe() else ""
    print(f"{phone}: {attempt.result}{detail}; channel {attempt.channel_id}")
    for purpose, outcome, record_id in outcomes:
        print(f"  {purpose}: {outcome}  (consent-ivr show {record_id})")
    return 0 if attempt.result == "answered" else NOT_DONE


async def _one_call(
    conf: Config, name: str, language: str, dialing: Any, phone: str, wait_s: float
) -> tuple[Any, list[tuple[str, str, str]]]:
    from consent_ivr.dialing import store
    from consent_ivr.dialing.dialers import Dial, DialError, dialer_for
    from consent_ivr.store.db import Database
    from consent_ivr.store.models import new_id

    db = Database(conf.database.url)
    dialer = dialer_for(conf, dialing)
    try:
        try:
            await dialer.start()
            await dialer.ready()
        except DialError as e:
            raise ConfigError(str(e)) from None
        dial = Dial(phone, f"dial-{new_id()}", name, language, dialing)
        attempt = await dialer.call(dial)
        await db.transaction(
            partial(store.record_attempt, phone=phone, campaign=name, attempt=attempt)
        )
        outcomes: list[tuple[str, str, str]] = []
        if attempt.result == "answered":
            outcomes = await _outcomes(db, dial.channel_id, wait_s)
        return attempt, outcomes
    finally:
        await dialer.close()
        db.close()


async def _outcomes(db: Any, channel_id: str, wait_s: float) -> list[tuple[str, str, str]]:
    """The call's records once the service has closed them (purpose, outcome, record id)."""
    from consent_ivr.store.models import Call, ConsentRecord

    def read(session: Any) -> list[tuple[str, str, str]] | None:
        call = session.scalars(select(Call).where(Call.channel_id == channel_id)).first()
        if call is None or call.ended_at is None:
            return None
        rows = session.scalars(
            select(ConsentRecord)
            .where(ConsentRecord.call_id == call.call_id)
            .order_by(ConsentRecord.started_at)
        )
        return [(r.purpose_id or r.kind, r.outcome or "-", r.record_id) for r in rows]

    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    while loop.time() < deadline:
        found = await db.read(read)
        if found is not None:
            return found
        await asyncio.sleep(0.5)
    return []


def cmd_campaign_run(args: argparse.Namespace) -> int:
    from consent_ivr.dialing.campaign import read_numbers

    conf = config_of(args)
    name, campaign, _ = campaign_of(conf, args.campaign, None)
    dialing = dialing_of(name, campaign, None)
    path = Path(args.file)
    if not path.is_file():
        raise ConfigError(f"{path}: no such file")
    entries, problems = read_numbers(path, conf, name)
    for p in problems:
        print(f"{p.source}: {p.text}: skipped", file=sys.stderr)
    conf = conf.model_copy(
        update={
            "campaigns": {**conf.campaigns, name: campaign.model_copy(update={"dialing": dialing})}
        }
    )
    return asyncio.run(_run_campaign(conf, name, entries, args))


async def _run_campaign(
    conf: Config, name: str, entries: list[Any], args: argparse.Namespace
) -> int:
    from consent_ivr.clock import now
    from consent_ivr.dialing import progress as view
    from consent_ivr.dialing import store
    from consent_ivr.dialing.campaign import Runner
    from consent_ivr.dialing.dialers import DialError, dialer_for
    from consent_ivr.store.db import Database

    db = Database(conf.database.url)
    dialer = dialer_for(conf, conf.campaigns[name].dialing)
    display = view.Display(sys.stderr)
    stop = asyncio.Event()
    main = asyncio.current_task()
    loop = asyncio.get_running_loop()

    def interrupt() -> None:
        if stop.is_set():
            display.say("stopping now: calls in progress go on; the next run settles them")
            if main is not None:
                main.cancel()
            return
        stop.set()
        display.say(
            "stopping: no new calls; waiting for the calls in progress (Ctrl-C again: leave now)"
        )

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, interrupt)
    try:
        added = await db.transaction(partial(store.load, campaign=name, entries=entries, now=now()))
        display.say(f"campaign {name}: {len(entries)} numbers read, {added} new")
        try:
            await dialer.start()
            await dialer.ready()
        except DialError as e:
            raise ConfigError(str(e)) from None
        runner = Runner(db, conf, name, dialer, runner_id=args.runner)
        state: dict[str, Any] = {"progress": None, "at": 0.0}

        async def refresh() -> None:
            while True:
                state["progress"] = await db.read(partial(store.progress, campaign=name))
                display.show(
                    view.line(name, state["progress"], runner.figures, runner.waiting_until)
                )
                await asyncio.sleep(display.interval_s if display.tty else 1.0)

        painter = asyncio.create_task(refresh())
        try:
            end = await runner.run(stop, wait=not args.no_wait)
        finally:
            painter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await painter
        final = await db.read(partial(store.progress, campaign=name))
        display.show(view.line(name, final, runner.figures, None), force=True)
        display.close()
        print(view.summary(name, final, runner.figures))
        if end.how == "waiting" and end.next_at is not None:
            print(
                f"nothing to dial now: outside the calling window; the next number is due at "
                f"{view.when(end.next_at)}; run the same command again then (or without --no-wait)"
            )
        return 0 if end.how == "finished" and final.pending == 0 else NOT_DONE
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await dialer.close()
        db.close()


def cmd_campaign_status(args: argparse.Namespace) -> int:
    from consent_ivr.dialing import progress as view
    from consent_ivr.dialing import store
    from consent_ivr.dialing.campaign import RunFigures

    conf = config_of(args)
    name, _, _ = campaign_of(conf, args.campaign, None)
    p = with_db(args, lambda s: store.progress(s, name))
    print("\n".join(view.summary(name, p, RunFigures()).splitlines()[:-1]))
    return 0


def add_commands(sub: Any) -> None:
    o = sub.add_parser("call", help="place one outbound consent call and wait for its outcome")
    o.add_argument("phone")
    o.add_argument(
        "--endpoint",
        help="Asterisk dial string, {number}/{digits} filled in, e.g. PJSIP/{digits}@trunk "
        "(default: the campaign's dialing.endpoint)",
    )
    o.add_argument("--campaign")
    o.add_argument("--language")
    o.add_argument(
        "--wait",
        type=float,
        default=600.0,
        metavar="SECONDS",
        help="how long to wait for the answered call's outcome (default 600)",
    )
    o.set_defaults(fn=cmd_call)

    c = sub.add_parser("campaign", help="outbound consent campaigns").add_subparsers(
        dest="campaign_command", required=True
    )
    run = c.add_parser("run", help="dial a CSV of numbers (phone[,name[,language]]); resumable")
    run.add_argument("file")
    run.add_argument("--campaign")
    run.add_argument("--runner", help="a name for this runner in the database (default: random)")
    run.add_argument(
        "--no-wait",
        action="store_true",
        help="stop when nothing is due now (calling window, retry delays) instead of waiting",
    )
    run.set_defaults(fn=cmd_campaign_run)
    st = c.add_parser("status", help="where a campaign stands, per outcome")
    st.add_argument("--campaign")
    st.set_defaults(fn=cmd_campaign_status)
