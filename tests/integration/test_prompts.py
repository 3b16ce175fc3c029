"""Prompt wording and audio: every template renders, bad prompt files are named precisely,
audio is built with the real espeak-ng and sox as 8 kHz mono 16-bit WAV, only when its source
changed, and the media URI Asterisk plays."""

from __future__ import annotations

import hashlib
import json
import wave
from pathlib import Path
from typing import Any

import pytest
import yaml

from consent_ivr.config import Config, ConfigError, load
from consent_ivr.flow import PROMPTS
from consent_ivr.prompts import Catalog

pytestmark = pytest.mark.integration

CAMPAIGN = "short"
LANGS = ("en", "ru")


@pytest.fixture(autouse=True)
def _empty_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)


def prompt_texts(lang: str) -> dict[str, str]:
    """Short texts (fast to synthesize) that still use placeholders."""
    word = {"en": "press", "ru": "нажмите"}[lang]
    texts = {name: f"{name.replace('_', ' ')}." for name in PROMPTS}
    texts["purpose"] = "{controller}: {purpose}."
    texts["ask"] = f"{word} {{agree_key}} {{decline_key}}."
    return texts


def write_prompt_file(
    prompts_dir: Path, lang: str, texts: dict[str, Any] | None = None, **top: Any
) -> Path:
    prompts_dir.mkdir(parents=True, exist_ok=True)
    data: dict[str, Any] = {"version": "t-1", "prompts": texts or prompt_texts(lang), **top}
    data = {k: v for k, v in data.items() if v is not None}
    file = prompts_dir / f"{lang}.yaml"
    file.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return file


def write_config(tmp_path: Path, media_url: str | None = None) -> Path:
    both = {"en": "ok", "ru": "да"}
    data = {
        "prompts": {
            "dir": str(tmp_path / "prompts"),
            "audio_dir": str(tmp_path / "audio"),
            "media_url": media_url,
        },
        "default_campaign": CAMPAIGN,
        "campaigns": {
            CAMPAIGN: {
                "language": "en",
                "languages": list(LANGS),
                "controller": {"name": {"en": "Acme", "ru": "Акме"}},
                "purpose": {
                    "id": "news",
                    "text": {"en": "news", "ru": "новости"},
                    "data_categories": both,
                    "retention": both,
                    "withdrawal": both,
                },
                "keys": {"agree": "7", "decline": "9"},
            }
        },
    }
    file = tmp_path / "config.yaml"
    file.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return file


@pytest.fixture
def small(tmp_path: Path) -> Config:
    """A config with one campaign in two languages and short prompt texts, all in tmp_path."""
    for lang in LANGS:
        write_prompt_file(tmp_path / "prompts", lang)
    return load(write_config(tmp_path), env={})


def catalog_error(config: Config) -> str:
    with pytest.raises(ConfigError) as exc:
        Catalog(config)
    return str(exc.value)


# ---- rendering --------------------------------------------------------------------------------


def test_default_catalog_renders_every_prompt() -> None:
    config = load(None, env={})
    catalog = Catalog(config)
    expected = {
        (c, lang, name)
        for c, campaign in config.campaigns.items()
        for lang in campaign.languages
        for name in PROMPTS
    }
    assert set(catalog.prompts) == expected
    for (cname, lang, name), p in catalog.prompts.items():
        where = f"{cname}/{lang}/{name}"
        assert p.text.strip(), where
        assert "{" not in p.text and "}" not in p.text, f"{where}: {p.text}"
        assert "None" not in p.text, where
        assert p.version, where
        assert p.path.is_absolute(), where
        assert p.path.name == f"{name}.wav"
        campaign = config.campaigns[cname]
        if name == "purpose":
            assert campaign.purpose.text[lang] in p.text
            assert campaign.controller.name[lang] in p.text
        if name == "ask":
            assert campaign.keys.agree in p.text and campaign.keys.decline in p.text


def test_small_catalog_fills_placeholders(small: Config) -> None:
    catalog = Catalog(small)
    assert catalog.get(CAMPAIGN, "en", "purpose").text == "Acme: news."
    assert catalog.get(CAMPAIGN, "ru", "purpose").text == "Акме: новости."
    assert catalog.get(CAMPAIGN, "en", "ask").text == "press 7 9."
    assert catalog.get(CAMPAIGN, "ru", "ask").voice == "ru"
    assert catalog.get(CAMPAIGN, "en", "ask").voice == "en-us"
    assert catalog.get(CAMPAIGN, "en", "ask").version == "t-1"


def test_unknown_placeholder_names_file_prompt_and_placeholder(
    small: Config, tmp_path: Path
) -> None:
    texts = prompt_texts("ru")
    texts["confirm_agree"] = "нажмите {confirm_kye}"
    file = write_prompt_file(tmp_path / "prompts", "ru", texts)
    message = catalog_error(small)
    assert str(file) in message
    assert "confirm_agree" in message
    assert "{confirm_kye}" in message


@pytest.mark.parametrize("missing", ["goodbye", "notice"])
def test_missing_prompt_is_named(small: Config, tmp_path: Path, missing: str) -> None:
    texts = prompt_texts("en")
    del texts[missing]
    file = write_prompt_file(tmp_path / "prompts", "en", texts)
    message = catalog_error(small)
    assert str(file) in message
    assert missing in message


def test_empty_prompt_text_is_an_error(small: Config, tmp_path: Path) -> None:
    """`goodbye:` with nothing after it is YAML null: it must not be spoken as "None"."""
    texts: dict[str, Any] = prompt_texts("en")
    texts["goodbye"] = None
    file = write_prompt_file(tmp_path / "prompts", "en", texts)
    message = catalog_error(small)
    assert str(file) in message
    assert "goodbye" in message


def test_unknown_prompt_is_named(small: Config, tmp_path: Path) -> None:
    texts = prompt_texts("en")
    texts["good_bye"] = "bye"
    write_prompt_file(tmp_path / "prompts", "en", texts)
    assert "good_bye" in catalog_error(small)


def test_missing_version_is_an_error(small: Config, tmp_path: Path) -> None:
    file = write_prompt_file(tmp_path / "prompts", "en", version=None)
    message = catalog_error(small)
    assert str(file) in message
    assert "version" in message


def test_missing_language_file_is_named(small: Config, tmp_path: Path) -> None:
    (tmp_path / "prompts" / "ru.yaml").unlink()
    message = catalog_error(small)
    assert str(tmp_path / "prompts" / "ru.yaml") in message


def test_invalid_prompt_yaml_is_named(small: Config, tmp_path: Path) -> None:
    file = tmp_path / "prompts" / "en.yaml"
    file.write_text("version: 1\nprompts: {notice: [\n", encoding="utf-8")
    message = catalog_error(small)
    assert str(file) in message


# ---- audio ------------------------------------------------------------------------------------


def test_check_audio_without_audio_names_prompt_and_path(small: Config, tmp_path: Path) -> None:
    catalog = Catalog(small)
    with pytest.raises(ConfigError) as exc:
        catalog.check_audio()
    message = str(exc.value)
    expected = (tmp_path / "audio" / CAMPAIGN / "en" / "notice.wav").resolve()
    assert f"{CAMPAIGN}/en/notice" in message
    assert str(expected) in message
    assert "prompts build" in message


def test_check_audio_names_the_one_missing_file(small: Config) -> None:
    catalog = Catalog(small)
    catalog.build()
    gone = catalog.get(CAMPAIGN, "ru", "goodbye").path
    gone.unlink()
    with pytest.raises(ConfigError) as exc:
        catalog.check_audio()
    message = str(exc.value)
    assert f"{CAMPAIGN}/ru/goodbye" in message
    assert str(gone) in message
    assert f"{CAMPAIGN}/en/goodbye" not in message


def assert_telephony_wav(path: Path) -> None:
    with wave.open(str(path), "rb") as w:
        assert w.getframerate() == 8000, path
        assert w.getnchannels() == 1, path
        assert w.getsampwidth() == 2, path
        assert w.getcomptype() == "NONE", path
        assert w.getnframes() > 800, path  # some speech, not an empty file


def test_build_makes_telephony_wavs_once(small: Config) -> None:
    catalog = Catalog(small)
    built = catalog.build()
    assert {(p.campaign, p.language, p.name) for p in built} == set(catalog.prompts)
    for p in catalog.prompts.values():
        assert_telephony_wav(p.path)
        stamp = json.loads(p.path.with_suffix(".json").read_text(encoding="utf-8"))
        assert stamp["text"] == p.text
    mtimes = {k: p.path.stat().st_mtime_ns for k, p in catalog.prompts.items()}

    assert catalog.build() == []
    assert Catalog(small).build() == []
    assert {k: p.path.stat().st_mtime_ns for k, p in catalog.prompts.items()} == mtimes

    catalog.check_audio()
    for p in catalog.prompts.values():
        assert p.sha256 == hashlib.sha256(p.path.read_bytes()).hexdigest()


def test_changed_text_rebuilds_only_that_prompt(small: Config, tmp_path: Path) -> None:
    Catalog(small).build()
    texts = prompt_texts("ru")
    texts["goodbye"] = "до свидания."
    write_prompt_file(tmp_path / "prompts", "ru", texts)
    catalog = Catalog(small)
    before = catalog.get(CAMPAIGN, "ru", "goodbye").path.read_bytes()
    built = catalog.build()
    assert [(p.language, p.name) for p in built] == [("ru", "goodbye")]
    assert catalog.get(CAMPAIGN, "ru", "goodbye").path.read_bytes() != before
    assert_telephony_wav(catalog.get(CAMPAIGN, "ru", "goodbye").path)
    assert catalog.build() == []


def test_force_rebuilds_everything(small: Config) -> None:
    catalog = Catalog(small)
    catalog.build()
    assert len(catalog.build(force=True)) == len(catalog.prompts)


def test_studio_recording_replaces_synthesis(small: Config, tmp_path: Path) -> None:
    catalog = Catalog(small)
    catalog.build()
    studio = tmp_path / "prompts" / "recorded" / CAMPAIGN / "en" / "notice.wav"
    studio.parent.mkdir(parents=True)
    with wave.open(str(studio), "wb") as w:  # 0.5 s of 16 kHz stereo silence
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(b"\0\0\0\0" * 8000)
    built = catalog.build()
    assert [(p.language, p.name) for p in built] == [("en", "notice")]
    path = catalog.get(CAMPAIGN, "en", "notice").path
    with wave.open(str(path), "rb") as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (8000, 1, 2)
        assert abs(w.getnframes() - 4000) <= 10
    assert catalog.build() == []


# ---- media URI --------------------------------------------------------------------------------


def test_media_is_a_local_sound_path_by_default(small: Config, tmp_path: Path) -> None:
    catalog = Catalog(small)
    p = catalog.get(CAMPAIGN, "ru", "ask")
    expected = (tmp_path / "audio" / CAMPAIGN / "ru" / "ask").resolve()
    assert catalog.media(p) == f"sound:{expected}"
    assert expected.is_absolute()
    assert not catalog.media(p).endswith(".wav")


def test_relative_audio_dir_gives_an_absolute_media_path(tmp_path: Path) -> None:
    for lang in LANGS:
        write_prompt_file(tmp_path / "prompts", lang)
    config = load(write_config(tmp_path), env={})
    config = config.model_copy(
        update={"prompts": config.prompts.model_copy(update={"audio_dir": Path("rel/audio")})}
    )
    catalog = Catalog(config)
    media = catalog.media(catalog.get(CAMPAIGN, "en", "notice"))
    assert media == f"sound:{Path.cwd() / 'rel' / 'audio' / CAMPAIGN / 'en' / 'notice'}"


@pytest.mark.parametrize("base", ["http://10.0.0.5:8090/prompts", "http://10.0.0.5:8090/prompts/"])
def test_media_url_gives_http_media(tmp_path: Path, base: str) -> None:
    for lang in LANGS:
        write_prompt_file(tmp_path / "prompts", lang)
    catalog = Catalog(load(write_config(tmp_path, media_url=base), env={}))
    p = catalog.get(CAMPAIGN, "ru", "confirm_agree")
    assert catalog.media(p) == f"sound:http://10.0.0.5:8090/prompts/{CAMPAIGN}/ru/confirm_agree.wav"
