"""The evidence bundle's summary.html, opened in real headless Chromium as a person would.

Each test stores a real call on SQLite with the store API (open, decide, finish; then a
withdrawal by SMS, and an erasure by the retention run), renders its summary next to real WAV
files made with sox and laid out as the bundle's `media` says, and opens the file in Debian's
Chromium, driven over the DevTools protocol by the small client below: the timeline, the keys
and every audio element must be there, and every audio element must load its file. A
full-page screenshot and the printed PDF of each page are written under
var/test-artifacts/summary/<test>/ next to the page itself, so a person can see what was
checked.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from consent_ivr.clock import iso
from consent_ivr.config import Config
from consent_ivr.evidence import summary
from consent_ivr.prompts import Catalog
from consent_ivr.store import lifecycle, records
from consent_ivr.store.db import Database, upgrade
from consent_ivr.store.models import ConsentRecord
from consent_ivr.store.records import Evidence, NewCall, NewRecord, RecordingInfo, Subject
from tests.conftest import free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "var" / "test-artifacts" / "summary"
CHROMIUM = Path("/usr/bin/chromium")
BROWSER_START_S = 30.0
PAGE_S = 30.0
T0 = datetime(2026, 3, 14, 9, 26, 53, 589793, tzinfo=UTC)
PHONE = "+79161234567"
CALLED = "+74951230000"
PURPOSE_ID = "marketing-calls"
RECORDING_S = 2.0
PROMPT_S = 1.0
# A withdrawal reason comes from the person (an SMS reply): the page must show it as text.
HOSTILE = 'STOP <script>alert("x")</script> & <b>bold</b>'


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


# ---- a real call in the store -----------------------------------------------------------------

# (seconds into the call, prompt or key, prompt name or digit, step, whether a key counted): a
# consent call where the person pressed 5 during the purpose statement and pressed 1 again while
# the choice was said back; those two keys did not count.
SCRIPT: list[tuple[float, str, str, str, bool]] = [
    (0.4, "prompt", "notice", "notice", True),
    (3.0, "prompt", "purpose", "purpose", True),
    (9.2, "key", "5", "purpose", False),
    (21.0, "prompt", "ask", "ask", True),
    (24.2, "key", "1", "ask", True),
    (24.5, "prompt", "chosen_agree", "chosen", True),
    (25.1, "key", "1", "chosen", False),
    (26.3, "prompt", "confirm", "confirm", True),
    (28.0, "key", "1", "confirm", True),
]
DECIDED_S = 28.3
AFTER_DECISION = [
    (28.6, "prompt", "recorded_agree", "recorded", True),
    (33.0, "prompt", "goodbye", "result", True),
]
ENDED_S = 35.0


def sox(out: Path, seconds: float, frequency: int) -> None:
    if shutil.which("sox") is None:
        pytest.fail("sox is missing: run `bash scripts/setup.sh` (Debian's sox)", pytrace=False)
    out.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["sox", "-n", "-r", "8000", "-c", "1", "-b", "16", str(out), "synth", str(seconds)]
        + ["sine", str(frequency)],
        check=True,
        timeout=30,
    )


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass
class StoredCall:
    record_id: str
    call_id: str
    recording: Path
    media: dict[str, str]
    prompts: list[dict[str, Any]] = field(default_factory=list)


def store_call(db: Database, bundle: Path, spool: Path, language: str) -> StoredCall:
    """A whole consent call, as the service stores it: the recording in `spool`, a copy of
    it and the prompts' audio under `bundle` as the bundle lays them out."""
    config = Config()
    catalog = Catalog(config)
    media: dict[str, str] = {}
    played: list[dict[str, Any]] = []

    def evidence(rows: list[tuple[float, str, str, str, bool]]) -> list[Evidence]:
        out = []
        for seconds, kind, what, step, counted in rows:
            if kind == "key":
                data: dict[str, Any] = {"digit": what, "acted_on": counted}
                if step in ("purpose", "ask", "chosen", "confirm"):
                    data["purpose"] = PURPOSE_ID
                out.append(Evidence(at(seconds), "key", step, data))
                continue
            prompt = catalog.get("default", language, what, PURPOSE_ID)
            wav = bundle / "audio" / "prompts" / f"{what}.tmp.wav"
            sox(wav, PROMPT_S, 300 + 40 * len(played))
            digest = sha256(wav)
            wav.rename(wav.with_name(f"{digest}.wav"))
            media[digest] = f"audio/prompts/{digest}.wav"
            data = {
                "prompt": what,
                "text": prompt.text,
                "version": prompt.version,
                "sha256": digest,
                "language": language,
            }
            played.append({"name": what, "text": prompt.text, "sha256": digest})
            out.append(Evidence(at(seconds), "prompt", step, data))
        return out

    recording_wav = spool / f"consent-{T0:%Y%m%d-%H%M%S}.wav"
    sox(recording_wav, RECORDING_S, 440)
    media["recording"] = "audio/recording.wav"
    (bundle / "audio").mkdir(exist_ok=True)
    shutil.copyfile(recording_wav, bundle / media["recording"])
    recording = RecordingInfo(
        path=str(recording_wav),
        sha256=sha256(recording_wav),
        duration_s=RECORDING_S,
        format="wav",
        size=recording_wav.stat().st_size,
    )
    new_call = NewCall(
        channel_id="PJSIP/trunk-0000002a",
        direction="inbound",
        campaign="default",
        language=language,
        jurisdiction="RU",
        controller=config.campaigns["default"].controller_view(language),
        started_at=T0,
        subject=Subject(PHONE, "caller-id", caller_number=PHONE, called_number=CALLED),
    )
    snapshot = config.purpose_snapshot("default", PURPOSE_ID, language)
    snapshot["privacy_notice_url"] = (
        "https://example.com/privacy/consent-notice-2026-with-a-long-path"
    )
    with db.session() as s:
        call_id, (record_id,) = records.open_call(s, new_call, [NewRecord("consent", snapshot)])
    with db.session() as s:
        before = [(record_id, ev) for ev in evidence(SCRIPT)]
        records.store_decision(s, record_id, "granted", at(DECIDED_S), before)
    with db.session() as s:
        after = [(record_id, ev) for ev in evidence(AFTER_DECISION)]
        records.finish_call(s, call_id, {record_id: "granted"}, at(ENDED_S), after, recording)
    return StoredCall(record_id, call_id, recording_wav, media, played)


def withdraw_by_sms(db: Database, stored: StoredCall, when: datetime) -> None:
    with db.session() as s:
        record = s.get(ConsentRecord, stored.record_id)
        assert record is not None
        done = lifecycle.withdraw(
            s, [record], when, channel="sms", reason=HOSTILE, via_sms="sms-in-7f3a"
        )
        assert [r.record_id for r in done] == [stored.record_id]


def view_of(db: Database, stored: StoredCall, when: datetime) -> dict[str, Any]:
    with db.session() as s:
        view = records.record_view(s, stored.record_id, at=when)
    assert view is not None
    return view


def sms_of(language: str) -> list[dict[str, Any]]:
    """The confirmation SMS as the bundle passes it: its text, gateway and delivery."""
    text = {
        "en": "Example Ltd: your consent to calls and text messages with offers is recorded. "
        "To withdraw, reply STOP.",
        "ru": "ООО «Пример»: ваше согласие на звонки и СМС с предложениями записано. "
        "Чтобы отозвать, ответьте СТОП.",
    }[language]
    return [
        {
            "job_id": "5b0c1f4e-2f7d-4a57-9a52-0d4c7f1f8c11",
            "decision": "granted",
            "status": "delivered",
            "gateway": "kannel",
            "message_id": "kannel-7781",
            "text": text,
            "sent_at": iso(at(ENDED_S + 2)),
            "delivered_at": iso(at(ENDED_S + 6)),
            "failed_at": None,
            "error": None,
            "reports": [
                {"at": iso(at(ENDED_S + 6)), "status": "delivered", "gateway_status": "DELIVRD"}
            ],
        }
    ]


def verified(notes: Sequence[str] = ()) -> dict[str, Any]:
    """A clean verification as the brief of `render` describes it."""
    return {
        "ok": True,
        "problems": [],
        "notes": list(notes),
        "checked_at": "2026-06-01T10:00:00.000000Z",
        "checkpoint": {
            "ledger_seq": 42,
            "at": "2026-03-14T09:28:00.000000Z",
            "key_id": "ed25519:3q2+7w",
            "signed": True,
        },
    }


# ---- Chromium over the DevTools protocol ------------------------------------------------------


@dataclass(frozen=True)
class Browser:
    port: int
    process: subprocess.Popen[bytes]
    log: Path


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Stop the browser and its helpers: they share the process group we started it in."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=10)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        pass
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # whatever did not stop in time
        process.wait(timeout=5)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    """Debian's Chromium, headless, its DevTools port on loopback, stopped at the end."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(
            f"{CHROMIUM} is missing: run `bash scripts/browser.sh install` (Debian's chromium)",
            pytrace=False,
        )
    home = tmp_path_factory.mktemp("chromium")
    port = free_port()
    log = home / "chromium.log"
    args = [
        str(CHROMIUM),
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--no-default-browser-check",
        "--mute-audio",
        # Nothing may leave the machine: the page is self-contained and must stay so.
        "--host-resolver-rules=MAP * ~NOTFOUND",
        f"--user-data-dir={home / 'profile'}",
        "--remote-debugging-address=127.0.0.1",
        f"--remote-debugging-port={port}",
        "about:blank",
    ]
    with log.open("wb") as out:
        process = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "HOME": str(home)},
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + BROWSER_START_S
        while True:
            if process.poll() is not None:
                pytest.fail(f"chromium exited ({process.returncode}):\n{log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/version", timeout=2):
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(
                    f"chromium's DevTools port {port} did not answer in {BROWSER_START_S:.0f}s:"
                    f"\n{log.read_text()[-3000:]}"
                )
            time.sleep(0.1)
        yield Browser(port, process, log)
    finally:
        _stop(process)


class DevTools:
    """One page's DevTools session: commands by id, events to whoever waits for them. One
    reader task routes every message; nothing it does waits."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.ids = 0
        self.replies: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.waiters: dict[str, list[asyncio.Future[dict[str, Any]]]] = {}
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        async for message in self.ws:
            if message.type is not aiohttp.WSMsgType.TEXT:
                break
            data = json.loads(message.data)
            if "id" in data:
                reply = self.replies.pop(data["id"], None)
                if reply is not None and not reply.done():
                    if "error" in data:
                        reply.set_exception(RuntimeError(f"DevTools: {data['error']}"))
                    else:
                        reply.set_result(data.get("result", {}))
                continue
            self.events.append((data["method"], data.get("params", {})))
            for waiter in self.waiters.pop(data["method"], []):
                if not waiter.done():
                    waiter.set_result(data.get("params", {}))
        for future in self.replies.values():
            if not future.done():
                future.set_exception(ConnectionError("DevTools websocket closed"))

    def expect(self, method: str) -> asyncio.Future[dict[str, Any]]:
        """Register before the command that causes the event, so a fast one is not missed."""
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.waiters.setdefault(method, []).append(future)
        return future

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.ids += 1
        reply: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.replies[self.ids] = reply
        await self.ws.send_json({"id": self.ids, "method": method, "params": params})
        return await reply

    async def evaluate(self, expression: str) -> Any:
        result = await self.call(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in result:
            raise AssertionError(f"page script failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def close(self) -> None:
        await self.ws.close()
        self.reader.cancel()


# What a reader sees: the page's language, title, sections, timeline rows and audio elements.
DOM_REPORT = """(() => {
  const text = (el) => el ? el.innerText : null;
  return {
    lang: document.documentElement.lang,
    h1: text(document.querySelector("h1")),
    sections: [...document.querySelectorAll("section")].map((s) => s.id),
    headings: [...document.querySelectorAll("h2")].map((h) => h.innerText),
    text: Object.fromEntries([...document.querySelectorAll("section")].map(
      (s) => [s.id, s.innerText])),
    header: text(document.querySelector("header")),
    rows: [...document.querySelectorAll("#timeline tr.tl")].map((r) => ({
      kind: r.dataset.kind, digit: r.dataset.digit || null, step: r.dataset.step || null,
      counted: r.dataset.counted || null, text: r.innerText,
      audio: r.querySelector("audio") ? r.querySelector("audio").getAttribute("src") : null,
    })),
    audio: [...document.querySelectorAll("audio")].map((a) => ({
      src: a.getAttribute("src"), controls: a.controls,
      section: a.closest("section") ? a.closest("section").id : null,
      visible: a.getBoundingClientRect().height > 0,
    })),
    scripts: document.querySelectorAll("script").length,
    links: document.querySelectorAll("link, img, iframe, object, embed").length,
  };
})()"""

# Tell every player to load its file; then what each one has (polled from the test, because
# the page runs no script of its own: no timer or event handler of ours would fire in it).
AUDIO_LOAD = """[...document.querySelectorAll("audio")].forEach((a) => {
  a.preload = "auto"; a.load(); }); true"""
AUDIO_STATE = """[...document.querySelectorAll("audio")].map((a) => ({src: a.getAttribute("src"),
  readyState: a.readyState, duration: a.duration, error: a.error ? a.error.code : null}))"""
AUDIO_S = 10.0


PRINT_REPORT = """(() => ({
  audioShown: [...document.querySelectorAll("audio")].filter(
    (a) => getComputedStyle(a).display !== "none").length,
  filesNamed: [...document.querySelectorAll(".file")].filter(
    (p) => getComputedStyle(p).display !== "none").length,
}))()"""


@dataclass
class Seen:
    dom: dict[str, Any]
    audio: list[dict[str, Any]]
    printed: dict[str, Any]
    requests: list[str]
    screenshot: bytes
    pdf: bytes


async def load_audio(tools: DevTools) -> list[dict[str, Any]]:
    """Every player's state once each has loaded its file or failed, or after AUDIO_S."""
    await tools.evaluate(AUDIO_LOAD)
    deadline = time.monotonic() + AUDIO_S
    while True:
        states: list[dict[str, Any]] = await tools.evaluate(AUDIO_STATE)
        settled = all(a["readyState"] >= 1 or a["error"] is not None for a in states)
        if settled or time.monotonic() > deadline:
            return states
        await asyncio.sleep(0.1)


async def look_at(browser: Browser, page: Path) -> Seen:
    """Open `page` in a new tab as a person would, and report what is on it."""
    base = f"http://127.0.0.1:{browser.port}"
    async with asyncio.timeout(PAGE_S), aiohttp.ClientSession() as http:
        async with http.put(f"{base}/json/new?about:blank") as response:
            target = await response.json(content_type=None)
        try:
            ws = await http.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=0)
            tools = DevTools(ws)
            try:
                await tools.call("Network.enable")
                await tools.call("Page.enable")
                # Read as a page without JavaScript: nothing on it may need a script to show,
                # and a script smuggled in through a text could not run (or block on an alert).
                await tools.call("Emulation.setScriptExecutionDisabled", value=True)
                await tools.call(
                    "Emulation.setDeviceMetricsOverride",
                    width=1100,
                    height=900,
                    deviceScaleFactor=1,
                    mobile=False,
                )
                loaded = tools.expect("Page.loadEventFired")
                navigated = await tools.call("Page.navigate", url=page.as_uri())
                assert "errorText" not in navigated, navigated
                await loaded
                dom = await tools.evaluate(DOM_REPORT)
                audio = await load_audio(tools)
                metrics = await tools.call("Page.getLayoutMetrics")
                size = metrics["cssContentSize"]
                shot = await tools.call(
                    "Page.captureScreenshot",
                    format="png",
                    captureBeyondViewport=True,
                    clip={"x": 0, "y": 0, "scale": 1} | size,
                )
                await tools.call("Emulation.setEmulatedMedia", media="print")
                printed = await tools.evaluate(PRINT_REPORT)
                pdf = await tools.call("Page.printToPDF", printBackground=True)
                requests = [
                    params["request"]["url"]
                    for method, params in tools.events
                    if method == "Network.requestWillBeSent"
                ]
            finally:
                await tools.close()
        finally:
            async with http.get(f"{base}/json/close/{target['id']}") as response:
                await response.read()
    return Seen(
        dom,
        audio,
        printed,
        requests,
        base64.b64decode(shot["data"]),
        base64.b64decode(pdf["data"]),
    )


def open_in_browser(browser: Browser, bundle: Path, html: str) -> Seen:
    """Write the page into its bundle directory, look at it, keep the pictures beside it."""
    page = bundle / "summary.html"
    page.write_text(html, encoding="utf-8")
    seen = asyncio.run(look_at(browser, page))
    (bundle / "screenshot.png").write_bytes(seen.screenshot)
    (bundle / "printed.pdf").write_bytes(seen.pdf)
    print(f"\nsummary screenshot: {bundle / 'screenshot.png'}  (page: {page})")
    return seen


# ---- fixtures ---------------------------------------------------------------------------------


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    url = f"sqlite:///{tmp_path / 'consent.db'}"
    upgrade(url)
    database = Database(url)
    try:
        yield database
    finally:
        database.close()


@pytest.fixture
def bundle(request: pytest.FixtureRequest) -> Path:
    """The test's bundle directory under var/test-artifacts (kept: it is the artifact)."""
    directory = ARTIFACTS / request.node.name
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    return directory


# ---- checks shared by the tests ---------------------------------------------------------------


def expected_rows() -> list[tuple[str, str | None, str | None, str | None]]:
    """The timeline a reader must see: (kind, digit, step, counted) in time order."""
    rows: list[tuple[float, tuple[str, str | None, str | None, str | None]]] = [
        (0.0, ("start", None, None, None)),
        (DECIDED_S, ("decision", None, None, None)),
        (ENDED_S, ("end", None, None, None)),
    ]
    for seconds, kind, what, step, counted in SCRIPT + AFTER_DECISION:
        if kind == "key":
            rows.append((seconds, ("key", what, step, "yes" if counted else "no")))
        else:
            rows.append((seconds, ("prompt", None, None, None)))
    return [row for _, row in sorted(rows, key=lambda r: r[0])]


def check_timeline_and_audio(
    seen: Seen, stored: StoredCall, bundle: Path, *, recording: bool
) -> None:
    rows = seen.dom["rows"]
    assert [(r["kind"], r["digit"], r["step"], r["counted"]) for r in rows] == expected_rows()
    prompt_rows = [r for r in rows if r["kind"] == "prompt"]
    assert [r["audio"] for r in prompt_rows] == [stored.media[p["sha256"]] for p in stored.prompts]
    for row, prompt in zip(prompt_rows, stored.prompts, strict=True):
        assert prompt["text"] in row["text"], (prompt["name"], row["text"])
        assert prompt["sha256"] in row["text"]
    for row in rows:
        if row["kind"] == "key":
            assert row["digit"] in row["text"]

    players = seen.dom["audio"]
    wanted = [stored.media[p["sha256"]] for p in stored.prompts]
    if recording:
        wanted.append(stored.media["recording"])
    assert sorted(a["src"] for a in players) == sorted(wanted)
    assert all(a["controls"] and a["visible"] for a in players), players
    assert [a["section"] for a in players].count("recording") == (1 if recording else 0)

    loaded = {a["src"]: a for a in seen.audio}
    assert sorted(loaded) == sorted(wanted)
    for src, a in loaded.items():
        assert a["error"] is None and a["readyState"] >= 1, a
        expected = RECORDING_S if src == stored.media.get("recording") else PROMPT_S
        assert abs(a["duration"] - expected) < 0.05, a

    assert seen.dom["scripts"] == 0 and seen.dom["links"] == 0
    # Only the page and the bundle's own files (the players' icons are data: URLs).
    outside = [u for u in seen.requests if not u.startswith((bundle.as_uri() + "/", "data:"))]
    assert seen.requests[0] == (bundle / "summary.html").as_uri() and not outside, outside
    assert seen.printed == {"audioShown": 0, "filesNamed": len(wanted)}
    assert seen.screenshot.startswith(b"\x89PNG\r\n\x1a\n")
    width, height = int.from_bytes(seen.screenshot[16:20]), int.from_bytes(seen.screenshot[20:24])
    assert width >= 1000 and height > 2000, (width, height)
    assert seen.pdf.startswith(b"%PDF")


# ---- the tests --------------------------------------------------------------------------------


def test_english_record_shows_timeline_keys_and_players(
    db: Database, bundle: Path, browser: Browser, tmp_path: Path
) -> None:
    stored = store_call(db, bundle, tmp_path, "en")
    withdraw_by_sms(db, stored, at(86400 * 20))
    view = view_of(db, stored, at(86400 * 21))
    html = summary.render(view, sms_of("en"), verified(), stored.media)

    seen = open_in_browser(browser, bundle, html)

    dom = seen.dom
    assert dom["lang"] == "en" and dom["h1"] == "Consent record"
    assert dom["sections"] == [
        "parties",
        "purpose",
        "decision",
        "timeline",
        "recording",
        "sms",
        "withdrawals",
        "verification",
        "technical",
    ]
    check_timeline_and_audio(seen, stored, bundle, recording=True)
    text = dom["text"]
    assert PHONE in text["parties"] and CALLED in text["parties"]
    assert "caller ID of the incoming call" in text["parties"]
    assert "inbound: the person called us" in text["parties"]
    assert "Example Ltd" in text["parties"]
    assert "calls and text messages with offers of our services" in text["purpose"]
    assert "5 years (P5Y)" in text["purpose"] and "1 year (P1Y)" in text["purpose"]
    assert "30 days (P30D)" in text["purpose"]
    assert "your phone number and the recording of this call" in text["purpose"]
    assert "consent given" in text["decision"] and "withdrawn" in text["decision"]
    assert "14 March 2026, 09:27:21 UTC" in text["decision"]
    assert "not counted: pressed during a statement" in text["timeline"]
    assert "the question whether the person agrees" in text["timeline"]
    assert "Expires on" not in text["decision"]  # withdrawn: its validity no longer matters
    assert "2.0 s" in text["recording"] and view["recording"]["sha256"] in text["recording"]
    assert sms_of("en")[0]["text"] in text["sms"]
    assert "Delivery\tdelivered" in text["sms"] and "Gateway\tkannel" in text["sms"]
    assert "14 March 2026, 09:27:34 UTC: delivered (DELIVRD)" in text["sms"]
    assert HOSTILE in text["withdrawals"] and "3 April 2026" in text["withdrawals"]
    assert "Verified: no change found" in text["verification"]
    assert "ledger entry 42" in text["verification"]
    assert all(e["hash"] in text["technical"] for e in view["events"])
    assert "Verified: no change found" in dom["header"]


def test_russian_record_has_russian_labels(
    db: Database, bundle: Path, browser: Browser, tmp_path: Path
) -> None:
    from consent_ivr.evidence.report import Finding, Report

    stored = store_call(db, bundle, tmp_path, "ru")
    view = view_of(db, stored, at(3600))
    report = Report()
    report.problems.append(
        Finding("data.digit", "content does not match its hash", stored.record_id, 6, "1", "2")
    )
    report.warnings.append(Finding("checkpoint", "the newest events are not signed yet"))
    report.count("records")
    report.count("events", 15)
    checkpoint = {
        "id": 3,
        "ledger_seq": 12,
        "ledger_hash": "ab" * 32,
        "at": "2026-03-14T09:27:30.000000Z",
        "key_id": "k1",
        "signature": "c2lnbmF0dXJl",
    }
    problem = str(report.problems[0])
    html = summary.render(
        view, sms_of("ru"), {**report.as_dict(), "checkpoint": checkpoint}, stored.media
    )

    seen = open_in_browser(browser, bundle, html)

    dom = seen.dom
    assert dom["lang"] == "ru" and dom["h1"] == "Запись о согласии"
    assert dom["headings"][:4] == ["Кто и у кого спрашивал", "Цель", "Решение", "Ход звонка"]
    check_timeline_and_audio(seen, stored, bundle, recording=True)
    text = dom["text"]
    assert "ООО «Пример»" in text["parties"]
    assert "определитель номера входящего звонка" in text["parties"]
    assert "звонки и СМС с предложениями наших услуг" in text["purpose"]
    assert "5 лет (P5Y)" in text["purpose"] and "1 год (P1Y)" in text["purpose"]
    assert "согласие дано" in text["decision"]
    assert "Действует до\t14 марта 2027 года, 09:27:21 UTC" in text["decision"]
    assert "14 марта 2026 года, 09:27:21 UTC" in text["decision"]
    assert "не учтена: нажата во время сообщения" in text["timeline"]
    assert "Проверка НЕ пройдена" in text["verification"] and problem in text["verification"]
    assert "the newest events are not signed yet" in text["verification"]
    assert "запись реестра 12, 14 марта 2026 года, 09:27:30 UTC" in text["verification"]
    assert "подписана" in text["verification"] and "ab" * 32 in text["verification"]
    assert "Проверка НЕ пройдена" in dom["header"]
    english = ("Who asked whom", "Purpose", "Timeline", "Verified", "Key pressed", "not counted")
    for label in english:
        assert all(label not in section for section in text.values()), label


def test_erased_record_says_what_was_erased(
    db: Database, bundle: Path, browser: Browser, tmp_path: Path
) -> None:
    from consent_ivr.evidence import purge

    stored = store_call(db, bundle, tmp_path, "en")
    withdraw_by_sms(db, stored, at(86400 * 20))
    erased_at = at(86400 * 51)  # 30 days after the withdrawal, the retention run erases
    done = purge.run(db, Config(), at=erased_at)
    assert [e.record_id for e in done.erasures] == [stored.record_id]
    assert done.deleted == [str(stored.recording)] and not stored.recording.exists()
    view = view_of(db, stored, erased_at)
    assert view["phone"] is None and view["erased"] is not None
    note = f"record {stored.record_id}: erased by policy on 2026-05-04"
    # The bundle of an erased record holds no recording, only its hash.
    (bundle / stored.media.pop("recording")).unlink()

    seen = open_in_browser(
        browser,
        bundle,
        summary.render(view, sms_of("en"), verified([note]), stored.media),
    )

    dom = seen.dom
    assert "erasure" in dom["sections"]
    check_timeline_and_audio(seen, stored, bundle, recording=False)
    text = dom["text"]
    assert (
        "Personal data of this record was erased by policy on 4 May 2026, 09:26:53 UTC."
        in text["erasure"]
    )
    assert "Personal data erased on 4 May 2026" in dom["header"]
    assert "Policy\terasure after the consent was withdrawn" in text["erasure"]
    assert "Period\t30 days (P30D)" in text["erasure"]
    assert "Counted from\t3 April 2026, 09:26:53 UTC" in text["erasure"]
    what = (
        "the person's number, the salt that tied the hashes to the number, "
        "the calling number, the called number, the recording of the call"
    )
    assert f"What was erased\t{what}" in text["erasure"]
    assert "The hashes remain" in text["erasure"]
    assert f"Notes\n{note}" in text["verification"]
    assert PHONE not in dom["header"] and all(PHONE not in t for t in text.values())
    for label in ("The person's number", "Calling number", "Called number"):
        assert f"{label}\terased" in text["parties"], label
    assert "The audio was erased by policy; its hash remains." in text["recording"]
    assert view["recording"]["sha256"] in text["recording"]
    assert view["recording"]["sha256"] in text["erasure"]
