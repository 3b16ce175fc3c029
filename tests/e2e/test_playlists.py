"""Prompts that follow each other with no key between them go to Asterisk as one playlist (one
play request with a comma-separated `media`): each prompt still keeps its own start in the
evidence, and a prompt Asterisk cannot play fails the call even in the middle of a list, where
Asterisk itself says nothing about it."""

from __future__ import annotations

import contextlib
import secrets
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from consent_ivr.metrics import REGISTRY
from consent_ivr.prompts import Catalog
from consent_ivr.service import Service
from consent_ivr.simulate import place_call, wait_for_record
from tests.e2e.conftest import assert_evidence, call_all, keys, prompts

pytestmark = pytest.mark.e2e

# The prompts a caller hears back to back, each group one play request.
PLAYLISTS = [
    ["notice", "purpose", "ask"],
    ["chosen_agree", "confirm"],
    ["recorded_agree", "goodbye"],
]


def playlist_figures() -> tuple[float, float]:
    """Play requests sent so far, and the prompts they carried."""
    name = "consent_ivr_ari_playlist_prompts"
    count = REGISTRY.get_sample_value(f"{name}_count") or 0.0
    total = REGISTRY.get_sample_value(f"{name}_sum") or 0.0
    return count, total


def length(catalog: Catalog, prompt: dict[str, Any]) -> float:
    """The length of a prompt of the evidence, found by its audio's hash."""
    audio = next(p for p in catalog.prompts.values() if p.sha256 == prompt["sha256"])
    assert audio.duration_s, prompt["prompt"]
    return audio.duration_s


async def test_an_agreed_call_is_three_play_requests_and_every_prompt_keeps_its_start(
    service: Service,
) -> None:
    requests, carried = playlist_figures()
    v = (await call_all(service, ["agree"], "en"))["agree"]
    assert v["outcome"] == "granted", (keys(v), prompts(v))
    assert prompts(v) == [p for group in PLAYLISTS for p in group]
    after = playlist_figures()
    assert (after[0] - requests, after[1] - carried) == (3, 7)
    # Within a playlist each prompt starts when the one before it has played to its end.
    heard = iter(v["prompts"])
    for group in PLAYLISTS:
        items = [next(heard) for _ in group]
        for before, then in zip(items, items[1:], strict=False):
            gap = (
                datetime.fromisoformat(then["at"]) - datetime.fromisoformat(before["at"])
            ).total_seconds()
            expected = length(service.app.catalog, before)
            assert expected - 0.1 <= gap <= expected + 1.5, (before["prompt"], gap, expected)
    assert_evidence(v)


@contextlib.contextmanager
def hidden(audio: Path) -> Iterator[None]:
    """The prompt's audio (every format beside it) out of Asterisk's sight, then back."""
    moved = [(p, p.with_name(p.name + ".hidden")) for p in audio.parent.glob(audio.stem + ".*")]
    assert moved, audio
    for src, dst in moved:
        src.rename(dst)
    try:
        yield
    finally:
        for src, dst in moved:
            dst.rename(src)


async def test_a_prompt_asterisk_skips_in_the_middle_of_a_playlist_fails_the_call(
    service: Service,
) -> None:
    catalog = service.app.catalog
    first = catalog.config.campaigns["default"].purposes[0]
    channel = f"e2e-{uuid.uuid4().hex[:12]}"
    await place_call(
        service.app.ari,
        catalog,
        "agree",
        f"+7900{secrets.randbelow(10**7):07d}",
        channel_id=channel,
        campaign="default",
        language="en",
    )
    # Asterisk opens each item of a playlist when it gets to it: the purpose goes missing
    # while the notice plays, after the play request has named it.
    with hidden(catalog.get("default", "en", "purpose", first).path):
        v = await wait_for_record(service.db, channel, 120)
    assert v["outcome"] == "failed", (keys(v), prompts(v))
    failed = [e["data"] for e in v["events"] if e["kind"] == "prompt_failed"]
    assert [d["prompt"] for d in failed] == ["purpose"]
    assert failed[0]["played_s"] < 0.5 * length(catalog, v["prompts"][1])
    # Never asked: the question that followed in the playlist is not in the evidence.
    assert prompts(v) == ["notice", "purpose", "failure", "goodbye"]
    assert not [k for k in v["keys"] if k["acted_on"]]
    assert_evidence(v)
