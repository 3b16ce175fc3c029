"""Value types of the config: host names, URLs, URL paths, file paths and phone regions.

Each is checked when the config loads and says what it expected, so a typo fails `consent-ivr
config check` rather than the first bind, call or SMS. consent_ivr.config and the sections it
embeds (consent_ivr.sms.config, consent_ivr.dialing.config) share them; this module imports
none of them.

A value may hold a secret (a database URL with its password, from the environment): `shown` is
how an error message prints any value, `redact` how it prints any text.
"""

from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

import phonenumbers
from pydantic import AfterValidator, BeforeValidator

_LABEL = re.compile(r"^(?!-)[A-Za-z0-9_-]{1,63}(?<!-)$")
# user:password@ after the // of a URL, wherever it appears in a text
_CREDENTIALS = re.compile(r"(//[^\s:/@'\"]*):[^\s@'\"]*@")
_URL_PATH = re.compile(r"^/[^\s?#]*$")

HOST_EXPECTED = "expected an IP address or a host name, e.g. 127.0.0.1, 0.0.0.0 or pbx.example.com"
CREDENTIALS_IN_URL = "a user or password inside the URL is not allowed: remove it"


def redact(text: str) -> str:
    """``text`` with the password of any URL in it replaced by ***."""
    return _CREDENTIALS.sub(r"\1:***@", text)


def shown(value: Any) -> str:
    """``repr(value)`` for an error message, any password inside a URL replaced by ***."""
    return redact(repr(value))


def check_host(value: str) -> str:
    """An IP address or a host name (letters, digits, '-' and '_' between dots)."""
    try:
        ipaddress.ip_address(value)
        return value
    except ValueError:
        pass
    name = value[:-1] if value.endswith(".") else value
    labels = name.split(".")
    # An all-digit last label is a mistyped address (999.1.1.1), not a name.
    if len(name) > 253 or not all(_LABEL.match(x) for x in labels) or labels[-1].isdigit():
        raise ValueError(HOST_EXPECTED)
    return value


def check_http_url(value: str) -> str:
    """An http:// or https:// URL with a valid host and port, and no credentials in it."""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc or re.search(r"\s", value):
        raise ValueError("expected an http:// or https:// URL")
    if "@" in parts.netloc:
        raise ValueError(CREDENTIALS_IN_URL)
    try:
        port = parts.port
    except ValueError:
        port = 0
    if port == 0 or parts.netloc.endswith(":"):
        raise ValueError("the port in the URL must be a number from 1 to 65535")
    try:
        check_host(parts.hostname or "")
    except ValueError:
        raise ValueError(f"the host of the URL: {HOST_EXPECTED}") from None
    return value


def _url_path(value: str) -> str:
    if not _URL_PATH.match(value):
        raise ValueError("expected a URL path starting with /, e.g. /sms/dlr (no spaces, ? or #)")
    return value


def _file_path(value: Any) -> Any:
    if isinstance(value, os.PathLike):
        return value
    if not isinstance(value, str) or not value.strip() or "\0" in value:
        raise ValueError("expected a file or folder path, e.g. var/recordings")
    return value


def _region_upper(value: Any) -> Any:
    return value.upper() if isinstance(value, str) else value


def _region(value: str) -> str:
    if value not in phonenumbers.SUPPORTED_REGIONS:
        raise ValueError(
            "expected a two-letter country code of the phone numbering plan, e.g. RU, KZ, DE or US"
        )
    return value


Host = Annotated[str, AfterValidator(check_host)]
HttpUrl = Annotated[str, AfterValidator(check_http_url)]
UrlPath = Annotated[str, AfterValidator(_url_path)]
FilePath = Annotated[Path, BeforeValidator(_file_path)]
Region = Annotated[str, BeforeValidator(_region_upper), AfterValidator(_region)]
