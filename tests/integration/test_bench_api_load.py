"""`bench/api_load.py` still measures what it says: a short run of each kind of client against
a real service process on SQLite, every answer 200 and the figures printed. The figures
themselves are the benchmark's business, not this test's."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

BENCH = Path(__file__).resolve().parents[2] / "bench" / "api_load.py"


@pytest.mark.parametrize("client", ["lean", "aiohttp"])
def test_a_short_run_answers_every_request(client: str, tmp_path: Path) -> None:
    figures = tmp_path / "figures.json"
    run = subprocess.run(
        [sys.executable, str(BENCH), "--database", "sqlite", "--records", "300"]
        + ["--clients", "5", "--rate", "100", "--seconds", "1", "--warmup", "0.3"]
        + ["--client", client, "--json", str(figures)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    answered = re.search(
        r"(\d+) requests/s \((\d+) requests\).*statuses \{200: (\d+)\}", run.stdout
    )
    assert answered, run.stdout
    assert int(answered[1]) == int(answered[2]) >= 50  # 100 a second offered for 1 s
    assert f"the clients ({client}, this process)" in run.stdout
    assert json.loads(figures.read_text())["client"] == client
