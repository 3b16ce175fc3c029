"""Prompt wording (YAML under prompts/), its audio, the archive of every audio ever played, and
the media URI Asterisk plays.

Texts are templates filled from the campaign and its purposes (controller, purpose, keys,
durations said aloud...). Audio is built per campaign and language with espeak-ng and sox
(`consent-ivr prompts build`): 8 kHz mono 16-bit WAV, what Asterisk plays without transcoding.
A file ``<name>.wav`` placed under ``prompts/recorded/<campaign>/<lang>/`` (a studio recording)
is used instead of the synthesized one.

Every audio file is kept in an archive by its SHA-256 (``<audio_dir>/archive/<sha256>.wav``),
never overwritten, and that archived file is what Asterisk plays: the hash a record stores for a
prompt names exactly the audio the person heard, also after the wording changed and the prompts
were rebuilt. Two prompts name the caller's own consents and dates (the withdrawal menu and the
choice stated back); they are rendered and synthesized per call (`speak`) into the same archive.
The service refuses to start when any static prompt lacks audio.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import string
import subprocess
import tempfile
import uuid
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from consent_ivr import durations
from consent_ivr.audio import wav_file_duration
from consent_ivr.config import Campaign, Config, ConfigError, Purpose
from consent_ivr.flow import DYNAMIC, PROMPTS, PURPOSE

STATIC = tuple(p for p in PROMPTS if p not in DYNAMIC)
# Pieces the dynamic prompts are assembled from, besides their own template.
PARTS = ("menu_item", "menu_all", "validity")
ARCHIVE = "archive"


@dataclass(frozen=True)
class Prompt:
    campaign: str
    language: str
    name: str
    text: str
    version: str
    voice: str
    built: Path  # where `build` writes it (per campaign, language and name)
    sha256: str | None = None  # of the audio, once it exists
    purpose: str | None = None  # for the `purpose` statement: which purpose it states
    archived: Path | None = None  # the archive's copy, once known: what Asterisk plays
    duration_s: float | None = None  # of the audio, once known

    @property
    def path(self) -> Path:
        """The audio file of this prompt: the archived copy when known."""
        return self.archived or self.built


@dataclass(frozen=True)
class ActiveConsent:
    """A consent the caller may withdraw, as the withdrawal menu names it."""

    record_id: str
    purpose_id: str
    text: str  # the purpose in the words of its record
    given_at: datetime


def _load_language(prompts_dir: Path, lang: str) -> dict[str, Any]:
    file = prompts_dir / f"{lang}.yaml"
    if not file.exists():
        raise ConfigError(f"{file}: no prompt file for language {lang!r}")
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{file}: not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{file}: expected a mapping with version, voice, prompts and parts")
    for section, names in (("prompts", PROMPTS), ("parts", PARTS)):
        texts = data.get(section)
        if not isinstance(texts, dict):
            raise ConfigError(f"{file}: {section}: expected a mapping of name to text")
        missing = [p for p in names if p not in texts]
        if missing:
            raise ConfigError(f"{file}: {section}: missing {', '.join(missing)}")
        empty = [p for p in names if not isinstance(texts[p], str) or not texts[p].strip()]
        if empty:
            raise ConfigError(f"{file}: {section}: no text for {', '.join(empty)}")
        unknown = sorted(set(texts) - set(names))
        if unknown:
            raise ConfigError(
                f"{file}: {section}: unknown name {', '.join(unknown)} (known: {', '.join(names)})"
            )
    if "version" not in data:
        raise ConfigError(f"{file}: version: missing (bump it whenever the wording changes)")
    return data


def template_vars(campaign: Campaign, lang: str) -> dict[str, str]:
    k = campaign.keys
    return {
        "controller": campaign.controller.name[lang],
        "privacy_notice_url": campaign.privacy_notice_url,
        "phone_number": campaign.phone_number or "",
        "agree_key": k.agree,
        "decline_key": k.decline,
        "repeat_key": k.repeat,
        "confirm_key": k.confirm,
        "change_key": k.change,
        "withdraw_all_key": k.withdraw_all,
        "keep_key": k.keep,
    }


def purpose_vars(purpose: Purpose, lang: str, validity_part: str, where: str) -> dict[str, str]:
    variables = {
        "purpose": purpose.text[lang],
        "data_categories": purpose.data_categories[lang],
        "withdrawal": purpose.withdrawal[lang],
        "retention": durations.spoken(purpose.retention, lang),
        "validity": durations.spoken(purpose.validity, lang) if purpose.validity else "",
    }
    # "It is valid for a year." only when the consent does expire.
    variables["validity_clause"] = (
        render(validity_part, variables, f"{where}: parts.validity") if purpose.validity else ""
    )
    return variables


def render(template: str, variables: dict[str, str], where: str) -> str:
    try:
        parsed = [(f, spec, conv) for _, f, spec, conv in string.Formatter().parse(template)]
    except ValueError as e:
        raise ConfigError(
            f"{where}: malformed braces ({e}); write {{{{ and }}}} for braces"
        ) from None
    fields = []
    for field, spec, conversion in parsed:
        if field is None:
            continue
        if spec or conversion:
            written = "{" + field + (f"!{conversion}" if conversion else "")
            written += (f":{spec}" if spec else "") + "}"
            raise ConfigError(f"{where}: {written} is not a plain placeholder: write {{{field}}}")
        fields.append(field)
    for field in fields:
        if field not in variables:
            raise ConfigError(
                f"{where}: unknown placeholder {{{field}}} (known: {', '.join(sorted(variables))})"
            )
    return " ".join(template.format(**variables).split())


def archive_dir(config: Config) -> Path:
    """Where every prompt audio ever played is kept, by its SHA-256."""
    return config.prompts.audio_dir.resolve() / ARCHIVE


def archived_path(archive: Path, sha256: str) -> Path:
    return archive / f"{sha256}.wav"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 16), b""):
            digest.update(block)
    return digest.hexdigest()


class Catalog:
    """Every prompt of every campaign, language (and purpose), with text, audio and hash."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.audio_dir = config.prompts.audio_dir.resolve()
        self.archive_dir = archive_dir(config)
        self.recorded_dir = config.prompts.dir / "recorded"
        self.prompts: dict[tuple[str, str, str, str | None], Prompt] = {}
        self.languages: dict[str, dict[str, Any]] = {}
        self._spoken: dict[tuple[str, str], str] = {}  # (voice, text) -> sha256, per process
        for cname, campaign in config.campaigns.items():
            for lang in campaign.languages:
                if lang not in self.languages:
                    self.languages[lang] = _load_language(config.prompts.dir, lang)
                data = self.languages[lang]
                file = config.prompts.dir / f"{lang}.yaml"
                base = template_vars(campaign, lang)
                for name in STATIC:
                    for pid in campaign.purposes if name == PURPOSE else (None,):
                        where = f"{file}: prompts.{name}"
                        variables = dict(base)
                        if pid is not None:
                            variables |= purpose_vars(
                                config.purposes[pid], lang, data["parts"]["validity"], str(file)
                            )
                        text = render(str(data["prompts"][name]), variables, where)
                        stem = name if pid is None else f"{name}-{pid}"
                        self.prompts[(cname, lang, name, pid)] = Prompt(
                            campaign=cname,
                            language=lang,
                            name=name,
                            text=text,
                            version=str(data["version"]),
                            voice=self.voice(lang),
                            built=self.audio_dir / cname / lang / f"{stem}.wav",
                            purpose=pid,
                        )
                self._check_dynamic(cname, lang)

    def voice(self, lang: str) -> str:
        return self.config.prompts.voice.get(lang, self.languages[lang].get("voice", lang))

    def _check_dynamic(self, campaign: str, lang: str) -> None:
        """Render the per-call prompts once with sample values: a bad placeholder is a
        config error at start, not a failed call."""
        sample = ActiveConsent("-", "-", "x", datetime(2026, 1, 1))
        self.menu_text(campaign, lang, [sample, sample])
        self.chosen_withdraw_text(campaign, lang, sample)

    def get(self, campaign: str, lang: str, name: str, purpose: str | None = None) -> Prompt:
        return self.prompts[(campaign, lang, name, purpose if name == PURPOSE else None)]

    def media(self, prompt: Prompt) -> str:
        """The URI Asterisk plays: the archived file, by path (shared filesystem) or through
        the HTTP media cache."""
        base = self.config.prompts.media_url
        if base:
            rel = prompt.path.relative_to(self.audio_dir).as_posix()
            return f"sound:{base.rstrip('/')}/{rel}"
        return "sound:" + str(prompt.path.with_suffix(""))

    def archived(self, sha256: str) -> Path:
        return archived_path(self.archive_dir, sha256)

    # ---- per-call prompts -----------------------------------------------------------------

    def _vars(self, campaign: str, lang: str) -> dict[str, str]:
        return template_vars(self.config.campaigns[campaign], lang)

    def menu_text(self, campaign: str, lang: str, active: list[ActiveConsent]) -> str:
        data, file = self.languages[lang], self.config.prompts.dir / f"{lang}.yaml"
        base = self._vars(campaign, lang)
        items = [
            render(
                data["parts"]["menu_item"],
                {
                    **base,
                    "purpose": a.text,
                    "date": durations.spoken_date(a.given_at, lang),
                    "key": str(i + 1),
                },
                f"{file}: parts.menu_item",
            )
            for i, a in enumerate(active)
        ]
        all_option = (
            render(data["parts"]["menu_all"], base, f"{file}: parts.menu_all")
            if len(active) > 1
            else ""
        )
        return render(
            data["prompts"]["menu"],
            {**base, "consents": " ".join(items), "all_option": all_option},
            f"{file}: prompts.menu",
        )

    def chosen_withdraw_text(self, campaign: str, lang: str, consent: ActiveConsent) -> str:
        data, file = self.languages[lang], self.config.prompts.dir / f"{lang}.yaml"
        variables = {
            **self._vars(campaign, lang),
            "purpose": consent.text,
            "date": durations.spoken_date(consent.given_at, lang),
        }
        return render(
            data["prompts"]["chosen_withdraw"], variables, f"{file}: prompts.chosen_withdraw"
        )

    def speak(self, campaign: str, lang: str, name: str, text: str) -> Prompt:
        """A prompt rendered for one call: synthesized once per text, archived by its hash.
        Blocking (espeak-ng and sox): call it from a worker thread."""
        voice = self.voice(lang)
        sha = self._spoken.get((voice, text))
        if sha is None or not self.archived(sha).exists():
            with tempfile.TemporaryDirectory() as tmp:
                out = Path(tmp) / "out.wav"
                synthesize(text, voice, out)
                sha = self.archive(out)
            self._spoken[(voice, text)] = sha
        return Prompt(
            campaign=campaign,
            language=lang,
            name=name,
            text=text,
            version=str(self.languages[lang]["version"]),
            voice=voice,
            built=self.archived(sha),
            sha256=sha,
            archived=self.archived(sha),
            duration_s=wav_file_duration(self.archived(sha)),
        )

    # ---- audio ----------------------------------------------------------------------------

    def missing_audio(self) -> list[Prompt]:
        return [p for p in self.prompts.values() if not p.built.exists()]

    def archive(self, source: Path) -> str:
        """Copy `source` into the archive under its SHA-256 unless it is there; the hash."""
        sha = sha256_file(source)
        target = self.archived(sha)
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_suffix(f".{uuid.uuid4().hex}.part")
            shutil.copyfile(source, tmp)
            tmp.replace(target)
        return sha

    def check_audio(self) -> None:
        """Point every prompt at its archived audio; raise ConfigError naming every prompt
        without audio."""
        missing = self.missing_audio()
        if missing:
            lines = [f"  {p.campaign}/{p.language}/{p.name}: {p.built}" for p in missing[:20]]
            more = f"\n  ... and {len(missing) - 20} more" if len(missing) > 20 else ""
            raise ConfigError(
                "prompt audio missing (run `consent-ivr prompts build`):\n"
                + "\n".join(lines)
                + more
            )
        for key, p in self.prompts.items():
            sha = self.archive(p.built)
            self.prompts[key] = replace(
                p,
                sha256=sha,
                archived=self.archived(sha),
                duration_s=wav_file_duration(self.archived(sha)),
            )

    def build(self, force: bool = False) -> list[Prompt]:
        """Make the audio of every prompt whose text or voice changed; return those built.
        Every result also goes into the archive, where older audio stays."""
        for tool in ("espeak-ng", "sox"):
            if not shutil.which(tool):
                raise ConfigError(f"{tool} not found: install it (Debian: apt-get install {tool})")
        built = []
        for p in self.prompts.values():
            stamp = p.built.with_suffix(".json")
            recorded = self.recorded_dir / p.campaign / p.language / p.built.name
            source = {"text": p.text, "voice": p.voice, "recorded": str(recorded)}
            if recorded.exists():
                source["recorded_sha256"] = sha256_file(recorded)
            else:
                source.pop("recorded")
            fresh = not force and p.built.exists() and stamp.exists()
            if fresh and json.loads(stamp.read_text(encoding="utf-8")) == source:
                self.archive(p.built)
                continue
            p.built.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory() as tmp:
                out = Path(tmp) / "out.wav"
                if recorded.exists():
                    _to_asterisk_wav(recorded, out)
                else:
                    synthesize(p.text, p.voice, out)
                shutil.move(out, p.built)
            stamp.write_text(json.dumps(source, ensure_ascii=False), encoding="utf-8")
            self.archive(p.built)
            built.append(p)
        return built


def synthesize(text: str, voice: str, out: Path) -> None:
    """Text to an 8 kHz mono 16-bit WAV with espeak-ng and sox."""
    with tempfile.TemporaryDirectory() as tmp:
        tts = Path(tmp) / "tts.wav"
        subprocess.run(
            ["espeak-ng", "-v", voice, "-s", "150", "-w", str(tts), text],
            check=True,
            capture_output=True,
        )
        _to_asterisk_wav(tts, out)


def _to_asterisk_wav(source: Path, out: Path) -> None:
    subprocess.run(
        # -D: no dither, so the same text gives the same audio (and hash) every time.
        [
            "sox",
            "-D",
            str(source),
            "-r",
            "8000",
            "-c",
            "1",
            "-b",
            "16",
            "-e",
            "signed-integer",
            str(out),
        ],
        check=True,
        capture_output=True,
    )
