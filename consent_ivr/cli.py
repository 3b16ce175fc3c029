"""`consent-ivr` command line."""

from __future__ import annotations

import argparse
import asyncio
import errno
import json
import os
import secrets
import socket
import sys
import uuid
from typing import Any

from consent_ivr import config as cfg
from consent_ivr import logs
from consent_ivr.store.db import DatabaseUnavailable


def config_of(args: argparse.Namespace) -> cfg.Config:
    return cfg.load(args.config)


def cmd_run(args: argparse.Namespace) -> int:
    from consent_ivr.service import serve_forever

    asyncio.run(serve_forever(config_of(args)))
    return 0


def cmd_api(args: argparse.Namespace) -> int:
    from consent_ivr.service import serve_api

    conf = config_of(args)
    asyncio.run(serve_api(conf, args.port or conf.http.port))
    return 0


def cmd_sms_worker(args: argparse.Namespace) -> int:
    from consent_ivr.sms.worker import main as worker_main

    return asyncio.run(worker_main(config_of(args)))


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from consent_ivr.store.db import upgrade

    conf = config_of(args)
    upgrade(conf.database.url)
    print("database is up to date")
    return 0


def cmd_config_check(args: argparse.Namespace) -> int:
    from consent_ivr.prompts import Catalog

    conf = config_of(args)
    catalog = Catalog(conf)
    missing = catalog.missing_audio()
    print(f"config OK: {len(conf.campaigns)} campaign(s), {len(catalog.prompts)} prompts")
    if missing:
        print(f"note: {len(missing)} prompt(s) have no audio yet; run `consent-ivr prompts build`")
    if not args.connect:
        return 0
    sources = cfg.read(args.config)
    problems = []
    for probe in (_probe_database, _probe_ari):
        try:
            print(probe(conf, sources))
        except (cfg.ConfigError, DatabaseUnavailable) as e:
            problems.append(str(e))
    if problems:
        raise cfg.ConfigError("\n".join(problems))
    return 0


def _probe_database(conf: cfg.Config, sources: cfg.Sources) -> str:
    from consent_ivr.store.db import check, shown_url

    revision = check(conf.database.url, sources.origin("database.url"))
    return f"database {shown_url(conf.database.url)}: reachable, migrated to head ({revision})"


ARI_TIMEOUT_S = 10.0


def _probe_ari(conf: cfg.Config, sources: cfg.Sources) -> str:
    """GET /ari/asterisk/info with the configured credentials, as the service will."""
    import aiohttp

    from consent_ivr.config_types import redact

    ari = conf.ari
    where = f"ARI {ari.url}/ari/asterisk/info ({sources.origin('ari.url')})"
    password_env = cfg.ENV_PREFIX + "ARI_PASSWORD"
    if not ari.password:
        raise cfg.ConfigError(f"{where}: no password: export {password_env}")

    async def get() -> tuple[int, str]:
        auth = aiohttp.BasicAuth(ari.user, ari.password)
        timeout = aiohttp.ClientTimeout(total=ARI_TIMEOUT_S)
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.get(f"{ari.url}/ari/asterisk/info", auth=auth) as resp,
        ):
            return resp.status, await resp.text()

    try:
        status, body = asyncio.run(get())
    except aiohttp.ClientSSLError as e:
        raise cfg.ConfigError(f"{where}: TLS failed ({redact(str(e))})") from None
    except aiohttp.ClientConnectorError as e:
        os_error, code = e.os_error, e.os_error.errno
        # A name lookup's errno is a resolver code: its own text says it.
        resolver = isinstance(os_error, socket.gaierror)
        reason = os.strerror(code) if code and not resolver else os_error.strerror
        raise cfg.ConfigError(
            f"{where}: cannot connect ({reason}); check that Asterisk runs and that its HTTP "
            f"server (http.conf) listens there"
        ) from None
    except TimeoutError:
        raise cfg.ConfigError(f"{where}: no answer within {ARI_TIMEOUT_S:g} s") from None
    except aiohttp.ClientError as e:
        raise cfg.ConfigError(f"{where}: {type(e).__name__} ({redact(str(e))})") from None
    if status == 401:
        raise cfg.ConfigError(
            f"{where}: credentials refused: check user {ari.user!r} "
            f"({sources.origin('ari.user')}) and {password_env} against ari.conf"
        )
    if status == 404:
        raise cfg.ConfigError(
            f"{where}: no ARI there (HTTP 404): check that res_ari is loaded, ari.conf has "
            f"enabled = yes, and the URL includes http.conf's prefix if it sets one"
        )
    if status != 200:
        raise cfg.ConfigError(f"{where}: answered HTTP {status}")
    try:
        version = json.loads(body)["system"]["version"]
    except (ValueError, TypeError, KeyError):
        raise cfg.ConfigError(
            f"{where}: answered, but not as ARI does: is this Asterisk's HTTP server?"
        ) from None
    return f"ARI {ari.url}: Asterisk {version}, user {ari.user!r} accepted"


def cmd_prompts_build(args: argparse.Namespace) -> int:
    from consent_ivr.prompts import Catalog

    built = Catalog(config_of(args)).build(force=args.force)
    print(f"built {len(built)} prompt(s)")
    return 0


def checked_database_url(args: argparse.Namespace) -> str:
    """The configured database URL, once the database answers and is migrated to head;
    DatabaseUnavailable (exit 2) names it, where its URL came from and what to do."""
    from consent_ivr.store.db import check

    url = config_of(args).database.url
    check(url, cfg.read(args.config).origin("database.url"))
    return url


def with_db(args: argparse.Namespace, fn: Any, *, snapshot: bool = False) -> Any:
    """``fn(session)`` in one transaction on the configured database (`snapshot`: a read
    that sees one moment, see Database.snapshot)."""
    from consent_ivr.store.db import Database

    db = Database(checked_database_url(args))
    try:
        with db.snapshot() if snapshot else db.session() as session:
            return fn(session)
    finally:
        db.close()


def _sms_view(session: Any, record_id: str) -> list[dict[str, Any]]:
    from consent_ivr.sms.outbox import sms_list

    return sms_list(session, record_id)


def phone_of(args: argparse.Namespace, conf: cfg.Config) -> str:
    """The --phone argument in E.164, or a clear error (exit 2)."""
    from consent_ivr.phone import to_e164

    phone = to_e164(args.phone, conf.default_region)
    if phone is None:
        raise cfg.ConfigError(f"--phone {args.phone!r}: not a phone number")
    return phone


def cmd_records(args: argparse.Namespace) -> int:
    from consent_ivr.clock import iso, now
    from consent_ivr.store.lifecycle import record_state
    from consent_ivr.store.records import list_records

    conf = config_of(args)
    phone = phone_of(args, conf) if args.phone else None

    def fetch(session: Any) -> list[dict[str, Any]]:
        at = now()
        return [
            {
                "record_id": r.record_id,
                "kind": r.kind,
                "phone": r.pii_principal_id,
                "campaign": r.campaign,
                "purpose": r.purpose_id,
                "outcome": r.outcome,
                "status": record_state(r, at) if r.kind == "consent" else None,
                "started_at": iso(r.started_at),
                "decided_at": iso(r.decided_at),
            }
            for r in list_records(session, phone, args.limit)
        ]

    rows = with_db(args, fetch)
    if args.json:
        print(json.dumps(rows, ensure_ascii=False, indent=2))
    else:
        for r in rows:
            what = r["purpose"] or f"({r['kind']})"
            print(
                f"{r['record_id']}  {r['started_at']}  {r['phone'] or '-':>16}  "
                f"{r['campaign']:<12} {what:<20} {r['outcome'] or 'in progress':<14} "
                f"{r['status'] or ''}"
            )
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from consent_ivr.api import services
    from consent_ivr.clock import now

    conf = config_of(args)
    phone = phone_of(args, conf)

    def fetch(session: Any) -> dict[str, Any]:
        try:
            return services.consent_status(session, conf, phone, args.purpose, now())
        except services.UnknownPurpose as e:
            raise cfg.ConfigError(f"--purpose: {e}") from None

    result = with_db(args, fetch)
    if args.json:
        print(json.dumps(result, ensure_ascii=False, indent=2))
        return 0
    print(f"phone {phone}")
    for row in result["purposes"]:
        since = f" since {row['since']}" if row["since"] else ""
        via = f" ({row['channel']}, record {row['record_id']})" if row["record_id"] else ""
        print(f"  {row['purpose']:<24} {row['state']:<10}{since}{via}")
        if row["expires_at"] and row["state"] == "given":
            print(f"  {'':<24} expires {row['expires_at']}")
        for ch, verdict in row["may_contact"].items():
            word = "yes" if verdict["allowed"] else "no"
            print(f"  {'':<24} may {ch:<4}: {word} ({verdict['reason']})")
        for rid in row["records"]:
            print(f"  {'':<24} consent-ivr show {rid}")
    for e in result["do_not_contact"]:
        print(
            f"  do-not-contact #{e['id']}: {e['purpose'] or 'every purpose'}, {e['channel']}, "
            f"{e['source']} since {e['since']}" + (f": {e['reason']}" if e["reason"] else "")
        )
    return 0


def cmd_withdraw(args: argparse.Namespace) -> int:
    """An operator withdraws a person's consent (they asked by letter, e-mail, at a desk)."""
    from consent_ivr.api import services
    from consent_ivr.clock import now
    from consent_ivr.service import decision_hooks

    conf = config_of(args)
    phone = phone_of(args, conf)
    if args.purpose and args.purpose not in conf.purposes:
        raise cfg.ConfigError(
            f"--purpose {args.purpose!r}: unknown purpose (configured: "
            f"{', '.join(sorted(conf.purposes))})"
        )

    def work(session: Any) -> list[Any]:
        hooks = decision_hooks(conf)
        return services.withdraw(
            session,
            conf,
            phone,
            args.purpose,
            by=args.by,
            reason=args.reason,
            hooks=hooks,
            at=now(),
        )

    done = with_db(args, work)
    if not done:
        what = f"consent to {args.purpose}" if args.purpose else "consent"
        print(f"{phone}: no active {what} to withdraw", file=sys.stderr)
        return 1
    for r in done:
        print(f"withdrawn: {r.purpose_id} (record {r.record_id})")
    return 0


def cmd_dnc_add(args: argparse.Namespace) -> int:
    from consent_ivr.clock import now
    from consent_ivr.store import lifecycle

    conf = config_of(args)
    phone = phone_of(args, conf)

    def work(session: Any) -> int:
        entry = lifecycle.suppress(
            session,
            phone,
            args.purpose,
            "operator",
            now(),
            channel=args.channel,
            reason=args.reason,
            by=args.by,
        )
        session.flush()
        return int(entry.id)

    entry_id = with_db(args, work)
    print(
        f"do-not-contact #{entry_id}: {phone} ({args.purpose or 'every purpose'}, {args.channel})"
    )
    return 0


def cmd_dnc_lift(args: argparse.Namespace) -> int:
    from consent_ivr.clock import now
    from consent_ivr.store import lifecycle

    def work(session: Any) -> None:
        lifecycle.lift(session, args.id, now())

    try:
        with_db(args, work)
    except (LookupError, ValueError) as e:
        print(f"consent-ivr: {e}", file=sys.stderr)
        return 1
    print(f"do-not-contact #{args.id} lifted")
    return 0


def full_view(session: Any, conf: cfg.Config, record_id: str) -> dict[str, Any] | None:
    """The record, its SMS, and its verification: not only its own chain, but every column
    recomputed from the events, the numbers against their commitment, the recording and the
    prompt audio re-hashed, and the ledger around it (see consent_ivr.evidence.verify)."""
    from consent_ivr.evidence.verify import verify_record
    from consent_ivr.store.records import record_view

    view = record_view(session, record_id)
    if view is None:
        return None
    view["sms"] = _sms_view(session, record_id)
    report = verify_record(session, conf, record_id)
    view["integrity"] = {
        "chain_ok": view["integrity"]["chain_ok"],
        "verified": report.ok,
        "problems": [str(f) for f in report.problems],
        "warnings": [str(f) for f in report.warnings],
        "notes": [str(f) for f in report.notes],
    }
    return view


def cmd_show(args: argparse.Namespace) -> int:
    conf = config_of(args)
    view = with_db(args, lambda session: full_view(session, conf, args.record_id), snapshot=True)
    if view is None:
        print(f"no record {args.record_id}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(view, ensure_ascii=False, indent=2))
    else:
        print(format_record(view))
    return 0


def format_record(v: dict[str, Any]) -> str:
    """A record as people read it: the facts, then what was said and pressed, in time order."""
    what = f"purpose {v['purpose']}" if v["kind"] == "consent" else "withdrawal call"
    called = v["call"].get("called_number") or "-"
    lines = [
        f"record    {v['record_id']}  ({v['kind']})",
        f"phone     {v['phone'] or '(none)'}  (from {v['phone_source']}; called {called}; "
        f"{v['direction']}, {v['language']})",
        f"campaign  {v['campaign']} / {what}",
        f"outcome   {v['outcome']}  (status {v['status'] or '-'}; decided {v['decided_at']})",
        f"call      {v['started_at']} .. {v['ended_at']}",
    ]
    if v.get("expires_at") and v["status"] == "given":
        lines.append(f"expires   {v['expires_at']}")
    rec = v.get("recording")
    lines.append(
        f"recording {rec['path']} ({rec['duration_s']:.1f}s, sha256 {rec['sha256'][:16]}...)"
        if rec
        else "recording none"
    )
    timeline = [(p["at"], f"prompt {p['prompt']:<19} {p['text'][:60]}") for p in v["prompts"]]
    for k in v["keys"]:
        acted = "" if k["acted_on"] else "  (not counted: during a statement)"
        timeline.append((k["at"], f"key    {k['digit']} in {k['step']}{acted}"))
    lines += [f"  {at}  {text}" for at, text in sorted(timeline)]
    if v.get("withdrew"):
        purposes = ", ".join(v["withdrew"].get("purposes") or []) or "nothing (already withdrawn)"
        lines.append(f"withdrew  {purposes}: records {', '.join(v['withdrew']['records'])}")
    for w in v.get("withdrawals") or []:
        how = ", ".join(f"{k} {w[k]}" for k in ("by", "reason", "via_record") if w.get(k))
        lines.append(
            f"withdrawn {w['at']} by {w.get('channel', '?')}" + (f" ({how})" if how else "")
        )
    if v.get("erased"):
        lines.append(f"erased    {v['erased']['at']} ({v['erased'].get('policy', 'by policy')})")
    check = v["integrity"]
    ok = check.get("verified", check["chain_ok"])
    lines.append(
        f"evidence  {len(v['events'])} events, "
        + ("verified: hash chain intact" if ok else "NOT VERIFIED: " + "; ".join(check["problems"]))
    )
    lines += [f"          {note}" for note in check.get("warnings", []) + check.get("notes", [])]
    for sms in v.get("sms") or []:
        lines.append(
            f"sms       {sms.get('status')} via {sms.get('gateway') or '-'}: {sms.get('text')}"
        )
    return "\n".join(lines)


def cmd_flow_diagram(_args: argparse.Namespace) -> int:
    from consent_ivr.flow import diagram

    print(diagram())
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Run the service in-process, place one simulated call, print the resulting record.

    `--scenario withdraw`: the caller agrees first (unless a consent is already active), then
    calls again and withdraws it; both records are printed."""
    from consent_ivr.prompts import Catalog
    from consent_ivr.service import running

    conf = config_of(args)
    name, campaign = conf.campaign(args.campaign)
    language = args.language or campaign.language
    # A new caller each run (an earlier run's consent would turn the call into a withdrawal).
    args.phone = args.phone or f"+7900{secrets.randbelow(10**7):07d}"
    built = Catalog(conf).build()
    if built:
        print(f"built {len(built)} prompt(s)", file=sys.stderr)

    async def go() -> list[str]:
        async with running(conf) as svc:
            if args.scenario != "withdraw":
                return [await _demo_call(svc, args, name, language, args.scenario)]
            active = await svc.db.run(
                _demo_active, svc.db, conf, args.phone, list(campaign.purposes), language
            )
            if not active:
                await _demo_call(svc, args, name, language, "agree")
                active = await svc.db.run(
                    _demo_active, svc.db, conf, args.phone, list(campaign.purposes), language
                )
            steps = await asyncio.to_thread(
                _demo_withdrawal_steps, svc.app.catalog, name, language, active
            )
            # The withdrawal call's own record, then the consent it withdrew.
            return [
                await _demo_call(svc, args, name, language, "script", steps),
                active[0].record_id,
            ]

    record_ids = asyncio.run(go())
    # Read once the service has stopped: its last checkpoint then covers everything shown.
    from consent_ivr.store.db import Database

    db = Database(conf.database.url)
    try:
        views = [_demo_view(db, conf, record_id) for record_id in record_ids]
    finally:
        db.close()
    if args.json:
        print(json.dumps(views if len(views) > 1 else views[0], ensure_ascii=False, indent=2))
    else:
        print("\n\n".join(format_record(v) for v in views))
    return 0 if all(v["outcome"] for v in views) else 1


async def _demo_call(
    svc: Any,
    args: argparse.Namespace,
    campaign: str,
    language: str,
    scenario: str,
    steps: list[tuple[float, str]] | None = None,
) -> str:
    from consent_ivr.simulate import place_call, script, wait_for_record

    channel_id = f"demo-{uuid.uuid4().hex[:12]}"
    print(
        f"calling in as {args.phone} ({scenario if steps is None else 'withdraw'}, {campaign}, "
        f"{language}) ...",
        file=sys.stderr,
    )
    await place_call(
        svc.app.ari,
        svc.app.catalog,
        scenario,
        args.phone,
        channel_id=channel_id,
        campaign=campaign,
        language=language,
        variables=script(steps) if steps else None,
    )
    record_id = str((await wait_for_record(svc.db, channel_id, timeout=180))["record_id"])
    # The SMS goes out when the call ends: give the worker a moment to send it.
    for _ in range(50):
        sms = await svc.db.run(_demo_sms, svc.db, record_id)
        if all(s["status"] not in ("held", "queued", "sending") for s in sms):
            break
        await asyncio.sleep(0.2)
    return record_id


def _demo_active(
    db: Any, conf: cfg.Config, phone: str, purposes: list[str], language: str
) -> list[Any]:
    from consent_ivr.calls import active_consents

    with db.session() as session:
        return active_consents(session, phone, purposes, config=conf, language=language)


def _demo_withdrawal_steps(catalog: Any, campaign: str, language: str, active: list[Any]) -> Any:
    from consent_ivr.simulate import withdrawal_steps

    return withdrawal_steps(catalog, campaign, language, active, "1")


def _demo_view(db: Any, conf: cfg.Config, record_id: str) -> dict[str, Any]:
    with db.session() as session:
        view = full_view(session, conf, record_id)
        assert view is not None
        return view


def _demo_sms(db: Any, record_id: str) -> list[dict[str, Any]]:
    with db.session() as session:
        return _sms_view(session, record_id)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="consent-ivr", description=__doc__)
    p.add_argument(
        "-c",
        "--config",
        help="config file (default: $CONSENT_IVR_CONFIG or "
        "./config.yaml if present, else embedded defaults)",
    )
    p.add_argument("--log-level", default="INFO")
    p.add_argument(
        "--log-format",
        choices=("text", "json"),
        default=os.environ.get("CONSENT_IVR_LOG_FORMAT", "text"),
        help="json: one object a line, with the call and record ids (or CONSENT_IVR_LOG_FORMAT)",
    )
    sub = p.add_subparsers(dest="command", required=True)

    sub.add_parser("run", help="run the ARI service").set_defaults(fn=cmd_run)
    ap = sub.add_parser(
        "api",
        help="answer the HTTP API without taking calls (several share one port)",
    )
    ap.add_argument("--port", type=int, default=0, help="default: http.port")
    ap.set_defaults(fn=cmd_api)
    sub.add_parser("sms-worker", help="run the SMS confirmation worker").set_defaults(
        fn=cmd_sms_worker
    )

    db = sub.add_parser("db", help="database").add_subparsers(dest="db_command", required=True)
    db.add_parser("upgrade", help="apply migrations").set_defaults(fn=cmd_db_upgrade)

    c = sub.add_parser("config", help="configuration").add_subparsers(dest="cc", required=True)
    cc = c.add_parser("check", help="validate config and prompts")
    cc.add_argument(
        "--connect",
        action="store_true",
        help="also connect to the database (migrated to head?) and to ARI (credentials accepted?)",
    )
    cc.set_defaults(fn=cmd_config_check)

    pr = sub.add_parser("prompts", help="prompt audio").add_subparsers(dest="pc", required=True)
    b = pr.add_parser("build", help="synthesize prompt audio (espeak-ng + sox)")
    b.add_argument("--force", action="store_true", help="rebuild everything")
    b.set_defaults(fn=cmd_prompts_build)

    r = sub.add_parser("records", help="list consent records")
    r.add_argument("--phone")
    r.add_argument("--limit", type=int, default=50)
    r.add_argument("--json", action="store_true")
    r.set_defaults(fn=cmd_records)

    st = sub.add_parser("status", help="a person's consents per purpose, and may we contact them")
    st.add_argument("--phone", required=True)
    st.add_argument("--purpose")
    st.add_argument("--json", action="store_true")
    st.set_defaults(fn=cmd_status)

    w = sub.add_parser("withdraw", help="withdraw a person's consent on their behalf (operator)")
    w.add_argument("--phone", required=True)
    which = w.add_mutually_exclusive_group(required=True)
    which.add_argument("--purpose")
    which.add_argument("--all", action="store_true", help="every active consent of the person")
    w.add_argument("--reason", required=True, help="why, e.g. 'asked by e-mail on 2026-11-30'")
    w.add_argument("--by", required=True, help="who records it (operator name)")
    w.set_defaults(fn=cmd_withdraw)

    dnc = sub.add_parser("dnc", help="the do-not-contact register").add_subparsers(
        dest="dc", required=True
    )
    da = dnc.add_parser("add", help="never contact this number (for a purpose, or at all)")
    da.add_argument("--phone", required=True)
    da.add_argument("--purpose", help="default: every purpose")
    da.add_argument("--channel", choices=("all", "call", "sms"), default="all")
    da.add_argument("--reason", required=True)
    da.add_argument("--by", required=True)
    da.set_defaults(fn=cmd_dnc_add)
    dl = dnc.add_parser("lift", help="lift an operator's entry (see `status`)")
    dl.add_argument("id", type=int)
    dl.set_defaults(fn=cmd_dnc_lift)

    s = sub.add_parser("show", help="show one record with its evidence")
    s.add_argument("record_id")
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=cmd_show)

    fl = sub.add_parser("flow", help="the call flow").add_subparsers(dest="fc", required=True)
    fl.add_parser("diagram", help="print the flow as a Mermaid diagram").set_defaults(
        fn=cmd_flow_diagram
    )

    from consent_ivr.agi import cli as agi_cli
    from consent_ivr.api import cli as api_cli
    from consent_ivr.dialing import cli as dialing_cli
    from consent_ivr.evidence import cli as evidence_cli
    from consent_ivr.sms import cli as sms_cli

    agi_cli.add_commands(sub)
    api_cli.add_commands(sub)
    dialing_cli.add_commands(sub)
    evidence_cli.add_commands(sub)
    sms_cli.add_commands(sub)

    d = sub.add_parser("demo", help="one simulated call against a private Asterisk")
    d.add_argument(
        "--scenario",
        default="agree",
        help="agree, decline, change, silence, wrong, early, hangup-notice, hangup-between, or "
        "withdraw (agree first if needed, then call again and withdraw)",
    )
    d.add_argument("--phone", help="the caller's number (default: a new one each run)")
    d.add_argument("--campaign")
    d.add_argument("--language")
    d.add_argument("--json", action="store_true")
    d.set_defaults(fn=cmd_demo)
    return p


# What the long-running commands listen on, as config keys (host, port).
LISTENS = {"run": ("http.host", "http.port"), "sms-worker": ("sms.dlr.host", "sms.dlr.port")}
_CANNOT_LISTEN = {
    errno.EADDRINUSE: "another program listens there: stop it, or choose another port",
    errno.EADDRNOTAVAIL: "no interface of this machine has that address: choose one that does, "
    "or 0.0.0.0",
    errno.EACCES: "ports below 1024 need privileges: choose a port from 1024 up",
}


def _listen_problem(args: argparse.Namespace, e: Exception) -> str | None:
    """Why a command could not listen, naming the keys and where they came from; None when
    ``e`` is not about listening."""
    if not isinstance(e, OSError):
        return None
    keys, code = LISTENS.get(args.command), e.errno
    # asyncio says "error while attempting to bind on address ...": a file error is not this.
    if keys is None or code is None or code not in _CANNOT_LISTEN or "bind" not in str(e):
        return None
    conf, sources = config_of(args), cfg.read(args.config)
    host, port = (_value(conf, key) for key in keys)
    origins = "; ".join(sources.origin(key) for key in keys)
    return (
        f"cannot listen on {host}:{port} ({origins}): {os.strerror(code).lower()}; "
        f"{_CANNOT_LISTEN[code]}"
    )


def _value(conf: cfg.Config, key: str) -> Any:
    value: Any = conf
    for part in key.split("."):
        value = getattr(value, part)
    return value


def _database_problem(args: argparse.Namespace, e: Exception) -> str | None:
    """Why a command that opened the database itself failed, when the database is the cause
    (unreachable, not migrated); None when ``e`` is no database error, or the database answers
    and is migrated."""
    from alembic.util import CommandError
    from sqlalchemy.exc import DBAPIError

    if not isinstance(e, DBAPIError | CommandError):
        return None
    try:
        checked_database_url(args)
    except (cfg.ConfigError, DatabaseUnavailable) as cause:
        return str(cause)
    return None


def main(argv: list[str] | None = None) -> int:
    """Run one command. A problem a person can fix (config, database, a port in use) is one
    message and exit 2; anything else is a bug and keeps its traceback."""
    args = build_parser().parse_args(argv)
    logs.setup(args.log_level, args.log_format)
    try:
        return int(args.fn(args))
    except (cfg.ConfigError, DatabaseUnavailable) as e:
        problem: str | None = str(e)
    except KeyboardInterrupt:
        return 130
    except Exception as e:
        problem = _database_problem(args, e) or _listen_problem(args, e)
        if problem is None:
            raise
    print(f"consent-ivr: {problem}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
