"""The one config loader: `config.yaml` validated at start, environment overrides, clear errors.

Every key has a default, so the service runs with no file at all (SQLite file, local folders,
an Asterisk on 127.0.0.1). Secrets are never read from the file: only from the environment.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from consent_ivr import durations
from consent_ivr.dialing.config import Dialing
from consent_ivr.flow import MENU_SIZE, Rules
from consent_ivr.sms.config import SmsConfig

ENV_PREFIX = "CONSENT_IVR_"
DEFAULT_CONFIG_FILE = "config.yaml"
ROOT = Path(__file__).resolve().parent.parent


class ConfigError(Exception):
    """A config problem a person can act on: which file, key and value, and what was expected."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AriConfig(_Model):
    url: str = "http://127.0.0.1:8088"
    user: str = "consent-ivr"
    password: str = Field(default="", repr=False, exclude=True)
    app: str = "consent-ivr"
    reconnect_max_s: float = Field(default=10.0, gt=0)

    @field_validator("url")
    @classmethod
    def _http_url(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError("expected an http:// or https:// URL of Asterisk's HTTP server")
        return v.rstrip("/")


class DatabaseConfig(_Model):
    url: str = "sqlite:///var/consent-ivr.db"


class RecordingsConfig(_Model):
    dir: Path = Path("var/recordings")
    # Keep Asterisk's copy after it has been downloaded and hashed (debugging only).
    keep_on_asterisk: bool = False


class PromptsConfig(_Model):
    dir: Path = ROOT / "prompts"
    audio_dir: Path = Path("var/prompts")
    # Where Asterisk fetches prompts when it does not share this filesystem, e.g.
    # "http://10.0.0.5:8090/prompts": playback then uses Asterisk's HTTP media cache.
    media_url: str | None = None
    voice: dict[str, str] = Field(default_factory=lambda: {"ru": "ru", "en": "en-us"})


class HttpConfig(_Model):
    host: str = "127.0.0.1"
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
    checkpoints: Path = Path("var/checkpoints.jsonl")
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
    default_region: str = "RU"
    default_campaign: str = "default"
    purposes: dict[str, Purpose] = Field(default_factory=_default_purposes)
    campaigns: dict[str, Campaign] = Field(default_factory=_default_campaigns)
    sms: SmsConfig = SmsConfig()

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


def _format_error(source: str, err: ValidationError, data: dict[str, Any]) -> str:
    lines = [f"{source}: invalid configuration"]
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling; see config.yaml for the known keys)"
        value = e.get("input")
        shown = "" if isinstance(value, dict) else f" (got {value!r})"
        lines.append(f"  {loc}: {msg}{shown}")
    return "\n".join(lines)


def load(path: str | os.PathLike[str] | None = None, env: dict[str, str] | None = None) -> Config:
    """Load and validate the config; raise ConfigError naming the file, key and value."""
    env = dict(os.environ if env is None else env)
    explicit = path or env.get(ENV_PREFIX + "CONFIG")
    file = Path(explicit) if explicit else Path(DEFAULT_CONFIG_FILE)
    data: dict[str, Any] = {}
    if file.exists():
        try:
            loaded = yaml.safe_load(file.read_text(encoding="utf-8"))
        except yaml.YAMLError as e:
            raise ConfigError(f"{file}: not valid YAML: {e}") from e
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{file}: expected a mapping of keys at the top level")
        data = loaded or {}
    elif explicit:
        raise ConfigError(f"{file}: config file not found")
    source = str(file) if file.exists() else "embedded defaults"
    # A section whose keys are all commented out reads as null: it means "all defaults".
    data = {k: ({} if v is None else v) for k, v in data.items()}
    for section in {section for section, _ in ENV_OVERRIDES.values()}:
        if data.get(section) is not None and not isinstance(data[section], dict):
            raise ConfigError(
                f"{source}: {section}: expected a mapping of keys (got {data[section]!r})"
            )
    if "password" in (data.get("ari") or {}):
        raise ConfigError(
            f"{source}: ari.password: secrets are not read from files; "
            f"remove it and set {ENV_PREFIX}ARI_PASSWORD in the environment instead"
        )
    for suffix, (section, key) in ENV_OVERRIDES.items():
        value = env.get(ENV_PREFIX + suffix)
        if value is not None:
            if data.get(section) is None:
                data[section] = {}
            data[section][key] = value
    try:
        return Config.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_format_error(source, e, data)) from None
