"""Stop words: the texts that withdraw consent when a person sends them, and the texts that
promise that they do.

An inbound SMS is a stop word when its whole text is one, case, spaces and punctuation ignored
("Stop.", " стоп ", "STOP!" all count; "stop calling me" does not: a person who writes more
than the word may mean something else, and the text is stored for a human to read). A text
of ours *promises* a stop word when it names one in capitals ("reply STOP"), the way such
instructions are written.
"""

from __future__ import annotations

import re
from collections.abc import Iterable


def normal(text: str) -> str:
    """Letters and digits only, case folded: what a stop word is compared on."""
    return "".join(ch for ch in text.casefold() if ch.isalnum())


def is_stop(text: str, words: Iterable[str]) -> bool:
    key = normal(text)
    return bool(key) and any(key == normal(w) for w in words)


def promised(text: str, words: Iterable[str]) -> str | None:
    """The stop word `text` tells the reader to send (named in capitals), if any."""
    for word in words:
        upper = word.upper()
        if re.search(rf"(?<!\w){re.escape(upper)}(?!\w)", text):
            return upper
    return None
