"""Structured logs (`--log-format json`): one JSON object a line, with the call and the record
the line is about, and no full phone number.

Each line names its time, level, logger and message, and the context it was logged in: what
the logger adapter passed (`call`, the call's key) and what the task bound with `bind`
(`call_id`, `record_id`, `channel_id`). A call runs in a task of its own, so what it binds
stays with its own lines. Numbers are masked where they are logged (consent_ivr.phone.mask);
anything that still looks like a full phone number is masked here too, as a last guard.
"""

from __future__ import annotations

import json
import logging
import re
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from consent_ivr.clock import iso
from consent_ivr.phone import mask

CONTEXT = ("call", "call_id", "record_id", "channel_id", "token")
_bound: ContextVar[dict[str, str]] = ContextVar("consent_ivr_log_context", default={})  # noqa: B039
# 10 to 15 digits standing alone (not inside an id or a longer word): a phone number.
_PHONE = re.compile(r"(?<![\w.-])\+?\d{10,15}(?![\w-])")


def bind(**values: Any) -> None:
    """Add to the context of every line this task logs from now on."""
    _bound.set({**_bound.get(), **{k: str(v) for k, v in values.items() if v is not None}})


def masked(text: str) -> str:
    return _PHONE.sub(lambda m: mask(m.group(0)), text)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": iso(datetime.fromtimestamp(record.created, UTC)),
            "level": record.levelname,
            "logger": record.name,
            "message": masked(record.getMessage()),
        }
        bound = _bound.get()
        for key in CONTEXT:
            value = getattr(record, key, None) or bound.get(key)
            if value:
                doc[key] = masked(str(value))
        if record.exc_info:
            doc["exception"] = masked(self.formatException(record.exc_info))
        return json.dumps(doc, ensure_ascii=False)
