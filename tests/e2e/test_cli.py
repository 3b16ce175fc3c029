"""The `consent-ivr` console script as an operator runs it: separate processes configured only
through the environment and one config file, one real Russian consent call through Asterisk 22
with the shipped prompts, the evidence read back with `records` and `show`, a clean SIGTERM
stop, and the error paths of the commands (no Asterisk needed for those)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import secrets
import shutil
import signal
import sqlite3
import subprocess
import time
import urllib.request
import uuid
import wave
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest
from alembic.script import ScriptDirectory

from consent_ivr import config as cfg
from consent_ivr.ari.client import AriClient
from consent_ivr.flow import DYNAMIC, PROMPTS, TRANSITIONS, Step
from consent_ivr.phone import mask
from consent_ivr.prompts import Catalog
from consent_ivr.simulate import place_call
from consent_ivr.store.db import MIGRATIONS_DIR
from tests.conftest import free_port
from tests.e2e.conftest import REPO, SHARE, asterisk_env
from tests.e2e.stasis_app import APP, wait_for_app, wait_until_free

pytestmark = pytest.mark.e2e

CLI = REPO / ".venv" / "bin" / "consent-ivr"
T = TypeVar("T")

# Texts of the shipped default campaign (config.py defaults, prompts/ru.yaml, SMS templates).
CONTROLLER_RU = "ООО «Пример»"
PURPOSE_RU = "звонки и СМС с предложениями наших услуг"
SMS_GRANTED_RU = f"{CONTROLLER_RU}: вы дали согласие на {PURPOSE_RU}."


def clean_env(**values: str | Path) -> dict[str, str]:
    """This process's environment without any CONSENT_IVR_* setting, plus `values`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONSENT_IVR_")}
    env.update({k: str(v) for k, v in values.items()})
    return env


def cli(
    *args: str, env: dict[str, str], cwd: Path, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CLI), *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


def poll(fn: Callable[[], T | None], timeout: float, interval: float, what: str) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value is not None:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:.0f}s")
        time.sleep(interval)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---- one call through the running console script ---------------------------------------------


@dataclass
class Run:
    """Everything one `consent-ivr run` process showed, collected by the `served` fixture."""

    phone: str
    password: str
    channel_id: str
    audio_dir: Path
    recordings_dir: Path
    sms_file: Path
    build: subprocess.CompletedProcess[str]
    rebuild: subprocess.CompletedProcess[str]
    check: subprocess.CompletedProcess[str]
    health: dict[str, Any]
    pid: int  # the service process
    rows: list[dict[str, Any]]
    view: dict[str, Any]
    shown: subprocess.CompletedProcess[str]
    exit_code: int | None
    stop_s: float
    stdout: str
    stderr: str


async def _call(conf: cfg.Config, phone: str, channel_id: str) -> None:
    """One simulated inbound caller, placed through a REST-only client beside the service."""
    ari = AriClient(conf.ari.url, conf.ari.user, conf.ari.password, APP)
    await ari.start(events=False)
    try:
        await place_call(
            ari,
            Catalog(conf),
            "agree",
            phone,
            channel_id=channel_id,
            campaign="default",
            language="ru",
        )
    finally:
        await ari.close()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    ari = asterisk_env("22")
    tmp = tmp_path_factory.mktemp("cli-run")
    # Under the folder bind-mounted into the Asterisk 22 chroot, fresh so the build really runs.
    audio_dir = SHARE / "cli" / uuid.uuid4().hex[:12]
    port = free_port()
    config_file = tmp / "consent-ivr.yaml"
    config_file.write_text(
        f"prompts:\n  audio_dir: {audio_dir}\n"
        f"http:\n  port: {port}\n"
        f"sms:\n  log:\n    file: {tmp / 'sms.jsonl'}\n",
        encoding="utf-8",
    )
    env = clean_env(
        CONSENT_IVR_ARI_URL=ari["CONSENT_IVR_ARI_URL"],
        CONSENT_IVR_ARI_USER=ari["CONSENT_IVR_ARI_USER"],
        CONSENT_IVR_ARI_PASSWORD=ari["CONSENT_IVR_ARI_PASSWORD"],
        CONSENT_IVR_DATABASE_URL=f"sqlite:///{tmp / 'consent.db'}",
        CONSENT_IVR_RECORDINGS_DIR=tmp / "rec",
        CONSENT_IVR_CONFIG=config_file,
    )
    phone = f"+7900{secrets.randbelow(10**7):07d}"
    channel_id = f"cli-{uuid.uuid4().hex[:12]}"
    try:
        yield _serve(ari, env, tmp, audio_dir, port, phone, channel_id)
    finally:
        shutil.rmtree(audio_dir, ignore_errors=True)
        with contextlib.suppress(OSError):
            audio_dir.parent.rmdir()  # when no other session's run is using it


def _serve(
    ari: dict[str, str],
    env: dict[str, str],
    tmp: Path,
    audio_dir: Path,
    port: int,
    phone: str,
    channel_id: str,
) -> Run:
    config_file = Path(env["CONSENT_IVR_CONFIG"])
    out, err = tmp / "service.stdout", tmp / "service.stderr"
    proc: subprocess.Popen[bytes] | None = None
    try:
        build = cli("prompts", "build", env=env, cwd=tmp)
        rebuild = cli("prompts", "build", env=env, cwd=tmp)
        check = cli("config", "check", env=env, cwd=tmp)
        assert build.returncode == 0, build.stderr

        wait_until_free(ari)
        with out.open("wb") as o, err.open("wb") as e:
            proc = subprocess.Popen([str(CLI), "run"], env=env, cwd=tmp, stdout=o, stderr=e)

        def alive() -> None:
            assert proc is not None
            if proc.poll() is not None:
                raise AssertionError(
                    f"consent-ivr run exited with {proc.returncode}:\n{err.read_text()[-3000:]}"
                )

        wait_for_app(ari, present=True, timeout=30, alive=alive)
        poll(
            lambda: "consent-ivr ready" in err.read_text() or None,
            30,
            0.1,
            "the service logged that it is ready",
        )
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as resp:
            health = json.load(resp)

        conf = cfg.load(config_file, env=env)
        asyncio.run(_call(conf, phone, channel_id))

        def decided() -> list[dict[str, Any]] | None:
            alive()
            listed = cli("records", "--json", env=env, cwd=tmp)
            assert listed.returncode == 0, listed.stderr
            rows = json.loads(listed.stdout)
            return rows if any(r["outcome"] for r in rows) else None

        rows = poll(
            decided,
            120,
            1.0,
            "a record with an outcome in `consent-ivr records` (was the "
            "call taken by another service connected to this Asterisk?)",
        )

        def complete() -> dict[str, Any] | None:
            alive()
            shown = cli("show", rows[0]["record_id"], "--json", env=env, cwd=tmp)
            assert shown.returncode == 0, shown.stderr
            view: dict[str, Any] = json.loads(shown.stdout)
            done = view["ended_at"] and view["recording"]
            sent = [m["status"] for m in view.get("sms") or []] == ["logged"]
            return view if done and sent else None

        view = poll(complete, 60, 1.0, "the call ended, its recording stored and its SMS sent")
        shown = cli("show", rows[0]["record_id"], env=env, cwd=tmp)
    except AssertionError as e:
        raise AssertionError(f"{e}\n--- service log ---\n{err.read_text()[-4000:]}") from None
    finally:
        exit_code, stop_s = None, 0.0
        if proc is not None:
            t0 = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            try:
                exit_code = proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
            stop_s = time.monotonic() - t0

    return Run(
        phone=phone,
        password=ari["CONSENT_IVR_ARI_PASSWORD"],
        channel_id=channel_id,
        audio_dir=audio_dir,
        recordings_dir=tmp / "rec",
        sms_file=tmp / "sms.jsonl",
        build=build,
        rebuild=rebuild,
        check=check,
        health=health,
        pid=proc.pid if proc is not None else 0,
        rows=rows,
        view=view,
        shown=shown,
        exit_code=exit_code,
        stop_s=stop_s,
        stdout=out.read_text(),
        stderr=err.read_text(),
    )


def test_prompts_build_through_the_cli(served: Run) -> None:
    # Every prompt but the two said per call, in ru and en; `purpose` once per purpose (one).
    expected = (len(PROMPTS) - len(DYNAMIC)) * 2
    assert served.build.stdout.strip() == f"built {expected} prompt(s)"
    assert served.rebuild.stdout.strip() == "built 0 prompt(s)"  # unchanged texts are kept
    built = sorted((served.audio_dir / "default").glob("*/*.wav"))
    assert len(built) == expected
    assert served.audio_dir / "default" / "ru" / "purpose-marketing-calls.wav" in built
    for path in built:
        with wave.open(str(path)) as w:
            assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (8000, 1, 2)
            assert w.getnframes() > 8000 * 0.5, f"{path} is nearly empty"
        # Every built file is also in the archive, by its hash.
        assert (served.audio_dir / "archive" / f"{sha256(path)}.wav").read_bytes() == (
            path.read_bytes()
        )
    assert served.check.returncode == 0, served.check.stderr
    assert served.check.stdout.strip() == f"config OK: 1 campaign(s), {expected} prompts"


def test_service_answers_health(served: Run) -> None:
    assert served.health == {"status": "ok", "pid": served.pid}


def test_records_lists_the_call(served: Run) -> None:
    assert len(served.rows) == 1
    row = served.rows[0]
    assert row["phone"] == served.phone and row["outcome"] == "granted"
    assert (row["campaign"], row["purpose"]) == ("default", "marketing-calls")


def test_show_json_holds_the_evidence(served: Run) -> None:
    v = served.view
    assert str(uuid.UUID(v["record_id"])) == v["record_id"] == served.rows[0]["record_id"]
    assert v["call"]["channel_id"] == served.channel_id
    assert v["phone"] == served.phone
    assert v["phone"].startswith("+") and v["phone"][1:].isdigit() and len(v["phone"]) == 12
    assert (v["campaign"], v["purpose"]) == ("default", "marketing-calls")
    assert (v["language"], v["direction"]) == ("ru", "inbound")
    assert v["outcome"] == "granted" and v["status"] == "given"
    started = datetime.fromisoformat(v["started_at"])
    decided = datetime.fromisoformat(v["decided_at"])
    assert started.utcoffset() is not None and started < decided

    assert [(k["digit"], k["step"]) for k in v["keys"]] == [("1", "ask"), ("1", "confirm")]
    for k in v["keys"]:
        assert started <= datetime.fromisoformat(k["at"]) <= decided

    names = [p["prompt"] for p in v["prompts"]]
    assert names == [
        "notice",
        "purpose",
        "ask",
        "chosen_agree",
        "confirm",
        "recorded_agree",
        "goodbye",
    ]
    for p in v["prompts"]:
        datetime.fromisoformat(p["at"])
        # The hash of exactly the audio that was played: the file the CLI built, archived.
        stem = "purpose-marketing-calls" if p["prompt"] == "purpose" else p["prompt"]
        assert p["sha256"] == sha256(served.audio_dir / "default" / "ru" / f"{stem}.wav")
        assert sha256(served.audio_dir / "archive" / f"{p['sha256']}.wav") == p["sha256"]
    purpose = next(p for p in v["prompts"] if p["prompt"] == "purpose")
    assert CONTROLLER_RU in purpose["text"] and PURPOSE_RU in purpose["text"]

    rec = v["recording"]
    path = Path(rec["path"])
    assert path.is_file() and path.is_relative_to(served.recordings_dir.resolve())
    assert sha256(path) == rec["sha256"]
    # The recording holds the whole call: at least the notice and the purpose statement.
    catalog_dir = served.audio_dir / "default" / "ru"
    spoken = sum(_seconds(catalog_dir / f"{n}.wav") for n in ("notice", "purpose-marketing-calls"))
    assert rec["duration_s"] >= spoken
    assert v["integrity"]["chain_ok"] is True and v["integrity"]["problems"] == []

    [sms] = v["sms"]
    assert (sms["status"], sms["gateway"], sms["template"]) == ("logged", "log", "granted")
    assert sms["text"].startswith(SMS_GRANTED_RU) and v["record_id"] in sms["text"]
    logged = [json.loads(line) for line in served.sms_file.read_text().splitlines()]
    assert [e["text"] for e in logged] == [sms["text"]]
    assert logged[0]["to"] == mask(served.phone)


def _seconds(path: Path) -> float:
    with wave.open(str(path)) as w:
        return w.getnframes() / w.getframerate()


def test_show_text_names_the_outcome(served: Run) -> None:
    assert served.shown.returncode == 0, served.shown.stderr
    text = served.shown.stdout
    assert f"record    {served.view['record_id']}" in text
    assert "outcome   granted" in text
    assert "hash chain intact" in text


def test_sigterm_stops_the_service_cleanly(served: Run) -> None:
    assert served.exit_code == 0, (served.exit_code, served.stderr[-3000:])
    assert served.stop_s < 15
    assert "stopping" in served.stderr


def test_logs_hide_the_password_and_the_phone(served: Run) -> None:
    assert len(served.password) >= 8
    logs = served.stderr + served.stdout
    # The call was logged (masked), so the checks below look at a log that mentions it.
    assert mask(served.phone) in served.stderr
    assert served.password not in logs
    assert served.phone not in logs
    assert served.phone.lstrip("+") not in logs


# ---- error paths (no Asterisk) ----------------------------------------------------------------


def test_config_check_names_the_file_and_the_misspelt_key(tmp_path: Path) -> None:
    config_file = tmp_path / "typo.yaml"
    config_file.write_text("sms:\n  log:\n    fiel: /tmp/x.jsonl\n", encoding="utf-8")
    proc = cli("config", "check", env=clean_env(CONSENT_IVR_CONFIG=config_file), cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert str(config_file) in proc.stderr
    assert "sms.log.fiel: unknown key" in proc.stderr
    assert "Traceback" not in proc.stderr


def _offline_env(tmp_path: Path, **values: str | Path) -> dict[str, str]:
    """Nothing answers on port 9: a run that got past its checks could not reach any Asterisk."""
    return clean_env(
        CONSENT_IVR_ARI_URL="http://127.0.0.1:9",
        CONSENT_IVR_DATABASE_URL=f"sqlite:///{tmp_path / 'consent.db'}",
        **values,
    )


def test_run_without_the_ari_password(tmp_path: Path) -> None:
    proc = cli("run", env=_offline_env(tmp_path), cwd=tmp_path, timeout=30)
    assert proc.returncode == 2, proc.stderr
    assert "ari.password" in proc.stderr
    assert "CONSENT_IVR_ARI_PASSWORD" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_run_without_prompt_audio(tmp_path: Path) -> None:
    audio = tmp_path / "empty"
    audio.mkdir()
    config_file = tmp_path / "c.yaml"
    config_file.write_text(
        f"prompts:\n  audio_dir: {audio}\nhttp:\n  enabled: false\n", encoding="utf-8"
    )
    env = _offline_env(
        tmp_path, CONSENT_IVR_CONFIG=config_file, CONSENT_IVR_ARI_PASSWORD="not-used"
    )
    proc = cli("run", env=env, cwd=tmp_path, timeout=30)
    assert proc.returncode == 2, proc.stderr
    assert "prompt audio missing" in proc.stderr and "consent-ivr prompts build" in proc.stderr
    assert f"default/ru/notice: {audio.resolve() / 'default' / 'ru' / 'notice.wav'}" in (
        proc.stderr
    )
    assert "Traceback" not in proc.stderr


def test_show_an_unknown_record(tmp_path: Path) -> None:
    env = clean_env(CONSENT_IVR_DATABASE_URL=f"sqlite:///{tmp_path / 'consent.db'}")
    assert cli("db", "upgrade", env=env, cwd=tmp_path).returncode == 0
    unknown = str(uuid.uuid4())
    for extra in ((), ("--json",)):
        proc = cli("show", unknown, *extra, env=env, cwd=tmp_path)
        assert proc.returncode == 1, proc.stderr
        assert proc.stderr.strip() == f"no record {unknown}"
        assert proc.stdout == ""


def test_db_upgrade_creates_the_tables(tmp_path: Path) -> None:
    db_file = tmp_path / "new" / "consent.db"  # its folder does not exist yet
    env = clean_env(CONSENT_IVR_DATABASE_URL=f"sqlite:///{db_file}")
    for _ in range(2):  # a second upgrade finds nothing to do
        proc = cli("db", "upgrade", env=env, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip() == "database is up to date"
    with sqlite3.connect(db_file) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        version = conn.execute("SELECT version_num FROM alembic_version").fetchall()
    assert {
        "calls",
        "consent_records",
        "consent_events",
        "sms_jobs",
        "sms_delivery_reports",
    } <= tables
    head = ScriptDirectory(str(MIGRATIONS_DIR)).get_current_head()
    assert head is not None and version == [(head,)]


def test_flow_diagram_names_every_step(tmp_path: Path) -> None:
    proc = cli("flow", "diagram", env=clean_env(), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "stateDiagram-v2"
    assert "    [*] --> start" in lines and "    done --> [*]" in lines
    for src, label, dst in TRANSITIONS:
        assert f"    {src.value} --> {dst.value}: {label}" in lines
    states = set()
    for line in lines[1:]:
        src, _, rest = line.strip().partition(" --> ")
        states |= {src, rest.split(":")[0]}
    assert {s.value for s in Step} <= states
