"""Prompt wording (YAML under prompts/), its audio, and the media URI Asterisk plays.

Texts are templates filled from the campaign (controller, purpose, keys...). Audio is built per
campaign and language with espeak-ng and sox (`consent-ivr prompts build`) into
``prompts.audio_dir``: 8 kHz mono 16-bit WAV, what Asterisk plays without transcoding. A file
``<name>.wav`` placed under ``prompts/recorded/<campaign>/<lang>/`` (a studio recording) is used
instead of the synthesized one. The service refuses to start when any prompt lacks audio.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import string
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from consent_ivr.config import Campaign, Config, ConfigError
from consent_ivr.flow import PROMPTS


@dataclass(frozen=True)
class Prompt:
    campaign: str
    language: str
    name: str
    text: str
    version: str
    voice: str
    path: Path  # the WAV file Asterisk plays
    sha256: str | None = None  # of the audio, once it exists


def _load_language(prompts_dir: Path, lang: str) -> dict[str, Any]:
    file = prompts_dir / f"{lang}.yaml"
    if not file.exists():
        raise ConfigError(f"{file}: no prompt file for language {lang!r}")
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{file}: not valid YAML: {e}") from e
    texts = data.get("prompts")
    if not isinstance(texts, dict):
        raise ConfigError(f"{file}: prompts: expected a mapping of prompt name to text")
    missing = [p for p in PROMPTS if p not in texts]
    if missing:
        raise ConfigError(f"{file}: prompts: missing {', '.join(missing)}")
    empty = [p for p in PROMPTS if not isinstance(texts[p], str) or not texts[p].strip()]
    if empty:
        raise ConfigError(f"{file}: prompts: no text for {', '.join(empty)}")
    unknown = sorted(set(texts) - set(PROMPTS))
    if unknown:
        raise ConfigError(
            f"{file}: prompts: unknown prompt {', '.join(unknown)} (known: {', '.join(PROMPTS)})"
        )
    if "version" not in data:
        raise ConfigError(f"{file}: version: missing (bump it whenever the wording changes)")
    return data


def template_vars(campaign: Campaign, lang: str) -> dict[str, str]:
    p, k = campaign.purpose, campaign.keys
    return {
        "controller": campaign.controller.name[lang],
        "purpose": p.text[lang],
        "data_categories": p.data_categories[lang],
        "retention": p.retention[lang],
        "withdrawal": p.withdrawal[lang],
        "privacy_notice_url": campaign.privacy_notice_url,
        "agree_key": k.agree,
        "decline_key": k.decline,
        "repeat_key": k.repeat,
        "confirm_key": k.confirm,
        "change_key": k.change,
    }


def render(template: str, variables: dict[str, str], where: str) -> str:
    for _, field, _, _ in string.Formatter().parse(template):
        if field is not None and field not in variables:
            raise ConfigError(
                f"{where}: unknown placeholder {{{field}}} (known: {', '.join(sorted(variables))})"
            )
    return " ".join(template.format(**variables).split())


class Catalog:
    """Every prompt of every campaign and language, with its text, audio file and hash."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.audio_dir = config.prompts.audio_dir.resolve()
        self.recorded_dir = config.prompts.dir / "recorded"
        self.prompts: dict[tuple[str, str, str], Prompt] = {}
        languages: dict[str, dict[str, Any]] = {}
        for cname, campaign in config.campaigns.items():
            for lang in campaign.languages:
                if lang not in languages:
                    languages[lang] = _load_language(config.prompts.dir, lang)
                data = languages[lang]
                variables = template_vars(campaign, lang)
                voice = config.prompts.voice.get(lang, data.get("voice", lang))
                for name in PROMPTS:
                    where = f"{config.prompts.dir / (lang + '.yaml')}: prompts.{name}"
                    text = render(str(data["prompts"][name]), variables, where)
                    self.prompts[(cname, lang, name)] = Prompt(
                        campaign=cname,
                        language=lang,
                        name=name,
                        text=text,
                        version=str(data["version"]),
                        voice=voice,
                        path=self.audio_dir / cname / lang / f"{name}.wav",
                    )

    def get(self, campaign: str, lang: str, name: str) -> Prompt:
        return self.prompts[(campaign, lang, name)]

    def media(self, prompt: Prompt) -> str:
        """The URI Asterisk plays: a local path (shared filesystem) or the HTTP media cache."""
        base = self.config.prompts.media_url
        if base:
            rel = prompt.path.relative_to(self.audio_dir).as_posix()
            return f"sound:{base.rstrip('/')}/{rel}"
        return "sound:" + str(prompt.path.with_suffix(""))

    # ---- audio ----------------------------------------------------------------------------

    def missing_audio(self) -> list[Prompt]:
        return [p for p in self.prompts.values() if not p.path.exists()]

    def check_audio(self) -> None:
        """Load the audio hashes; raise ConfigError naming every prompt without audio."""
        missing = self.missing_audio()
        if missing:
            lines = [f"  {p.campaign}/{p.language}/{p.name}: {p.path}" for p in missing[:20]]
            more = f"\n  ... and {len(missing) - 20} more" if len(missing) > 20 else ""
            raise ConfigError(
                "prompt audio missing (run `consent-ivr prompts build`):\n"
                + "\n".join(lines)
                + more
            )
        for key, p in self.prompts.items():
            digest = hashlib.sha256(p.path.read_bytes()).hexdigest()
            self.prompts[key] = Prompt(**{**p.__dict__, "sha256": digest})

    def build(self, force: bool = False) -> list[Prompt]:
        """Make the audio of every prompt whose text or voice changed; return those built."""
        for tool in ("espeak-ng", "sox"):
            if not shutil.which(tool):
                raise ConfigError(f"{tool} not found: install it (Debian: apt-get install {tool})")
        built = []
        for p in self.prompts.values():
            stamp = p.path.with_suffix(".json")
            recorded = self.recorded_dir / p.campaign / p.language / f"{p.name}.wav"
            source = {"text": p.text, "voice": p.voice, "recorded": str(recorded)}
            if recorded.exists():
                source["recorded_sha256"] = hashlib.sha256(recorded.read_bytes()).hexdigest()
            else:
                source.pop("recorded")
            fresh = not force and p.path.exists() and stamp.exists()
            if fresh and json.loads(stamp.read_text(encoding="utf-8")) == source:
                continue
            p.path.parent.mkdir(parents=True, exist_ok=True)
            _make_audio(p, recorded if recorded.exists() else None)
            stamp.write_text(json.dumps(source, ensure_ascii=False), encoding="utf-8")
            built.append(p)
        return built


def _make_audio(prompt: Prompt, recorded: Path | None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        src = recorded
        if src is None:
            src = Path(tmp) / "tts.wav"
            subprocess.run(
                ["espeak-ng", "-v", prompt.voice, "-s", "150", "-w", str(src), prompt.text],
                check=True,
                capture_output=True,
            )
        out = Path(tmp) / "out.wav"
        subprocess.run(
            [
                "sox",
                str(src),
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
        shutil.move(out, prompt.path)
