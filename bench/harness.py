"""What the load scripts share: the private Asterisk (scripts/asterisk.sh), the service as its
own process (`consent-ivr run`) on the tests' short prompts, and the CPU and memory of a process
read from /proc."""

from __future__ import annotations

import base64
import json
import os
import shlex
import signal
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from consent_ivr.config import Config
from consent_ivr.prompts import Catalog
from tests.e2e.conftest import E2E_PROMPTS, SHARE, e2e_config

REPO = Path(__file__).resolve().parents[1]
TICK = os.sysconf("SC_CLK_TCK")


def own_code(env: dict[str, str]) -> dict[str, str]:
    """`env` for a service process that must run this tree's code. The venv's `consent-ivr`
    imports the package it was installed from (an editable install of one checkout), so a
    worktree of an older commit sharing the venv would otherwise measure the newer code."""
    path = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    return {**env, "PYTHONPATH": path}


def pct(values: list[float], p: float) -> float:
    """The p-th percentile (nearest rank), nan for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def asterisk(version: str, *args: str) -> str:
    """scripts/asterisk.sh COMMAND VERSION ARGS, with the bench's dialplan loaded too."""
    env = {
        **os.environ,
        "CONSENT_IVR_SHARE_DIRS": str(SHARE),
        "CONSENT_IVR_DIALPLAN_DIRS": f"{REPO / 'dialplan'}:{REPO / 'bench'}",
    }
    return subprocess.run(
        ["bash", str(REPO / "scripts/asterisk.sh"), args[0], version, *args[1:]],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout


def asterisk_env(version: str) -> dict[str, str]:
    """The instance's CONSENT_IVR_ARI_* / AMI / SIP / ASTERISK_* values."""
    out = {}
    for line in asterisk(version, "env").splitlines():
        k, _, v = line.partition("=")
        out[k] = shlex.split(v)[0] if v else ""
    return out


def asterisk_pid(version: str) -> int:
    """This instance's pid (from its own pid file: another instance may run beside it)."""
    var = Path(os.environ.get("CONSENT_IVR_VAR", REPO / "var")).resolve()
    return int((var / f"asterisk-{version}" / "run" / "asterisk.pid").read_text().split()[0])


def start_asterisk(version: str, *, fresh: bool = True) -> dict[str, str]:
    """Install and start the instance; `fresh` restarts one that runs already, so that it has
    the prompt folders mounted (22) and the bench's dialplan."""
    asterisk(version, "install")
    if fresh:
        asterisk(version, "stop")
    asterisk(version, "start")
    asterisk(version, "reload")  # an instance started elsewhere lacks the bench's dialplan
    return asterisk_env(version)


class Service:
    """`consent-ivr run` as its own process, on the e2e config (short English test prompts)
    written to `folder`/config.yaml; the password only in its environment."""

    def __init__(self, ast: dict[str, str], database_url: str, folder: Path, **flow: Any):
        self.folder = folder
        self.config: Config = e2e_config(ast, database_url, folder, **flow)
        Catalog(self.config).build()
        data = self.config.model_dump(mode="json")
        data["ari"].pop("password", None)
        data["prompts"]["dir"] = str(E2E_PROMPTS)
        (folder / "config.yaml").write_text(yaml.safe_dump(data, allow_unicode=True))
        self.env = own_code(
            {**os.environ, "CONSENT_IVR_ARI_PASSWORD": ast["CONSENT_IVR_ARI_PASSWORD"]}
        )
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = folder / "service.log"

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    str(REPO / ".venv/bin/consent-ivr"),
                    "--log-level",
                    "WARNING",
                    "-c",
                    str(self.folder / "config.yaml"),
                    "run",
                ],
                env=self.env,
                cwd=self.folder,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def kill(self) -> None:
        """SIGKILL: no drain, no goodbye; the next start reconciles."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM (drain), then SIGKILL after `timeout`."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def wait_registered(self, ari_url: str, password: str, timeout: float = 60) -> None:
        """Until Asterisk lists the app as subscribed (the service's websocket is up)."""
        req = urllib.request.Request(f"{ari_url}/ari/applications/{self.config.ari.app}")
        auth = f"{self.config.ari.user}:{password}".encode()
        req.add_header("Authorization", "Basic " + base64.b64encode(auth).decode())
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"the service exited ({self.proc.returncode}); see {self.log}")
            try:
                with urllib.request.urlopen(req, timeout=2) as resp:
                    json.load(resp)
                    return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"the app did not register within {timeout:.0f}s; see {self.log}")
