"""Texts may only promise a withdrawal channel that works.

A person can withdraw by replying with a stop word only when a reply reaches us: the gateway
must receive SMS (Kannel's sms-service calling the service's HTTP server, or SMPP), inbound
handling must be on, and our sender must be a number (a phone cannot reply to an alphanumeric
sender such as "CONSENT"). `reply_problems` says what stands in the way.

The SMS texts say how to withdraw through `{how_to_withdraw}` (`Channels`): the stop word when
replies work, otherwise the campaign's own phone number, otherwise the purpose's withdrawal
text. `check` (run at config load, so `consent-ivr config check` and the service's start fail
on it) refuses an SMS template or a purpose's withdrawal text that names a stop word while
replies cannot reach us.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from consent_ivr.sms import stopwords
from consent_ivr.sms.config import SmsConfig

if TYPE_CHECKING:  # the whole config calls `check` while it validates itself
    from consent_ivr.config import Config


@dataclass(frozen=True)
class Channels:
    """What the SMS texts may name for withdrawing, as the running configuration provides."""

    replies: bool = False  # a reply to our SMS reaches the inbound handler
    phone_numbers: dict[str, str] = field(default_factory=dict)  # campaign -> number to call

    def how_to_withdraw(self, sms: SmsConfig, campaign: str, language: str, withdrawal: str) -> str:
        hint = sms.how_to_withdraw.get(language)
        if hint is None:
            return withdrawal
        if self.replies:
            return hint.reply
        number = self.phone_numbers.get(campaign)
        return hint.call.format(phone_number=number) if number else withdrawal


def reply_problems(config: Config) -> list[str]:
    """Why a reply to our SMS would not reach the service (empty: it would)."""
    sms = config.sms
    problems = []
    if not sms.enabled:
        problems.append("sms.enabled is false")
    if not sms.inbound.enabled:
        problems.append("sms.inbound.enabled is false")
    if sms.gateway == "log":
        problems.append("the log gateway (sms.gateway) receives no SMS")
    if sms.gateway == "kannel" and not config.http.enabled:
        problems.append("http.enabled is false (Kannel hands inbound SMS to the HTTP server)")
    if not sms.sender.lstrip("+").isdigit():
        problems.append(
            f"the sender {sms.sender!r} (sms.sender) is not a number phones can reply to"
        )
    return problems


def channels(config: Config) -> Channels:
    """The channels of the running service: with Kannel, replies also need the route's token."""
    sms = config.sms
    replies = not reply_problems(config)
    if sms.gateway == "kannel" and sms.inbound_token() is None:
        replies = False
    numbers = {name: c.phone_number for name, c in config.campaigns.items() if c.phone_number}
    return Channels(replies, numbers)


def check(config: Config) -> None:
    """Raise ValueError naming the text that promises a reply channel the config lacks."""
    problems = reply_problems(config)
    if not problems:
        return
    words = config.sms.inbound.stop_words
    texts = [
        (f"sms.templates.{c}.{lang}.{d}", text)
        for c, languages in config.sms.templates.items()
        for lang, by_decision in languages.items()
        for d, text in by_decision.items()
    ]
    texts += [(f"sms.inbound.replies.{lang}", t) for lang, t in config.sms.inbound.replies.items()]
    texts += [
        (f"purposes.{pid}.withdrawal.{lang}", text)
        for pid, purpose in config.purposes.items()
        for lang, text in purpose.withdrawal.items()
    ]
    for key, text in texts:
        word = stopwords.promised(text, words)
        if word is not None:
            raise ValueError(
                f"{key} tells people to reply {word}, but a reply cannot reach this service: "
                f"{'; '.join(problems)}. In SMS templates write {{how_to_withdraw}} (it names "
                f"{word} only when replies work, else the campaign's phone_number); elsewhere "
                f"name a way that works, e.g. calling the campaign's number"
            )
