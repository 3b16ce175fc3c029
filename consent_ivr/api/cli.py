"""`consent-ivr tokens`: API tokens for the HTTP API and the console."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from consent_ivr.api import tokens
from consent_ivr.api.models import SCOPES
from consent_ivr.cli import with_db
from consent_ivr.clock import iso, now
from consent_ivr.config import ConfigError


def cmd_create(args: argparse.Namespace) -> int:
    try:
        scopes = tokens.check_scopes(args.scope)
    except ValueError as e:
        raise ConfigError(f"--{e}") from None

    def work(session: Any) -> tuple[int, str]:
        row, token = tokens.create(session, args.name, scopes, now(), args.rate)
        return row.id, token

    try:
        token_id, token = with_db(args, work)
    except ValueError as e:
        raise ConfigError(f"--{e}") from None
    print(
        f"# token {token_id} ({args.name}, scopes {', '.join(scopes)}): shown once, stored "
        f"only as its SHA-256. Send it as: Authorization: Bearer TOKEN",
        file=sys.stderr,
    )
    print(token)
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    def fetch(session: Any) -> list[dict[str, Any]]:
        return [
            {
                "id": t.id,
                "name": t.name,
                "prefix": t.prefix,
                "scopes": t.scopes,
                "rate_per_s": t.rate_per_s,
                "created_at": iso(t.created_at),
                "revoked_at": iso(t.revoked_at),
            }
            for t in tokens.listed(session)
        ]

    rows = with_db(args, fetch)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for r in rows:
        state = f"revoked {r['revoked_at']}" if r["revoked_at"] else "live"
        rate = f", {r['rate_per_s']:g}/s" if r["rate_per_s"] else ""
        print(
            f"{r['id']:>4}  {r['name']:<24} {r['prefix']}…  {','.join(r['scopes']):<28} "
            f"{state}{rate}"
        )
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    done = with_db(args, lambda s: [(t.id, t.name) for t in tokens.revoke(s, args.token, now())])
    if not done:
        print(f"consent-ivr: no live token {args.token!r}", file=sys.stderr)
        return 1
    for token_id, name in done:
        print(f"revoked token {token_id} ({name})")
    return 0


def add_commands(sub: Any) -> None:
    t = sub.add_parser("tokens", help="API tokens").add_subparsers(dest="tc", required=True)
    c = t.add_parser("create", help="make a token (printed once)")
    c.add_argument("--name", required=True, help="who uses it, e.g. crm")
    c.add_argument(
        "--scope",
        action="append",
        required=True,
        choices=SCOPES,
        help="repeat for several: read, call, withdraw, export",
    )
    c.add_argument("--rate", type=float, help="requests per second (default: api.rate_per_s)")
    c.set_defaults(fn=cmd_create)
    ls = t.add_parser("list", help="every token, live and revoked (never the secret)")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(fn=cmd_list)
    r = t.add_parser("revoke", help="revoke a token by id, or every live token of a name")
    r.add_argument("token", metavar="ID|NAME")
    r.set_defaults(fn=cmd_revoke)
