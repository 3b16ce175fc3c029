"""The config schema under fuzz: every key of config.yaml, given values of the wrong type and
wrong values, either loads or is refused with a ConfigError naming the file and the key (or the
section that holds it); never another exception, never a secret in the message. A config that
loads also builds its prompt catalog without any exception but ConfigError, as `config check`
does. The environment overrides get the same treatment.

Deterministic (derandomized, no example database) and bounded by `max_examples`: about ten
seconds in all.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consent_ivr.config import ENV_OVERRIDES, Config, ConfigError, load
from consent_ivr.prompts import Catalog

pytestmark = pytest.mark.integration

SECRET = "s3cret-Pa55word"
FUZZ = settings(
    max_examples=400,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

# Every key with its default, as the shipped config.yaml spells them out.
BASE: dict[str, Any] = Config().model_dump(mode="json")
DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def _paths(node: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """The path of every key under ``node``, sections and leaves alike, and of an unknown key
    in every mapping."""
    found: list[tuple[str, ...]] = []
    if isinstance(node, dict):
        found.append((*prefix, "no_such_key"))
        for key, value in node.items():
            found.append((*prefix, key))
            found += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for i, value in enumerate(node[:2]):
            found.append((*prefix, str(i)))
            found += _paths(value, (*prefix, str(i)))
    return found


PATHS = [("ari", "password"), *_paths(BASE)]

# Values that mean something somewhere in the schema, to try everywhere.
NEAR_MISSES = [
    "",
    " ",
    "0",
    "-1",
    "65536",
    "1e309",
    "P",
    "P1Y6",
    "PT",
    "{",
    "}",
    "{}",
    "{purpose",
    "{nope}",
    "{controller!x}",
    "http://",
    "http://h:0",
    "ftp://x",
    "sqlite:///",
    "mysql://u@h/db",
    f"postgresql://u:{SECRET}@h",
    f"http://u:{SECRET}@pbx:8088",
    "::",
    "[::1]",
    "not a host",
    "*",
    "#",
    "12",
    "\x00",
    "../..",
    "Europe/Nowhere",
    "STOP",
    "xx",
    "x" * 300,
]
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(),
    st.text(max_size=20),
    st.sampled_from(NEAR_MISSES),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.one_of(st.text(max_size=6), st.sampled_from(["ru", "en"])), inner, max_size=3
        )
    ),
    max_leaves=6,
)
# Overrides the environment may hold at the same time (the database URL with a password).
ENV = {
    "CONSENT_IVR_ARI_URL": "http://127.0.0.1:8088",
    "CONSENT_IVR_ARI_PASSWORD": SECRET,
    "CONSENT_IVR_DATABASE_URL": f"postgresql://consent:{SECRET}@db/consent",
    "CONSENT_IVR_HTTP_PORT": "8090",
}


def _set(data: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    node: Any = data
    for part in path[:-1]:
        node = node[int(part)] if isinstance(node, list) else node[part]
    if isinstance(node, list):
        node[int(path[-1])] = value
    else:
        node[path[-1]] = value


def _names_the_key(message: str, file: Path, path: tuple[str, ...]) -> bool:
    """Whether an error line names the key, a section holding it, or a key inside the value
    given to it ("(top level)" errors of cross-references name the key in their text)."""
    dotted = ".".join(path)
    lines = [line.strip() for line in message.splitlines() if line.startswith("  ")]
    if not lines:  # one-line errors of the file's shape: "<file>: ari: expected a mapping"
        lines = [message.removeprefix(f"{file}: ")]
    for line in lines:
        where = line.split(": ", 1)[0]
        if where == "(top level)" and path[0] in line:
            return True
        if dotted == where or dotted.startswith(where + "."):
            return True
        if where.startswith((dotted + ".", dotted + "[")):
            return True
    return False


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """An empty working directory, so no ./config.yaml is read by accident."""
    work = tmp_path_factory.mktemp("fuzz")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(work)
        yield work


def _load_error(config_file: Path, env: dict[str, str]) -> str | None:
    """The ConfigError message of loading the config, if any; a config that loads also builds
    its prompt catalog, whose ConfigError names the prompt file instead. Any other exception
    fails the test."""
    try:
        config = load(config_file, env=env)
    except ConfigError as e:
        return str(e)
    try:
        Catalog(config)
    except ConfigError as e:
        assert "Traceback" not in str(e) and SECRET not in str(e)
    return None


def _check_one(workdir: Path, path: tuple[str, ...], value: Any, env: dict[str, str]) -> None:
    """A config whose key ``path`` holds ``value`` loads, or its error names the file and the
    key and shows no secret."""
    # The section of the key, every other key of it spelled out (the rest: embedded defaults).
    data = {path[0]: copy.deepcopy(BASE.get(path[0]))}
    _set(data, path, value)
    config_file = workdir / "fuzzed.yaml"  # not ./config.yaml: the other tests load none
    config_file.write_text(yaml.dump(data, Dumper=DUMPER, allow_unicode=True), encoding="utf-8")
    message = _load_error(config_file, env)
    if message is None:
        return
    assert message.startswith(f"{config_file}: "), message
    assert _names_the_key(message, config_file, path), (path, value, message)
    assert SECRET not in message
    assert "Traceback" not in message


# One value of every type YAML gives, for every key: not left to chance.
EVERY_TYPE = [None, True, -7, 0.5, float("inf"), "", "text", [1, "x"], {"x": 1}]


def test_every_key_with_every_type(workdir: Path) -> None:
    for path in PATHS:
        for value in EVERY_TYPE:
            _check_one(workdir, path, value, {})


@FUZZ
@given(path=st.sampled_from(PATHS), value=VALUES, with_env=st.booleans())
def test_every_key_with_wrong_values(
    workdir: Path, path: tuple[str, ...], value: Any, with_env: bool
) -> None:
    _check_one(workdir, path, value, ENV if with_env else {})


@FUZZ
@given(
    values=st.dictionaries(
        st.sampled_from(sorted(ENV_OVERRIDES)),
        st.one_of(st.text(max_size=30), st.sampled_from(NEAR_MISSES)),
        min_size=1,
    )
)
def test_every_environment_override_with_wrong_values(
    workdir: Path, values: dict[str, str]
) -> None:
    env = {"CONSENT_IVR_" + suffix: text for suffix, text in values.items()}
    try:
        load(None, env=env)
    except ConfigError as e:
        message = str(e)
        assert message.startswith("environment: invalid configuration"), message
        for line in message.splitlines()[1:]:
            variable = line.strip().split(" ", 1)[0]
            assert variable in env, (variable, message)
            section, key = ENV_OVERRIDES[variable.removeprefix("CONSENT_IVR_")]
            assert f"({section}.{key}" in line, message
        assert "CONSENT_IVR_ARI_PASSWORD" not in message  # any text is a password
        assert SECRET not in message


@FUZZ
@given(
    scheme=st.sampled_from(["postgresql", "postgres", "sqlite", "mysql", "http", "x y", ""]),
    rest=st.text(max_size=20),
)
def test_a_url_password_is_never_shown(workdir: Path, scheme: str, rest: str) -> None:
    url = f"{scheme}://u:{SECRET}@{rest}"
    for env in (
        {"CONSENT_IVR_DATABASE_URL": url},
        {"CONSENT_IVR_ARI_URL": url},
        {"CONSENT_IVR_PROMPTS_MEDIA_URL": url},
    ):
        try:
            load(None, env=env)
        except ConfigError as e:
            assert SECRET not in str(e), str(e)
