"""Logging setup: text lines, or one JSON object a line (`--log-format json` or
`CONSENT_IVR_LOG_FORMAT=json`) with the call's and record's ids on every line of a call. Phone
numbers are masked where they are logged (consent_ivr.phone.mask; the JSON formatter masks any
that slip through); credentials are never passed to a logger."""

import logging
import sys


def setup(level: str = "INFO", fmt: str = "text") -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if fmt == "json":
        from consent_ivr.api.jsonlog import JsonFormatter

        for handler in logging.getLogger().handlers:
            handler.setFormatter(JsonFormatter())
    for noisy in ("aiohttp.access", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
