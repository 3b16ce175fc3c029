"""The prompt archive: prompts rebuilt with new wording keep the old audio under its hash, so a
record made before the change still exports (and verifies with) exactly what the person heard.
Built with the real espeak-ng and sox from a prompts YAML in a temporary directory."""

from __future__ import annotations

import json
import shutil
import zipfile
from datetime import timedelta
from pathlib import Path

import pytest
import yaml

from consent_ivr.config import Config
from consent_ivr.evidence import bundle
from consent_ivr.prompts import Catalog
from tests.evidence.calls import PROMPTS
from tests.evidence.conftest import PURPOSE, T0, World

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

REPO_PROMPTS = Path(__file__).resolve().parents[2] / "prompts"


def catalog(world: World, prompts_dir: Path) -> Catalog:
    """Build (only what changed) and archive the prompts of an English-only campaign."""
    raw = {
        **world.raw,
        "prompts": {"dir": str(prompts_dir), "audio_dir": world.raw["prompts"]["audio_dir"]},
        "campaigns": {
            "default": {
                "language": "en",
                "languages": ["en"],
                "controller": {"name": {"en": "Example Ltd"}, "contact": "privacy@example.com"},
                "purposes": [PURPOSE],
            }
        },
    }
    built = Catalog(Config.model_validate(raw))
    built.build()
    built.check_audio()
    return built


def use(world: World, built: Catalog) -> None:
    """The next calls play this catalog's audio."""
    for name in PROMPTS:
        world.prompt_sha[name] = built.get("default", "en", name, PURPOSE).sha256 or ""


def prompt_audio(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as z:
        return {n: z.read(n) for n in z.namelist() if n.startswith("prompts/")}


def test_an_old_record_still_exports_the_audio_it_played(world: World) -> None:
    prompts_dir = world.root / "prompts"
    prompts_dir.mkdir()
    shutil.copyfile(REPO_PROMPTS / "en.yaml", prompts_dir / "en.yaml")
    first = catalog(world, prompts_dir)
    use(world, first)
    old_sha = world.prompt_sha["notice"]
    heard = first.archived(old_sha).read_bytes()
    old = world.store_call()

    wording = yaml.safe_load((prompts_dir / "en.yaml").read_text(encoding="utf-8"))
    wording["prompts"]["notice"] = "Good afternoon. Please note: this call is being recorded."
    wording["version"] = f"{wording['version']}-new"
    (prompts_dir / "en.yaml").write_text(yaml.safe_dump(wording), encoding="utf-8")
    second = catalog(world, prompts_dir)
    new_sha = second.get("default", "en", "notice").sha256
    assert new_sha and new_sha != old_sha
    assert second.archived(old_sha).read_bytes() == heard, "the old audio was overwritten"
    use(world, second)
    new = world.store_call(at=T0 + timedelta(days=1))

    old_bundle = world.root / "old.zip"
    assert bundle.export(world.db, world.config, old.record_id, old_bundle).ok
    audio = prompt_audio(old_bundle)
    assert audio[f"prompts/{old_sha}.wav"] == heard
    assert f"prompts/{new_sha}.wav" not in audio
    assert bundle.verify_bundle(old_bundle).ok

    new_bundle = world.root / "new.zip"
    assert bundle.export(world.db, world.config, new.record_id, new_bundle).ok
    assert f"prompts/{new_sha}.wav" in prompt_audio(new_bundle)
    with zipfile.ZipFile(new_bundle) as z:
        events = json.loads(z.read("events.json"))
    notice = next(e for e in events if e["kind"] == "prompt" and e["data"]["prompt"] == "notice")
    assert notice["data"]["sha256"] == new_sha
