"""Errors a person can act on (issue #9): every config error names where the value came from
(the file and key, or the environment variable), the value (never a secret) and what was
expected; a database that is unreachable or not migrated, and a port already in use, are one
clean line naming what and where; each exits 2 without a traceback. `config check --connect`
also reaches the database and ARI (a stand-in for Asterisk's HTTP server here).

The CLI runs as a separate process, as an operator runs it; values are checked in process
where only the message matters."""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from consent_ivr.config import ENV_OVERRIDES, ConfigError, load
from consent_ivr.store.db import upgrade
from tests.conftest import PgServer, free_port

pytestmark = pytest.mark.integration

CLI = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "consent-ivr"
SECRET = "s3cret-Pa55word"
PHONE = "+79161234567"


@pytest.fixture(autouse=True)
def _no_config_in_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)


def write(tmp_path: Path, data: Any, name: str = "config.yaml") -> Path:
    file = tmp_path / name
    text = data if isinstance(data, str) else yaml.safe_dump(data, allow_unicode=True)
    file.write_text(text, encoding="utf-8")
    return file


def error_of(file: Path | None, env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as exc:
        load(file, env={} if env is None else env)
    return str(exc.value)


def line_naming(message: str, *words: str) -> str:
    """The one line of ``message`` that has every word."""
    lines = [line for line in message.splitlines() if all(w in line for w in words)]
    assert lines, f"no line has all of {words}:\n{message}"
    return lines[0]


def blocks(message: str) -> dict[str, str]:
    """The message per source: its header ("<file>" or "environment") -> its lines."""
    found: dict[str, str] = {}
    header = ""
    for line in message.splitlines():
        if line.endswith(": invalid configuration"):
            header = line.removesuffix(": invalid configuration").removeprefix("consent-ivr: ")
            found[header] = ""
        else:
            found[header] += line + "\n"
    return found


def clean_env(**values: str | Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONSENT_IVR_")}
    return env | {k: str(v) for k, v in values.items()}


def cli(
    cwd: Path, env: dict[str, str], *args: str, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CLI), *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


def refused(proc: subprocess.CompletedProcess[str]) -> str:
    """The error of a command that must end in one clean message and exit 2 (log lines
    before it, such as warnings, are left out)."""
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr, proc.stderr
    start = proc.stderr.find("consent-ivr: ")
    assert start >= 0, proc.stderr
    return proc.stderr[start:]


# ---- where each value came from ---------------------------------------------------------------


def test_a_bad_port_in_the_environment_is_blamed_on_the_variable(tmp_path: Path) -> None:
    file = write(tmp_path, {"http": {"port": 8090}, "flow": {"max_attempts": 2}})
    env = clean_env(CONSENT_IVR_CONFIG=file, CONSENT_IVR_HTTP_PORT="80 80")
    err = refused(cli(tmp_path, env, "config", "check"))
    line = line_naming(err, "CONSENT_IVR_HTTP_PORT", "http.port", "'80 80'", "valid integer")
    assert str(file) not in err, "the file holds a valid port: it must not be blamed"
    assert line.strip().startswith("CONSENT_IVR_HTTP_PORT")


def test_a_bad_file_value_is_reported_though_the_environment_overrides_it(
    tmp_path: Path,
) -> None:
    file = write(tmp_path, {"recordings": {"dir": ["var", "recordings"]}})
    env = clean_env(CONSENT_IVR_CONFIG=file, CONSENT_IVR_RECORDINGS_DIR=tmp_path / "rec")
    err = refused(cli(tmp_path, env, "config", "check"))
    assert blocks(err).keys() == {str(file)}
    line_naming(
        err, "recordings.dir", "['var', 'recordings']", "path", "CONSENT_IVR_RECORDINGS_DIR"
    )


# A value a file may not hold, and one the environment may override it with, per override.
BAD_IN_FILE = {
    "ARI_URL": ("pbx:8088", "http://127.0.0.1:8088"),
    "ARI_USER": (["consent"], "consent"),
    "ARI_APP": ({"name": "x"}, "consent-app"),
    "DATABASE_URL": ("mysql://u@db/consent", "sqlite://"),
    "RECORDINGS_DIR": ("", "/srv/recordings"),
    "HTTP_HOST": ("not a host", "0.0.0.0"),
    "HTTP_PORT": ("eighty", "8080"),
    "PROMPTS_MEDIA_URL": ("ftp://media/prompts", "http://10.0.0.5:8090/prompts"),
}


def test_every_override_is_in_the_table() -> None:
    assert set(BAD_IN_FILE) == set(ENV_OVERRIDES) - {"ARI_PASSWORD"}


@pytest.mark.parametrize("suffix", sorted(BAD_IN_FILE))
def test_an_override_never_hides_a_bad_file_value(tmp_path: Path, suffix: str) -> None:
    section, key = ENV_OVERRIDES[suffix]
    bad, good = BAD_IN_FILE[suffix]
    file = write(tmp_path, {section: {key: bad}})
    variable = "CONSENT_IVR_" + suffix
    message = error_of(file, {variable: good})
    assert list(blocks(message)) == [str(file)], message
    line_naming(message, f"{section}.{key}", f"{variable} overrides it")
    # Without the variable the same value is the same error, from the same file.
    assert blocks(error_of(file)).keys() == {str(file)}


@pytest.mark.parametrize("suffix", sorted(BAD_IN_FILE))
def test_a_bad_override_is_blamed_on_its_variable(tmp_path: Path, suffix: str) -> None:
    section, key = ENV_OVERRIDES[suffix]
    bad, good = BAD_IN_FILE[suffix]
    bad_text = bad if isinstance(bad, str) else ""  # the environment holds text only
    variable = "CONSENT_IVR_" + suffix
    file = write(tmp_path, {section: {key: good}})
    message = error_of(file, {variable: bad_text})
    assert list(blocks(message)) == ["environment"], message
    line_naming(message, f"  {variable} ({section}.{key}): ", repr(bad_text))


def test_the_file_and_the_environment_are_each_named_for_their_own_values(
    tmp_path: Path,
) -> None:
    file = write(tmp_path, {"flow": {"max_attempts": 0}})
    message = error_of(file, {"CONSENT_IVR_HTTP_HOST": "my laptop"})
    by_source = blocks(message)
    assert by_source.keys() == {str(file), "environment"}
    assert "flow.max_attempts" in by_source[str(file)]
    assert "http.host" not in by_source[str(file)]
    line_naming(by_source["environment"], "CONSENT_IVR_HTTP_HOST (http.host)", "'my laptop'")
    assert "flow" not in by_source["environment"]


def test_valid_overrides_of_valid_file_values_load(tmp_path: Path) -> None:
    file = write(tmp_path, {"recordings": {"dir": "file-rec"}, "http": {"port": 8090}})
    config = load(
        file, env={"CONSENT_IVR_RECORDINGS_DIR": "/srv/rec", "CONSENT_IVR_HTTP_PORT": "1"}
    )
    assert (str(config.recordings.dir), config.http.port) == ("/srv/rec", 1)


# ---- values that used to pass `config check` --------------------------------------------------

# The issue's list, through the CLI: (config, key, value as shown, what was expected).
ISSUE_CASES = [
    ({"database": {"url": "oracle://u@db/x"}}, "database.url", "'oracle://u@db/x'", "sqlite:///"),
    ({"http": {"host": "not a host"}}, "http.host", "'not a host'", "IP address or a host name"),
    ({"prompts": {"media_url": "ftp://x"}}, "prompts.media_url", "'ftp://x'", "http://"),
    ({"sms": {"dlr": {"path": "sms/dlr"}}}, "sms.dlr.path", "'sms/dlr'", "starting with /"),
    ({"default_region": "XX"}, "default_region", "'XX'", "two-letter country code"),
    (
        {"purposes": {"marketing-calls": {"validity": "a year"}}},
        "purposes.marketing-calls.validity",
        "'a year'",
        "ISO 8601",
    ),
]


@pytest.mark.parametrize(
    ("data", "key", "value", "expected"), ISSUE_CASES, ids=[c[1] for c in ISSUE_CASES]
)
def test_config_check_refuses_what_it_used_to_pass(
    tmp_path: Path, data: dict[str, Any], key: str, value: str, expected: str
) -> None:
    if "purposes" in data:  # a purpose needs its texts: take the shipped one
        shipped = load(None, env={}).purposes["marketing-calls"]
        purpose = shipped.model_dump() | data["purposes"]["marketing-calls"]
        data = {"purposes": {"marketing-calls": purpose}}
    file = write(tmp_path, data)
    err = refused(cli(tmp_path, clean_env(CONSENT_IVR_CONFIG=file), "config", "check"))
    assert err.splitlines()[0] == f"consent-ivr: {file}: invalid configuration"
    line_naming(err, key, value, expected)


def _campaign_dialing(dialing: dict[str, Any]) -> dict[str, Any]:
    controller = {"name": {"ru": "ООО", "en": "Ltd"}}
    default = {"controller": controller, "purposes": ["marketing-calls"], "dialing": dialing}
    return {"campaigns": {"default": default}}


VALUE_CASES = [
    ({"database": {"url": "mysql://u@h/db"}}, "database.url", "'mysql'", "postgresql://"),
    (
        {"database": {"url": "postgresql+psycopg2://u@h/db"}},
        "database.url",
        "psycopg2",
        "USER@HOST",
    ),
    ({"database": {"url": "sqlite+aiosqlite:///x.db"}}, "database.url", "aiosqlite", "sqlite:///"),
    (
        {"database": {"url": "postgresql://u@h"}},
        "database.url",
        "'postgresql://u@h'",
        "no database",
    ),
    ({"database": {"url": "postgresql://u@h:99999/db"}}, "database.url", "99999", "1 to 65535"),
    ({"database": {"url": "var/consent.db"}}, "database.url", "'var/consent.db'", "sqlite:///"),
    ({"http": {"host": "127.0.0.1:8090"}}, "http.host", "'127.0.0.1:8090'", "IP address"),
    ({"http": {"host": "http://0.0.0.0"}}, "http.host", "'http://0.0.0.0'", "IP address"),
    ({"http": {"host": "999.1.1.1"}}, "http.host", "'999.1.1.1'", "IP address"),
    ({"http": {"host": ""}}, "http.host", "''", "IP address"),
    ({"prompts": {"media_url": "10.0.0.5:8090/p"}}, "prompts.media_url", "'10.0.0.5", "http://"),
    ({"prompts": {"media_url": "http://h:99999/p"}}, "prompts.media_url", "99999", "1 to 65535"),
    ({"prompts": {"media_url": "http://a b/p"}}, "prompts.media_url", "'http://a b/p'", "http://"),
    ({"sms": {"inbound": {"path": "/sms/in bound"}}}, "sms.inbound.path", "in bound", "no spaces"),
    ({"sms": {"dlr": {"url": "gateway/dlr"}}}, "sms.dlr.url", "'gateway/dlr'", "http://"),
    ({"sms": {"dlr": {"host": "dlr host"}}}, "sms.dlr.host", "'dlr host'", "host name"),
    ({"sms": {"smpp": {"host": "smsc:2775"}}}, "sms.smpp.host", "'smsc:2775'", "host name"),
    (
        {"sms": {"kannel": {"sendsms_url": "localhost:13013/cgi-bin/sendsms"}}},
        "sms.kannel.sendsms_url",
        "'localhost:13013/cgi-bin/sendsms'",
        "http://",
    ),
    ({"sms": {"log": {"file": ""}}}, "sms.log.file", "''", "path"),
    ({"default_region": "Russia"}, "default_region", "'Russia'", "two-letter"),
    ({"default_region": 7}, "default_region", "7", "string"),
    ({"recordings": {"dir": ""}}, "recordings.dir", "''", "folder path"),
    ({"evidence": {"checkpoints": 5}}, "evidence.checkpoints", "5", "path"),
    ({"flow": {"key_timeout_s": float("inf")}}, "flow.key_timeout_s", "inf", "finite"),
    ({"sms": {"lease_s": float("nan")}}, "sms.lease_s", "nan", "finite"),
    ({"ari": {"url": "http://pbx:8088/ari"}}, "ari.url", "'http://pbx:8088/ari'", "without /ari"),
    ({"ari": {"url": "http://pbx:port"}}, "ari.url", "'http://pbx:port'", "1 to 65535"),
    ({"ari": {"connections": 0}}, "ari.connections", "0", "greater than or equal to 1"),
    ({"ari": {"max_calls": 0}}, "ari.max_calls", "0", "greater than or equal to 1"),
    (
        _campaign_dialing({"ami": {"host": "pbx host"}}),
        "campaigns.default.dialing.ami.host",
        "'pbx host'",
        "host name",
    ),
]


@pytest.mark.parametrize(
    ("data", "key", "value", "expected"), VALUE_CASES, ids=[c[2] for c in VALUE_CASES]
)
def test_a_wrong_value_names_the_file_key_value_and_expectation(
    tmp_path: Path, data: dict[str, Any], key: str, value: str, expected: str
) -> None:
    file = write(tmp_path, data)
    message = error_of(file)
    assert message.splitlines()[0] == f"{file}: invalid configuration"
    line_naming(message, f"  {key}: ", value, expected)


@pytest.mark.parametrize(
    ("data", "check"),
    [
        ({"http": {"host": "0.0.0.0"}}, lambda c: c.http.host == "0.0.0.0"),
        ({"http": {"host": "::"}}, lambda c: c.http.host == "::"),
        ({"http": {"host": "localhost"}}, lambda c: c.http.host == "localhost"),
        ({"http": {"host": "asterisk_1.internal."}}, lambda c: c.http.host.startswith("aster")),
        ({"default_region": "kz"}, lambda c: c.default_region == "KZ"),
        ({"database": {"url": "sqlite://"}}, lambda c: c.database.url == "sqlite://"),
        ({"database": {"url": "postgres://u@h/db"}}, lambda c: c.database.url.endswith("/db")),
        (
            {"database": {"url": "postgresql://u@/db?host=/run/postgresql"}},
            lambda c: "host=" in c.database.url,
        ),
        (
            {"prompts": {"media_url": "https://[::1]:8443/prompts"}},
            lambda c: c.prompts.media_url == "https://[::1]:8443/prompts",
        ),
        ({"ari": {"url": "http://pbx:8088/asterisk/"}}, lambda c: c.ari.url.endswith("asterisk")),
        ({"sms": {"dlr": {"path": "/dlr/kannel"}}}, lambda c: c.sms.dlr.path == "/dlr/kannel"),
    ],
    ids=lambda v: json.dumps(v) if isinstance(v, dict) else "",
)
def test_the_values_people_write_still_load(
    tmp_path: Path, data: dict[str, Any], check: Any
) -> None:
    assert check(load(write(tmp_path, data), env={}))


# ---- secrets ----------------------------------------------------------------------------------


def test_no_database_password_in_a_message(tmp_path: Path) -> None:
    from_env = error_of(None, {"CONSENT_IVR_DATABASE_URL": f"postgresql://consent:{SECRET}@db"})
    line_naming(from_env, "CONSENT_IVR_DATABASE_URL", "'postgresql://consent:***@db'", "database")
    file = write(tmp_path, {"database": {"url": f"mysql://consent:{SECRET}@db/consent"}})
    from_file = error_of(file)
    line_naming(from_file, "database.url", "consent:***@db", "unsupported")
    assert SECRET not in from_env + from_file


@pytest.mark.parametrize("where", ["file", "environment"])
def test_an_ari_url_with_credentials_is_refused_without_echoing_them(
    tmp_path: Path, where: str
) -> None:
    url = f"http://admin:{SECRET}@pbx:8088"
    if where == "file":
        message = error_of(write(tmp_path, {"ari": {"url": url}}))
    else:
        message = error_of(None, {"CONSENT_IVR_ARI_URL": url})
    line_naming(message, "ari.url", "user or password", "CONSENT_IVR_ARI_PASSWORD")
    assert SECRET not in message


def test_a_yaml_error_does_not_quote_the_line(tmp_path: Path) -> None:
    file = write(tmp_path, f"database:\n  url: postgresql://u:{SECRET}@db/x\n  pool: [1,\n")
    message = error_of(file)
    assert str(file) in message and "not valid YAML" in message and "line" in message
    assert SECRET not in message


# ---- the database: unreachable or not migrated ------------------------------------------------

# Every command that opens the database, with arguments that would otherwise work.
DB_COMMANDS = [
    ["records"],
    ["show", "0123456789abcdef"],
    ["status", "--phone", PHONE],
    ["withdraw", "--phone", PHONE, "--all", "--reason", "asked", "--by", "Anna"],
    ["dnc", "add", "--phone", PHONE, "--reason", "asked", "--by", "Anna"],
    ["dnc", "lift", "1"],
    ["verify", "--all"],
    ["export", "0123456789abcdef", "-o", "bundle.zip"],
    ["purge", "--dry-run"],
    ["checkpoint"],
    ["sms", "send", "--phone", PHONE, "--purpose", "marketing-calls", "--text", "hello"],
]


@pytest.mark.parametrize("command", DB_COMMANDS, ids=[" ".join(c[:2]) for c in DB_COMMANDS])
def test_a_command_on_an_unmigrated_database(tmp_path: Path, command: list[str]) -> None:
    db = tmp_path / "consent.db"
    db.touch()  # an empty SQLite file: a database without the schema
    env = clean_env(CONSENT_IVR_DATABASE_URL=f"sqlite:///{db}")
    err = refused(cli(tmp_path, env, *command))
    assert len(err.strip().splitlines()) == 1, err
    line_naming(
        err,
        f"database sqlite:///{db} (CONSENT_IVR_DATABASE_URL)",
        "not migrated",
        "run `consent-ivr db upgrade`",
    )


def test_a_missing_sqlite_file_is_named_and_not_created(tmp_path: Path) -> None:
    db = tmp_path / "nowhere" / "consent.db"
    file = write(tmp_path, {"database": {"url": f"sqlite:///{db}"}})
    err = refused(cli(tmp_path, clean_env(CONSENT_IVR_CONFIG=file), "records"))
    line_naming(err, f"sqlite:///{db}", f"({file}: database.url)", "does not exist", "db upgrade")
    assert not db.parent.exists()


@pytest.mark.parametrize(
    "command", [["records"], ["verify", "--all"], ["db", "upgrade"]], ids=" ".join
)
def test_an_unreachable_server_is_named_without_its_password(
    tmp_path: Path, command: list[str]
) -> None:
    port = free_port()
    url = f"postgresql://consent:{SECRET}@127.0.0.1:{port}/consent"
    err = refused(cli(tmp_path, clean_env(CONSENT_IVR_DATABASE_URL=url), *command))
    line_naming(
        err,
        f"database postgresql://consent:***@127.0.0.1:{port}/consent (CONSENT_IVR_DATABASE_URL)",
        "cannot connect",
        "refused",
        "check that the server runs",
    )
    assert SECRET not in err


@pytest.fixture
def pg_database(pg_server: PgServer) -> Iterator[str]:
    name = pg_server.create_database()
    try:
        yield pg_server.url(name)
    finally:
        pg_server.drop_database(name)


def test_an_unmigrated_and_an_outdated_postgresql_database(
    tmp_path: Path, pg_database: str
) -> None:
    env = clean_env(CONSENT_IVR_DATABASE_URL=pg_database)
    err = refused(cli(tmp_path, env, "records"))
    line_naming(err, "(CONSENT_IVR_DATABASE_URL)", "not migrated", "consent-ivr db upgrade")
    upgrade(pg_database, "0005")
    err = refused(cli(tmp_path, env, "status", "--phone", PHONE))
    line_naming(err, "at revision 0005", "this version needs", "consent-ivr db upgrade")
    upgrade(pg_database)
    assert cli(tmp_path, env, "records").returncode == 0


# ---- config check --connect -------------------------------------------------------------------

ARI_VERSION = "22.5.0-stand-in"


@pytest.fixture
def fake_ari() -> Iterator[str]:
    """Asterisk's HTTP server as far as `--connect` sees it: /ari/asterisk/info answers the
    user consent-ivr with the password SECRET, refuses others (401), and nothing else is
    there (404); under /web/ another web server answers everything with a page."""
    expected = "Basic " + base64.b64encode(f"consent-ivr:{SECRET}".encode()).decode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body: Any
            if self.path.startswith("/web/"):
                status, body = 200, "<html>It works!</html>"
            elif self.path.split("?")[0] != "/ari/asterisk/info":
                status, body = 404, {"message": "Not found"}
            elif self.headers.get("Authorization") != expected:
                status, body = 401, {"message": "Authentication required"}
            else:
                status, body = 200, {"system": {"version": ARI_VERSION}}
            data = (body if isinstance(body, str) else json.dumps(body)).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *_args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def migrated(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'consent.db'}"
    upgrade(url)
    return url


def test_connect_reaches_a_migrated_database_and_ari(
    tmp_path: Path, fake_ari: str, migrated: str
) -> None:
    env = clean_env(
        CONSENT_IVR_DATABASE_URL=migrated,
        CONSENT_IVR_ARI_URL=fake_ari,
        CONSENT_IVR_ARI_PASSWORD=SECRET,
    )
    proc = cli(tmp_path, env, "config", "check", "--connect")
    assert proc.returncode == 0, proc.stderr
    line_naming(proc.stdout, f"database {migrated}", "migrated to head")
    line_naming(proc.stdout, f"ARI {fake_ari}", ARI_VERSION, "'consent-ivr' accepted")
    assert SECRET not in proc.stdout + proc.stderr


def test_connect_names_refused_credentials_without_the_password(
    tmp_path: Path, fake_ari: str, migrated: str
) -> None:
    wrong = "wrong-" + SECRET
    file = write(tmp_path, {"ari": {"url": fake_ari, "user": "consent-ivr"}})
    env = clean_env(
        CONSENT_IVR_CONFIG=file, CONSENT_IVR_DATABASE_URL=migrated, CONSENT_IVR_ARI_PASSWORD=wrong
    )
    proc = cli(tmp_path, env, "config", "check", "--connect")
    err = refused(proc)
    line_naming(
        err,
        f"ARI {fake_ari}/ari/asterisk/info ({file}: ari.url)",
        "credentials refused",
        f"'consent-ivr' ({file}: ari.user)",
        "CONSENT_IVR_ARI_PASSWORD",
    )
    assert "migrated to head" in proc.stdout  # the database was fine, and said so
    assert SECRET not in proc.stdout + err


def test_connect_reports_every_failure_at_once(tmp_path: Path) -> None:
    port = free_port()
    db = tmp_path / "empty.db"
    db.touch()
    env = clean_env(
        CONSENT_IVR_DATABASE_URL=f"sqlite:///{db}",
        CONSENT_IVR_ARI_URL=f"http://127.0.0.1:{port}",
        CONSENT_IVR_ARI_PASSWORD=SECRET,
    )
    err = refused(cli(tmp_path, env, "config", "check", "--connect"))
    line_naming(err, f"database sqlite:///{db}", "not migrated", "db upgrade")
    line_naming(
        err,
        f"ARI http://127.0.0.1:{port}/ari/asterisk/info (CONSENT_IVR_ARI_URL)",
        "cannot connect (Connection refused)",
        "check that Asterisk runs",
    )
    assert SECRET not in err


def test_connect_to_a_server_without_ari(tmp_path: Path, fake_ari: str, migrated: str) -> None:
    env = clean_env(
        CONSENT_IVR_DATABASE_URL=migrated,
        CONSENT_IVR_ARI_URL=fake_ari + "/asterisk",
        CONSENT_IVR_ARI_PASSWORD=SECRET,
    )
    err = refused(cli(tmp_path, env, "config", "check", "--connect"))
    line_naming(err, f"ARI {fake_ari}/asterisk/ari/asterisk/info", "HTTP 404", "ari.conf")


def test_connect_to_another_web_server(tmp_path: Path, fake_ari: str, migrated: str) -> None:
    env = clean_env(
        CONSENT_IVR_DATABASE_URL=migrated,
        CONSENT_IVR_ARI_URL=fake_ari + "/web",
        CONSENT_IVR_ARI_PASSWORD=SECRET,
    )
    err = refused(cli(tmp_path, env, "config", "check", "--connect"))
    line_naming(err, f"ARI {fake_ari}/web/ari/asterisk/info", "not as ARI does")


def test_connect_without_the_ari_password(tmp_path: Path, fake_ari: str, migrated: str) -> None:
    env = clean_env(CONSENT_IVR_DATABASE_URL=migrated, CONSENT_IVR_ARI_URL=fake_ari)
    err = refused(cli(tmp_path, env, "config", "check", "--connect"))
    line_naming(err, f"ARI {fake_ari}", "no password", "export CONSENT_IVR_ARI_PASSWORD")


def test_check_without_connect_contacts_nothing(tmp_path: Path) -> None:
    db = tmp_path / "absent.db"
    env = clean_env(
        CONSENT_IVR_DATABASE_URL=f"sqlite:///{db}",
        CONSENT_IVR_ARI_URL=f"http://127.0.0.1:{free_port()}",
    )
    proc = cli(tmp_path, env, "config", "check")
    assert proc.returncode == 0, proc.stderr
    assert "config OK" in proc.stdout
    assert not db.exists()


# ---- a port already in use --------------------------------------------------------------------


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield int(s.getsockname()[1])


def test_sms_worker_on_a_port_in_use(tmp_path: Path, taken_port: int) -> None:
    file = write(tmp_path, {"sms": {"gateway": "kannel", "dlr": {"port": taken_port}}})
    env = clean_env(
        CONSENT_IVR_CONFIG=file,
        CONSENT_IVR_DATABASE_URL=f"sqlite:///{tmp_path / 'consent.db'}",
        CONSENT_IVR_KANNEL_PASSWORD=SECRET,
    )
    err = refused(cli(tmp_path, env, "sms-worker", timeout=30))
    line_naming(
        err,
        f"cannot listen on 127.0.0.1:{taken_port}",
        f"{file}: sms.dlr.port",
        "address already in use",
        "choose another port",
    )
    assert SECRET not in err


def test_run_on_a_port_in_use(tmp_path: Path, taken_port: int) -> None:
    file = write(tmp_path, {"prompts": {"audio_dir": str(tmp_path / "audio")}})
    env = clean_env(
        CONSENT_IVR_CONFIG=file,
        CONSENT_IVR_DATABASE_URL=f"sqlite:///{tmp_path / 'consent.db'}",
        CONSENT_IVR_ARI_URL="http://127.0.0.1:9",  # nothing answers: no call could be taken
        CONSENT_IVR_ARI_PASSWORD=SECRET,
        CONSENT_IVR_HTTP_PORT=str(taken_port),
    )
    built = cli(tmp_path, env, "prompts", "build", timeout=120)
    assert built.returncode == 0, built.stderr
    err = refused(cli(tmp_path, env, "run", timeout=60))
    line_naming(
        err,
        f"cannot listen on 127.0.0.1:{taken_port}",
        "the default of http.host; CONSENT_IVR_HTTP_PORT",
        "address already in use",
    )
    assert SECRET not in err


# ---- prompts ----------------------------------------------------------------------------------


@pytest.mark.parametrize("placeholder", ["{controller!x}", "{controller:>x}"])
def test_a_malformed_placeholder_in_a_prompt(tmp_path: Path, placeholder: str) -> None:
    prompts = tmp_path / "prompts"
    prompts.mkdir()
    shipped = Path(__file__).resolve().parents[2] / "prompts"
    for lang in ("ru", "en"):
        text = (shipped / f"{lang}.yaml").read_text(encoding="utf-8")
        if lang == "en":
            head, sep, body = text.partition("\nprompts:")  # past the comments naming it
            assert "{controller}" in body
            text = head + sep + body.replace("{controller}", placeholder, 1)
        (prompts / f"{lang}.yaml").write_text(text, encoding="utf-8")
    file = write(tmp_path, {"prompts": {"dir": str(prompts)}})
    err = refused(cli(tmp_path, clean_env(CONSENT_IVR_CONFIG=file), "config", "check"))
    line_naming(err, str(prompts / "en.yaml"), placeholder)
