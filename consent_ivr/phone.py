"""Phone numbers: E.164 for storage, masked for logs."""

from __future__ import annotations

import phonenumbers


def to_e164(number: str | None, region: str) -> str | None:
    """The number in E.164, or None when it cannot be a phone number."""
    if not number:
        return None
    try:
        parsed = phonenumbers.parse(number, region)
    except phonenumbers.NumberParseException:
        return None
    # IS_POSSIBLE_LOCAL_ONLY ("1234", a local number without its area code) has no E.164 form.
    reason = phonenumbers.is_possible_number_with_reason(parsed)
    if reason != phonenumbers.ValidationResult.IS_POSSIBLE:
        return None
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def mask(number: str | None) -> str:
    """Keep the country prefix and the last two digits: enough to tell calls apart in logs."""
    if not number:
        return "-"
    digits = number.strip()
    if len(digits) <= 4:
        return "*" * len(digits)
    head = 2 if digits.startswith("+") else 1
    return digits[:head] + "*" * (len(digits) - head - 2) + digits[-2:]
