"""Operations (issue 18): settings from the environment and a .env file, one line per bad
setting, ``reid-serve --help`` and ``--version``, docker-compose passing every setting through,
the log formats, request ids, named API keys, /readyz without the model's path, and the one-line
hint for a missing extra."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml
from service_fixtures import ROOT

from bench.__main__ import missing_extra
from service.api import SERVICE_VERSION
from service.cli import entry_settings, serve
from service.logging_setup import REQUEST_ID, JsonFormatter, TextFormatter
from service.security import ApiKeys, Scope, named_keys
from service.settings import (
    Settings,
    SettingsInvalid,
    default_text,
    env_file_from_environment,
    load_settings,
    variable,
)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No REID_* variable from the caller, and a working directory of our own."""
    import os

    for name in [n for n in os.environ if n.startswith("REID_")]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_settings_come_from_a_dotenv_file_below_the_environment(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (clean_env / ".env").write_text("REID_MAX_TOP_K=7\nREID_LOG_FORMAT=text\nOTHER=1\n")
    settings = load_settings(env_file_from_environment())
    assert settings.max_top_k == 7 and settings.log_format == "text"
    monkeypatch.setenv("REID_MAX_TOP_K", "9")
    assert load_settings(env_file_from_environment()).max_top_k == 9
    monkeypatch.setenv("REID_ENV_FILE", "")  # empty: no file at all
    assert load_settings(env_file_from_environment()).log_format == "json"
    monkeypatch.setenv("REID_ENV_FILE", str(clean_env / "missing.env"))
    with pytest.raises(SettingsInvalid, match=r"REID_ENV_FILE=.*no such file"):
        env_file_from_environment()


@pytest.mark.parametrize(
    ("name", "value", "form"),
    [
        ("REID_MAX_TOP_K", "abc", "a whole number > 0"),
        ("REID_PORT", "99999", "a whole number > 0 and < 65536"),
        ("REID_BATCHING", "maybe", "true or false"),
        ("REID_LOG_FORMAT", "xml", "one of json, text"),
        ("REID_ADMISSION_WAIT_S", "-1", "a number > 0"),
    ],
)
def test_a_bad_setting_is_one_line_naming_the_variable_and_its_form(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch, name: str, value: str, form: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit) as exited:
        entry_settings("reid-serve")
    message = str(exited.value.code)
    assert "\n" not in message
    assert message.startswith(f"reid-serve: error: {name}={value!r} is not valid: expected {form}")


def test_a_bad_setting_stops_reid_serve_with_that_line_and_no_traceback(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "REID_MAX_TOP_K": "abc", "REID_ENV_FILE": ""}
    done = subprocess.run(
        [sys.executable, "-m", "service.cli"],
        cwd=ROOT,
        env={**env, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0
    assert done.stderr.strip().splitlines() == [
        "reid-serve: error: REID_MAX_TOP_K='abc' is not valid: expected a whole number > 0 "
        "(Input should be a valid integer, unable to parse string as an integer)"
    ]


def test_help_lists_every_setting_with_its_default(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        serve(["--help"])
    assert exited.value.code == 0
    text = capsys.readouterr().out
    for name in Settings.model_fields:
        assert f"{variable(name)}  (default: {default_text(name)})" in text
    assert "REID_ENV_FILE" in text


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        serve(["--version"])
    assert capsys.readouterr().out.strip() == f"reid-serve {SERVICE_VERSION}"


def test_docker_compose_passes_every_setting_through() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    passed = set(compose["x-reid-environment"])
    assert passed == {variable(name) for name in Settings.model_fields}
    fixed = {key: value for key, value in compose["x-reid-environment"].items() if value}
    assert fixed == {"REID_HOST": "0.0.0.0", "REID_PORT": "8000", "REID_DATA_DIR": "/data"}


def _record(message: str, **fields: object) -> logging.LogRecord:
    record = logging.LogRecord("reid.test", logging.INFO, __file__, 1, message, None, None)
    record.request_id = REQUEST_ID.get()
    record.fields = fields
    return record


def test_json_and_text_log_lines_carry_the_request_id() -> None:
    token = REQUEST_ID.set("req-1")
    try:
        entry = json.loads(JsonFormatter().format(_record("enroll", key="ingest", n=3)))
        text = TextFormatter().format(_record("enroll", identity="a\nforged line"))
    finally:
        REQUEST_ID.reset(token)
    assert entry["request_id"] == "req-1" and entry["message"] == "enroll"
    assert entry["key"] == "ingest" and entry["n"] == 3 and entry["level"] == "info"
    assert "[req-1] enroll" in text and "\n" not in text  # a client's newline stays quoted


def test_api_keys_have_names_and_checks_return_them() -> None:
    assert named_keys(["ingest:s3cret", "bare-key", "a:b:c"], "write") == [
        ("ingest", b"s3cret"),
        ("write-2", b"bare-key"),
        ("a", b"b:c"),
    ]
    keys = ApiKeys(["r1"], ["ingest:w1"])
    assert keys.check("r1", Scope.READ) == "read-1"
    assert keys.check("w1", Scope.WRITE) == "ingest"
    assert ApiKeys([], []).check(None, Scope.WRITE) is None


def test_request_ids_are_echoed_and_readyz_hides_the_model_path(
    service_client: httpx.Client, exported_model: Path
) -> None:
    response = service_client.get("/readyz", headers={"X-Request-ID": "trace-42"})
    assert response.headers["x-request-id"] == "trace-42"
    model = response.json()["model"]
    assert model["name"] and model["version"] and "path" not in model
    assert str(exported_model.parent) not in response.text
    assert len(service_client.get("/healthz").headers["x-request-id"]) == 32


def test_a_missing_extra_is_named_in_one_line() -> None:
    hint = missing_extra(ModuleNotFoundError("No module named 'torch'", name="torch"))
    assert hint is not None and "pip install -e '.[bench]'" in hint and "\n" not in hint
    assert missing_extra(ModuleNotFoundError("x", name="numpy")) is None
