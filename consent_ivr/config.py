"""The one config loader: `config.yaml` validated at start, environment overrides, clear errors.

Every error names where its value came from (`Sources`): the file and key, or the environment
variable; then the value (never a secret) and what was expected. A file value that an
environment variable overrides is still checked: it comes back when the variable is unset.

Every key has a default, so the service runs with no file at all (SQLite file, local folders,
an Asterisk on 127.0.0.1). Secrets are never read from the file: only from the environment.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import ErrorDetails

from consent_ivr import durations
from consent_ivr.agi.config import AgiConfig
from consent_ivr.api.config import ApiConfig
from consent_ivr.config_types import (
    CREDENTIALS_IN_URL,
    FilePath,
    Host,
    HttpUrl,
    Region,
    check_http_url,
    redact,
    shown,
)
from consent_ivr.dialing.config import Dialing
from consent_ivr.flow import MENU_SIZE, Rules
from consent_ivr.sms.config import SmsConfig
from consent_ivr.store.db import check_url

ENV_PREFIX = "CONSENT_IVR_"
DEFAULT_CONFIG_FILE = "config.yaml"
ROOT = Path(__file__).resolve().parent.parent


class ConfigError(Exception):
    """A config problem a person can act on: which file, key and value, and what was expected."""


class _Model(BaseModel):
    # inf and nan are no timeout, interval or size a person means.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class AriConfig(_Model):
    url: str = "http://127.0.0.1:8088"
    user: str = Field(default="consent-ivr", min_length=1)
    password: str = Field(default="", repr=False, exclude=True)
    app: str = Field(default="consent-ivr", min_length=1)
    reconnect_max_s: float = Field(default=10.0, gt=0)
    # HTTP connections to ARI at once; keep it under http.conf's sessionlimit (default 100).
    connections: int = Field(default=64, ge=1, le=10000)
    # Calls in progress beyond which an inbound call is not taken (none: no limit): it is
    # turned away with "congestion" (SIP 503) before a word is said, so that the calls in
    # progress keep their answers in time. A caller who dials to withdraw, and an outbound
    # call (placed, and paced, by a campaign), are always taken.
    max_calls: int | None = Field(default=None, ge=1)

    @field_validator("url")
    @classmethod
    def _http_url(cls, v: str) -> str:
        try:
            check_http_url(v)
        except ValueError as e:
            if str(e) == CREDENTIALS_IN_URL:
                # The client sends its own Authorization header: aiohttp refuses both.
                raise ValueError(
                    f"a user or password inside the URL is not allowed: set ari.user (or "
                    f"{ENV_PREFIX}ARI_USER) and {ENV_PREFIX}ARI_PASSWORD instead"
                ) from None
            raise ValueError(f"{e} (Asterisk's HTTP server, e.g. http://127.0.0.1:8088)") from None
        v = v.rstrip("/")
        if v.endswith("/ari"):
            raise ValueError("expected the URL without /ari at the end: the client adds it")
        return v


class DatabaseConfig(_Model):
    url: str = "sqlite:///var/consent-ivr.db"

    @field_validator("url")
    @classmethod
    def _supported(cls, v: str) -> str:
        return check_url(v)


class RecordingsConfig(_Model):
    dir: FilePath = Path("var/recordings")
    # Keep Asterisk's copy after it has been downloaded and hashed (debugging only).
    keep_on_asterisk: bool = False
    # Asterisk's recording folder (its astspooldir/recording) as this service sees it: the same
    # path on one machine, or a shared mount. Set, a MixMonitor recording is copied and removed
    # there instead of downloaded and deleted through ARI (two ARI requests fewer a call, and
    # no file served by Asterisk's HTTP); the service needs read and delete rights on it.
    # None: through ARI, which works wherever Asterisk is.
    asterisk_folder: FilePath | None = None


class PromptsConfig(_Model):
    dir: FilePath = ROOT / "prompts"
    audio_dir: FilePath = Path("var/prompts")
    # Where Asterisk fetches prompts when it does not share this filesystem, e.g.
    # "http://10.0.0.5:8090/prompts": playback then uses Asterisk's HTTP media cache.
    media_url: HttpUrl | None = None
    voice: dict[str, str] = Field(default_factory=lambda: {"ru": "ru", "en": "en-us"})


class HttpConfig(_Model):
    host: Host = "127.0.0.1"
    port: int = Field(default=8090, ge=0, le=65535)
    enabled: bool = True


class FlowConfig(_Model):
    """Timing and retry rules of the call flow (see consent_ivr.flow, which holds the defaults)."""

    key_timeout_s: float = Field(default=Rules.key_timeout_s, gt=0, le=60)
    max_attempts: int = Field(default=Rules.max_attempts, ge=1, le=10)
    max_repeats: int = Field(default=Rules.max_repeats, ge=0, le=10)
    # How long to wait for Asterisk to close the recording after the call (longer under load).
    recording_stop_timeout_s: float = Field(default=30.0, gt=0)


class Keys(_Model):
    agree: str = Rules.agree
    decline: str = Rules.decline
    repeat: str = Rules.repeat
    confirm: str = Rules.confirm
    change: str = Rules.change
    # The withdrawal menu: 1..8 pick one active consent; these pick all of them or none.
    withdraw_all: str = Rules.withdraw_all
    keep: str = Rules.keep

    @field_validator("*", mode="before")
    @classmethod
    def _digit_as_text(cls, v: object) -> object:
        # `agree: 1` unquoted in YAML is an int; a key is a key.
        return str(v) if isinstance(v, int) and not isinstance(v, bool) else v

    @field_validator("*")
    @classmethod
    def _one_dtmf(cls, v: str) -> str:
        if len(v) != 1 or v not in "0123456789*#ABCD":
            raise ValueError("expected one keypad key: 0-9, * or #")
        return v

    @model_validator(mode="after")
    def _distinct(self) -> Keys:
        if len({self.agree, self.decline, self.repeat}) != 3:
            raise ValueError(
                f"agree, decline and repeat must be three different keys "
                f"(got agree={self.agree!r}, decline={self.decline!r}, repeat={self.repeat!r})"
            )
        if self.confirm == self.change:
            raise ValueError(
                f"confirm and change must be different keys "
                f"(got confirm={self.confirm!r}, change={self.change!r})"
            )
        menu = "".join(str(i) for i in range(1, MENU_SIZE + 1))
        for name in ("withdraw_all", "keep"):
            if getattr(self, name) in menu:
                raise ValueError(
                    f"{name} must not be one of {menu}: those keys pick a consent in the "
                    f"withdrawal menu (got {name}={getattr(self, name)!r})"
                )
        if self.withdraw_all == self.keep:
            raise ValueError(
                f"withdraw_all and keep must be different keys (got {self.keep!r} for both)"
            )
        return self


class Controller(_Model):
    name: dict[str, str]
    contact: str = ""
    on_behalf_of: str | None = None


class Purpose(_Model):
    """One purpose a person may consent to. Durations are ISO 8601 (P1Y, P6M, P30D): the
    product computes expiry and erasure from them and the prompts say them aloud."""

    text: dict[str, str]
    data_categories: dict[str, str]
    withdrawal: dict[str, str]  # how to withdraw, as said in the call and in the SMS
    lawful_basis: str = "consent"
    validity: str | None = "P1Y"  # a given consent expires after this; null: never
    retention: str = "P5Y"  # evidence and recordings are kept this long after the call
    erase_after_withdrawal: str = "P30D"  # 152-FZ art. 9: destroy within 30 days

    @field_validator("validity", "retention", "erase_after_withdrawal", mode="before")
    @classmethod
    def _iso_duration(cls, v: object) -> object:
        return None if v is None else durations.check(v)  # type: ignore[arg-type]

    def snapshot(self, purpose_id: str, lang: str, privacy_notice_url: str) -> dict[str, Any]:
        """The purpose as a record keeps it: the words in the call's language, the durations
        as configured. What the person was told must not change when the config does."""
        return {
            "id": purpose_id,
            "text": self.text[lang],
            "data_categories": self.data_categories[lang],
            "withdrawal": self.withdrawal[lang],
            "lawful_basis": self.lawful_basis,
            "validity": self.validity,
            "retention": self.retention,
            "erase_after_withdrawal": self.erase_after_withdrawal,
            "privacy_notice_url": privacy_notice_url,
        }


class Campaign(_Model):
    language: str = "ru"
    languages: tuple[str, ...] = ("ru", "en")
    jurisdiction: str = "RU"
    privacy_notice_url: str = ""
    # The number people call to reach this campaign (and to withdraw): the SMS names it when
    # replies to the sender cannot reach us.
    phone_number: str | None = None
    controller: Controller
    purposes: tuple[str, ...] = Field(min_length=1)
    keys: Keys = Keys()
    dialing: Dialing = Dialing()

    def rules(self, flow: FlowConfig) -> Rules:
        return Rules(
            **self.keys.model_dump(),
            key_timeout_s=flow.key_timeout_s,
            max_attempts=flow.max_attempts,
            max_repeats=flow.max_repeats,
        )

    def controller_view(self, lang: str) -> dict[str, Any]:
        c = self.controller
        return {"name": c.name[lang], "contact": c.contact, "on_behalf_of": c.on_behalf_of}

    @model_validator(mode="after")
    def _texts_for_every_language(self) -> Campaign:
        if self.language not in self.languages:
            raise ValueError(f"language {self.language!r} is not in languages {self.languages}")
        if len(set(self.purposes)) != len(self.purposes):
            raise ValueError(f"purposes lists a purpose twice: {list(self.purposes)}")
        for lang in self.languages:
            if lang not in self.controller.name:
                raise ValueError(f"controller.name has no text for language {lang!r}")
        return self


def _default_purposes() -> dict[str, Purpose]:
    return {
        "marketing-calls": Purpose(
            text={
                "ru": "звонки и СМС с предложениями наших услуг",
                "en": "calls and text messages with offers of our services",
            },
            data_categories={
                "ru": "номер телефона и запись этого разговора",
                "en": "your phone number and the recording of this call",
            },
            withdrawal={
                "ru": "позвоните на номер, по которому звонили, и нажмите цифру из меню",
                "en": "call the number you called and choose it in the menu",
            },
        )
    }


def _default_campaigns() -> dict[str, Campaign]:
    return {
        "default": Campaign(
            controller=Controller(
                name={"ru": "ООО «Пример»", "en": "Example Ltd"},
                contact="privacy@example.com",
            ),
            purposes=("marketing-calls",),
        )
    }


class EvidenceConfig(_Model):
    """Signed checkpoints of the event ledger, and the retention run."""

    # Each signed checkpoint is also appended here: keep it on other storage than the database
    # (or ship it elsewhere), so a rewritten database is caught even by someone with the key.
    checkpoints: FilePath = Path("var/checkpoints.jsonl")
    checkpoint_interval_s: float = Field(default=60.0, gt=0)
    # Ed25519 public keys (base64) whose checkpoint signatures verify: the current one first,
    # then retired ones. The private key comes only from the environment (signing_key_env).
    public_keys: tuple[str, ...] = ()
    signing_key_env: str = "CONSENT_IVR_SIGNING_KEY"
    # How often the running service erases what has passed its retention (0: never; run
    # `consent-ivr purge` from cron instead).
    purge_interval_s: float = Field(default=86400.0, ge=0)


class Config(_Model):
    ari: AriConfig = AriConfig()
    database: DatabaseConfig = DatabaseConfig()
    recordings: RecordingsConfig = RecordingsConfig()
    prompts: PromptsConfig = PromptsConfig()
    http: HttpConfig = HttpConfig()
    flow: FlowConfig = FlowConfig()
    evidence: EvidenceConfig = EvidenceConfig()
    default_region: Region = "RU"
    default_campaign: str = "default"
    purposes: dict[str, Purpose] = Field(default_factory=_default_purposes)
    campaigns: dict[str, Campaign] = Field(default_factory=_default_campaigns)
    sms: SmsConfig = SmsConfig()
    api: ApiConfig = ApiConfig()
    agi: AgiConfig = AgiConfig()

    @model_validator(mode="after")
    def _references(self) -> Config:
        if self.default_campaign not in self.campaigns:
            raise ValueError(
                f"default_campaign {self.default_campaign!r} is not one of the campaigns "
                f"{sorted(self.campaigns)}"
            )
        for name, campaign in self.campaigns.items():
            for pid in campaign.purposes:
                if pid not in self.purposes:
                    raise ValueError(
                        f"campaigns.{name}.purposes: unknown purpose {pid!r} "
                        f"(defined under purposes: {', '.join(sorted(self.purposes))})"
                    )
                purpose = self.purposes[pid]
                for lang in campaign.languages:
                    for key in ("text", "data_categories", "withdrawal"):
                        if lang not in getattr(purpose, key):
                            raise ValueError(
                                f"purposes.{pid}.{key} has no text for language {lang!r} "
                                f"(campaign {name} speaks {', '.join(campaign.languages)})"
                            )
        from consent_ivr.sms import promises

        promises.check(self)
        return self

    def campaign(self, name: str | None) -> tuple[str, Campaign]:
        name = name or self.default_campaign
        if name not in self.campaigns:
            raise KeyError(name)
        return name, self.campaigns[name]

    def purpose_snapshot(self, campaign: str, purpose_id: str, lang: str) -> dict[str, Any]:
        c = self.campaigns[campaign]
        return self.purposes[purpose_id].snapshot(purpose_id, lang, c.privacy_notice_url)


# Environment variables that override config keys; deployment scripts rely on these names.
ENV_OVERRIDES: dict[str, tuple[str, str]] = {
    "ARI_URL": ("ari", "url"),
    "ARI_USER": ("ari", "user"),
    "ARI_PASSWORD": ("ari", "password"),
    "ARI_APP": ("ari", "app"),
    "DATABASE_URL": ("database", "url"),
    "RECORDINGS_DIR": ("recordings", "dir"),
    "HTTP_HOST": ("http", "host"),
    "HTTP_PORT": ("http", "port"),
    "PROMPTS_MEDIA_URL": ("prompts", "media_url"),
}
# Keys whose value no message shows, wherever it came from.
SECRET_KEYS = frozenset({"ari.password"})


@dataclass(frozen=True)
class Sources:
    """Where the values of a config come from: the file read (None: embedded defaults), what
    it holds, and the environment variables that override its keys."""

    file: Path | None
    data: dict[str, Any]
    overrides: dict[str, tuple[str, str]]  # dotted key -> (variable, its value)

    @property
    def name(self) -> str:
        return str(self.file) if self.file else "embedded defaults"

    def origin(self, key: str) -> str:
        """Where the dotted ``key`` comes from, as messages name it: the environment variable,
        the file and key, or the default."""
        if key in self.overrides:
            return self.overrides[key][0]
        node: Any = self.data
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                return f"the default of {key}"
            node = node[part]
        return f"{self.file}: {key}"

    def merged(self) -> dict[str, Any]:
        data = {k: dict(v) if isinstance(v, dict) else v for k, v in self.data.items()}
        for key, (_, value) in self.overrides.items():
            section, name = key.split(".")
            data.setdefault(section, {})[name] = value
        return data


# libyaml's loader when PyYAML was built with it: the same safe subset, ten times faster.
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _yaml_problem(e: yaml.YAMLError) -> str:
    """What the parser says and where, without the line it quotes (it may hold a secret)."""
    if not isinstance(e, yaml.MarkedYAMLError):
        return "cannot parse"
    parts = []
    for text, mark in ((e.context, e.context_mark), (e.problem, e.problem_mark)):
        if text:
            where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
            parts.append(text + where)
    return "; ".join(parts) or "cannot parse"


def read(path: str | os.PathLike[str] | None = None, env: dict[str, str] | None = None) -> Sources:
    """The config file and the environment overrides, not yet validated: ConfigError when the
    file cannot be read as a mapping of sections, or holds a secret."""
    env = dict(os.environ if env is None else env)
    explicit = path or env.get(ENV_PREFIX + "CONFIG")
    file = Path(explicit) if explicit else Path(DEFAULT_CONFIG_FILE)
    data: dict[str, Any] = {}
    if file.exists():
        try:
            loaded = yaml.load(file.read_text(encoding="utf-8"), Loader=_YAML_LOADER)
        except yaml.YAMLError as e:
            raise ConfigError(f"{file}: not valid YAML: {_yaml_problem(e)}") from None
        except UnicodeDecodeError:
            raise ConfigError(f"{file}: not UTF-8 text") from None
        except OSError as e:
            raise ConfigError(f"{file}: cannot read it: {e.strerror}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{file}: expected a mapping of keys at the top level")
        data = loaded or {}
    elif explicit:
        raise ConfigError(f"{file}: config file not found")
    source = str(file) if file.exists() else "embedded defaults"
    # A section whose keys are all commented out reads as null: it means "all defaults".
    data = {k: ({} if v is None else v) for k, v in data.items()}
    for section in sorted({section for section, _ in ENV_OVERRIDES.values()}):
        if data.get(section) is not None and not isinstance(data[section], dict):
            raise ConfigError(
                f"{source}: {section}: expected a mapping of keys (got {shown(data[section])})"
            )
    if "password" in (data.get("ari") or {}):
        raise ConfigError(
            f"{source}: ari.password: secrets are not read from files; "
            f"remove it and set {ENV_PREFIX}ARI_PASSWORD in the environment instead"
        )
    overrides = {
        f"{section}.{key}": (ENV_PREFIX + suffix, env[ENV_PREFIX + suffix])
        for suffix, (section, key) in ENV_OVERRIDES.items()
        if ENV_PREFIX + suffix in env
    }
    return Sources(file if file.exists() else None, data, overrides)


def _dotted(loc: tuple[int | str, ...]) -> str:
    """``purposes.marketing-calls.text``; a key that is empty or has a dot or a space in it
    is quoted (``text['']``), so the path stays readable."""
    text = ""
    for part in loc:
        plain = isinstance(part, int) or (part and not re.search(r"[.\s\[\]'\"]", part))
        text += (f".{part}" if text else str(part)) if plain else f"[{part!r}]"
    return text or "(top level)"


def _problem(error: ErrorDetails, key: str) -> str:
    """What is wrong with one value and, unless it is a secret or a whole section, the value."""
    msg = error["msg"].removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        msg = "unknown key (check the spelling; see config.yaml for the known keys)"
    value = error.get("input")
    if key in SECRET_KEYS or isinstance(value, dict):
        return redact(msg)
    return f"{redact(msg)} (got {shown(value)})"


def _overridden_problems(sources: Sources) -> list[str]:
    """A file value the environment overrides is still checked as written: it comes back
    when the variable is unset, so a mistake in it must not wait until then."""
    lines = []
    for key, (variable, _) in sources.overrides.items():
        section, name = key.split(".")
        if name not in sources.data.get(section, {}):
            continue
        model = Config.model_fields[section].annotation
        assert isinstance(model, type) and issubclass(model, BaseModel)
        try:
            model.model_validate({name: sources.data[section][name]})
        except ValidationError as e:
            lines += [
                f"  {_dotted((section, *error['loc']))}: {_problem(error, key)}; {variable} "
                f"overrides it now, but fix or remove it: it applies again when that variable "
                f"is unset"
                for error in e.errors()
            ]
    return lines


def load(path: str | os.PathLike[str] | None = None, env: dict[str, str] | None = None) -> Config:
    """Load and validate the config. ConfigError names, for every problem, where the value
    came from (the file and key, or the environment variable), the value (never a secret) and
    what was expected."""
    sources = read(path, env)
    in_file = _overridden_problems(sources)
    in_env = []
    try:
        config = Config.model_validate(sources.merged())
    except ValidationError as e:
        errors = e.errors()
    else:
        if not in_file:
            return config
        errors = []
    for error in errors:
        key = _dotted(error["loc"])
        override = sources.overrides.get(_dotted(error["loc"][:2]))
        if override is not None:
            in_env.append(f"  {override[0]} ({key}): {_problem(error, key)}")
        else:
            in_file.append(f"  {key}: {_problem(error, key)}")
    blocks = []
    if in_file:
        blocks.append(f"{sources.name}: invalid configuration\n" + "\n".join(in_file))
    if in_env:
        blocks.append("environment: invalid configuration\n" + "\n".join(in_env))
    raise ConfigError("\n".join(blocks))
