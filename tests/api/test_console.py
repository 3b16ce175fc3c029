"""The compliance console in real headless Chromium, on SQLite and PostgreSQL: sign in with a
token, search a phone, read the person's consents, open a record, every audio element loads
its file (the call recording and each prompt), the evidence bundle downloads and verifies
alone; then the same in Russian. A screenshot of every step is kept under
var/test-artifacts/console/<test>/ (the browser and its DevTools client are those of
tests/evidence/test_summary.py)."""

from __future__ import annotations

import asyncio
import base64
import os
import shutil
import subprocess
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from consent_ivr.evidence.bundle import verify_bundle
from tests.api.conftest import NEWS, OFFERS, PHONE, T0, Site
from tests.evidence.test_summary import (
    BROWSER_START_S,
    CHROMIUM,
    REPO,
    Browser,
    DevTools,
    _stop,
    free_port,
    load_audio,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

ARTIFACTS = REPO / "var" / "test-artifacts" / "console"
STEP_S = 30.0

PAGE_REPORT = """(() => ({
  url: location.pathname + location.search, href: location.href,
  lang: document.documentElement.lang,
  h1: document.querySelector("h1") ? document.querySelector("h1").innerText : null,
  bar: document.querySelector("nav.bar") ? document.querySelector("nav.bar").innerText : "",
  purposes: [...document.querySelectorAll("#purposes tbody tr")].map((r) => ({
    purpose: r.dataset.purpose, state: r.dataset.state, text: r.innerText})),
  records: [...document.querySelectorAll("#records tbody tr")].map((r) => r.dataset.record),
  sections: [...document.querySelectorAll("section")].map((s) => s.id),
  audio: [...document.querySelectorAll("audio")].map((a) => a.getAttribute("src")),
  bundle: document.querySelector("#bundle") ? document.querySelector("#bundle").href : null,
  text: document.body.innerText,
}))()"""


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    """Debian's Chromium, headless, as tests/evidence/test_summary.py starts it, except that
    it may reach the console on 127.0.0.1 (and still nothing else)."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing: run `bash scripts/browser.sh install`", pytrace=False)
    home = tmp_path_factory.mktemp("chromium")
    port, log = free_port(), home / "chromium.log"
    args = [
        str(CHROMIUM),
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
        "--mute-audio",
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
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
        while process.poll() is None and time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/version", timeout=2):
                    break
            except OSError:
                time.sleep(0.1)
        else:
            pytest.fail(f"chromium did not start:\n{log.read_text()[-3000:]}")
        yield Browser(port, process, log)
    finally:
        _stop(process)


@dataclass
class Tab:
    """One browser tab on the console: navigate, act, look, keep a picture."""

    tools: DevTools
    site: Site
    shots: Path
    step: int = 0

    async def settle(self, action: str) -> dict[str, Any]:
        """Run `action` (a script that navigates) and report the page it leads to."""
        loaded = self.tools.expect("Page.loadEventFired")
        await self.tools.evaluate(action)
        await asyncio.wait_for(loaded, STEP_S)
        return await self.look()

    async def go(self, path: str) -> dict[str, Any]:
        loaded = self.tools.expect("Page.loadEventFired")
        await self.tools.call("Page.navigate", url=self.site.url(path))
        await asyncio.wait_for(loaded, STEP_S)
        return await self.look()

    async def look(self) -> dict[str, Any]:
        report: dict[str, Any] = await self.tools.evaluate(PAGE_REPORT)
        return report

    async def shot(self, name: str) -> Path:
        self.step += 1
        metrics = await self.tools.call("Page.getLayoutMetrics")
        clip = {"x": 0, "y": 0, "scale": 1} | metrics["cssContentSize"]
        shot = await self.tools.call(
            "Page.captureScreenshot", format="png", captureBeyondViewport=True, clip=clip
        )
        path = self.shots / f"{self.step}-{name}.png"
        path.write_bytes(base64.b64decode(shot["data"]))
        return path


@pytest_asyncio.fixture(loop_scope="session")
async def tab(
    site: Site, browser: Browser, request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[Tab]:
    shots = ARTIFACTS / request.node.name
    shutil.rmtree(shots, ignore_errors=True)
    shots.mkdir(parents=True)
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    base = f"http://127.0.0.1:{browser.port}"
    async with aiohttp.ClientSession() as http:
        async with http.put(f"{base}/json/new?about:blank") as response:
            target = await response.json(content_type=None)
        ws = await http.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=0)
        tools = DevTools(ws)
        try:
            await tools.call("Page.enable")
            await tools.call("Network.clearBrowserCookies")  # each test signs in afresh
            await tools.call(
                "Emulation.setDeviceMetricsOverride",
                width=1200,
                height=900,
                deviceScaleFactor=1,
                mobile=False,
            )
            await tools.call(
                "Browser.setDownloadBehavior", behavior="allow", downloadPath=str(downloads)
            )
            yield Tab(tools, site, shots)
        finally:
            await tools.close()
            async with http.get(f"{base}/json/close/{target['id']}") as response:
                await response.read()


def zips(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.zip"))  # a download in progress is a .crdownload


async def downloaded(folder: Path) -> Path:
    deadline = time.monotonic() + STEP_S
    while time.monotonic() < deadline:
        done = await asyncio.to_thread(zips, folder)
        if done:
            return done[0]
        await asyncio.sleep(0.1)
    raise AssertionError(f"no bundle downloaded into {folder}")


def submit(form: str, **fields: str) -> str:
    """A script that fills a form's fields and submits it, as a person would."""
    sets = "".join(
        f"document.querySelector('{form} [name={name}]').value = {value!r};"
        for name, value in fields.items()
    )
    return f"{sets} document.querySelector('{form}').requestSubmit(); true"


async def test_search_a_phone_open_a_record_listen_and_download(
    tab: Tab, site: Site, tmp_path: Path
) -> None:
    [first] = site.store_call(PHONE, "granted")
    offers_id, news_id = site.store_call(
        PHONE, "granted", at=T0 + timedelta(days=1), campaign="two"
    )
    site.withdraw(news_id, T0 + timedelta(days=2))
    token = site.token("read", "export", name="dpo")

    page = await tab.go("/console/")
    assert page["url"] == "/console/login" and page["lang"] == "en", page
    await tab.shot("login")
    page = await tab.settle(submit("#login", token="cvr_wrong"))
    assert "Unknown or revoked token." in page["text"]
    page = await tab.settle(submit("#login", token=token))
    assert page["url"] == "/console/" and "dpo" in page["bar"]

    page = await tab.settle(submit("form[role=search]", q="8 (916) 123-45-67"))
    assert page["h1"] == f"Consents of {PHONE}"
    states = {p["purpose"]: p["state"] for p in page["purposes"]}
    assert states == {OFFERS: "given", NEWS: "withdrawn"}
    news_row = next(p["text"] for p in page["purposes"] if p["purpose"] == NEWS)
    assert "withdrew consent" in news_row
    assert page["records"] == sorted([offers_id, news_id], reverse=True) + [first]
    await tab.shot("person")

    page = await tab.settle(
        f"document.querySelector('a[href=\"/console/records/{news_id}\"]').click(); true"
    )
    assert page["url"] == f"/console/records/{news_id}"
    assert page["sections"][:4] == ["parties", "purpose", "decision", "timeline"]
    assert "withdrawals" in page["sections"] and "verification" in page["sections"]
    assert "Verified: no change found" in page["text"] and "asked by letter" in page["text"]
    assert f"/console/records/{news_id}/recording" in page["audio"]
    assert sum(src.startswith("/console/prompts/") for src in page["audio"]) == 5
    players = await load_audio(tab.tools)
    assert len(players) == 6
    for player in players:
        assert player["error"] is None and player["readyState"] >= 1, player
        assert player["duration"] > 0.1, player
    await tab.shot("record")

    await tab.tools.evaluate("document.querySelector('#bundle').click(); true")
    bundle = await downloaded(tmp_path / "downloads")
    assert bundle.name == f"consent-{news_id}.zip"
    report = verify_bundle(bundle)
    assert report.ok, report.lines()

    page = await tab.go(f"/console/records/{news_id}?lang=ru")
    assert "Записи о согласиях" in page["bar"] and "Скачать пакет доказательств" in page["text"]
    page = await tab.settle(submit("form[role=search]", q=PHONE))
    assert page["lang"] == "ru" and page["h1"] == f"Согласия номера {PHONE}"
    assert "Согласия по целям" in page["text"] and "отозвано" in page["text"]
    await tab.shot("person-ru")

    page = await tab.settle(
        "document.querySelector('nav.bar form[method=post] button').click(); true"
    )
    assert page["url"] == "/console/login"
    page = await tab.go(f"/console/records/{news_id}")
    assert page["url"] == "/console/login"  # signed out: the record is not shown


async def test_a_read_only_token_sees_no_recording_and_no_bundle(tab: Tab, site: Site) -> None:
    [record_id] = site.store_call(PHONE, "granted")
    await tab.go("/console/login")
    await tab.settle(submit("#login", token=site.token("read", name="auditor")))
    page = await tab.go(f"/console/records/{record_id}")
    assert page["bundle"] is None and "has no export scope" in page["text"]
    assert all(src.startswith("/console/prompts/") for src in page["audio"])
    await tab.shot("read-only")
    status, _, _ = await site.call("GET", f"/console/records/{record_id}/bundle")
    assert status == 401  # the browser's cookie is not ours: nobody signed in here
    page = await tab.go(f"/console/records/{record_id}/bundle")
    assert "has no export scope" in page["text"]


async def test_a_token_without_read_cannot_sign_in(tab: Tab, site: Site) -> None:
    await tab.go("/console/login")
    page = await tab.settle(submit("#login", token=site.token("call", name="dialer")))
    assert page["url"] == "/console/login" and "lacks the read scope" in page["text"]
