"""SMS texts: template validation at config load and rendering at enqueue time.

Templates use ``str.format`` braces with plain names only, so an ops person can read them and a
typo is caught by ``consent-ivr config check`` rather than at 3 a.m. when a decision is stored.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import yaml

# A template per decision, one summing up a call's decisions, and the reply to a stop word
# from a number with nothing to withdraw.
DECISIONS = ("granted", "declined", "withdrawn", "summary", "stopped")

TIME_VARIABLES = frozenset({"datetime", "date", "time", "timezone"})
VARIABLES = TIME_VARIABLES | {
    "company",
    "contact",
    "purpose",
    "data_categories",
    "retention",
    "withdrawal",
    "how_to_withdraw",
    "decision",
    "record_id",
    "reference",
}
# `stopped` answers a number we may hold no record of: only the time is known.
VARIABLES_OF = {"stopped": TIME_VARIABLES}

DEFAULTS_FILE = Path(__file__).with_name("templates.yaml")

Templates = dict[str, dict[str, dict[str, str]]]


class TemplateError(ValueError):
    """A template that cannot render; the message names the template and what is wrong."""


def default_templates() -> Templates:
    return yaml.safe_load(DEFAULTS_FILE.read_text(encoding="utf-8"))


def fields(template: str) -> list[str]:
    """The variable names a template uses; raises TemplateError on anything but plain names."""
    names: list[str] = []
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as e:
        raise TemplateError(
            f"malformed braces ({e}); write {{{{ and }}}} for literal braces"
        ) from None
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        if not name.isidentifier() or spec or conversion:
            raise TemplateError(f"{{{name}}} is not a plain variable name")
        names.append(name)
    return names


def check(templates: Mapping[str, Mapping[str, Mapping[str, str]]]) -> None:
    """Raise TemplateError naming ``campaign.language.decision`` and the offending variable.

    A campaign's language may leave a decision to the default campaign (see `pick`)."""
    for campaign, languages in templates.items():
        for language, by_decision in languages.items():
            where = f"templates.{campaign}.{language}"
            fallback = templates.get("default", {}).get(language, {})
            missing = [d for d in DECISIONS if d not in by_decision and d not in fallback]
            if missing:
                raise TemplateError(f"{where}: no text for decision(s) {', '.join(missing)}")
            for decision, text in by_decision.items():
                if decision not in DECISIONS:
                    raise TemplateError(
                        f"{where}.{decision}: unknown decision; expected one of {DECISIONS}"
                    )
                try:
                    names = fields(text)
                except TemplateError as e:
                    raise TemplateError(f"{where}.{decision}: {e}") from None
                known = VARIABLES_OF.get(decision, VARIABLES)
                for name in names:
                    if name not in known:
                        raise TemplateError(
                            f"{where}.{decision}: unknown variable {{{name}}}; "
                            f"known: {', '.join(sorted(known))}"
                        )


def pick(templates: Templates, campaign: str, language: str, decision: str) -> str:
    """The campaign's own text, else the default campaign's, in the record's language."""
    for name in (campaign, "default"):
        text = templates.get(name, {}).get(language, {}).get(decision)
        if text is not None:
            return text
    raise TemplateError(f"no SMS template for campaign {campaign!r}, language {language!r}")


def utc_offset_label(offset: timedelta | None) -> str:
    minutes = int((offset or timedelta()).total_seconds() // 60)
    sign = "+" if minutes >= 0 else "-"
    hours, rest = divmod(abs(minutes), 60)
    return f"UTC{sign}{hours}" + (f":{rest:02d}" if rest else "")


def render(template: str, values: Mapping[str, Any]) -> str:
    return " ".join(template.format_map(dict(values)).split())


def time_values(at: datetime, zone: str, date_format: str) -> dict[str, str]:
    """Date and time of ``at`` where the person is, with the offset so it is unambiguous."""
    local = at.astimezone(ZoneInfo(zone))
    date, time = local.strftime(date_format), local.strftime("%H:%M")
    return {
        "datetime": f"{date} {time} ({utc_offset_label(local.utcoffset())})",
        "date": date,
        "time": time,
        "timezone": zone,
    }
