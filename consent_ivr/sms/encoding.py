"""Which alphabet a text needs on the air, and how many SMS parts it takes.

GSM 03.38 (GSM-7) fits 160 septets in one SMS and 153 per part of a concatenated one; a
character from its extension table costs two septets (an escape and the character) and is never
split across parts. Any other character forces UCS-2: 70 UTF-16 units in one SMS, 67 per part,
and a surrogate pair (an emoji) is never split either. Operators bill by the part, and long
texts may be truncated by some networks, hence the configured maximum.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENSION = frozenset("\f^{}\\[~]|€")

Encoding = Literal["gsm7", "ucs2"]

_LIMITS: dict[str, tuple[int, int]] = {"gsm7": (160, 153), "ucs2": (70, 67)}


@dataclass(frozen=True)
class SmsSize:
    encoding: Encoding
    units: int  # septets for GSM-7, UTF-16 code units for UCS-2
    segments: int


def needs_ucs2(text: str) -> bool:
    return any(ch not in GSM7_BASIC and ch not in GSM7_EXTENSION for ch in text)


def _unit_costs(text: str, encoding: Encoding) -> list[int]:
    if encoding == "gsm7":
        return [2 if ch in GSM7_EXTENSION else 1 for ch in text]
    return [2 if ord(ch) > 0xFFFF else 1 for ch in text]


def measure(text: str) -> SmsSize:
    """Encoding, length in units and number of parts, packing parts the way phones do."""
    encoding: Encoding = "ucs2" if needs_ucs2(text) else "gsm7"
    costs = _unit_costs(text, encoding)
    total = sum(costs)
    single, part = _LIMITS[encoding]
    if total <= single:
        return SmsSize(encoding, total, 1 if total else 0)
    segments, used = 1, 0
    for cost in costs:
        if used + cost > part:
            segments, used = segments + 1, 0
        used += cost
    return SmsSize(encoding, total, segments)
