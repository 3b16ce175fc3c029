"""Prompt wording and audio: every template renders (once per purpose for the purpose statement,
durations said in the prompt's language), the per-call withdrawal prompts render with the
caller's consents and dates, bad prompt files are named precisely, audio is built with the real
espeak-ng and sox as 8 kHz mono 16-bit WAV only when its source changed, every audio file is
archived under its SHA-256 and never overwritten, and Asterisk plays the archived file."""

from __future__ import annotations

import hashlib
import json
import shutil
import wave
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

import consent_ivr.prompts as prompts_module
from consent_ivr.config import Config, ConfigError, load
from consent_ivr.flow import DYNAMIC, PROMPTS
from consent_ivr.prompts import ActiveConsent, Catalog

pytestmark = pytest.mark.integration

CAMPAIGN = "short"
LANGS = ("en", "ru")
# Asked in this order; `news` expires after a year, `calls` never does.
PURPOSES = ("news", "calls")
STATIC = [name for name in PROMPTS if name not in DYNAMIC]

NEWS = ActiveConsent("rec-1", "news", "the news", datetime(2026, 3, 5, 14, 30))
CALLS = ActiveConsent("rec-2", "calls", "the calls", datetime(2025, 12, 31, 23, 59))


@pytest.fixture(autouse=True)
def _empty_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)


def prompt_texts(lang: str) -> dict[str, str]:
    """Short texts (fast to synthesize) that still use placeholders."""
    word = {"en": "press", "ru": "нажмите"}[lang]
    texts = {name: f"{name.replace('_', ' ')}." for name in PROMPTS}
    texts["purpose"] = "{controller}: {purpose}, {retention}. {validity_clause}"
    texts["ask"] = f"{word} {{agree_key}} {{decline_key}}."
    texts["menu"] = "{consents} {all_option} keep {keep_key}."
    texts["chosen_withdraw"] = "{purpose}, {date}."
    return texts


def part_texts() -> dict[str, str]:
    return {
        "menu_item": "{key}: {purpose}, {date}.",
        "menu_all": "all {withdraw_all_key}.",
        "validity": "valid {validity}.",
    }


def write_prompt_file(
    prompts_dir: Path,
    lang: str,
    texts: dict[str, Any] | None = None,
    parts: dict[str, Any] | None = None,
    **top: Any,
) -> Path:
    """A prompt file; a top-level key given as None is left out."""
    prompts_dir.mkdir(parents=True, exist_ok=True)
    data: dict[str, Any] = {
        "version": "t-1",
        "prompts": prompt_texts(lang) if texts is None else texts,
        "parts": part_texts() if parts is None else parts,
        **top,
    }
    data = {k: v for k, v in data.items() if v is not None}
    file = prompts_dir / f"{lang}.yaml"
    file.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return file


def config_data(tmp_path: Path, media_url: str | None = None) -> dict[str, Any]:
    both = {"en": "ok", "ru": "да"}
    return {
        "prompts": {
            "dir": str(tmp_path / "prompts"),
            "audio_dir": str(tmp_path / "audio"),
            "media_url": media_url,
        },
        "default_campaign": CAMPAIGN,
        "purposes": {
            "news": {
                "text": {"en": "news", "ru": "новости"},
                "data_categories": both,
                "withdrawal": both,
                "validity": "P1Y",
                "retention": "P2Y",
            },
            "calls": {
                "text": {"en": "calls", "ru": "звонки"},
                "data_categories": both,
                "withdrawal": both,
                "validity": None,
                "retention": "P30D",
            },
        },
        "campaigns": {
            CAMPAIGN: {
                "language": "en",
                "languages": list(LANGS),
                "controller": {"name": {"en": "Acme", "ru": "Акме"}},
                "purposes": list(PURPOSES),
                "keys": {"agree": "7", "decline": "9", "withdraw_all": "*", "keep": "#"},
            }
        },
    }


def write_config(tmp_path: Path, data: dict[str, Any]) -> Config:
    file = tmp_path / "config.yaml"
    file.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return load(file, env={})


def write_prompt_files(tmp_path: Path) -> None:
    for lang in LANGS:
        write_prompt_file(tmp_path / "prompts", lang)


@pytest.fixture
def small(tmp_path: Path) -> Config:
    """One campaign asking for two purposes in two languages, short prompt texts, in tmp_path."""
    write_prompt_files(tmp_path)
    return write_config(tmp_path, config_data(tmp_path))


def catalog_error(config: Config) -> str:
    with pytest.raises(ConfigError) as exc:
        Catalog(config)
    return str(exc.value)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def static_keys(config: Config) -> set[tuple[str, str, str, str | None]]:
    return {
        (cname, lang, name, pid)
        for cname, campaign in config.campaigns.items()
        for lang in campaign.languages
        for name in STATIC
        for pid in (campaign.purposes if name == "purpose" else (None,))
    }


# ---- rendering --------------------------------------------------------------------------------


def test_default_catalog_renders_every_prompt() -> None:
    config = load(None, env={})
    catalog = Catalog(config)
    assert set(catalog.prompts) == static_keys(config)
    for (cname, lang, name, pid), p in catalog.prompts.items():
        where = f"{cname}/{lang}/{name}/{pid}"
        assert (p.campaign, p.language, p.name, p.purpose) == (cname, lang, name, pid), where
        assert p.text.strip(), where
        assert "{" not in p.text and "}" not in p.text, f"{where}: {p.text}"
        assert "None" not in p.text, where
        assert "  " not in p.text, f"{where}: {p.text!r}"
        assert p.version, where
        assert p.sha256 is None, where  # no audio looked at yet
        assert p.path.is_absolute(), where
        assert p.path.name == (f"purpose-{pid}.wav" if pid else f"{name}.wav"), where
        assert p.path.parent == catalog.audio_dir / cname / lang, where
        campaign = config.campaigns[cname]
        if name == "purpose":
            assert pid is not None
            assert config.purposes[pid].text[lang] in p.text
            assert config.purposes[pid].withdrawal[lang] in p.text
            assert campaign.controller.name[lang] in p.text
        if name == "ask":
            assert campaign.keys.agree in p.text and campaign.keys.decline in p.text


def test_default_wording_says_the_durations() -> None:
    """The shipped purpose (validity P1Y, retention P5Y) in the shipped wording."""
    catalog = Catalog(load(None, env={}))
    ru = catalog.get("default", "ru", "purpose", "marketing-calls").text
    en = catalog.get("default", "en", "purpose", "marketing-calls").text
    assert "хранить их 5 лет. Согласие действует 1 год. Вы можете" in ru
    assert "keep them for 5 years. The consent is valid for 1 year. You can" in en


def test_dynamic_prompts_are_not_static_files(small: Config) -> None:
    catalog = Catalog(small)
    for name in DYNAMIC:
        with pytest.raises(KeyError):
            catalog.get(CAMPAIGN, "en", name)
    assert not any(name in DYNAMIC for _, _, name, _ in catalog.prompts)


def test_small_catalog_fills_placeholders(small: Config) -> None:
    catalog = Catalog(small)
    assert set(catalog.prompts) == static_keys(small)
    en, ru = (catalog.get(CAMPAIGN, lang, "purpose", "news").text for lang in ("en", "ru"))
    assert en == "Acme: news, 2 years. valid 1 year."
    assert ru == "Акме: новости, 2 года. valid 1 год."
    assert catalog.get(CAMPAIGN, "en", "ask").text == "press 7 9."
    assert catalog.get(CAMPAIGN, "ru", "ask").voice == "ru"
    assert catalog.get(CAMPAIGN, "en", "ask").voice == "en-us"
    assert catalog.get(CAMPAIGN, "en", "ask").version == "t-1"
    # Only the purpose statement depends on the purpose.
    assert catalog.get(CAMPAIGN, "en", "ask", "news") == catalog.get(CAMPAIGN, "en", "ask")


def test_one_purpose_statement_per_purpose(small: Config, tmp_path: Path) -> None:
    catalog = Catalog(small)
    for lang in LANGS:
        news = catalog.get(CAMPAIGN, lang, "purpose", "news")
        calls = catalog.get(CAMPAIGN, lang, "purpose", "calls")
        assert (news.purpose, calls.purpose) == ("news", "calls")
        assert news.text != calls.text
        assert small.purposes["news"].text[lang] in news.text
        assert small.purposes["calls"].text[lang] in calls.text
        audio = (tmp_path / "audio" / CAMPAIGN / lang).resolve()
        assert news.path == audio / "purpose-news.wav"
        assert calls.path == audio / "purpose-calls.wav"
    with pytest.raises(KeyError):
        catalog.get(CAMPAIGN, "en", "purpose")  # which purpose?
    with pytest.raises(KeyError):
        catalog.get(CAMPAIGN, "en", "purpose", "weather")


def test_validity_clause_only_when_the_consent_expires(small: Config) -> None:
    catalog = Catalog(small)
    assert catalog.get(CAMPAIGN, "en", "purpose", "news").text.endswith("2 years. valid 1 year.")
    # `calls` has validity: null: no clause, and no gap where it would have been.
    assert catalog.get(CAMPAIGN, "en", "purpose", "calls").text == "Acme: calls, 30 days."
    assert catalog.get(CAMPAIGN, "ru", "purpose", "calls").text == "Акме: звонки, 30 дней."


@pytest.mark.parametrize(
    ("lang", "iso", "words"),
    [
        ("ru", "P1Y", "1 год"),
        ("ru", "P2Y", "2 года"),
        ("ru", "P5Y", "5 лет"),
        ("ru", "P21Y", "21 год"),
        ("ru", "P11Y", "11 лет"),
        ("ru", "P1M", "1 месяц"),
        ("ru", "P3M", "3 месяца"),
        ("ru", "P6M", "6 месяцев"),
        ("ru", "P30D", "30 дней"),
        ("ru", "P21D", "21 день"),
        ("ru", "P2W", "2 недели"),
        ("ru", "P1Y6M", "1 год 6 месяцев"),
        ("en", "P1Y", "1 year"),
        ("en", "P5Y", "5 years"),
        ("en", "P1M", "1 month"),
        ("en", "P30D", "30 days"),
        ("en", "P1Y6M", "1 year and 6 months"),
    ],
)
def test_durations_are_said_in_the_language(
    tmp_path: Path, lang: str, iso: str, words: str
) -> None:
    write_prompt_files(tmp_path)
    data = config_data(tmp_path)
    data["purposes"]["news"] |= {"retention": iso, "validity": iso}
    catalog = Catalog(write_config(tmp_path, data))
    controller, purpose = {"en": ("Acme", "news"), "ru": ("Акме", "новости")}[lang]
    assert catalog.get(CAMPAIGN, lang, "purpose", "news").text == (
        f"{controller}: {purpose}, {words}. valid {words}."
    )


@pytest.mark.parametrize(
    ("section", "name", "template", "placeholder"),
    [
        ("prompts", "confirm", "press {confirm_kye}", "{confirm_kye}"),
        # The purpose's placeholders exist only in the purpose statement.
        ("prompts", "ask", "{purpose}: press {agree_key}", "{purpose}"),
        ("prompts", "purpose", "{purpose}, {key}.", "{key}"),
        ("prompts", "menu", "{consents} {date}", "{date}"),
        ("prompts", "chosen_withdraw", "{purpose} {key}", "{key}"),
        ("parts", "menu_item", "{key}: {purpse}, {date}.", "{purpse}"),
        ("parts", "menu_all", "all {key}.", "{key}"),
        ("parts", "validity", "valid {valdity}.", "{valdity}"),
        ("prompts", "notice", "recorded {0}", "{0}"),
        ("prompts", "goodbye", "bye {controller.name}", "{controller.name}"),
    ],
)
def test_unknown_placeholder_names_file_key_and_placeholder(
    small: Config, tmp_path: Path, section: str, name: str, template: str, placeholder: str
) -> None:
    """Also for the per-call prompts: they are rendered once with sample values at load."""
    texts, parts = prompt_texts("ru"), part_texts()
    (texts if section == "prompts" else parts)[name] = template
    file = write_prompt_file(tmp_path / "prompts", "ru", texts, parts)
    message = catalog_error(small)
    assert f"{file}: {section}.{name}: unknown placeholder {placeholder}" in message, message
    assert "known:" in message


@pytest.mark.parametrize(
    ("section", "name", "template"),
    [("prompts", "goodbye", "bye {"), ("parts", "menu_item", "{key} }")],
)
def test_malformed_braces_name_file_and_key(
    small: Config, tmp_path: Path, section: str, name: str, template: str
) -> None:
    texts, parts = prompt_texts("en"), part_texts()
    (texts if section == "prompts" else parts)[name] = template
    file = write_prompt_file(tmp_path / "prompts", "en", texts, parts)
    message = catalog_error(small)
    assert f"{file}: {section}.{name}: malformed braces" in message, message


def test_literal_braces_may_be_written_doubled(small: Config, tmp_path: Path) -> None:
    texts = prompt_texts("en")
    texts["goodbye"] = "bye {{now}}."
    write_prompt_file(tmp_path / "prompts", "en", texts)
    assert Catalog(small).get(CAMPAIGN, "en", "goodbye").text == "bye {now}."


@pytest.mark.parametrize(
    ("section", "missing"), [("prompts", "goodbye"), ("prompts", "notice"), ("parts", "menu_all")]
)
def test_missing_text_is_named(small: Config, tmp_path: Path, section: str, missing: str) -> None:
    texts, parts = prompt_texts("en"), part_texts()
    del (texts if section == "prompts" else parts)[missing]
    file = write_prompt_file(tmp_path / "prompts", "en", texts, parts)
    message = catalog_error(small)
    assert f"{file}: {section}: missing {missing}" in message, message


def test_missing_parts_section_is_named(small: Config, tmp_path: Path) -> None:
    file = tmp_path / "prompts" / "en.yaml"
    data = yaml.safe_load(file.read_text(encoding="utf-8"))
    del data["parts"]
    file.write_text(yaml.safe_dump(data), encoding="utf-8")
    message = catalog_error(small)
    assert f"{file}: parts: expected a mapping" in message, message


@pytest.mark.parametrize(("section", "name"), [("prompts", "goodbye"), ("parts", "validity")])
def test_empty_text_is_an_error(small: Config, tmp_path: Path, section: str, name: str) -> None:
    """`goodbye:` with nothing after it is YAML null: it must not be spoken as "None"."""
    texts: dict[str, Any] = prompt_texts("en")
    parts: dict[str, Any] = part_texts()
    (texts if section == "prompts" else parts)[name] = None
    file = write_prompt_file(tmp_path / "prompts", "en", texts, parts)
    message = catalog_error(small)
    assert f"{file}: {section}: no text for {name}" in message, message


@pytest.mark.parametrize(("section", "name"), [("prompts", "good_bye"), ("parts", "menu_every")])
def test_unknown_name_is_named(small: Config, tmp_path: Path, section: str, name: str) -> None:
    texts, parts = prompt_texts("en"), part_texts()
    (texts if section == "prompts" else parts)[name] = "bye"
    file = write_prompt_file(tmp_path / "prompts", "en", texts, parts)
    message = catalog_error(small)
    assert f"{file}: {section}: unknown name {name}" in message, message


def test_missing_version_is_an_error(small: Config, tmp_path: Path) -> None:
    file = write_prompt_file(tmp_path / "prompts", "en", version=None)
    message = catalog_error(small)
    assert f"{file}: version: missing" in message


def test_missing_language_file_is_named(small: Config, tmp_path: Path) -> None:
    (tmp_path / "prompts" / "ru.yaml").unlink()
    message = catalog_error(small)
    assert str(tmp_path / "prompts" / "ru.yaml") in message
    assert "'ru'" in message


def test_invalid_prompt_yaml_is_named(small: Config, tmp_path: Path) -> None:
    file = tmp_path / "prompts" / "en.yaml"
    file.write_text("version: 1\nprompts: {notice: [\n", encoding="utf-8")
    message = catalog_error(small)
    assert str(file) in message
    assert "YAML" in message


def test_prompt_file_that_is_not_a_mapping_is_named(small: Config, tmp_path: Path) -> None:
    file = tmp_path / "prompts" / "en.yaml"
    file.write_text("- notice\n- goodbye\n", encoding="utf-8")
    message = catalog_error(small)
    assert str(file) in message
    assert "mapping" in message


# ---- per-call prompts: the withdrawal menu and the choice stated back -------------------------


def test_menu_names_each_consent_with_its_date_and_key(small: Config) -> None:
    catalog = Catalog(small)
    assert catalog.menu_text(CAMPAIGN, "en", [NEWS, CALLS]) == (
        "1: the news, 5 March 2026. 2: the calls, 31 December 2025. all *. keep #."
    )
    assert catalog.menu_text(CAMPAIGN, "ru", [CALLS, NEWS]) == (
        "1: the calls, 31 декабря 2025 года. 2: the news, 5 марта 2026 года. all *. keep #."
    )


def test_menu_offers_all_only_for_two_or_more_consents(small: Config) -> None:
    catalog = Catalog(small)
    assert catalog.menu_text(CAMPAIGN, "en", [NEWS]) == "1: the news, 5 March 2026. keep #."
    assert "all *" in catalog.menu_text(CAMPAIGN, "en", [NEWS, CALLS])


def test_chosen_withdraw_names_the_consent_and_its_date(small: Config) -> None:
    catalog = Catalog(small)
    assert catalog.chosen_withdraw_text(CAMPAIGN, "en", CALLS) == "the calls, 31 December 2025."
    assert catalog.chosen_withdraw_text(CAMPAIGN, "ru", NEWS) == "the news, 5 марта 2026 года."


def test_default_wording_of_the_withdrawal_menu() -> None:
    catalog = Catalog(load(None, env={}))
    one = ActiveConsent("r1", "marketing-calls", "звонки с предложениями", datetime(2026, 3, 5))
    two = ActiveConsent("r2", "sms-news", "СМС с новостями", datetime(2026, 11, 1))
    ru = catalog.menu_text("default", "ru", [one, two])
    assert "Согласие на звонки с предложениями, данное 5 марта 2026 года: " in ru
    assert "чтобы отозвать его, нажмите 1." in ru
    assert "Согласие на СМС с новостями, данное 1 ноября 2026 года: " in ru
    assert "нажмите 2." in ru
    assert "Чтобы отозвать все согласия, нажмите 9." in ru
    assert ru.endswith("Чтобы оставить всё как есть, нажмите 0.")
    alone = catalog.menu_text("default", "ru", [one])
    assert "все согласия" not in alone and "нажмите 2" not in alone
    en = catalog.menu_text("default", "en", [one, two])
    assert "given on 5 March 2026: to withdraw it, press 1." in en
    assert "To withdraw all of them, press 9." in en
    assert "To withdraw all" not in catalog.menu_text("default", "en", [one])
    assert catalog.chosen_withdraw_text("default", "ru", two) == (
        "Вы выбрали: отозвать согласие на СМС с новостями, данное 1 ноября 2026 года."
    )
    assert catalog.chosen_withdraw_text("default", "en", one).endswith("given on 5 March 2026.")


# ---- audio ------------------------------------------------------------------------------------


def test_check_audio_without_audio_names_prompt_and_path(small: Config, tmp_path: Path) -> None:
    catalog = Catalog(small)
    with pytest.raises(ConfigError) as exc:
        catalog.check_audio()
    message = str(exc.value)
    expected = (tmp_path / "audio" / CAMPAIGN / "en" / "notice.wav").resolve()
    assert f"{CAMPAIGN}/en/notice: {expected}" in message
    assert "prompts build" in message
    assert f"and {len(catalog.prompts) - 20} more" in message  # the first 20 are listed
    assert not (tmp_path / "audio" / "archive").exists()


def assert_telephony_wav(path: Path) -> None:
    with wave.open(str(path), "rb") as w:
        assert w.getframerate() == 8000, path
        assert w.getnchannels() == 1, path
        assert w.getsampwidth() == 2, path
        assert w.getcomptype() == "NONE", path
        assert w.getnframes() > 800, path  # some speech, not an empty file


def archive_listing(catalog: Catalog) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in catalog.archive_dir.iterdir()}


def archive_files(catalog: Catalog) -> dict[str, tuple[int, int]]:
    """Inode and mtime of each archived file: the same content written again shows here."""
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in catalog.archive_dir.iterdir()}


def test_build_makes_telephony_wavs_once_and_archives_them(small: Config) -> None:
    catalog = Catalog(small)
    built = catalog.build()
    assert {(p.campaign, p.language, p.name, p.purpose) for p in built} == set(catalog.prompts)
    shas = set()
    for p in catalog.prompts.values():
        assert_telephony_wav(p.path)
        stamp = json.loads(p.path.with_suffix(".json").read_text(encoding="utf-8"))
        assert stamp["text"] == p.text
        sha = sha256(p.path)
        assert catalog.archived(sha).read_bytes() == p.path.read_bytes(), p.path
        shas.add(sha)
    assert set(archive_listing(catalog)) == {f"{sha}.wav" for sha in shas}
    mtimes = {k: p.path.stat().st_mtime_ns for k, p in catalog.prompts.items()}

    assert catalog.build() == []
    assert Catalog(small).build() == []
    assert {k: p.path.stat().st_mtime_ns for k, p in catalog.prompts.items()} == mtimes


def test_check_audio_points_every_prompt_at_its_archived_file(small: Config) -> None:
    catalog = Catalog(small)
    catalog.build()
    built = {k: sha256(p.path) for k, p in catalog.prompts.items()}
    catalog.check_audio()
    assert set(catalog.prompts) == set(built)
    for key, p in catalog.prompts.items():
        assert p.sha256 == built[key], key
        assert p.path == catalog.archive_dir / f"{p.sha256}.wav", key
        assert sha256(p.path) == p.sha256, key
    assert catalog.missing_audio() == []
    catalog.check_audio()  # again: nothing moves
    assert {k: p.sha256 for k, p in catalog.prompts.items()} == built


def test_check_audio_archives_audio_built_before_the_archive_existed(small: Config) -> None:
    catalog = Catalog(small)
    catalog.build()
    shutil.rmtree(catalog.archive_dir)
    fresh = Catalog(small)
    fresh.check_audio()
    for p in fresh.prompts.values():
        assert p.sha256 is not None
        assert sha256(fresh.archived(p.sha256)) == p.sha256


def test_check_audio_names_the_one_missing_file(small: Config) -> None:
    catalog = Catalog(small)
    catalog.build()
    gone = catalog.get(CAMPAIGN, "ru", "purpose", "calls").path
    gone.unlink()
    with pytest.raises(ConfigError) as exc:
        catalog.check_audio()
    message = str(exc.value)
    assert f"{CAMPAIGN}/ru/purpose: {gone}" in message
    assert str(catalog.get(CAMPAIGN, "ru", "purpose", "news").path) not in message
    assert f"{CAMPAIGN}/en/purpose" not in message
    assert len(message.splitlines()) == 2


def test_changed_wording_keeps_the_old_audio_in_the_archive(small: Config, tmp_path: Path) -> None:
    first = Catalog(small)
    first.build()
    first.check_audio()
    old = first.get(CAMPAIGN, "ru", "goodbye")
    assert old.sha256 is not None
    heard = old.path.read_bytes()
    before = archive_listing(first)
    files = archive_files(first)

    texts = prompt_texts("ru")
    texts["goodbye"] = "до свидания."
    write_prompt_file(tmp_path / "prompts", "ru", texts, version="t-2")
    second = Catalog(small)
    built = second.build()
    assert [(p.language, p.name) for p in built] == [("ru", "goodbye")]
    assert_telephony_wav(second.get(CAMPAIGN, "ru", "goodbye").path)
    assert second.build() == []

    second.check_audio()
    new = second.get(CAMPAIGN, "ru", "goodbye")
    assert new.sha256 is not None and new.sha256 != old.sha256
    assert new.version == "t-2"
    assert second.archived(old.sha256).read_bytes() == heard, "the old audio was overwritten"
    after = archive_listing(second)
    assert {k: v for k, v in after.items() if k in before} == before
    assert {k: v for k, v in archive_files(second).items() if k in files} == files, "rewritten"
    assert set(after) - set(before) == {f"{new.sha256}.wav"}
    for key, p in second.prompts.items():
        if key != (CAMPAIGN, "ru", "goodbye", None):
            assert p.sha256 == first.prompts[key].sha256, key


def test_force_rebuilds_everything(small: Config) -> None:
    catalog = Catalog(small)
    catalog.build()
    assert len(catalog.build(force=True)) == len(catalog.prompts)


@pytest.mark.parametrize(("name", "purpose"), [("notice", None), ("purpose", "calls")])
def test_studio_recording_replaces_synthesis(
    small: Config, tmp_path: Path, name: str, purpose: str | None
) -> None:
    catalog = Catalog(small)
    catalog.build()
    stem = f"purpose-{purpose}" if purpose else name
    studio = tmp_path / "prompts" / "recorded" / CAMPAIGN / "en" / f"{stem}.wav"
    studio.parent.mkdir(parents=True)
    with wave.open(str(studio), "wb") as w:  # 0.5 s of 16 kHz stereo silence
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(b"\0\0\0\0" * 8000)
    built = catalog.build()
    assert [(p.language, p.name, p.purpose) for p in built] == [("en", name, purpose)]
    path = catalog.get(CAMPAIGN, "en", name, purpose).path
    with wave.open(str(path), "rb") as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (8000, 1, 2)
        assert abs(w.getnframes() - 4000) <= 10
    assert catalog.archived(sha256(path)).read_bytes() == path.read_bytes()
    assert catalog.build() == []


def test_build_after_check_audio_leaves_the_archive_alone(small: Config, tmp_path: Path) -> None:
    studio = tmp_path / "prompts" / "recorded" / CAMPAIGN / "en" / "notice.wav"
    studio.parent.mkdir(parents=True)
    with wave.open(str(studio), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\0\0" * 4000)
    catalog = Catalog(small)
    catalog.build()
    catalog.check_audio()
    before = archive_listing(catalog)
    assert catalog.build() == []
    assert archive_listing(catalog) == before


# ---- per-call audio ---------------------------------------------------------------------------


@pytest.fixture
def synthesized(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The texts the real synthesizer was asked for."""
    calls: list[str] = []
    real = prompts_module.synthesize

    def counting(text: str, voice: str, out: Path) -> None:
        calls.append(text)
        real(text, voice, out)

    monkeypatch.setattr(prompts_module, "synthesize", counting)
    return calls


def test_speak_synthesizes_a_text_once_into_the_archive(
    small: Config, synthesized: list[str]
) -> None:
    catalog = Catalog(small)
    text = catalog.menu_text(CAMPAIGN, "en", [NEWS, CALLS])
    first = catalog.speak(CAMPAIGN, "en", "menu", text)
    assert first.sha256 is not None
    assert first.path == catalog.archive_dir / f"{first.sha256}.wav"
    assert sha256(first.path) == first.sha256
    assert_telephony_wav(first.path)
    assert (first.campaign, first.language, first.name, first.text) == (
        CAMPAIGN,
        "en",
        "menu",
        text,
    )
    assert (first.version, first.voice, first.purpose) == ("t-1", "en-us", None)

    assert catalog.speak(CAMPAIGN, "en", "menu", text) == first
    assert synthesized == [text]

    other = catalog.speak(CAMPAIGN, "en", "chosen_withdraw", "the news, 5 March 2026.")
    assert other.sha256 != first.sha256
    assert sha256(other.path) == other.sha256
    # The same words in another voice are other audio.
    russian = catalog.speak(CAMPAIGN, "ru", "menu", text)
    assert russian.voice == "ru" and russian.sha256 != first.sha256
    assert len(synthesized) == 3
    assert set(archive_listing(catalog)) == {f"{p.sha256}.wav" for p in (first, other, russian)}


def test_speak_makes_a_lost_archive_file_again(small: Config, synthesized: list[str]) -> None:
    catalog = Catalog(small)
    first = catalog.speak(CAMPAIGN, "en", "menu", "one two.")
    first.path.unlink()
    again = catalog.speak(CAMPAIGN, "en", "menu", "one two.")
    assert again.path.exists()
    assert sha256(again.path) == again.sha256
    assert len(synthesized) == 2


# ---- media URI --------------------------------------------------------------------------------


def test_media_plays_the_archived_file(small: Config, tmp_path: Path) -> None:
    catalog = Catalog(small)
    catalog.build()
    catalog.check_audio()
    for p in catalog.prompts.values():
        media = catalog.media(p)
        assert media == f"sound:{catalog.archive_dir / str(p.sha256)}"
        assert Path(media.removeprefix("sound:")).is_absolute()
        assert not media.endswith(".wav")
    said = catalog.speak(CAMPAIGN, "ru", "menu", catalog.menu_text(CAMPAIGN, "ru", [NEWS]))
    assert catalog.media(said) == f"sound:{catalog.archive_dir / str(said.sha256)}"

    # Asterisk on another host fetches the same archived files over HTTP.
    base = "http://10.0.0.5:8090/prompts"
    remote = Catalog(write_config(tmp_path, config_data(tmp_path, media_url=base)))
    remote.check_audio()
    for key, p in remote.prompts.items():
        assert p.sha256 == catalog.prompts[key].sha256, key
        assert remote.media(p) == f"sound:{base}/archive/{p.sha256}.wav"


def test_relative_audio_dir_gives_an_absolute_media_path(tmp_path: Path) -> None:
    write_prompt_files(tmp_path)
    data = config_data(tmp_path)
    data["prompts"]["audio_dir"] = "rel/audio"
    catalog = Catalog(write_config(tmp_path, data))
    said = catalog.speak(CAMPAIGN, "en", "menu", "one.")
    archive = Path.cwd() / "rel" / "audio" / "archive"
    assert catalog.media(said) == f"sound:{archive / str(said.sha256)}"
    assert (archive / f"{said.sha256}.wav").exists()


@pytest.mark.parametrize("base", ["http://10.0.0.5:8090/prompts", "http://10.0.0.5:8090/prompts/"])
def test_media_url_gives_the_archived_file_over_http(tmp_path: Path, base: str) -> None:
    write_prompt_files(tmp_path)
    catalog = Catalog(write_config(tmp_path, config_data(tmp_path, media_url=base)))
    said = catalog.speak(CAMPAIGN, "en", "chosen_withdraw", "the news.")
    assert catalog.media(said) == f"sound:http://10.0.0.5:8090/prompts/archive/{said.sha256}.wav"
