"""The lifecycle commands as an operator runs them (`status`, `withdraw`, `dnc`, `records`,
`show`, and `call` refusing a number that said no), as separate processes on a real SQLite
database; the records they act on are written with the store API, as a call would."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from consent_ivr.config import Config
from consent_ivr.store import records
from consent_ivr.store.db import Database, upgrade
from consent_ivr.store.models import ContactAttempt
from consent_ivr.store.records import NewCall, NewRecord, Subject

pytestmark = pytest.mark.integration

CLI = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "consent-ivr"
PHONE = "+79161234567"


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    url = f"sqlite:///{tmp_path / 'consent.db'}"
    upgrade(url)
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CONSENT_IVR_")}
    return {
        **clean,
        "CONSENT_IVR_DATABASE_URL": url,
        "CONSENT_IVR_ARI_URL": "http://127.0.0.1:9",  # nothing answers: no call is placed
        "CONSENT_IVR_ARI_PASSWORD": "unused",
        "CONSENT_IVR_CONFIG": str(tmp_path / "none.yaml"),
    }


@pytest.fixture
def db(env: dict[str, str], tmp_path: Path) -> Any:
    (tmp_path / "none.yaml").write_text(
        f"sms:\n  log:\n    file: {tmp_path / 'sms.jsonl'}\n", encoding="utf-8"
    )
    database = Database(env["CONSENT_IVR_DATABASE_URL"])
    yield database
    database.close()


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CLI), *args], env=env, capture_output=True, text=True, timeout=60, cwd="/"
    )


def decided(db: Database, outcome: str, phone: str = PHONE, hours: float = 0) -> str:
    conf = Config()
    at = datetime.now(UTC) - timedelta(hours=48 - hours)
    new = NewCall(
        "ch",
        "inbound",
        "default",
        "ru",
        "RU",
        conf.campaigns["default"].controller_view("ru"),
        at,
        Subject(phone, "caller-id", phone, "100"),
    )
    snapshot = conf.purpose_snapshot("default", "marketing-calls", "ru")
    with db.session() as s:
        call_id, [record_id] = records.open_call(s, new, [NewRecord("consent", snapshot)])
        records.store_decision(s, record_id, outcome, at + timedelta(seconds=40))
        records.finish_call(s, call_id, {record_id: outcome}, at + timedelta(minutes=1), [], None)
    return record_id


def status(env: dict[str, str], phone: str = PHONE) -> dict[str, Any]:
    proc = cli(env, "status", "--phone", phone, "--json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_status_of_an_unknown_number(env: dict[str, str], db: Database) -> None:
    result = status(env)
    [row] = result["purposes"]
    assert (row["purpose"], row["state"], row["records"]) == ("marketing-calls", "none", [])
    assert row["may_contact"]["call"] == {
        "allowed": False,
        "state": "none",
        "reason": "no consent to marketing-calls",
        "record_id": None,
    }
    assert result["do_not_contact"] == []


def test_operator_withdrawal_then_status_show_and_records(
    env: dict[str, str], db: Database
) -> None:
    record_id = decided(db, "granted")
    assert status(env)["purposes"][0]["state"] == "given"
    proc = cli(
        env,
        "withdraw",
        "--phone",
        "8 916 123-45-67",
        "--purpose",
        "marketing-calls",
        "--reason",
        "asked by e-mail",
        "--by",
        "Anna",
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"withdrawn: marketing-calls (record {record_id})"

    [row] = status(env)["purposes"]
    assert (row["state"], row["channel"], row["record_id"]) == ("withdrawn", "operator", record_id)
    assert not row["may_contact"]["sms"]["allowed"]
    assert "asked by e-mail" in row["may_contact"]["sms"]["reason"]
    text = cli(env, "status", "--phone", PHONE).stdout
    assert "marketing-calls" in text and "withdrawn" in text and "may call: no" in text

    shown = cli(env, "show", record_id)
    assert shown.returncode == 0, shown.stderr
    assert "status withdrawn" in shown.stdout
    assert "by operator (by Anna, reason asked by e-mail)" in shown.stdout
    assert "withdrawn" in shown.stdout and "hash chain intact" in shown.stdout
    rows = json.loads(cli(env, "records", "--json").stdout)
    assert [(r["record_id"], r["outcome"], r["status"]) for r in rows] == [
        (record_id, "granted", "withdrawn")
    ]

    again = cli(env, "withdraw", "--phone", PHONE, "--all", "--reason", "x", "--by", "Anna")
    assert again.returncode == 1 and "no active consent" in again.stderr


@pytest.mark.parametrize("outcome", ["declined", "withdrawn"])
def test_call_refuses_a_number_that_said_no(
    env: dict[str, str], db: Database, outcome: str
) -> None:
    decided(db, "declined" if outcome == "declined" else "granted")
    if outcome == "withdrawn":
        assert (
            cli(
                env, "withdraw", "--phone", PHONE, "--all", "--reason", "letter", "--by", "Anna"
            ).returncode
            == 0
        )
    proc = cli(env, "call", PHONE, "--endpoint", "PJSIP/{digits}@trunk")
    assert proc.returncode == 3, proc.stderr
    word = "refused" if outcome == "declined" else "withdrew consent"
    assert f"not calling {PHONE}: marketing-calls: {word}" in proc.stderr
    assert "Traceback" not in proc.stderr
    with db.session() as s:
        [kept] = s.scalars(select(ContactAttempt)).all()
        assert (kept.phone, kept.channel, kept.result) == (PHONE, "call", "suppressed")
        assert kept.purpose_id == "marketing-calls" and word in (kept.reason or "")


def test_the_do_not_contact_register(env: dict[str, str], db: Database) -> None:
    decided(db, "granted")
    added = cli(
        env,
        "dnc",
        "add",
        "--phone",
        PHONE,
        "--channel",
        "sms",
        "--reason",
        "complaint",
        "--by",
        "Oleg",
    )
    assert added.returncode == 0, added.stderr
    entry_id = added.stdout.split("#")[1].split(":")[0]
    result = status(env)
    [row] = result["purposes"]
    assert row["state"] == "given"
    assert not row["may_contact"]["sms"]["allowed"] and row["may_contact"]["call"]["allowed"]
    assert [(e["source"], e["channel"], e["reason"]) for e in result["do_not_contact"]] == [
        ("operator", "sms", "complaint")
    ]
    assert cli(env, "dnc", "lift", entry_id).returncode == 0
    assert status(env)["purposes"][0]["may_contact"]["sms"]["allowed"]

    decided(db, "declined", hours=1)
    own = status(env)["do_not_contact"][0]
    assert own["source"] == "refused"
    lifted = cli(env, "dnc", "lift", str(own["id"]))
    assert lifted.returncode == 1 and "only a new consent from them" in lifted.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("status", "--phone", "not-a-number"), "--phone 'not-a-number': not a phone number"),
        (
            ("withdraw", "--phone", PHONE, "--purpose", "nope", "--reason", "r", "--by", "b"),
            "--purpose 'nope': unknown purpose (configured: marketing-calls)",
        ),
        (("call", PHONE, "--endpoint", "x", "--campaign", "nope"), "--campaign 'nope': unknown"),
        (("call", PHONE, "--endpoint", "x", "--language", "de"), "--language 'de': campaign"),
    ],
)
def test_bad_arguments_are_named(
    env: dict[str, str], db: Database, args: tuple[str, ...], message: str
) -> None:
    proc = cli(env, *args)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr


def test_show_catches_a_record_edited_in_the_database(env: dict[str, str], db: Database) -> None:
    """Issue #7, as a new user tried it with sqlite3: change a declined record's phone and
    outcome; `show` must no longer say the evidence is intact, and name both fields."""
    record_id = decided(db, "declined")
    assert "verified: hash chain intact" in cli(env, "show", record_id).stdout
    with sqlite3.connect(env["CONSENT_IVR_DATABASE_URL"].removeprefix("sqlite:///")) as conn:
        conn.execute(
            "UPDATE consent_records SET outcome = 'granted', pii_principal_id = '+79990000000' "
            "WHERE record_id = ?",
            (record_id,),
        )
    shown = cli(env, "show", record_id)
    assert shown.returncode == 0, shown.stderr
    assert "NOT VERIFIED" in shown.stdout and "hash chain intact" not in shown.stdout
    problems = json.loads(cli(env, "show", record_id, "--json").stdout)["integrity"]["problems"]
    assert any("outcome" in p for p in problems), problems
    assert any("pii_principal_id" in p or "commitment" in p for p in problems), problems
