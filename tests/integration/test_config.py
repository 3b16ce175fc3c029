"""Loading config.yaml: embedded defaults, clear errors naming file, key and value, secrets only
from the environment, environment overrides; purposes and the campaigns that ask for them, ISO
8601 durations, keypad keys of the consent question and of the withdrawal menu."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from consent_ivr.config import ROOT, Config, ConfigError, FlowConfig, load
from consent_ivr.flow import Rules

pytestmark = pytest.mark.integration

SECRET = "s3cret-Pa55word"
BOTH = {"ru": "по-русски", "en": "in English"}
PID = "sms-news"


@pytest.fixture(autouse=True)
def _no_config_in_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run in an empty directory, so no ./config.yaml is picked up by accident."""
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)


def purpose(**overrides: Any) -> dict[str, Any]:
    p: dict[str, Any] = {
        "text": dict(BOTH),
        "data_categories": dict(BOTH),
        "withdrawal": dict(BOTH),
    }
    p.update(overrides)
    return p


def campaign(**overrides: Any) -> dict[str, Any]:
    c: dict[str, Any] = {
        "language": "ru",
        "languages": ["ru", "en"],
        "controller": {"name": dict(BOTH)},
        "purposes": [PID],
    }
    c.update(overrides)
    return c


def news(c: dict[str, Any] | None = None, purposes: dict[str, Any] | None = None) -> dict[str, Any]:
    """A config whose one campaign, `news` (the default), asks for PID unless told otherwise."""
    return {
        "default_campaign": "news",
        "purposes": {PID: purpose()} if purposes is None else purposes,
        "campaigns": {"news": campaign() if c is None else c},
    }


def write(tmp_path: Path, data: Any, name: str = "config.yaml") -> Path:
    file = tmp_path / name
    text = data if isinstance(data, str) else yaml.safe_dump(data, allow_unicode=True)
    file.write_text(text, encoding="utf-8")
    return file


def error_of(file: Path | None, env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as exc:
        load(file, env={} if env is None else env)
    return str(exc.value)


def assert_names(message: str, key: str, *words: str) -> None:
    """One line of the message names `key` and every word (the value, what was expected)."""
    lines = [line for line in message.splitlines() if key in line]
    assert lines, f"no line names {key}:\n{message}"
    assert any(all(w in line for w in words) for line in lines), f"{key} {words}:\n{message}"


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
    assert default.phone_number is None
    assert default.purposes == ("marketing-calls",)
    marketing = config.purposes["marketing-calls"]
    assert (marketing.validity, marketing.retention, marketing.erase_after_withdrawal) == (
        "P1Y",
        "P5Y",
        "P30D",
    )
    assert marketing.lawful_basis == "consent"
    assert set(marketing.text) == set(marketing.withdrawal) == {"ru", "en"}
    assert config.sms.hold_max_s == 600
    assert config.sms.inbound.enabled
    assert config.evidence.checkpoint_interval_s == 60
    assert config.evidence.public_keys == ()


def test_default_keys_are_the_flow_rules() -> None:
    """flow.Rules holds the product's defaults; the config takes them from there."""
    keys = load(None, env={}).campaign(None)[1].keys
    for name in ("agree", "decline", "repeat", "confirm", "change", "withdraw_all", "keep"):
        assert getattr(keys, name) == getattr(Rules, name), name
    assert (keys.withdraw_all, keys.keep) == ("9", "0")


def test_shipped_config_yaml_is_the_embedded_defaults() -> None:
    """config.yaml says it is "the reference of the embedded defaults": keep them equal."""
    assert load(ROOT / "config.yaml", env={}) == load(None, env={})


def test_config_yaml_in_the_working_directory_is_used(tmp_path: Path) -> None:
    write(Path.cwd(), {"flow": {"max_attempts": 5}})
    assert load(None, env={}).flow.max_attempts == 5


def test_empty_file_means_defaults(tmp_path: Path) -> None:
    assert load(write(tmp_path, ""), env={}) == Config()


def test_section_with_every_key_commented_out_means_defaults(tmp_path: Path) -> None:
    file = write(tmp_path, "evidence:\n  # checkpoint_interval_s: 5\nflow:\n")
    assert load(file, env={}) == Config()


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
        (news(purposes={PID: purpose(txt={})}), f"purposes.{PID}.txt"),
        # The purpose used to live in the campaign: an old config is told so by its key.
        (news(campaign(purpose=purpose())), "campaigns.news.purpose"),
        (news(campaign(keys={"agre": "1"})), "campaigns.news.keys.agre"),
        (news(campaign(keys={"withdrawall": "9"})), "campaigns.news.keys.withdrawall"),
        ({"evidence": {"checkpoint": "x.jsonl"}}, "evidence.checkpoint"),
        ({"sms": {"inbound": {"stopwords": ["STOP"]}}}, "sms.inbound.stopwords"),
    ],
    ids=[
        "flow",
        "top-level",
        "purpose",
        "old-campaign-purpose",
        "keys",
        "menu-keys",
        "evidence",
        "sms-inbound",
    ],
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
            news(campaign(keys={"agree": "12"})),
            "campaigns.news.keys.agree",
            "'12'",
            "one keypad key",
        ),
        (
            news(campaign(keys={"keep": "x"})),
            "campaigns.news.keys.keep",
            "'x'",
            "one keypad key",
        ),
        (
            news(campaign(keys={"agree": "2", "decline": "2"})),
            "campaigns.news.keys",
            "'2'",
            "different keys",
        ),
        (
            news(campaign(keys={"confirm": "5", "change": "5"})),
            "campaigns.news.keys",
            "'5'",
            "different keys",
        ),
        ({"ari": {"url": "127.0.0.1:8088"}}, "ari.url", "'127.0.0.1:8088'", "http://"),
        ({"ari": {"url": "ws://pbx:8088"}}, "ari.url", "'ws://pbx:8088'", "http://"),
        ({"default_campaign": "nope"}, "default_campaign", "'nope'", "campaigns"),
        (
            {"evidence": {"checkpoint_interval_s": 0}},
            "evidence.checkpoint_interval_s",
            "0",
            "greater than 0",
        ),
        ({"sms": {"hold_max_s": -1}}, "sms.hold_max_s", "-1", "greater than 0"),
        ({"sms": {"inbound": {"scope": "some"}}}, "sms.inbound.scope", "'some'", "'last'"),
    ],
    ids=[
        "max_attempts",
        "timeout-type",
        "port",
        "two-digit-key",
        "keep-not-a-key",
        "agree-equals-decline",
        "confirm-equals-change",
        "url-no-scheme",
        "url-ws",
        "default-campaign",
        "checkpoint-interval",
        "hold-max",
        "inbound-scope",
    ],
)
def test_wrong_value_names_key_value_and_expectation(
    tmp_path: Path, data: dict[str, Any], key: str, value: str, expected: str
) -> None:
    file = write(tmp_path, data)
    message = error_of(file)
    assert str(file) in message
    assert_names(message, key, value, expected)


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    data = {
        "flow": {"max_attempts": 0, "max_repeats": -1},
        "http": {"prt": 1},
        "purposes": {PID: purpose(validity="1Y", retention="five years")},
    }
    file = write(tmp_path, data)
    message = error_of(file)
    for key in (
        "flow.max_attempts",
        "flow.max_repeats",
        "http.prt",
        f"purposes.{PID}.validity",
        f"purposes.{PID}.retention",
    ):
        assert key in message


def test_section_that_is_not_a_mapping(tmp_path: Path) -> None:
    file = write(tmp_path, "ari: 5\n")
    message = error_of(file)
    assert str(file) in message
    assert "ari" in message


# ---- purposes: durations ----------------------------------------------------------------------

DURATION_KEYS = ("validity", "retention", "erase_after_withdrawal")


@pytest.mark.parametrize("key", DURATION_KEYS)
@pytest.mark.parametrize("value", ["P1Y", "P6M", "P30D", "P2W", "PT12H", "P1Y6M", "P1DT12H"])
def test_iso_durations_load(tmp_path: Path, key: str, value: str) -> None:
    config = load(write(tmp_path, news(purposes={PID: purpose(**{key: value})})), env={})
    assert getattr(config.purposes[PID], key) == value


@pytest.mark.parametrize("key", DURATION_KEYS)
@pytest.mark.parametrize(
    "value", ["1Y", "P", "PT", "P1YT", "P1.5Y", "P-1D", "p1y", "5 years", "", "P1H"]
)
def test_invalid_duration_names_the_key_path_and_value(
    tmp_path: Path, key: str, value: str
) -> None:
    file = write(tmp_path, news(purposes={PID: purpose(**{key: value})}))
    message = error_of(file)
    assert str(file) in message
    assert re.search(rf"^\s+purposes\.{PID}\.{key}: .*ISO 8601", message, re.M), message
    assert_names(message, f"purposes.{PID}.{key}", repr(value), "P1Y")
    assert "unknown purpose" not in message  # the purpose exists; its duration is wrong


def test_invalid_duration_of_an_unused_purpose_is_refused_too(tmp_path: Path) -> None:
    purposes = {PID: purpose(), "draft": purpose(retention="P5")}
    message = error_of(write(tmp_path, news(purposes=purposes)))
    assert_names(message, "purposes.draft.retention", "'P5'", "ISO 8601")


def test_null_validity_means_the_consent_never_expires(tmp_path: Path) -> None:
    config = load(write(tmp_path, news(purposes={PID: purpose(validity=None)})), env={})
    assert config.purposes[PID].validity is None
    assert config.purpose_snapshot("news", PID, "ru")["validity"] is None


@pytest.mark.parametrize("key", ["retention", "erase_after_withdrawal"])
def test_only_validity_may_be_null(tmp_path: Path, key: str) -> None:
    file = write(tmp_path, news(purposes={PID: purpose(**{key: None})}))
    message = error_of(file)
    assert_names(message, f"purposes.{PID}.{key}", "None", "string")


def test_durations_default_when_left_out(tmp_path: Path) -> None:
    config = load(write(tmp_path, news()), env={})
    p = config.purposes[PID]
    assert (p.validity, p.retention, p.erase_after_withdrawal) == ("P1Y", "P5Y", "P30D")


def test_old_per_language_retention_text_is_told_to_use_a_duration(tmp_path: Path) -> None:
    file = write(tmp_path, news(purposes={PID: purpose(retention={"ru": "5 лет", "en": "5y"})}))
    message = error_of(file)
    assert_names(message, f"purposes.{PID}.retention", "ISO 8601")


def test_a_duration_past_the_calendar_is_refused(tmp_path: Path) -> None:
    message = error_of(write(tmp_path, news(purposes={PID: purpose(validity="P10000Y")})))
    assert f"purposes.{PID}.validity" in message


# ---- purposes: campaigns that ask for them ----------------------------------------------------


def test_unknown_purpose_of_a_campaign_is_named(tmp_path: Path) -> None:
    file = write(tmp_path, news(campaign(purposes=[PID, "sms-nwes"])))
    message = error_of(file)
    assert str(file) in message
    assert_names(message, "campaigns.news.purposes", "unknown purpose", "'sms-nwes'", PID)
    assert f"'{PID}'" not in message  # the purpose that exists is not blamed


@pytest.mark.parametrize("field", ["text", "withdrawal", "data_categories"])
def test_purpose_missing_a_language_of_its_campaign(tmp_path: Path, field: str) -> None:
    file = write(tmp_path, news(purposes={PID: purpose(**{field: {"ru": "только по-русски"}})}))
    message = error_of(file)
    assert str(file) in message
    assert_names(message, f"purposes.{PID}.{field}", "'en'", "campaign news")


def test_the_campaign_that_needs_the_language_is_named(tmp_path: Path) -> None:
    data = news(purposes={PID: purpose(text={"ru": "только по-русски"})})
    data["campaigns"] = {
        "news": campaign(languages=["ru"]),
        "promo": campaign(language="en"),
    }
    message = error_of(write(tmp_path, data))
    assert_names(message, f"purposes.{PID}.text", "'en'", "campaign promo")
    assert "campaign news" not in message


def test_a_purpose_needs_only_the_languages_of_its_campaigns(tmp_path: Path) -> None:
    ru_only = {"ru": "только по-русски"}
    purposes = {
        PID: purpose(text=ru_only, data_categories=ru_only, withdrawal=ru_only),
        "draft": purpose(withdrawal={"en": "not asked by any campaign yet"}),
    }
    data = news(campaign(languages=["ru"]), purposes=purposes)
    config = load(write(tmp_path, data), env={})
    assert config.campaign(None)[1].purposes == (PID,)
    assert set(config.purposes) == {PID, "draft"}


def test_a_purpose_listed_twice_is_refused(tmp_path: Path) -> None:
    purposes = {PID: purpose(), "calls": purpose()}
    file = write(tmp_path, news(campaign(purposes=[PID, "calls", PID]), purposes))
    message = error_of(file)
    assert str(file) in message
    assert_names(message, "campaigns.news", "twice", f"'{PID}'")


def test_an_empty_purposes_list_is_refused(tmp_path: Path) -> None:
    file = write(tmp_path, news(campaign(purposes=[])))
    message = error_of(file)
    assert str(file) in message
    assert_names(message, "campaigns.news.purposes", "at least 1", "[]")


def test_a_campaign_without_purposes_is_refused(tmp_path: Path) -> None:
    c = campaign()
    del c["purposes"]
    message = error_of(write(tmp_path, news(c)))
    assert_names(message, "campaigns.news.purposes", "required")


def test_campaign_missing_controller_name_language(tmp_path: Path) -> None:
    file = write(tmp_path, news(campaign(controller={"name": {"en": "Ex"}})))
    message = error_of(file)
    assert_names(message, "campaigns.news", "controller.name", "'ru'")


def test_campaign_language_not_in_its_languages(tmp_path: Path) -> None:
    file = write(tmp_path, news(campaign(language="de")))
    message = error_of(file)
    assert_names(message, "campaigns.news", "'de'", "languages")


def test_a_valid_campaign_loads(tmp_path: Path) -> None:
    purposes = {
        PID: purpose(validity=None, retention="P3Y", lawful_basis="consent"),
        "calls": purpose(text={"ru": "звонки", "en": "calls"}),
    }
    data = news(
        campaign(keys={"agree": "*"}, purposes=["calls", PID], phone_number="+74951234567"),
        purposes,
    )
    config = load(write(tmp_path, data), env={})
    name, c = config.campaign(None)
    assert name == "news"
    assert c.keys.agree == "*"
    assert c.purposes == ("calls", PID)  # asked in this order
    assert c.phone_number == "+74951234567"
    assert config.purposes["calls"].text["en"] == "calls"
    assert config.purposes[PID].retention == "P3Y"
    with pytest.raises(KeyError):
        config.campaign("default")


def test_purpose_snapshot_keeps_the_words_of_the_language(tmp_path: Path) -> None:
    purposes = {PID: purpose(text={"ru": "новости", "en": "news"}, validity="P6M")}
    data = news(campaign(privacy_notice_url="https://example.com/privacy"), purposes)
    config = load(write(tmp_path, data), env={})
    assert config.purpose_snapshot("news", PID, "en") == {
        "id": PID,
        "text": "news",
        "data_categories": "in English",
        "withdrawal": "in English",
        "lawful_basis": "consent",
        "validity": "P6M",
        "retention": "P5Y",
        "erase_after_withdrawal": "P30D",
        "privacy_notice_url": "https://example.com/privacy",
    }
    assert config.purpose_snapshot("news", PID, "ru")["text"] == "новости"


# ---- keys of the withdrawal menu --------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value"),
    [("withdraw_all", "1"), ("withdraw_all", "8"), ("keep", "5"), ("keep", 3)],
    ids=["withdraw_all-1", "withdraw_all-8", "keep-5", "keep-unquoted-3"],
)
def test_menu_keys_must_not_pick_a_consent(tmp_path: Path, name: str, value: str | int) -> None:
    file = write(tmp_path, news(campaign(keys={name: value})))
    message = error_of(file)
    assert str(file) in message
    assert_names(message, "campaigns.news.keys", f"{name}='{value}'", "12345678")


def test_withdraw_all_and_keep_must_differ(tmp_path: Path) -> None:
    file = write(tmp_path, news(campaign(keys={"withdraw_all": "*", "keep": "*"})))
    message = error_of(file)
    assert_names(message, "campaigns.news.keys", "withdraw_all and keep", "'*'", "different")


@pytest.mark.parametrize(
    ("withdraw_all", "keep"), [("#", "*"), ("0", "9"), (0, 9), ("9", "#"), ("*", "0")]
)
def test_menu_keys_outside_1_to_8_load(
    tmp_path: Path, withdraw_all: str | int, keep: str | int
) -> None:
    data = news(campaign(keys={"withdraw_all": withdraw_all, "keep": keep}))
    keys = load(write(tmp_path, data), env={}).campaign(None)[1].keys
    assert (keys.withdraw_all, keys.keep) == (str(withdraw_all), str(keep))


def test_campaign_rules_carry_every_key_and_the_flow_timing(tmp_path: Path) -> None:
    keys = {"agree": "3", "decline": "4", "repeat": "#", "withdraw_all": "*", "keep": "0"}
    data = news(campaign(keys=keys)) | {"flow": {"key_timeout_s": 4, "max_attempts": 2}}
    config = load(write(tmp_path, data), env={})
    rules = config.campaign(None)[1].rules(config.flow)
    assert isinstance(rules, Rules)
    assert (rules.agree, rules.decline, rules.repeat) == ("3", "4", "#")
    assert (rules.withdraw_all, rules.keep) == ("*", "0")
    assert (rules.key_timeout_s, rules.max_attempts) == (4, 2)
    assert rules.max_repeats == FlowConfig().max_repeats


# ---- promises of the SMS texts ----------------------------------------------------------------


def test_a_purpose_promising_a_stop_reply_that_cannot_arrive_is_refused(tmp_path: Path) -> None:
    """With the log gateway nobody can reply: a withdrawal text saying "reply STOP" lies."""
    withdrawal = {"ru": "позвоните нам", "en": "reply STOP to our message"}
    file = write(tmp_path, news(purposes={PID: purpose(withdrawal=withdrawal)}))
    message = error_of(file)
    assert str(file) in message
    assert_names(message, f"purposes.{PID}.withdrawal.en", "STOP", "sms.gateway")


def test_a_stop_reply_may_be_promised_when_replies_arrive(tmp_path: Path) -> None:
    withdrawal = {"ru": "позвоните нам", "en": "reply STOP to our message"}
    data = news(purposes={PID: purpose(withdrawal=withdrawal)})
    data["sms"] = {"gateway": "smpp", "sender": "+79001234567"}
    config = load(write(tmp_path, data), env={})
    assert config.purposes[PID].withdrawal["en"] == "reply STOP to our message"


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
    """Blamed on the variable that holds it, not on a file (see test_config_errors.py)."""
    message = error_of(None, {"CONSENT_IVR_ARI_URL": "pbx:8088"})
    assert message.startswith("environment: invalid configuration")
    assert_names(message, "CONSENT_IVR_ARI_URL (ari.url)", "'pbx:8088'", "http://")


def test_env_is_read_from_the_process_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONSENT_IVR_ARI_APP", "from-os-environ")
    monkeypatch.delenv("CONSENT_IVR_CONFIG", raising=False)
    assert load().ari.app == "from-os-environ"
