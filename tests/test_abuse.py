"""One subscriber cannot take the site down: bounded workers, O(input) review, body limits, bounded storage, columns.

Each test plays a subscriber who repeats, floods or oversizes something, on both engines, over
real HTTP where the server's own handling is what matters (the app under waitress on loopback).
"""

import datetime
import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

from routes import web
from services import batches, db, names, sessions, worker
from services.config import SETTING_NAMES
from tests.conftest import TEST_CATALOG, make_subscriber, openai_settings, signed_in_client

ROOT = Path(__file__).resolve().parent.parent
FORM = {"prompts": "a red car\na boat\n", "names": "", "style": "watercolor", "model": "gpt-image-2",
        "format": "png", "ratio": "1:1", "quality": "low"}


@pytest.fixture
def studio(make_app, database, fake_openai):
    return make_app(**openai_settings(fake_openai))


def create(client, token, **changes):
    return client.post("/api/batches", json={**FORM, **changes}, headers={"X-CSRF-Token": token})


def session_for(app, conn, user_id) -> tuple[dict, str]:
    """Cookies and CSRF token of a new session for the user, for requests over HTTP."""
    session = sessions.create(conn, app.settings, web.now(), user_id=user_id)
    return {sessions.cookie_name(app.settings): session.token}, session.csrf_token


# --- bounded workers -------------------------------------------------------------------------------

def worker_children() -> list[tuple[int, str]]:
    """(pid, state) of this process's children that are `cli.py worker` processes (zombies included)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[1]) != os.getpid():
            continue
        if fields[0] == "Z" or (b"cli.py" in b" ".join(cmdline) and b"worker" in cmdline):
            found.append((int(entry.name), fields[0]))
    return found


@pytest.fixture
def spawning(serve, fake_openai, monkeypatch, tmp_path, db_url):
    """The site under waitress with WORKER_LAUNCH=spawn; the spawned workers read the same settings from the env."""
    fake_openai.latency = 0.3
    settings = {**openai_settings(fake_openai), "WORKER_LAUNCH": "spawn", "WORKER_PROCESSES": "2"}
    for name in SETTING_NAMES:
        monkeypatch.delenv(name, raising=False)
    base_url, app = serve(**settings)
    env = {**settings, "APP_MODE": "test", "DATABASE_URL": db_url, "VAR_DIR": str(app.settings.var_dir),
           "MODEL_CATALOG": app.settings.model_catalog, "PUBLIC_BASE_URL": base_url}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    yield base_url, app
    for child in list(worker._children):
        child.terminate()
        child.wait(10)


def test_sixty_parallel_kicks_leave_at_most_worker_processes_workers_and_no_zombie(spawning, conn):
    base_url, app = spawning
    user = make_subscriber(conn)
    checked = batches.review(TEST_CATALOG, datetime.date.today(), prompts=[f"p{n}" for n in range(6)], names=[],
                             style="", model_id="gpt-image-2", ratio="1:1", quality="low", image_format="png",
                             separator=", ", max_prompts=200, credits_left=300)
    batch_id, _ = batches.create(conn, TEST_CATALOG, user, checked, "t", web.now())
    db.batch_set_status(conn, batch_id, "paused", "stopped", web.now())
    cookies, token = session_for(app, conn, user)
    gate = threading.Barrier(60)
    answers = []

    def resume():
        gate.wait()
        answers.append(requests.post(f"{base_url}/api/batches/{batch_id}/resume", cookies=cookies,
                                     headers={"X-CSRF-Token": token}, timeout=30).status_code)

    def kick():
        gate.wait()
        worker.kick(app.settings)

    for target in (resume, kick):
        threads = [threading.Thread(target=target) for _ in range(60)]
        for thread in threads:
            thread.start()
        peak = 0
        while any(thread.is_alive() for thread in threads):
            peak = max(peak, len([pid for pid, state in worker_children() if state != "Z"]))
            time.sleep(0.01)
        peak = max(peak, len([pid for pid, state in worker_children() if state != "Z"]))
        assert 1 <= peak <= app.settings.worker_processes, target.__name__
    assert answers == [200] * 60

    deadline = time.monotonic() + 60
    while worker_children() and time.monotonic() < deadline:  # the queue empties, the workers leave
        time.sleep(0.1)
    assert worker_children() == []  # none left running, none left a zombie
    assert [r["status"] for r in db.batch_items_of(conn, batch_id)] == ["done"] * 6


def test_a_cron_worker_finds_every_slot_taken_and_does_nothing(studio, conn, fake_openai):
    user = make_subscriber(conn)
    checked = batches.review(TEST_CATALOG, datetime.date.today(), prompts=["p"], names=[], style="",
                             model_id="gpt-image-2", ratio="1:1", quality="low", image_format="png", separator=", ",
                             max_prompts=200, credits_left=300)
    batch_id, _ = batches.create(conn, TEST_CATALOG, user, checked, "t", web.now())
    env = {k: v for k, v in os.environ.items() if k not in SETTING_NAMES} | {
        "APP_MODE": "test", "DATABASE_URL": studio.settings.database_url, "VAR_DIR": str(studio.settings.var_dir),
        "MODEL_CATALOG": studio.settings.model_catalog, **openai_settings(fake_openai)}
    held = [worker.take_slot(studio.settings) for _ in range(2)]
    assert None not in held and worker.take_slot(studio.settings) is None
    try:
        # A descriptor that is not a slot (stdin) does not count as one either.
        busy = subprocess.run([sys.executable, "cli.py", "worker", "--slot-fd", "0"], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=60)
        assert busy.returncode == 0 and "2 worker process(es) already running" in busy.stdout
        assert db.batch_items_of(conn, batch_id)[0]["status"] == "queued"
    finally:
        os.close(held.pop())
    free = subprocess.run([sys.executable, "cli.py", "worker"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=60)
    os.close(held.pop())
    assert free.returncode == 0 and "1 done" in free.stdout, free.stdout + free.stderr


# --- every request costs O(input) ----------------------------------------------------------------

def test_naming_many_equal_names_is_linear_and_still_unique():
    typed = ["cat", "cat-3", "Cat", None, "cat", "cat-2"]
    got = [n.file_name for n in names.assign(typed, ["a"] * 6, "png")]
    assert got == ["cat.png", "cat-3.png", "Cat-2.png", "004-a.png", "cat-4.png", "cat-2-2.png"]
    # 40,000 equal names: quadratic naming took minutes; the CPU limit kills it long before that.
    script = ("import resource, sys; resource.setrlimit(resource.RLIMIT_CPU, (20, 20)); "
              "from services import names; n = 40000; "
              "got = names.assign(['cat'] * n, ['p'] * n, 'png'); "
              "assert len({g.file_name.casefold() for g in got}) == n; print(got[-1].file_name)")
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "cat-40000.png", done.stderr[-500:]


def test_a_review_past_the_plan_limit_stops_there_and_says_how_many_were_over(studio, conn):
    user = make_subscriber(conn)
    client, token = signed_in_client(studio, conn, user)
    text = "a cat\n" * 12_000
    read = batches.read_prompts(text, 200)
    assert len(read.lines) == 201 and read.total == 12_000
    checked = batches.review(TEST_CATALOG, datetime.date.today(), prompts=read.lines, names=["cat"] * 12_000,
                             style="", model_id="gpt-image-2", ratio="1:1", quality="low", image_format="png",
                             separator=", ", max_prompts=200, credits_left=300, total_prompts=read.total)
    assert checked.items == [] and [e.code for e in checked.errors] == ["too_many_prompts"]
    client.set_cookie("lang", "en")
    response = create(client, token, prompts=text, names="cat\n" * 12_000)
    assert response.status_code == 422
    assert response.json["error"]["message"] == \
        "That is 12000 prompts, 11800 over the limit: a batch takes at most 200."
    page = client.post("/generate/review", data={**FORM, "prompts": text, "csrf_token": token})
    assert page.status_code == 422 and "11800 over the limit" in page.text


def test_each_field_has_a_maximum_with_a_clear_message(studio, conn):
    user = make_subscriber(conn)
    client, token = signed_in_client(studio, conn, user)
    client.set_cookie("lang", "en")
    style = create(client, token, style="x" * (batches.STYLE_MAX_CHARS + 1))
    assert style.status_code == 422 and style.json["error"]["code"] == "style_too_long"
    assert str(batches.STYLE_MAX_CHARS) in style.json["error"]["message"]
    name = create(client, token, names="ok\n" + "n" * (batches.NAME_MAX_CHARS + 1))
    assert name.status_code == 422 and name.json["error"]["message"] == \
        f"Name 2 is {batches.NAME_MAX_CHARS + 1} characters long; a name may have at most {batches.NAME_MAX_CHARS}."
    prompt = create(client, token, prompts="p" * 32_000)
    assert prompt.status_code == 422 and prompt.json["error"]["code"] == "prompt_too_long"
    model = create(client, token, model="m" * 100_000)
    assert model.status_code == 422 and model.json["error"]["code"] == "unknown_model"
    assert len(model.json["error"]["message"]) < 200


# --- bodies are bounded --------------------------------------------------------------------------

def post_raw(base_url: str, path: str, body: bytes, headers: dict) -> int:
    """POST over a plain socket (so nothing is buffered client-side); the status code, or 0 if the server hung up."""
    host, port = base_url.removeprefix("http://").split(":")
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}:{port}", f"Content-Length: {len(body)}", "Connection: close",
             *(f"{k}: {v}" for k, v in headers.items()), "", ""]
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        try:
            sock.sendall("\r\n".join(lines).encode() + body)
        except (BrokenPipeError, ConnectionResetError):
            pass
        reply = b""
        try:
            while b"\r\n" not in reply:
                part = sock.recv(4096)
                if not part:
                    break
                reply += part
        except ConnectionResetError:
            return 0
    return int(reply.split(b" ", 2)[1]) if reply.startswith(b"HTTP/") else 0


def test_every_post_route_refuses_a_body_past_its_limit_before_reading_it(serve, conn):
    base_url, app = serve(STRIPE_SECRET_KEY="sk_test_" + "x" * 24, STRIPE_WEBHOOK_SECRET="whsec_" + "x" * 32)
    user = make_subscriber(conn)
    cookies, token = session_for(app, conn, user)
    cookie = "; ".join(f"{k}={v}" for k, v in cookies.items())
    headers = {"Cookie": cookie, "X-CSRF-Token": token, "Content-Type": "application/x-www-form-urlencoded",
               "Accept": "application/json"}
    posts = [route for route in app.routes if route.method == "POST"]
    assert len(posts) >= 15
    for route in posts:
        path = route.rule.replace("<batch_id:int>", "1").replace("<item_id:int>", "1").replace("<user_id:int>", "1")
        limit = route.config.get("max_body", web.BODY_LIMIT)
        status = post_raw(base_url, path, b"a=" + b"x" * (limit - 1), headers)
        assert status == 413, (path, status)
    assert app.routes and web.WEBHOOK_BODY_LIMIT == 1_048_576
    hook = [r for r in posts if r.rule == "/stripe/webhook"][0]
    assert hook.config["max_body"] == web.WEBHOOK_BODY_LIMIT
    # Just under the limit, the webhook reads the body and answers as ever (the signature does not verify).
    assert post_raw(base_url, "/stripe/webhook", b"{}" + b" " * 1000, {"Stripe-Signature": "t=1,v1=x"}) == 400


def test_a_chunked_body_is_read_at_most_to_its_limit(app, database):
    consumed = []
    chunk = b"10000\r\n" + b"x" * 0x10000 + b"\r\n"
    stream = io.BytesIO(chunk * 48 + b"0\r\n\r\n")  # 3 MB, chunked

    class Counted:
        """The chunked body, counting what is read from it."""

        def read(self, size=-1):
            data = stream.read(size)
            consumed.append(len(data))
            return data

    statuses = []
    environ = {"REQUEST_METHOD": "POST", "PATH_INFO": "/stripe/webhook", "SERVER_NAME": "127.0.0.1",
               "SERVER_PORT": "80", "wsgi.url_scheme": "http", "HTTP_TRANSFER_ENCODING": "chunked",
               "wsgi.input": Counted(), "wsgi.errors": sys.stderr}
    body = b"".join(app.wsgi(environ, lambda status, headers, exc=None: statuses.append(status)))
    assert statuses[0].startswith("413") and body
    assert sum(consumed) < web.WEBHOOK_BODY_LIMIT + 3 * 0x10000


# --- bounded storage -----------------------------------------------------------------------------

def test_at_most_max_open_batches_unfinished_with_a_clear_message(studio, conn):
    user = make_subscriber(conn, balance=300)
    client, token = signed_in_client(studio, conn, user)
    client.set_cookie("lang", "en")
    for n in range(studio.settings.max_open_batches):
        assert create(client, token, request_token=f"t{n}").status_code == 201
    refused = create(client, token, request_token="t-extra")
    assert refused.status_code == 409 and refused.json["error"]["message"] == (
        "You already have 5 unfinished batches. Let one finish, or cancel one, before you start another.")
    page = client.post("/batches", data={**FORM, "csrf_token": token, "request_token": "form-extra"})
    assert page.status_code == 409 and "You already have 5 unfinished batches" in page.text
    first = conn.scalar("SELECT MIN(id) AS i FROM batches WHERE user_id = ?", (user,))
    client.post(f"/api/batches/{first}/cancel", headers={"X-CSRF-Token": token})
    assert create(client, token, request_token="t-after").status_code == 201
    assert conn.scalar("SELECT COUNT(*) AS n FROM batches WHERE user_id = ?", (user,)) == 6


def test_the_style_is_stored_once_per_batch_and_joined_when_generating(studio, conn, fake_openai):
    user = make_subscriber(conn, balance=300)
    client, token = signed_in_client(studio, conn, user)
    style = "in the style of " + "a long careful description " * 140  # about 3,800 characters
    prompts = "\n".join(f"prompt number {n}" for n in range(100))
    sent = len(json.dumps({**FORM, "prompts": prompts, "style": style}).encode())
    created = create(client, token, prompts=prompts, style=style, quality="low")
    assert created.status_code == 201
    batch_id = created.json["batch"]["id"]
    normalised = " ".join(style.split())
    answered = created.json  # the style once, not in every item: the page joins them as the worker does
    assert (answered["batch"]["style"], answered["batch"]["prompt_separator"]) == (normalised, ", ")
    assert answered["items"][0]["prompt"] == "prompt number 0" and "final_prompt" not in answered["items"][0]
    assert len(created.text) < 100 * 200 + 2 * len(normalised)
    stored = conn.scalar("SELECT LENGTH(style) AS n FROM batches WHERE id = ?", (batch_id,)) + conn.scalar(
        "SELECT SUM(LENGTH(prompt) + LENGTH(file_name)) AS n FROM batch_items WHERE batch_id = ?", (batch_id,))
    assert stored / sent <= 2  # the style once (stored in every item it was 67 times what was sent)
    assert "final_prompt" not in db.batch_items_of(conn, batch_id)[0]
    worker.run(studio.settings, studio.database, studio.catalog, threads=2)
    assert sorted(r["prompt"] for r in fake_openai.requests) == sorted(
        f"prompt number {n}, {normalised}" for n in range(100))


def finished_batch(conn, user, updated_at, results_dir: Path | None = None) -> int:
    checked = batches.review(TEST_CATALOG, datetime.date.today(), prompts=["p1", "p2"], names=[], style="s",
                             model_id="gpt-image-2", ratio="1:1", quality="low", image_format="png", separator=", ",
                             max_prompts=200, credits_left=300)
    batch_id, _ = batches.create(conn, TEST_CATALOG, user, checked, f"t{time.monotonic_ns()}", updated_at)
    items = db.batch_items_of(conn, batch_id)
    conn.execute("UPDATE batch_items SET status = 'cancelled' WHERE batch_id = ?", (batch_id,))
    if results_dir is not None:  # an image nobody collected, still on disk
        path = results_dir / f"{batch_id}/{items[0]['id']}-1.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"png")
        conn.execute("UPDATE batch_items SET status = 'done', result_path = ? WHERE id = ?",
                     (f"{batch_id}/{items[0]['id']}-1.png", items[0]["id"]))
    conn.execute("UPDATE batches SET status = 'done', updated_at = ? WHERE id = ?", (updated_at, batch_id))
    return batch_id


def test_cleanup_deletes_finished_batches_past_the_history_days(studio, conn):
    user = make_subscriber(conn)
    now = web.now()
    old = finished_batch(conn, user, now - 91 * 86400, studio.settings.results_dir)
    recent = finished_batch(conn, user, now - 89 * 86400)
    checked = batches.review(TEST_CATALOG, datetime.date.today(), prompts=["p"], names=[], style="",
                             model_id="gpt-image-2", ratio="1:1", quality="low", image_format="png", separator=", ",
                             max_prompts=200, credits_left=300)
    running, _ = batches.create(conn, TEST_CATALOG, user, checked, "running", now - 200 * 86400)
    env = {k: v for k, v in os.environ.items() if k not in SETTING_NAMES} | {
        "APP_MODE": "test", "DATABASE_URL": studio.settings.database_url, "VAR_DIR": str(studio.settings.var_dir)}
    done = subprocess.run([sys.executable, "cli.py", "cleanup"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0 and "1 finished batches past 90 days deleted" in done.stdout, done.stdout
    assert db.batch_get(conn, old) is None and db.batch_items_of(conn, old) == []
    assert not (studio.settings.results_dir / str(old)).exists()
    assert db.batch_get(conn, recent) is not None and db.batch_get(conn, running) is not None


def test_the_account_page_deletes_the_finished_history_and_nothing_else(studio, conn):
    user, other = make_subscriber(conn), make_subscriber(conn, "Ben", "ben@example.com")
    client, token = signed_in_client(studio, conn, user)
    client.set_cookie("lang", "en")
    mine = [finished_batch(conn, user, web.now()) for _ in range(2)]
    theirs = finished_batch(conn, other, web.now())
    assert create(client, token).status_code == 201  # an unfinished one stays
    page = client.get("/account")
    assert "Delete my 2 finished batches from this site now" in page.text
    assert "delete a finished batch 90 days after it ends" in page.text
    unticked = client.post("/account/history/delete", data={"csrf_token": token})
    assert unticked.status_code == 303 and all(db.batch_get(conn, b) for b in mine)
    deleted = client.post("/account/history/delete", data={"csrf_token": token, "confirm": "1"})
    assert deleted.status_code == 303 and "history_deleted=2" in deleted.headers["Location"]
    assert "2 finished batches deleted." in client.get("/account?history_deleted=2").text
    assert [db.batch_get(conn, b) for b in mine] == [None, None] and db.batch_get(conn, theirs) is not None
    assert conn.scalar("SELECT COUNT(*) AS n FROM batches WHERE user_id = ?", (user,)) == 1
    assert "90 days after it ends" in client.get("/privacy").text


# --- the columns hold what the forms accept -------------------------------------------------------

def test_the_longest_accepted_prompt_style_and_name_in_four_byte_characters_are_stored(studio, conn):
    user = make_subscriber(conn)
    client, token = signed_in_client(studio, conn, user)
    style = "🎨" * batches.STYLE_MAX_CHARS
    prompt = "😀" * (32_000 - len(", ") - len(style))
    name = "🦊" * batches.NAME_MAX_CHARS
    created = create(client, token, prompts=prompt, style=style, names=name)
    assert created.status_code == 201, created.text
    item = created.json["items"][0]
    assert item["prompt"] == prompt and created.json["batch"]["style"] == style
    assert item["file_name"] == "🦊" * names.MAX_STEM + ".png"
    stored = db.batch_get(conn, created.json["batch"]["id"])
    assert stored["style"] == style
    # Three-byte characters through the no-JavaScript form too.
    page = client.post("/batches", data={**FORM, "prompts": "語" * 27_000, "style": "風" * 4000, "names": "名" * 200,
                                         "csrf_token": token, "request_token": "form"})
    assert page.status_code == 303, page.text[:500]
    batch_id = int(page.headers["Location"].rsplit("/", 1)[1])
    assert db.batch_items_of(conn, batch_id)[0]["prompt"] == "語" * 27_000


def test_an_existing_database_keeps_each_batchs_separator_through_the_migration(db_url, tmp_path):
    database = db.Database(db_url)
    old = Path(__file__).resolve().parent / "schemas" / "v5" / db.SCHEMA_FILES[database.engine].name
    db.initdb(database, migrations_dir=tmp_path / "none", schema_file=old)
    conn = database.connect()
    try:
        user = db.user_insert(conn, "v5", "v5@example.com", 1)
        for style, separator in (("oil", " | "), ("", ", ")):
            batch = conn.insert(
                "INSERT INTO batches (user_id, request_token, status, model, ratio, quality, image_format, width, "
                "height, style, item_count, credits_per_item, created_at, updated_at) "
                "VALUES (?, ?, 'active', 'gpt-image-2', '1:1', 'low', 'png', 1024, 1024, ?, 1, 1, 1, 1)",
                (user, style or "none", style))
            conn.execute("INSERT INTO batch_items (batch_id, position, prompt, final_prompt, file_name, status, "
                         "created_at) VALUES (?, 1, 'ñandú 😀', ?, 'a.png', 'queued', 1)",
                         (batch, f"ñandú 😀{separator}{style}" if style else "ñandú 😀"))
    finally:
        conn.close()
    db.initdb(database)
    conn = database.connect()
    try:
        rows = conn.all("SELECT style, prompt_separator FROM batches ORDER BY id")
        assert [(r["style"], r["prompt_separator"]) for r in rows] == [("oil", " | "), ("", ", ")]
        assert "final_prompt" not in conn.one("SELECT * FROM batch_items LIMIT 1")
    finally:
        conn.close()

