"""The evidence bundle's ``summary.html``: one record told for a person, not a program.

A lawyer or a regulator opens it in any browser, or prints it, and reads who asked whom and
when, the purpose in the exact words the record keeps, every prompt as played and every key as
pressed in time order (with a player for the exact audio), the decision, the SMS, withdrawals,
erasure and the verification result. The page is one self-contained document: inline CSS, no
script, no external resource (the audio it plays is the bundle's own files, by relative path),
so it reads the same in ten years as today. Labels are in the record's language (Russian or
English, English otherwise); the values are the record's own, every one of them escaped,
because purpose texts come from config and numbers and reasons come from callers.
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote

from consent_ivr import durations

# Every label in both languages, side by side, so a translation cannot go missing: (en, ru).
_LABELS: dict[str, tuple[str, str]] = {
    "title.consent": ("Consent record", "Запись о согласии"),
    "title.withdrawal": ("Withdrawal call record", "Запись звонка об отзыве согласия"),
    "kicker": ("Evidence summary", "Сводка доказательств"),
    "record": ("Record", "Запись"),
    "utc": ("All times are UTC.", "Время везде указано в UTC."),
    "nothing": ("—", "—"),
    "seconds": ("s", "с"),
    # who asked whom
    "parties": ("Who asked whom", "Кто и у кого спрашивал"),
    "controller": ("Controller", "Оператор данных"),
    "on_behalf_of": ("On behalf of", "От имени"),
    "contact": ("Contact", "Контакт"),
    "phone": ("The person's number", "Номер субъекта данных"),
    "phone.erased": ("erased", "удалён"),
    "phone.withheld": ("withheld by the caller", "скрыт звонившим"),
    "phone_source": ("Where the number came from", "Откуда взят номер"),
    "caller_number": ("Calling number", "Номер звонившего"),
    "called_number": ("Called number", "Вызываемый номер"),
    "direction": ("Direction", "Направление"),
    "campaign": ("Campaign", "Кампания"),
    "language": ("Language of the call", "Язык звонка"),
    "jurisdiction": ("Jurisdiction", "Юрисдикция"),
    "collection_method": ("How the answer was given", "Как дан ответ"),
    "call": ("Call", "Звонок"),
    # purpose
    "purpose": ("Purpose", "Цель"),
    "purpose.text": ("Purpose, word for word", "Цель, дословно"),
    "purpose.id": ("Purpose code", "Код цели"),
    "data_categories": ("Data processed", "Какие данные обрабатываются"),
    "lawful_basis": ("Lawful basis", "Правовое основание"),
    "validity": ("Consent valid for", "Срок действия согласия"),
    "validity.none": ("until withdrawn", "до отзыва"),
    "retention": ("Kept after the call for", "Срок хранения после звонка"),
    "erase_after_withdrawal": (
        "Erased after a withdrawal within",
        "Удаление после отзыва в течение",
    ),
    "withdrawal": ("How to withdraw", "Как отозвать"),
    "privacy_notice_url": ("Privacy notice", "Политика обработки данных"),
    "offered": ("Consents offered for withdrawal", "Согласия, предложенные к отзыву"),
    "offered.none": ("none: the caller had no active consent", "нет: действующих согласий не было"),
    # decision
    "decision": ("Decision", "Решение"),
    "outcome": ("Outcome of the call", "Итог звонка"),
    "status": ("Status now", "Статус сейчас"),
    "decided_at": ("Decided at", "Время решения"),
    "expires_at": ("Expires on", "Действует до"),
    # timeline
    "timeline": ("The call, step by step", "Ход звонка"),
    "timeline.note": (
        "Every prompt the person heard, with its words as played, and every key they pressed, "
        "in time order. The offset counts from the start of the call.",
        "Каждая фраза, которую слышал человек, дословно, и каждая нажатая им клавиша, по "
        "порядку. Смещение отсчитывается от начала звонка.",
    ),
    "col.time": ("Time", "Время"),
    "col.offset": ("Offset", "Смещение"),
    "col.event": ("Event", "Событие"),
    "col.details": ("Details", "Подробности"),
    "row.start": ("Call started", "Начало звонка"),
    "row.prompt": ("Prompt played", "Прозвучала фраза"),
    "row.key": ("Key pressed", "Нажата клавиша"),
    "row.decision": ("Decision stored", "Решение сохранено"),
    "row.end": ("Call ended", "Конец звонка"),
    "version": ("wording version", "версия текста"),
    "audio_sha": ("audio SHA-256", "SHA-256 аудио"),
    "audio.missing": ("audio not in this bundle", "аудио нет в этом пакете"),
    "step": ("Step of the call", "Этап звонка"),
    "counted": ("counted", "учтена"),
    "not_counted": (
        "not counted: pressed during a statement",
        "не учтена: нажата во время сообщения",
    ),
    "for_purpose": ("Purpose", "Цель"),
    # recording
    "recording": ("Recording of the call", "Запись разговора"),
    "recording.none": ("The call was not recorded.", "Разговор не записывался."),
    "recording.erased": (
        "The audio was erased by policy; its hash remains.",
        "Аудиозапись удалена по политике хранения; её хеш сохранён.",
    ),
    "file": ("File", "Файл"),
    "format": ("Format", "Формат"),
    "duration": ("Duration", "Длительность"),
    "sha256": ("SHA-256", "SHA-256"),
    # sms
    "sms": ("Text messages", "СМС"),
    "sms.none": ("No text message was sent.", "СМС не отправлялись."),
    "sms.text": ("Text", "Текст"),
    "sms.status": ("Delivery", "Доставка"),
    "sms.about": ("Confirms", "Подтверждает"),
    "sms.gateway": ("Gateway", "Шлюз"),
    "sms.message_id": ("Message id", "Идентификатор сообщения"),
    "sms.sent_at": ("Sent", "Отправлено"),
    "sms.delivered_at": ("Delivered", "Доставлено"),
    "sms.failed_at": ("Failed", "Не доставлено"),
    "sms.error": ("Error", "Ошибка"),
    "sms.reports": ("Delivery reports", "Отчёты о доставке"),
    # withdrawals
    "withdrawals": ("Withdrawals", "Отзыв согласия"),
    "withdrawals.none": ("The consent was not withdrawn.", "Согласие не отзывалось."),
    "channel": ("Channel", "Канал"),
    "by": ("By", "Кем"),
    "reason": ("Reason", "Причина"),
    "reference": ("Reference", "Ссылка"),
    # erasure
    "erasure": ("Erasure", "Удаление"),
    "erasure.done": (
        "Personal data of this record was erased by policy on {date}.",
        "Персональные данные этой записи удалены по политике хранения {date}.",
    ),
    "erasure.header": ("Personal data erased on {date}", "Персональные данные удалены {date}"),
    "erasure.erased": ("What was erased", "Что удалено"),
    "erasure.period": ("Period", "Срок"),
    "erasure.since": ("Counted from", "Отсчитывается от"),
    "erasure.due": ("Due by", "Удалить не позднее"),
    "erasure.recording_sha256": (
        "SHA-256 of the erased recording",
        "SHA-256 удалённой записи разговора",
    ),
    "erasure.policy": ("Policy", "Основание"),
    "erasure.hashes": (
        "The hashes remain: the record can still be verified, but can no longer be tied to "
        "a number.",
        "Хеши сохранены: запись по-прежнему можно проверить, но связать её с номером больше "
        "нельзя.",
    ),
    # verification
    "verification": ("Verification", "Проверка целостности"),
    "verify.ok": ("Verified: no change found", "Проверено: изменений не обнаружено"),
    "verify.failed": ("Verification FAILED", "Проверка НЕ пройдена"),
    "verify.problems": ("Problems found", "Обнаруженные нарушения"),
    "verify.warnings": ("Warnings", "Предупреждения"),
    "verify.notes": ("Notes", "Примечания"),
    "verify.counts": ("What was checked", "Что проверено"),
    "checked_at": ("Checked at", "Время проверки"),
    "checkpoint": ("Signed checkpoint", "Подписанная контрольная точка"),
    "checkpoint.none": (
        "no checkpoint covers this record yet",
        "контрольной точки для этой записи ещё нет",
    ),
    "checkpoint.entry": ("ledger entry", "запись реестра"),
    "checkpoint.key": ("key", "ключ"),
    "checkpoint.signed": ("signed", "подписана"),
    "checkpoint.unsigned": ("NOT signed", "НЕ подписана"),
    "checkpoint.head": ("ledger head", "вершина реестра"),
    # technical
    "technical": ("Technical details", "Технические сведения"),
    "record_id": ("Record id", "Идентификатор записи"),
    "schema_version": ("Schema version", "Версия схемы"),
    "kind": ("Record kind", "Вид записи"),
    "call_id": ("Call id", "Идентификатор звонка"),
    "channel_id": ("Asterisk channel", "Канал Asterisk"),
    "commitment": ("Commitment to the numbers (salted SHA-256)", "Солёный SHA-256 номеров"),
    "events": ("Event chain", "Цепочка событий"),
    "col.kind": ("Kind", "Тип"),
    "col.step": ("Step", "Этап"),
    "col.hash": ("Hash", "Хеш"),
    "col.ledger": ("Ledger", "Реестр"),
    "footer": (
        "Made by consent-ivr from the record's hash-chained events. The audio players play "
        "the files of this bundle; the printed copy names them.",
        "Сформировано consent-ivr из цепочки хешированных событий записи. Проигрыватели "
        "воспроизводят файлы этого пакета; в печатной копии указаны их имена.",
    ),
}

# The record's codes in words: (en, ru). An unknown code is shown as it is.
_VALUES: dict[str, dict[str, tuple[str, str]]] = {
    "outcome": {
        "granted": ("consent given", "согласие дано"),
        "declined": ("consent refused", "в согласии отказано"),
        "withdrawn": ("consent withdrawn", "согласие отозвано"),
        "kept": ("consents kept as they were", "согласия оставлены в силе"),
        "nothing_active": ("nothing to withdraw", "отзывать нечего"),
        "unidentified": ("number hidden: nothing asked", "номер скрыт: ничего не спрашивали"),
        "no_response": ("no answer", "ответа не получено"),
        "abandoned": ("hung up before confirming", "трубку положили до подтверждения"),
        "failed": ("technical failure: nothing saved", "техническая ошибка: ничего не сохранено"),
    },
    "status": {
        "requested": ("asked, no decision", "запрошено, решения нет"),
        "given": ("given", "дано"),
        "refused": ("refused", "отказано"),
        "withdrawn": ("withdrawn", "отозвано"),
        "expired": ("expired", "истекло"),
    },
    "kind": {
        "consent": ("consent", "согласие"),
        "withdrawal": ("withdrawal call", "звонок об отзыве"),
    },
    "phone_source": {
        "caller-id": ("caller ID of the incoming call", "определитель номера входящего звонка"),
        "dialled": ("the number we dialled", "номер, который набрали мы"),
        "operator": ("entered by an operator", "введён оператором"),
        "sms": ("the sender of an SMS", "отправитель СМС"),
    },
    "direction": {
        "inbound": ("inbound: the person called us", "входящий: человек позвонил нам"),
        "outbound": ("outbound: we called the person", "исходящий: мы позвонили человеку"),
    },
    "language": {"ru": ("Russian", "русский"), "en": ("English", "английский")},
    "collection_method": {
        "ivr-keypad": (
            "keys pressed in an automated, recorded call",
            "нажатием клавиш в автоматическом записываемом звонке",
        ),
    },
    "lawful_basis": {"consent": ("consent", "согласие")},
    "erased": {
        "phone": ("the person's number", "номер субъекта"),
        "subject_salt": (
            "the salt that tied the hashes to the number",
            "соль, связывавшая хеши с номером",
        ),
        "caller_number": ("the calling number", "номер звонившего"),
        "called_number": ("the called number", "вызываемый номер"),
        "recording": ("the recording of the call", "запись разговора"),
        "sms_phone": ("the number the SMS was sent to", "номер получателя СМС"),
    },
    "policy": {
        "retention": ("the retention period ran out", "истёк срок хранения"),
        "erase_after_withdrawal": (
            "erasure after the consent was withdrawn",
            "удаление после отзыва согласия",
        ),
    },
    "step": {
        "start": ("start of the call", "начало звонка"),
        "recording": ("before the first prompt", "до первой фразы"),
        "notice": ("notice that the call is recorded", "уведомление о записи"),
        "purpose": ("statement of the purpose", "изложение цели"),
        "ask": ("the question whether the person agrees", "вопрос о согласии"),
        "menu": ("the withdrawal menu", "меню отзыва"),
        "chosen": ("the choice said back", "повтор выбора"),
        "confirm": ("confirmation of the choice", "подтверждение выбора"),
        "saving": ("saving the decision", "сохранение решения"),
        "recorded": ("announcement of the decision", "сообщение о записи решения"),
        "result": ("result", "итог"),
        "done": ("end", "завершение"),
    },
    "sms_status": {
        "held": ("waiting for the call to end", "ждёт конца звонка"),
        "queued": ("queued", "в очереди"),
        "sending": ("being sent", "отправляется"),
        "sent": ("sent, no delivery report yet", "отправлено, отчёта о доставке нет"),
        "delivered": ("delivered", "доставлено"),
        "logged": ("written to the log (test gateway, not sent)", "записано в журнал (тест)"),
        "suppressed": ("not sent: no consent", "не отправлено: нет согласия"),
        "failed": ("not delivered", "не доставлено"),
    },
    "channel": {
        "phone": ("phone call", "телефонный звонок"),
        "call": ("phone call", "телефонный звонок"),
        "sms": ("SMS", "СМС"),
        "operator": ("operator", "оператор"),
    },
}

_GOOD = {"granted", "given", "delivered", "kept"}
_BAD = {"declined", "refused", "withdrawn", "expired", "failed", "no_response", "abandoned"}


@dataclass(frozen=True)
class _Words:
    """Labels and codes in one language: the one per-language lookup of this page."""

    language: str

    def _pick(self, pair: tuple[str, str]) -> str:
        return pair[1] if self.language == "ru" else pair[0]

    def __call__(self, key: str) -> str:
        return self._pick(_LABELS[key])

    def value(self, group: str, code: Any) -> str:
        """A code in words, escaped; an unknown code as it is."""
        if code is None or code == "":
            return _e(None)
        pair = _VALUES[group].get(str(code))
        return _e(self._pick(pair) if pair else code)

    def duration(self, iso: str | None, none: str = "nothing") -> str:
        """``P5Y`` as "5 years (P5Y)", escaped; text that is not a duration as it is."""
        if not iso:
            return _e(self(none))
        try:
            return f"{_e(durations.spoken(iso, self.language))} <small>({_e(iso)})</small>"
        except ValueError:
            return _e(iso)

    def when(self, iso: str | None) -> str:
        """A moment as people read it: "14 March 2026, 09:26:53 UTC"."""
        moment = _parse(iso)
        if moment is None:
            return _e(iso)
        return _e(f"{durations.spoken_date(moment, self.language)}, {moment:%H:%M:%S} UTC")

    def day(self, iso: str | None) -> str:
        moment = _parse(iso)
        return _e(durations.spoken_date(moment, self.language) if moment else iso)


# ---- small HTML helpers (each returns HTML; every value passes through _e) ------------------


def _e(value: Any) -> str:
    return "—" if value is None or value == "" else html.escape(str(value))


def _parse(iso: str | None) -> datetime | None:
    try:
        return datetime.fromisoformat(iso) if iso else None
    except ValueError:
        return None


def _facts(rows: Iterable[tuple[str, str]]) -> str:
    """A two-column table of label (text) and value (HTML)."""
    body = "".join(f"<tr><th>{_e(label)}</th><td>{value}</td></tr>" for label, value in rows)
    return f'<table class="facts">{body}</table>'


def _table(cls: str, headers: Iterable[str], rows: Iterable[str]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    return (
        f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'
    )


def _section(ident: str, title: str, body: str) -> str:
    return f'<section id="{ident}"><h2>{_e(title)}</h2>{body}</section>'


def _hash(value: Any) -> str:
    return f'<code class="hash">{_e(value)}</code>'


def _quote(text: Any) -> str:
    return f'<blockquote class="said">{_e(text)}</blockquote>'


def _badge(text: str, tone: str) -> str:
    return f'<span class="badge {tone}">{text}</span>'


def _coded(group: str, code: Any, w: _Words) -> str:
    """A code (outcome, status...) in words, marked good or bad at a glance."""
    tone = "good" if code in _GOOD else "bad" if code in _BAD else "plain"
    return _badge(w.value(group, code), tone)


def _verdict(verification: dict[str, Any], w: _Words) -> str:
    ok = bool(verification.get("ok"))
    return _badge(_e(w("verify.ok" if ok else "verify.failed")), "good" if ok else "bad")


def _audio(path: str | None, words: _Words) -> str:
    """A player for a file of the bundle, with the file's name for the printed copy."""
    if not path:
        return f'<p class="file missing">{_e(words("audio.missing"))}</p>'
    src = html.escape(quote(path), quote=True)
    return (
        f'<audio controls preload="metadata" src="{src}"></audio>'
        f'<p class="file">{_e(words("file"))}: <code>{_e(path)}</code></p>'
    )


# ---- sections ---------------------------------------------------------------------------------


def _header(view: dict[str, Any], verification: dict[str, Any], w: _Words) -> str:
    kind = "withdrawal" if view.get("kind") == "withdrawal" else "consent"
    purpose = view.get("purpose_details") or {}
    subtitle = f'<p class="subtitle">{_e(purpose["text"])}</p>' if purpose.get("text") else ""
    verdict = _coded("outcome", view.get("outcome"), w)
    if kind == "consent" and view.get("status"):
        verdict += f" {_e(w('status'))}: {_coded('status', view['status'], w)}"
    lines = [verdict, _verdict(verification, w)]
    erased = view.get("erased")
    if erased:
        date = w.day(erased.get("at"))
        lines.append(_badge(_e(w("erasure.header")).format(date=date), "bad"))
    verdicts = "".join(f'<p class="verdict">{line}</p>' for line in lines)
    return (
        f'<header><p class="kicker">{_e(w("kicker"))} · {_e(w("record"))} '
        f"{_hash(view.get('record_id'))}</p>"
        f"<h1>{_e(w('title.' + kind))}</h1>{subtitle}{verdicts}"
        f'<p class="note">{_e(w("utc"))}</p></header>'
    )


def _number(
    number: str | None,
    view: dict[str, Any],
    w: _Words,
    *,
    missing: str = "phone.withheld",
    strong: bool = False,
) -> str:
    """A phone number, or why there is none: erased by policy, or (`missing`) withheld."""
    if number:
        return f"<strong>{_e(number)}</strong>" if strong else _e(number)
    return _e(w("phone.erased" if view.get("erased") else missing))


def _call_span(view: dict[str, Any], w: _Words) -> str:
    """When the call ran: "14 March 2026, 09:26:53 – 09:27:28 UTC (35 s)"."""
    start, end = _parse(view.get("started_at")), _parse(view.get("ended_at"))
    if start is None or end is None:
        return w.when(view.get("started_at"))
    seconds = f"({(end - start).total_seconds():.0f} {_e(w('seconds'))})"
    if start.date() != end.date():
        return f"{w.when(view['started_at'])} – {w.when(view['ended_at'])} {seconds}"
    day = _e(durations.spoken_date(start, w.language))
    return f"{day}, {start:%H:%M:%S} – {end:%H:%M:%S} UTC {seconds}"


def _parties(view: dict[str, Any], w: _Words) -> str:
    controller = view.get("controller") or {}
    call = view.get("call") or {}
    rows = [(w("controller"), f"<strong>{_e(controller.get('name'))}</strong>")]
    if controller.get("on_behalf_of"):
        rows.append((w("on_behalf_of"), _e(controller["on_behalf_of"])))
    rows += [
        (w("contact"), _e(controller.get("contact"))),
        (w("phone"), _number(view.get("phone"), view, w, strong=True)),
        (w("phone_source"), w.value("phone_source", view.get("phone_source"))),
        (w("caller_number"), _number(call.get("caller_number"), view, w)),
        (w("called_number"), _number(call.get("called_number"), view, w, missing="nothing")),
        (w("direction"), w.value("direction", view.get("direction"))),
        (w("call"), _call_span(view, w)),
        (w("campaign"), _e(view.get("campaign"))),
        (w("language"), w.value("language", view.get("language"))),
        (w("jurisdiction"), _e(view.get("jurisdiction"))),
        (w("collection_method"), w.value("collection_method", view.get("collection_method"))),
    ]
    return _section("parties", w("parties"), _facts(rows))


def _purpose(view: dict[str, Any], w: _Words) -> str:
    p = view.get("purpose_details") or {}
    if view.get("kind") == "withdrawal":
        offered = p.get("offered") or []
        items = "".join(
            f"<li>{_e(o.get('text'))} <small>({_e(o.get('purpose_id'))}, "
            f"{_hash(o.get('record_id'))})</small></li>"
            for o in offered
        )
        body = f"<ul>{items}</ul>" if items else f"<p>{_e(w('offered.none'))}</p>"
        return _section("purpose", w("offered"), body)
    url = p.get("privacy_notice_url")
    rows = [
        (w("purpose.text"), _quote(p.get("text"))),
        (w("purpose.id"), f"<code>{_e(view.get('purpose') or p.get('id'))}</code>"),
        (w("data_categories"), _e(p.get("data_categories"))),
        (w("lawful_basis"), w.value("lawful_basis", p.get("lawful_basis"))),
        (w("validity"), w.duration(p.get("validity"), "validity.none")),
        (w("retention"), w.duration(p.get("retention"))),
    ]
    if p.get("erase_after_withdrawal"):
        rows.append((w("erase_after_withdrawal"), w.duration(p["erase_after_withdrawal"])))
    rows.append((w("withdrawal"), _e(p.get("withdrawal"))))
    if url:
        rows.append((w("privacy_notice_url"), f'<span class="url">{_e(url)}</span>'))
    return _section("purpose", w("purpose"), _facts(rows))


def _decision(view: dict[str, Any], w: _Words) -> str:
    rows = [
        (w("outcome"), _coded("outcome", view.get("outcome"), w)),
        (w("decided_at"), w.when(view.get("decided_at"))),
    ]
    if view.get("kind") == "consent":
        rows.append((w("status"), _coded("status", view.get("status"), w)))
        if view.get("expires_at") and view.get("status") in ("given", "expired"):
            rows.append((w("expires_at"), w.when(view["expires_at"])))
    return _section("decision", w("decision"), _facts(rows))


def _timeline(view: dict[str, Any], media: dict[str, str], w: _Words) -> str:
    start = _parse(view.get("started_at"))
    rows: list[tuple[datetime, int, str]] = []

    def add(
        at: str | None, rank: int, kind: str, event: str, details: str, attrs: str = ""
    ) -> None:
        moment = _parse(at)
        if moment is None:
            return
        offset = f"+{(moment - start).total_seconds():.1f} {w('seconds')}" if start else ""
        rows.append(
            (
                moment,
                rank,
                f'<tr class="tl tl-{kind}" data-kind="{kind}"{attrs}>'
                f'<td class="time">{moment:%H:%M:%S}.{moment.microsecond // 1000:03d}'
                f"<br><small>{_e(offset)}</small></td>"
                f'<td class="event">{event}</td><td>{details}</td></tr>',
            )
        )

    add(view.get("started_at"), 0, "start", _e(w("row.start")), w.when(view.get("started_at")))
    for p in view.get("prompts") or []:
        meta = (
            f'<p class="meta"><code>{_e(p.get("prompt"))}</code> · {_e(w("version"))} '
            f"{_e(p.get('version'))} · {_e(w('audio_sha'))} {_hash(p.get('sha256'))}</p>"
        )
        details = _quote(p.get("text")) + meta + _audio(media.get(p.get("sha256") or ""), w)
        add(p.get("at"), 1, "prompt", _e(w("row.prompt")), details)
    for k in view.get("keys") or []:
        counted = k.get("acted_on", True)
        details = (
            f'<p>{_e(w("step"))}: <span class="step">{w.value("step", k.get("step"))}</span>'
            f" <small>(<code>{_e(k.get('step'))}</code>)</small></p>"
            f'<p class="{"counted" if counted else "ignored"}">'
            f"{_e(w('counted' if counted else 'not_counted'))}</p>"
        )
        if k.get("purpose"):
            details += f"<p>{_e(w('for_purpose'))}: <code>{_e(k['purpose'])}</code></p>"
        event = f'{_e(w("row.key"))} <kbd class="digit">{_e(k.get("digit"))}</kbd>'
        attrs = (
            f' data-digit="{_e(k.get("digit"))}" data-step="{_e(k.get("step"))}"'
            f' data-counted="{"yes" if counted else "no"}"'
        )
        add(k.get("at"), 2, "key", event, details, attrs)
    if view.get("decided_at"):
        outcome = _coded("outcome", view.get("outcome"), w)
        add(view["decided_at"], 3, "decision", _e(w("row.decision")), outcome)
    add(view.get("ended_at"), 4, "end", _e(w("row.end")), w.when(view.get("ended_at")))
    rows.sort(key=lambda r: (r[0], r[1]))
    table = _table(
        "timeline",
        [w("col.time"), w("col.event"), w("col.details")],
        (r[2] for r in rows),
    )
    return _section(
        "timeline", w("timeline"), f'<p class="note">{_e(w("timeline.note"))}</p>{table}'
    )


def _recording(view: dict[str, Any], media: dict[str, str], w: _Words) -> str:
    rec = view.get("recording")
    if not rec:
        return _section("recording", w("recording"), f"<p>{_e(w('recording.none'))}</p>")
    path = media.get("recording")
    if path:
        player = _audio(path, w)
    elif view.get("erased"):
        player = f'<p class="erased">{_e(w("recording.erased"))}</p>'
    else:
        player = _audio(None, w)
    seconds = rec.get("duration_s")
    rows = [
        (w("duration"), _e(f"{seconds:.1f} {w('seconds')}" if seconds is not None else None)),
        (w("format"), _e(rec.get("format"))),
        (w("sha256"), _hash(rec.get("sha256"))),
    ]
    return _section("recording", w("recording"), player + _facts(rows))


def _sms(sms: list[dict[str, Any]], w: _Words) -> str:
    if not sms:
        return _section("sms", w("sms"), f"<p>{_e(w('sms.none'))}</p>")
    blocks = []
    for m in sms:
        status = m.get("status")
        rows = [
            (w("sms.text"), _quote(m.get("text"))),
            (w("sms.status"), _coded("sms_status", status, w)),
        ]
        about = m.get("decision") or m.get("template")
        if about:
            rows.append((w("sms.about"), w.value("outcome", about)))
        rows += [
            (w("sms.gateway"), _e(m.get("gateway"))),
            (w("sms.message_id"), _hash(m.get("message_id"))),
        ]
        for key in ("sent_at", "delivered_at", "failed_at"):
            if m.get(key):
                rows.append((w("sms." + key), w.when(m[key])))
        if m.get("error"):
            rows.append((w("sms.error"), _e(m["error"])))
        reports = m.get("reports") or []
        if reports:
            items = "".join(
                f"<li>{w.when(r.get('at'))}: {w.value('sms_status', r.get('status'))}"
                f" <small>({_e(r.get('gateway_status'))})</small></li>"
                for r in reports
            )
            rows.append((w("sms.reports"), f'<ul class="plain">{items}</ul>'))
        blocks.append(f'<div class="sms">{_facts(rows)}</div>')
    return _section("sms", w("sms"), "".join(blocks))


def _withdrawals(view: dict[str, Any], w: _Words) -> str:
    items = view.get("withdrawals") or []
    if view.get("kind") != "consent" and not items:
        return ""
    if not items:
        return _section("withdrawals", w("withdrawals"), f"<p>{_e(w('withdrawals.none'))}</p>")
    rows = []
    for item in items:
        # A consent names how it was withdrawn; a withdrawal call's record, what it withdrew.
        refs = [item[k] for k in ("via_record", "via_call", "via_sms") if item.get(k)]
        refs += item.get("records") or []
        purposes = ", ".join(str(p) for p in item.get("purposes") or [])
        rows.append(
            f"<tr><td>{w.when(item.get('at'))}</td>"
            f"<td>{w.value('channel', item.get('channel'))}</td>"
            f"<td>{_e(item.get('by'))}</td><td>{_e(item.get('reason'))}</td>"
            f"<td>{' '.join(_hash(r) for r in refs) or _e(None)}"
            f"{f'<br><small>{_e(purposes)}</small>' if purposes else ''}</td></tr>"
        )
    headers = [w("col.time"), w("channel"), w("by"), w("reason"), w("reference")]
    return _section("withdrawals", w("withdrawals"), _table("list", headers, rows))


def _erasure(view: dict[str, Any], w: _Words) -> str:
    erased = dict(view.get("erased") or {})
    if not erased:
        return ""
    at = erased.pop("at", None)
    rows = [(w("erasure.policy"), w.value("policy", erased.pop("policy", None)))]
    period = erased.pop("period", None)
    if period:
        rows.append((w("erasure.period"), w.duration(period)))
    for key in ("since", "due"):
        moment = erased.pop(key, None)
        if moment:
            rows.append((w(f"erasure.{key}"), w.when(moment)))
    what = erased.pop("erased", None) or []
    if what:
        items = what if isinstance(what, list | tuple) else [what]
        rows.append((w("erasure.erased"), ", ".join(w.value("erased", i) for i in items)))
    digest = erased.pop("recording_sha256", None)
    if digest:
        rows.append((w("erasure.recording_sha256"), _hash(digest)))
    # Whatever else the erasure recorded is shown as it is: nothing of the evidence is hidden.
    for key, value in erased.items():
        shown = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        rows.append((key.replace("_", " "), _hash(shown)))
    done = _e(w("erasure.done")).format(date=w.when(at))
    body = f'<p class="erased">{done}</p>{_facts(rows)}<p>{_e(w("erasure.hashes"))}</p>'
    return _section("erasure", w("erasure"), body)


def _findings(items: Iterable[Any]) -> str:
    """`verify`'s findings: plain strings, or dicts with their text (Report.as_dict)."""
    shown = [i.get("text") if isinstance(i, dict) else i for i in items]
    return "".join(f"<li>{_e(text)}</li>" for text in shown)


def _checkpoint(cp: dict[str, Any] | None, w: _Words) -> str:
    if not cp:
        return _e(w("checkpoint.none"))
    signed = cp.get("signed", bool(cp.get("signature")))
    text = (
        f"{_e(w('checkpoint.entry'))} {_e(cp.get('ledger_seq'))}, {w.when(cp.get('at'))}, "
        f"{_e(w('checkpoint.key'))} {_hash(cp.get('key_id'))}, "
        f"<strong>{_e(w('checkpoint.signed' if signed else 'checkpoint.unsigned'))}</strong>"
    )
    if cp.get("ledger_hash"):
        text += f"<br>{_e(w('checkpoint.head'))} {_hash(cp['ledger_hash'])}"
    return text


def _verification(verification: dict[str, Any], w: _Words) -> str:
    body = f'<p class="verdict">{_verdict(verification, w)}</p>'
    for key in ("problems", "warnings", "notes"):
        items = _findings(verification.get(key) or [])
        if items:
            body += f'<h3>{_e(w("verify." + key))}</h3><ul class="{key}">{items}</ul>'
    rows = []
    if verification.get("checked_at"):
        rows.append((w("checked_at"), w.when(verification["checked_at"])))
    counts = verification.get("counts") or {}
    if counts:
        rows.append((w("verify.counts"), ", ".join(f"{_e(k)} {_e(n)}" for k, n in counts.items())))
    rows.append((w("checkpoint"), _checkpoint(verification.get("checkpoint"), w)))
    return _section("verification", w("verification"), body + _facts(rows))


def _technical(view: dict[str, Any], w: _Words) -> str:
    call = view.get("call") or {}
    rows = [
        (w("record_id"), _hash(view.get("record_id"))),
        (w("kind"), w.value("kind", view.get("kind"))),
        (w("schema_version"), _e(view.get("schema_version"))),
        (w("call_id"), _hash(call.get("call_id"))),
        (w("channel_id"), _hash(call.get("channel_id"))),
        (w("commitment"), _hash(view.get("subject_commitment"))),
    ]
    events = [
        f"<tr><td>{_e(e.get('seq'))}</td><td>{_e(e.get('at'))}</td>"
        f"<td>{_e(e.get('kind'))}</td><td>{_e(e.get('step'))}</td>"
        f"<td>{_hash(e.get('hash'))}</td><td>{_e(e.get('ledger_seq'))}</td></tr>"
        for e in view.get("events") or []
    ]
    headers = ["#", w("col.time"), w("col.kind"), w("col.step"), w("col.hash"), w("col.ledger")]
    body = _facts(rows) + f"<h3>{_e(w('events'))}</h3>" + _table("events", headers, events)
    return _section("technical", w("technical"), body)


_CSS = """
:root { color-scheme: light; }
* { box-sizing: border-box; }
body { margin: 0; background: #f3f3f1; color: #1b1b1b;
  font: 15px/1.5 "DejaVu Sans", "Segoe UI", Helvetica, Arial, sans-serif; }
main { max-width: 56rem; margin: 1.5rem auto; padding: 2rem 2.5rem; background: #fff;
  border: 1px solid #dcdcd8; }
header { border-bottom: 2px solid #1b1b1b; padding-bottom: .75rem; margin-bottom: 1rem; }
h1 { font-size: 1.7rem; margin: .1rem 0 .2rem; }
h2 { font-size: 1.15rem; margin: 1.8rem 0 .6rem; padding-bottom: .2rem;
  border-bottom: 1px solid #cfcfca; }
h3 { font-size: 1rem; margin: 1rem 0 .4rem; }
p { margin: .3rem 0; }
small, .note, .meta, .file, .kicker { color: #555; }
.kicker { letter-spacing: .04em; font-size: .8rem; margin: 0; }
.subtitle { font-size: 1.1rem; margin: 0 0 .5rem; }
.verdict { margin: .35rem 0; }
.badge { display: inline-block; padding: .05rem .55rem; border-radius: .25rem; font-weight: bold;
  border: 1px solid; }
.badge.good { color: #14532d; background: #e7f5ec; border-color: #9fd3b2; }
.badge.bad { color: #7f1d1d; background: #fdecec; border-color: #f0b1b1; }
.badge.plain { color: #333; background: #f1f1ef; border-color: #cfcfca; }
table { width: 100%; border-collapse: collapse; }
th, td { text-align: left; vertical-align: top; padding: .4rem .5rem; }
table.facts th { width: 15rem; font-weight: normal; color: #555; }
table.facts tr + tr > * { border-top: 1px solid #ecece8; }
table.timeline thead th, table.list thead th, table.events thead th { font-size: .8rem;
  color: #555; border-bottom: 1px solid #1b1b1b; }
table.timeline td { border-top: 1px solid #e2e2de; }
table.timeline td.time { width: 7.5rem; font-family: "DejaVu Sans Mono", monospace;
  font-size: .85rem; white-space: nowrap; }
table.timeline td.event { width: 10rem; font-weight: bold; }
tr.tl-key { background: #f7f9fc; }
tr.tl-start, tr.tl-end, tr.tl-decision { background: #fafaf8; }
kbd.digit { display: inline-block; min-width: 1.6em; padding: 0 .35em; text-align: center;
  font: bold 1rem "DejaVu Sans Mono", monospace; border: 1px solid #777; border-radius: .25rem;
  background: #fff; box-shadow: 0 1px 0 #777; }
.ignored { color: #9a3412; font-weight: bold; }
.counted { color: #14532d; }
blockquote.said { margin: .1rem 0 .3rem; padding: .1rem 0 .1rem .75rem;
  border-left: 3px solid #9a9a94; font-style: italic; }
code, .hash { font-family: "DejaVu Sans Mono", monospace; font-size: .82em; }
.hash, .url { overflow-wrap: anywhere; word-break: break-all; }
audio { display: block; width: 100%; max-width: 24rem; height: 2.2rem; margin: .3rem 0 0; }
.file { font-size: .8rem; margin: .1rem 0 .2rem; }
.erased { font-weight: bold; color: #7f1d1d; }
.problems li { color: #7f1d1d; }
.warnings li { color: #9a3412; }
ul.plain { margin: 0; padding-left: 1.1rem; }
.sms + .sms { margin-top: 1rem; }
table.events { font-size: .75rem; }
table.events td { border-top: 1px solid #ecece8; padding: .15rem .4rem; }
table.events td:nth-child(2) { white-space: nowrap; }
footer { margin-top: 2rem; font-size: .8rem; color: #555; border-top: 1px solid #cfcfca;
  padding-top: .5rem; }
@media print {
  @page { size: A4; margin: 16mm 15mm; }
  body { background: #fff; font-size: 10pt; }
  main { max-width: none; margin: 0; padding: 0; border: 0; }
  audio { display: none; }
  h2, h3 { break-after: avoid; page-break-after: avoid; }
  tr, blockquote, .sms, table.facts { break-inside: avoid; page-break-inside: avoid; }
  thead { display: table-header-group; }
  #technical { break-before: page; page-break-before: always; }
  .badge, tr.tl-key { -webkit-print-color-adjust: exact; print-color-adjust: exact; }
}
"""


def render(
    view: dict[str, Any],
    sms: list[dict[str, Any]],
    verification: dict[str, Any],
    media: dict[str, str],
) -> str:
    """The record as a self-contained HTML document in its language.

    `view` is `consent_ivr.store.records.record_view`'s dict, `sms` the record's SMS,
    `verification` what `verify` found ({ok, problems, notes, checked_at, checkpoint}), and
    `media` maps "recording" and each prompt's audio SHA-256 to its path inside the bundle."""
    language = view.get("language") if view.get("language") in durations.LANGUAGES else "en"
    w = _Words(str(language))
    kind = "withdrawal" if view.get("kind") == "withdrawal" else "consent"
    parts = [
        _header(view, verification, w),
        _parties(view, w),
        _purpose(view, w),
        _decision(view, w),
        _timeline(view, media, w),
        _recording(view, media, w),
        _sms(sms, w),
        _withdrawals(view, w),
        _erasure(view, w),
        _verification(verification, w),
        _technical(view, w),
    ]
    title = f"{w('title.' + kind)} {view.get('record_id') or ''}".strip()
    return (
        "<!DOCTYPE html>\n"
        f'<html lang="{_e(language)}"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><style>{_CSS}</style></head>"
        f"<body><main>{''.join(parts)}<footer>{_e(w('footer'))}</footer></main></body></html>\n"
    )
