"""Loading config.yaml: embedded defaults, clear errors naming file, key and value, secrets only
from the environment, environment overrides."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from consent_ivr.config import ROOT, Config, ConfigError, load

pytestmark = pytest.mark.integration

SECRET = "s3cret-Pa55word"


@pytest.fixture(autouse=True)
def _no_config_in_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run in an empty directory, so no ./config.yaml is picked up by accident."""
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)


def campaign(**overrides: Any) -> dict[str, Any]:
    both = {"ru": "по-русски", "en": "in English"}
    c: dict[str, Any] = {
        "language": "ru",
        "languages": ["ru", "en"],
        "controller": {"name": dict(both)},
        "purpose": {
            "id": "sms-news",
            "text": dict(both),
            "data_categories": dict(both),
            "retention": dict(both),
            "withdrawal": dict(both),
        },
    }
    c.update(overrides)
    return c


def write(tmp_path: Path, data: Any, name: str = "config.yaml") -> Path:
    file = tmp_path / name
    text = data if isinstance(data, str) else yaml.safe_dump(data, allow_unicode=True)
    file.write_text(text, encoding="utf-8")
    return file


def error_of(file: Path | None, env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as exc:
        load(file, env={} if env is None else env)
    return str(exc.value)


# ---- defaults ---------------------------------------------------------------------------------


def test_embedded_defaults_without_a_file() -> None:
    config = load(None, env={})
    assert config == Config()
    assert config.ari.url == "http://127.0.0.1:8088"
    assert config.ari.password == ""
    assert config.database.url == "sqlite:///var/consent-ivr.db"
    assert config.flow.max_attempts == 3
    assert config.default_campaign == "default"
    name, default = config.campaign(None)
    assert name == "default"
    assert set(default.languages) == {"ru", "en"}
    assert default.keys.agree != default.keys.decline


def test_shipped_config_yaml_is_the_embedded_defaults() -> None:
    """config.yaml says it is "the reference of the embedded defaults": keep them equal."""
    assert load(ROOT / "config.yaml", env={}) == load(None, env={})


def test_config_yaml_in_the_working_directory_is_used(tmp_path: Path) -> None:
    write(Path.cwd(), {"flow": {"max_attempts": 5}})
    assert load(None, env={}).flow.max_attempts == 5


def test_empty_file_means_defaults(tmp_path: Path) -> None:
    assert load(write(tmp_path, ""), env={}) == Config()


# ---- file errors ------------------------------------------------------------------------------


def test_missing_explicit_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "consent.yaml"
    message = error_of(missing)
    assert str(missing) in message
    assert "not found" in message


def test_missing_file_from_env_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "absent.yaml"
    message = error_of(None, {"CONSENT_IVR_CONFIG": str(missing)})
    assert str(missing) in message


def test_invalid_yaml_names_the_file(tmp_path: Path) -> None:
    file = write(tmp_path, "flow:\n  max_attempts: [1, 2\n")
    message = error_of(file)
    assert str(file) in message
    assert "YAML" in message


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    file = write(tmp_path, "- ari\n- flow\n")
    message = error_of(file)
    assert str(file) in message
    assert "mapping" in message


# ---- unknown keys and wrong values ------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "path"),
    [
        ({"flow": {"max_attempt": 3}}, "flow.max_attempt"),
        ({"databse": {"url": "sqlite://"}}, "databse"),
        (
            {"campaigns": {"news": campaign(purpose={**campaign()["purpose"], "txt": {}})}},
            "campaigns.news.purpose.txt",
        ),
        ({"campaigns": {"news": campaign(keys={"agre": "1"})}}, "campaigns.news.keys.agre"),
    ],
    ids=["flow", "top-level", "purpose", "keys"],
)
def test_unknown_key_names_the_dotted_path(tmp_path: Path, data: dict[str, Any], path: str) -> None:
    file = write(tmp_path, data)
    message = error_of(file)
    assert str(file) in message
    assert re.search(rf"(^|\s){re.escape(path)}: unknown key", message, re.M), message


@pytest.mark.parametrize(
    ("data", "key", "value", "expected"),
    [
        ({"flow": {"max_attempts": 0}}, "flow.max_attempts", "0", "greater than or equal to 1"),
        ({"flow": {"key_timeout_s": "soon"}}, "flow.key_timeout_s", "'soon'", "number"),
        ({"http": {"port": 70000}}, "http.port", "70000", "less than or equal to 65535"),
        (
            {"campaigns": {"news": campaign(keys={"agree": "12"})}},
            "campaigns.news.keys.agree",
            "'12'",
            "one keypad key",
        ),
        (
            {"campaigns": {"news": campaign(keys={"agree": "2", "decline": "2"})}},
            "campaigns.news.keys",
            "'2'",
            "different keys",
        ),
        (
            {"campaigns": {"news": campaign(keys={"confirm": "5", "change": "5"})}},
            "campaigns.news.keys",
            "'5'",
            "different keys",
        ),
        ({"ari": {"url": "127.0.0.1:8088"}}, "ari.url", "'127.0.0.1:8088'", "http://"),
        ({"ari": {"url": "ws://pbx:8088"}}, "ari.url", "'ws://pbx:8088'", "http://"),
        ({"default_campaign": "nope"}, "default_campaign", "'nope'", "campaigns"),
    ],
    ids=[
        "max_attempts",
        "timeout-type",
        "port",
        "two-digit-key",
        "agree-equals-decline",
        "confirm-equals-change",
        "url-no-scheme",
        "url-ws",
        "default-campaign",
    ],
)
def test_wrong_value_names_key_value_and_expectation(
    tmp_path: Path, data: dict[str, Any], key: str, value: str, expected: str
) -> None:
    file = write(tmp_path, data)
    message = error_of(file)
    assert str(file) in message
    lines = [line for line in message.splitlines() if key in line]
    assert lines, message
    assert any(value in line and expected in line for line in lines), message


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    file = write(tmp_path, {"flow": {"max_attempts": 0, "max_repeats": -1}, "http": {"prt": 1}})
    message = error_of(file)
    for key in ("flow.max_attempts", "flow.max_repeats", "http.prt"):
        assert key in message


def test_section_that_is_not_a_mapping(tmp_path: Path) -> None:
    file = write(tmp_path, "ari: 5\n")
    message = error_of(file)
    assert str(file) in message
    assert "ari" in message


@pytest.mark.parametrize("field", ["text", "retention", "withdrawal", "data_categories"])
def test_campaign_missing_a_language_text(tmp_path: Path, field: str) -> None:
    c = campaign()
    c["purpose"][field] = {"ru": "только по-русски"}
    file = write(tmp_path, {"campaigns": {"news": c}})
    message = error_of(file)
    assert str(file) in message
    assert "campaigns.news" in message
    assert f"purpose.{field}" in message
    assert "'en'" in message


def test_campaign_missing_controller_name_language(tmp_path: Path) -> None:
    file = write(tmp_path, {"campaigns": {"news": campaign(controller={"name": {"en": "Ex"}})}})
    message = error_of(file)
    assert "campaigns.news" in message
    assert "controller.name" in message
    assert "'ru'" in message


def test_campaign_language_not_in_its_languages(tmp_path: Path) -> None:
    file = write(tmp_path, {"campaigns": {"news": campaign(language="de")}})
    message = error_of(file)
    assert "campaigns.news" in message
    assert "'de'" in message


def test_a_valid_campaign_loads(tmp_path: Path) -> None:
    data = {"default_campaign": "news", "campaigns": {"news": campaign(keys={"agree": "*"})}}
    config = load(write(tmp_path, data), env={})
    name, news = config.campaign(None)
    assert name == "news"
    assert news.keys.agree == "*"
    assert news.purpose.text["ru"] == "по-русски"
    with pytest.raises(KeyError):
        config.campaign("default")


# ---- secrets ----------------------------------------------------------------------------------


def test_password_in_file_is_refused(tmp_path: Path) -> None:
    file = write(tmp_path, {"ari": {"password": SECRET}})
    message = error_of(file)
    assert str(file) in message
    assert "ari.password" in message
    assert "CONSENT_IVR_ARI_PASSWORD" in message
    assert SECRET not in message


def test_password_in_file_is_refused_even_with_the_env_var(tmp_path: Path) -> None:
    """A secret left in the file is still a secret in a file, and it would be silently ignored."""
    file = write(tmp_path, {"ari": {"password": SECRET}})
    message = error_of(file, {"CONSENT_IVR_ARI_PASSWORD": "from-env"})
    assert "CONSENT_IVR_ARI_PASSWORD" in message
    assert SECRET not in message


def test_password_never_shown(tmp_path: Path) -> None:
    config = load(None, env={"CONSENT_IVR_ARI_PASSWORD": SECRET})
    assert config.ari.password == SECRET
    assert SECRET not in repr(config)
    assert SECRET not in str(config)
    assert SECRET not in repr(config.ari)
    assert SECRET not in config.model_dump_json()
    assert SECRET not in str(config.model_dump())


# ---- environment overrides --------------------------------------------------------------------


def test_env_overrides(tmp_path: Path) -> None:
    file = write(
        tmp_path,
        {
            "ari": {"url": "http://file:8088", "user": "file-user", "app": "file-app"},
            "database": {"url": "sqlite:///file.db"},
            "recordings": {"dir": "file-recordings"},
            "flow": {"max_attempts": 4},
        },
    )
    env = {
        "CONSENT_IVR_CONFIG": str(file),
        "CONSENT_IVR_ARI_URL": "https://pbx.example:8089/",
        "CONSENT_IVR_ARI_USER": "env-user",
        "CONSENT_IVR_ARI_PASSWORD": SECRET,
        "CONSENT_IVR_ARI_APP": "env-app",
        "CONSENT_IVR_DATABASE_URL": "postgresql://consent@db/consent",
        "CONSENT_IVR_RECORDINGS_DIR": str(tmp_path / "rec"),
    }
    config = load(None, env=env)
    assert config.flow.max_attempts == 4  # the file named by CONSENT_IVR_CONFIG was read
    assert config.ari.url == "https://pbx.example:8089"
    assert config.ari.user == "env-user"
    assert config.ari.password == SECRET
    assert config.ari.app == "env-app"
    assert config.database.url == "postgresql://consent@db/consent"
    assert config.recordings.dir == tmp_path / "rec"


def test_env_overrides_without_a_file() -> None:
    config = load(None, env={"CONSENT_IVR_ARI_USER": "u", "CONSENT_IVR_DATABASE_URL": "sqlite://"})
    assert (config.ari.user, config.database.url) == ("u", "sqlite://")
    assert config.ari.app == "consent-ivr"


def test_explicit_path_wins_over_env_config(tmp_path: Path) -> None:
    chosen = write(tmp_path, {"flow": {"max_attempts": 7}}, "chosen.yaml")
    other = write(tmp_path, {"flow": {"max_attempts": 2}}, "other.yaml")
    config = load(chosen, env={"CONSENT_IVR_CONFIG": str(other)})
    assert config.flow.max_attempts == 7


def test_invalid_env_override_is_reported() -> None:
    message = error_of(None, {"CONSENT_IVR_ARI_URL": "pbx:8088"})
    assert "ari.url" in message
    assert "'pbx:8088'" in message


def test_env_is_read_from_the_process_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONSENT_IVR_ARI_APP", "from-os-environ")
    monkeypatch.delenv("CONSENT_IVR_CONFIG", raising=False)
    assert load().ari.app == "from-os-environ"
