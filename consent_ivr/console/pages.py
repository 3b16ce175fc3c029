"""The console's pages: plain server-rendered HTML with a little CSS and no script, in
Russian or English. Every value is escaped: numbers, reasons and purpose texts come from
callers and config.

A record's own page is the evidence summary of its bundle (consent_ivr.evidence.summary), so
what the console shows is what the bundle holds, in the record's language; the console puts
its bar above it (`around_summary`)."""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

LANGUAGES = ("en", "ru")

# Every label in both languages, side by side: (en, ru).
_LABELS: dict[str, tuple[str, str]] = {
    "title": ("Consent records", "Записи о согласиях"),
    "login": ("Sign in", "Вход"),
    "login.token": ("API token", "API-токен"),
    "login.note": (
        "Sign in with an API token that has the read scope (consent-ivr tokens create "
        "--scope read --name NAME). The console is read-only.",
        "Войдите с API-токеном с правом read (consent-ivr tokens create --scope read --name "
        "ИМЯ). Консоль только для просмотра.",
    ),
    "login.wrong": ("Unknown or revoked token.", "Токен неизвестен или отозван."),
    "login.scope": ("This token lacks the read scope.", "У этого токена нет права read."),
    "logout": ("Sign out", "Выйти"),
    "signed_in": ("Signed in as", "Вы вошли как"),
    "search": ("Search", "Поиск"),
    "search.hint": ("Phone number or record id", "Номер телефона или идентификатор записи"),
    "search.bad": (
        "Neither a phone number nor a record id: {q}",
        "Это не номер телефона и не идентификатор записи: {q}",
    ),
    "search.none": ("No record {q}.", "Записи {q} нет."),
    "person": ("Consents of", "Согласия номера"),
    "purposes": ("Consents per purpose", "Согласия по целям"),
    "col.purpose": ("Purpose", "Цель"),
    "col.state": ("State", "Состояние"),
    "col.since": ("Since (UTC)", "С (UTC)"),
    "col.call": ("May call", "Звонить можно"),
    "col.sms": ("May text", "СМС можно"),
    "col.started": ("Started (UTC)", "Начало (UTC)"),
    "col.campaign": ("Campaign", "Кампания"),
    "col.outcome": ("Outcome", "Итог"),
    "col.kind": ("Kind", "Вид"),
    "col.record": ("Record", "Запись"),
    "col.source": ("Source", "Источник"),
    "col.channel": ("Channel", "Канал"),
    "col.reason": ("Reason", "Причина"),
    "yes": ("yes", "да"),
    "no": ("no", "нет"),
    "records": ("Records", "Записи"),
    "records.none": ("No records for this number.", "Записей по этому номеру нет."),
    "records.more": ("Older records", "Более ранние записи"),
    "dnc": ("Do-not-contact register", "Реестр запрета контактов"),
    "dnc.none": ("Not on the register.", "В реестре нет."),
    "every_purpose": ("every purpose", "все цели"),
    "bundle": ("Download the evidence bundle", "Скачать пакет доказательств"),
    "bundle.note": (
        "The zip verifies alone: consent-ivr verify FILE.zip",
        "Архив проверяется сам по себе: consent-ivr verify FILE.zip",
    ),
    "export.missing": (
        "This token has no export scope: the call recording and the bundle are not available.",
        "У токена нет права export: запись разговора и пакет доказательств недоступны.",
    ),
    "record.note": (
        "Below: the evidence summary as the bundle holds it, in the language of the call.",
        "Ниже: сводка доказательств, как в пакете, на языке звонка.",
    ),
    "back": ("New search", "Новый поиск"),
}

_STATES: dict[str, tuple[str, str]] = {
    "given": ("given", "дано"),
    "refused": ("refused", "отказано"),
    "withdrawn": ("withdrawn", "отозвано"),
    "expired": ("expired", "истекло"),
    "requested": ("asked, no decision", "запрошено"),
    "none": ("never asked", "не запрашивалось"),
}


@dataclass(frozen=True)
class Words:
    """The console's labels in one language."""

    language: str

    def __call__(self, key: str, **values: str) -> str:
        pair = _LABELS[key]
        text = pair[1] if self.language == "ru" else pair[0]
        return e(text.format(**values)) if values else e(text)

    def state(self, code: str | None) -> str:
        pair = _STATES.get(code or "")
        return e((pair[1] if self.language == "ru" else pair[0]) if pair else code)


def e(value: Any) -> str:
    return "—" if value is None or value == "" else html.escape(str(value))


def when(stamp: str | None) -> str:
    """An ISO time as people read it in a table: 2026-03-15 09:27:02 (UTC, to the second)."""
    return e(stamp[:19].replace("T", " ") if stamp else None)


CSS = """
body { margin: 0; font: 15px/1.5 "DejaVu Sans", Helvetica, Arial, sans-serif; color: #1b1b1b;
  background: #f3f3f1; }
.bar { background: #1b1b1b; color: #fff; padding: .5rem 1.5rem; display: flex; gap: 1.2rem;
  align-items: center; flex-wrap: wrap; }
.bar a, .bar button { color: #fff; }
.bar form { margin: 0; display: flex; gap: .4rem; }
.bar input[type=search] { width: 20rem; padding: .2rem .4rem; }
.bar .who { margin-left: auto; font-size: .85rem; }
.bar button { background: none; border: 1px solid #777; cursor: pointer; }
.console { max-width: 60rem; margin: 1.5rem auto; padding: 1.5rem 2rem; background: #fff;
  border: 1px solid #dcdcd8; }
.console table { width: 100%; border-collapse: collapse; margin: .5rem 0 1rem; }
.console th, .console td { text-align: left; padding: .3rem .5rem; border-top: 1px solid #e2e2de;
  vertical-align: top; }
.console th { font-size: .8rem; color: #555; }
.yes { color: #14532d; font-weight: bold; } .no { color: #7f1d1d; font-weight: bold; }
.error { color: #7f1d1d; font-weight: bold; }
.note { color: #555; }
.actions { max-width: 56rem; margin: 1rem auto 0; padding: .75rem 1rem; background: #fff;
  border: 1px solid #dcdcd8; }
a.button { display: inline-block; padding: .35rem .8rem; background: #14532d; color: #fff;
  text-decoration: none; border-radius: .25rem; }
code { font-family: "DejaVu Sans Mono", monospace; font-size: .85em; }
"""


def _lang_links(path: str, current: str) -> str:
    links = []
    for lang in LANGUAGES:
        label = {"en": "English", "ru": "Русский"}[lang]
        if lang == current:
            links.append(f"<strong>{label}</strong>")
        else:
            links.append(
                f'<a href="{e(path)}?{urlencode({"lang": lang})}" lang="{lang}">{label}</a>'
            )
    return " · ".join(links)


def bar(w: Words, path: str, who: str | None, q: str = "") -> str:
    """The console's top bar: search, language, who is signed in."""
    parts = [f'<a href="/console/"><strong>{w("title")}</strong></a>']
    if who is not None:
        parts.append(
            f'<form method="get" action="/console/" role="search"><input type="search" name="q" '
            f'value="{e(q) if q else ""}" placeholder="{w("search.hint")}" aria-label="'
            f'{w("search.hint")}"><button type="submit">{w("search")}</button></form>'
        )
    parts.append(f'<span class="langs">{_lang_links(path, w.language)}</span>')
    if who is not None:
        parts.append(
            f'<span class="who">{w("signed_in")} <code>{e(who)}</code></span>'
            f'<form method="post" action="/console/logout"><button type="submit">'
            f"{w('logout')}</button></form>"
        )
    return f'<nav class="bar" lang="{w.language}">{"".join(parts)}</nav>'


def page(w: Words, title: str, body: str, *, path: str, who: str | None, q: str = "") -> str:
    return (
        f'<!DOCTYPE html><html lang="{w.language}"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{title}</title><style>{CSS}</style></head><body>"
        f'{bar(w, path, who, q)}<main class="console">{body}</main></body></html>'
    )


def login(w: Words, error: str | None = None) -> str:
    problem = f'<p class="error" role="alert">{w(error)}</p>' if error else ""
    body = (
        f'<h1>{w("login")}</h1>{problem}<p class="note">{w("login.note")}</p>'
        '<form method="post" action="/console/login" id="login">'
        f'<label>{w("login.token")} <input type="password" name="token" autocomplete="off" '
        f'required size="50"></label> <button type="submit">{w("login")}</button></form>'
    )
    return page(w, w("login"), body, path="/console/login", who=None)


def message(w: Words, text: str, *, who: str, q: str) -> str:
    return page(w, w("title"), f'<p class="error">{text}</p>', path="/console/", who=who, q=q)


def home(w: Words, *, who: str) -> str:
    body = f'<h1>{w("title")}</h1><p class="note">{w("search.hint")}</p>'
    return page(w, w("title"), body, path="/console/", who=who)


def _verdict(w: Words, verdict: dict[str, Any]) -> str:
    word, cls = ("yes", "yes") if verdict["allowed"] else ("no", "no")
    return f'<span class="{cls}">{w(word)}</span><br><small>{e(verdict["reason"])}</small>'


def _table(headers: Iterable[str], rows: Iterable[str], ident: str) -> str:
    head = "".join(f"<th>{h}</th>" for h in headers)
    return (
        f'<table id="{ident}"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'
    )


def person(
    w: Words,
    status: dict[str, Any],
    records: Sequence[dict[str, Any]],
    next_cursor: str | None,
    *,
    who: str,
    q: str,
) -> str:
    phone = status["phone"]
    purposes = [
        f'<tr data-purpose="{e(p["purpose"])}" data-state="{e(p["state"])}">'
        f"<td><code>{e(p['purpose'])}</code></td><td>{w.state(p['state'])}</td>"
        f"<td>{when(p['since'])}</td><td>{_verdict(w, p['may_contact']['call'])}</td>"
        f"<td>{_verdict(w, p['may_contact']['sms'])}</td></tr>"
        for p in status["purposes"]
    ]
    body = [
        f"<h1>{w('person')} <code>{e(phone)}</code></h1>",
        f"<h2>{w('purposes')}</h2>",
        _table(
            [w("col.purpose"), w("col.state"), w("col.since"), w("col.call"), w("col.sms")],
            purposes,
            "purposes",
        ),
        f"<h2>{w('records')}</h2>",
    ]
    if records:
        rows = [
            f'<tr data-record="{e(r["record_id"])}"><td>{when(r["started_at"])}</td>'
            f"<td>{e(r['campaign'])}</td><td><code>{e(r['purpose'] or r['kind'])}</code></td>"
            f"<td>{e(r['outcome'])}</td><td>{w.state(r['status']) if r['status'] else e(None)}"
            f'</td><td><a href="/console/records/{quote(r["record_id"])}">'
            f"<code>{e(r['record_id'][:8])}</code></a></td></tr>"
            for r in records
        ]
        headers = [
            w("col.started"),
            w("col.campaign"),
            w("col.purpose"),
            w("col.outcome"),
            w("col.state"),
            w("col.record"),
        ]
        body.append(_table(headers, rows, "records"))
        if next_cursor:
            more = urlencode({"q": q, "cursor": next_cursor})
            body.append(f'<p><a href="/console/?{more}">{w("records.more")}</a></p>')
    else:
        body.append(f"<p>{w('records.none')}</p>")
    body.append(f"<h2>{w('dnc')}</h2>")
    entries = [
        f"<tr><td><code>{e(d['purpose']) if d['purpose'] else w('every_purpose')}</code></td>"
        f"<td>{e(d['channel'])}</td><td>{e(d['source'])}</td><td>{when(d['since'])}</td>"
        f"<td>{e(d['reason'])}</td></tr>"
        for d in status["do_not_contact"]
    ]
    if entries:
        headers = [
            w("col.purpose"),
            w("col.channel"),
            w("col.source"),
            w("col.since"),
            w("col.reason"),
        ]
        body.append(_table(headers, entries, "dnc"))
    else:
        body.append(f"<p>{w('dnc.none')}</p>")
    return page(w, f"{w('person')} {e(phone)}", "".join(body), path="/console/", who=who, q=q)


def around_summary(
    w: Words, summary_html: str, record_id: str, *, who: str, can_export: bool
) -> str:
    """The bundle's summary page of a record, with the console's bar and actions above it."""
    if can_export:
        actions = (
            f'<a class="button" id="bundle" href="/console/records/{quote(record_id)}/bundle" '
            f'download>{w("bundle")}</a> <small class="note">{w("bundle.note")}</small>'
        )
    else:
        actions = f'<p class="error">{w("export.missing")}</p>'
    top = (
        bar(w, f"/console/records/{quote(record_id)}", who)
        + f'<div class="actions" lang="{w.language}">{actions}'
        f'<p class="note">{w("record.note")}</p></div>'
    )
    head, _, rest = summary_html.partition("</head>")
    opening, _, body = rest.partition("<body>")
    return f"{head}<style>{CSS}</style></head>{opening}<body>{top}{body}"
