"""Operations: /healthz, request ids, logs without secrets, the private settings file, passenger_wsgi.py."""

import json
import logging
import os
import subprocess
import sys

import pytest

from services import db, logs
from tests.conftest import ROOT


@pytest.fixture(autouse=True)
def root_logger_restored():
    """These tests install logging handlers: put the root logger back as it was, or later tests would log into
    this test's captured (and by then closed) stderr."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
            if isinstance(handler, logging.FileHandler):
                handler.close()
    for handler in handlers:
        for extra in [f for f in handler.filters if isinstance(f, (logs.RedactFilter, logs.RequestIdFilter))]:
            handler.removeFilter(extra)
    root.setLevel(level)


def test_healthz_says_ok_with_the_schema_and_no_secret(app, client, conn):
    response = client.get("/healthz")
    assert response.status_code == 200 and response.headers["Cache-Control"] == "no-store"
    body = response.json
    assert body["status"] == "ok" and body["database"] == "ok" and body["catalog"] == "ok"
    assert body["schema_version"] == db.schema_file_version(conn.engine) == 12 and body["worker_heartbeat_age"] is None
    db.worker_state_set(conn, "heartbeat", str(1_000), 1_000)
    assert client.get("/healthz").json["worker_heartbeat_age"] > 0
    assert app.settings.secret_key not in response.text


def test_healthz_is_503_when_the_database_is_unreachable(make_app, database, tmp_path):
    broken = make_app(DATABASE_URL="mysql://nobody:wrong@127.0.0.1:1/none")
    from tests.conftest import BufferedClient

    response = BufferedClient(broken).get("/healthz")
    assert response.status_code == 503
    assert response.json["status"] == "error" and response.json["database"] == "unreachable"
    assert "wrong" not in response.text and "nobody" not in response.text


def test_every_response_has_a_request_id_and_the_access_line_carries_it(client, caplog):
    logs.setup(client.application.settings, "web", to_file=False)
    with caplog.at_level(logging.INFO, logger="iib.access"):
        first = client.get("/?code=secret-sign-in-code")
        second = client.get("/no-such-page")
    ids = [first.headers["X-Request-Id"], second.headers["X-Request-Id"]]
    assert len(set(ids)) == 2 and all(len(i) == 16 for i in ids)
    lines = [r.getMessage() for r in caplog.records if r.name == "iib.access"]
    assert lines[0].startswith("GET / -> 200") and lines[1].startswith("GET /no-such-page -> 404")
    assert not any("secret-sign-in-code" in line for line in lines)


def test_logs_redact_every_secret_and_go_to_a_rotating_file_in_production(app, tmp_path):
    settings = app.settings
    path = logs.setup(settings, "worker", to_file=True)
    try:
        assert path == settings.var_dir / "log" / "worker.log"
        logging.getLogger("anything").error("calling with key %s and secret %s", settings.secret_key, "fine")
        try:
            raise ValueError(f"boom {settings.secret_key}")
        except ValueError:
            logging.getLogger("anything").exception("failed")
        for handler in logging.getLogger().handlers:
            handler.flush()
        text = path.read_text(encoding="utf-8")
        assert settings.secret_key not in text and text.count("[redacted]") >= 2
        assert "[-] calling with key [redacted] and secret fine" in text
    finally:
        for handler in logging.getLogger().handlers:
            if getattr(handler, "iib", False):
                handler.close()


def test_the_log_file_rolls_over_near_its_limit_and_keeps_every_line(tmp_path):
    path = tmp_path / "web.log"
    handler = logs.RotatingFile(path, maxBytes=20_000, backupCount=2, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.Logger("rolling")
    logger.addHandler(handler)
    try:
        for n in range(800):
            logger.info("line %03d %s", n, "x" * 90)
    finally:
        handler.close()
    files = [path, path.with_name("web.log.1"), path.with_name("web.log.2")]
    assert all(f.exists() for f in files) and not path.with_name("web.log.3").exists()
    assert all(f.stat().st_size < 20_000 for f in files)
    lines = [line for f in reversed(files) for line in f.read_text(encoding="utf-8").splitlines()]
    numbers = [int(line.split()[1]) for line in lines]
    assert numbers == list(range(numbers[0], 800)) and numbers[0] > 0  # the newest kept, in order, none lost
    # Never a rollover for what is not a regular file (the standard handler's rule).
    null = logs.RotatingFile(os.devnull, maxBytes=1, backupCount=2)
    try:
        assert not null.shouldRollover(logging.makeLogRecord({"msg": "x"}))
    finally:
        null.close()


def test_a_private_file_readable_by_others_is_reported(tmp_path):
    private = tmp_path / ".env"
    private.write_text("SECRET_KEY=x\n", encoding="utf-8")
    private.chmod(0o600)
    assert logs.private_file_problem(private) is None
    private.chmod(0o644)
    assert "chmod 600" in logs.private_file_problem(private)
    assert logs.private_file_problem(tmp_path / "absent") is None


def run_passenger_wsgi(settings_file, tmp_path):
    # As Passenger does: load the file by its path, from another working directory.
    script = ("import importlib.util, json\n"
              f"spec = importlib.util.spec_from_file_location('passenger_wsgi', {str(ROOT / 'passenger_wsgi.py')!r})\n"
              "passenger_wsgi = importlib.util.module_from_spec(spec)\n"
              "spec.loader.exec_module(passenger_wsgi)\n"
              "out = []\n"
              "body = passenger_wsgi.application({'REQUEST_METHOD': 'GET', 'PATH_INFO': '/healthz', "
              "'SERVER_NAME': 'x', 'SERVER_PORT': '80', 'wsgi.url_scheme': 'http', 'wsgi.input': None}, "
              "lambda status, headers, exc=None: out.append(status))\n"
              "print(json.dumps([out[0], b''.join(body).decode()]))\n")
    env = {k: v for k, v in os.environ.items() if not k.isupper() or k in ("PATH", "HOME", "LANG")}
    env["IIB_SETTINGS_FILE"] = str(settings_file)
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    return [*json.loads(result.stdout.strip().splitlines()[-1]), result.stderr]


def test_passenger_wsgi_reads_the_private_file_from_anywhere_and_warns_when_others_can_read_it(tmp_path):
    var = tmp_path / "var"
    private = tmp_path / "private.env"
    private.write_text(f"APP_MODE=test\nVAR_DIR={var}\nDATABASE_URL=sqlite:///{tmp_path / 'site.db'}\n",
                       encoding="utf-8")
    private.chmod(0o644)
    subprocess.run([sys.executable, str(ROOT / "cli.py"), "initdb"], env={**os.environ, "APP_MODE": "test",
                   "VAR_DIR": str(var), "DATABASE_URL": f"sqlite:///{tmp_path / 'site.db'}"}, check=True,
                   capture_output=True)
    status, body, log = run_passenger_wsgi(private, tmp_path)
    assert status.startswith("200") and json.loads(body)["status"] == "ok"
    assert f"chmod 600 {private}" in log


def test_passenger_wsgi_answers_503_without_details_when_the_settings_are_wrong(tmp_path):
    private = tmp_path / "private.env"
    private.write_text("APP_MODE=production\nSECRET_KEY=too-short-secret\n", encoding="utf-8")
    status, body, _log = run_passenger_wsgi(private, tmp_path)
    assert status.startswith("503") and "too-short-secret" not in body and "SECRET_KEY" not in body
    logged = (ROOT / "var" / "log" / "web.log").read_text(encoding="utf-8")
    assert "the site cannot start" in logged and "SECRET_KEY is too short" in logged
    assert "too-short-secret" not in logged


def test_a_handler_someone_else_installed_gets_the_redaction_too(app, capsys):
    """Passenger's wsgi-loader.py calls logging.basicConfig before our app loads: its copy must be clean too."""
    import io

    foreign = logging.StreamHandler(io.StringIO())
    logging.getLogger().addHandler(foreign)
    try:
        logs.setup(app.settings, "web", to_file=False)
        logs.setup(app.settings, "web", to_file=False)  # twice: still one redaction filter on it
        logging.getLogger("x").warning("key is %s", app.settings.secret_key)
        text = foreign.stream.getvalue()
        assert app.settings.secret_key not in text and "key is [redacted]" in text
        assert len([f for f in foreign.filters if isinstance(f, logs.RedactFilter)]) == 1
    finally:
        logging.getLogger().removeHandler(foreign)
