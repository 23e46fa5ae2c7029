"""MariaDB stopped and started under a running site: the pages answer 503 with a message meanwhile, and everything
recovers without a hand on it; nothing half-written remains.

The tests run their own MariaDB (tests/outage_mariadb.py: a fresh data directory, a free
port) so that the shared server is never stopped. The site runs under waitress on loopback,
the worker as a thread in the same process, generation goes to the OpenAI stand-in with a
little latency. The database is stopped with SIGTERM (a clean shutdown) while a batch is being
generated, the pages are checked while it is down, then it is started again on the same data
directory and port, and nothing else is done: the pages must answer again, the batch must
finish, and credits, items and files must agree.
"""

from __future__ import annotations

import threading
import time
import uuid

import pytest
import requests

from services import credits, db, sessions, worker
from tests import outage_mariadb
from tests.conftest import make_subscriber, openai_settings, unavailable

pytestmark = pytest.mark.mariadb

OUTAGE_SECONDS = 4  # how long the database stays down (the worker keeps trying meanwhile)
BACK_WITHIN = 10  # seconds the pages may take to answer 200 again once the database is back
FINISHED_WITHIN = 25  # seconds the batch may take to finish once the database is back
PROMPTS = [f"a lighthouse number {n} at dusk" for n in range(1, 11)]


@pytest.fixture(scope="module")
def private_mariadb():
    """A MariaDB server of this module's own (never the shared one), removed afterwards."""
    reason = outage_mariadb.missing()
    if reason:
        unavailable(reason)
    server = outage_mariadb.PrivateMariaDB()
    try:
        server.install()
        server.start()
        yield server
    finally:
        server.destroy()


@pytest.fixture
def db_url(private_mariadb):
    """Overrides conftest's: a new database on the private server (running, whatever the last test left)."""
    if not private_mariadb.running:
        private_mariadb.start()
    return private_mariadb.create_database(f"iib_outage_{uuid.uuid4().hex[:10]}")


class Visitor:
    """A signed-in browser talking to the live server over HTTP (English pages, the session cookie)."""

    def __init__(self, base_url: str, cookie_name: str, session: sessions.Session):
        self.base_url = base_url
        self.http = requests.Session()
        self.headers = {"Cookie": f"{cookie_name}={session.token}; lang=en", "X-CSRF-Token": session.csrf_token}

    def get(self, path: str) -> requests.Response:
        return self.http.get(self.base_url + path, headers=self.headers, allow_redirects=False, timeout=15)

    def post(self, path: str, **kwargs) -> requests.Response:
        return self.http.post(self.base_url + path, headers=self.headers, allow_redirects=False, timeout=15, **kwargs)


def sign_in(base_url, app, conn) -> tuple[Visitor, int]:
    user_id = make_subscriber(conn)
    session = sessions.create(conn, app.settings, int(time.time()), user_id=user_id)
    return Visitor(base_url, sessions.cookie_name(app.settings), session), user_id


def create_batch(visitor: Visitor) -> dict:
    response = visitor.post("/api/batches", json={
        "prompts": "\n".join(PROMPTS), "model": "gpt-image-2", "ratio": "1:1", "format": "png", "quality": "low",
        "request_token": "outage-1"})
    assert response.status_code == 201, response.text
    return response.json()


def assert_unavailable(visitor: Visitor, batch_id: int) -> None:
    """Every page answers 503 with the site's own message (HTML or JSON), never a traceback."""
    for path in ("/", "/account", "/generate", f"/batches/{batch_id}"):
        page = visitor.get(path)
        assert page.status_code == 503, (path, page.status_code, page.text[:300])
        assert page.headers["Content-Type"].startswith("text/html"), (path, page.headers)
        assert "Temporarily unavailable" in page.text and "briefly unavailable" in page.text, (path, page.text[:500])
        assert "Traceback" not in page.text and "pymysql" not in page.text.lower(), path
    for response in (visitor.get(f"/api/batches/{batch_id}"), visitor.post(f"/api/batches/{batch_id}/stop")):
        assert response.status_code == 503, (response.url, response.status_code, response.text[:300])
        error = response.json()["error"]
        assert error["code"] == "unavailable" and "briefly unavailable" in error["message"], response.text
    health = visitor.get("/healthz")
    assert health.status_code == 503, health.text
    assert health.json()["status"] == "error" and health.json()["database"] == "unreachable", health.text


def wait_until_pages_answer(visitor: Visitor, batch_id: int) -> float:
    """Poll until the pages answer 200 again; returns the seconds it took (fails after BACK_WITHIN)."""
    started = time.monotonic()
    paths = ("/", "/account", f"/batches/{batch_id}", f"/api/batches/{batch_id}", "/healthz")
    while True:
        answers = {path: visitor.get(path).status_code for path in paths}
        if set(answers.values()) == {200}:
            return time.monotonic() - started
        assert time.monotonic() - started < BACK_WITHIN, f"not back {BACK_WITHIN} s after the restart: {answers}"
        time.sleep(0.2)


class ThreadDeaths:
    """Record the exceptions that end threads (a worker loop killed by the outage) instead of losing them."""

    def __init__(self):
        self.deaths: list[str] = []

    def __call__(self, args) -> None:
        self.deaths.append(f"{args.thread.name if args.thread else '?'}: {args.exc_type.__name__}: {args.exc_value}")


def test_pages_answer_503_while_the_database_is_down_and_200_once_it_is_back(serve, conn, private_mariadb):
    base_url, app = serve()
    visitor, _user = sign_in(base_url, app, conn)
    batch_id = create_batch(visitor)["batch"]["id"]  # no worker here: its items stay queued
    assert visitor.get("/account").status_code == 200

    private_mariadb.stop()
    assert_unavailable(visitor, batch_id)

    private_mariadb.start()
    wait_until_pages_answer(visitor, batch_id)
    status = visitor.get(f"/api/batches/{batch_id}").json()
    assert status["counts"] == {"queued": 10} and status["batch"]["status"] == "active"  # the refused stop did nothing


def connections_opened(private_mariadb) -> int:
    """How many connections the server has accepted since it started (this query's own included)."""
    admin = private_mariadb.admin()
    try:
        with admin.cursor() as cur:
            cur.execute("SHOW GLOBAL STATUS LIKE 'Connections'")
            return int(cur.fetchone()[1])
    finally:
        admin.close()


@pytest.mark.parametrize("idle_check", ["retried read", "ping after idling"])
def test_one_kept_connection_per_thread_and_it_survives_a_restart_between_two_requests(
        serve, conn, private_mariadb, monkeypatch, idle_check):
    """Requests reuse their thread's connection; after a restart the next request answers 200, not 503.

    Two ways back: a connection used a moment ago finds the loss on its first read and runs it
    again on a new connection; one idle for longer than IDLE_CHECK_SECONDS is pinged first.
    """
    if idle_check == "ping after idling":
        monkeypatch.setattr(db, "IDLE_CHECK_SECONDS", 0.0)
    base_url, app = serve()
    visitor, _user = sign_in(base_url, app, conn)
    batch_id = create_batch(visitor)["batch"]["id"]
    before = connections_opened(private_mariadb)
    for _ in range(40):
        assert visitor.get("/account").status_code == 200
        assert visitor.get(f"/api/batches/{batch_id}").status_code == 200
    opened = connections_opened(private_mariadb) - before - 1  # less the counting query's own
    assert opened <= 4, f"{opened} connections opened for 80 requests on 4 threads"  # one per thread at most

    private_mariadb.stop()
    private_mariadb.start()
    for _ in range(8):  # whichever thread answers: each finds its connection gone, none answers 503
        assert visitor.get("/account").status_code == 200
        assert visitor.post(f"/api/batches/{batch_id}/stop").status_code == 200
        assert visitor.post(f"/api/batches/{batch_id}/resume").status_code == 200
    assert visitor.get(f"/api/batches/{batch_id}").json()["batch"]["status"] == "active"


def test_a_batch_survives_a_database_restart_and_finishes_by_itself(serve, conn, private_mariadb, fake_openai, caplog,
                                                                     monkeypatch):
    deaths = ThreadDeaths()
    monkeypatch.setattr(threading, "excepthook", deaths)
    fake_openai.latency = 0.5
    base_url, app = serve(**openai_settings(fake_openai, WORKER_SLOTS="2"))
    before = set(threading.enumerate())
    stop_worker = worker.start_thread(app.settings, app.database, app.catalog)
    worker_threads = set(threading.enumerate()) - before
    try:
        visitor, user_id = sign_in(base_url, app, conn)
        initial = credits.balance(conn, user_id)
        created = create_batch(visitor)
        batch_id, price = created["batch"]["id"], created["batch"]["credits_per_item"]

        # Stop the database while the batch is half-way: some images done, calls in flight, the rest queued.
        deadline = time.monotonic() + 20
        while True:
            counts = visitor.get(f"/api/batches/{batch_id}").json()["counts"]
            if counts.get("done", 0) >= 2:
                break
            assert time.monotonic() < deadline, f"the batch did not start: {counts}"
            time.sleep(0.05)
        assert counts.get("done", 0) < len(PROMPTS), "the batch finished before the outage: raise the latency"
        down_at = time.monotonic()
        private_mariadb.stop()
        assert_unavailable(visitor, batch_id)
        time.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - down_at)))
        worker_complaints = [r for r in caplog.records
                             if r.name == "services.worker" and "database unavailable" in r.getMessage()]

        # Back: from here on nothing is done but watching.
        private_mariadb.start()
        wait_until_pages_answer(visitor, batch_id)
        deadline = time.monotonic() + FINISHED_WITHIN
        while True:
            status = visitor.get(f"/api/batches/{batch_id}").json()
            worker_alive = any(thread.is_alive() for thread in worker_threads)
            if status["batch"]["status"] == "done" or time.monotonic() > deadline or not worker_alive:
                break
            time.sleep(0.25)
        health = visitor.get("/healthz").json()
    finally:
        stop_worker.set()
        for thread in worker_threads:
            thread.join(timeout=10)

    problems = []
    if deaths.deaths:
        problems.append(f"worker threads died: {deaths.deaths}")
    if not worker_complaints:
        problems.append("the worker never logged 'database unavailable' during the outage")
    if not worker_alive:
        problems.append("no worker thread is left")
    if status["batch"]["status"] != "done" or status["counts"] != {"done": len(PROMPTS)}:
        problems.append(f"the batch did not finish within {FINISHED_WITHIN} s of the restart: "
                        f"{status['batch']['status']} {status['counts']}")
    if health.get("worker_heartbeat_age") is None or health["worker_heartbeat_age"] > 2 * worker.HEARTBEAT_EVERY:
        problems.append(f"no fresh worker heartbeat after the restart: {health}")
    check = app.database.connect()
    try:
        rows = db.batch_items_of(check, batch_id)
        now = int(time.time())
        running = [(r["id"], r["worker"], r["lease_until"] - now) for r in rows if r["status"] == "running"]
        if running:
            problems.append(f"items left running (id, worker, lease seconds left): {running}")
        done = sum(1 for r in rows if r["status"] == "done")
        balance, ledger = credits.balance(check, user_id), db.credit_ledger_sum(check, user_id)
        if balance != initial - done * price or ledger != balance:
            problems.append(f"credits: balance {balance}, ledger sum {ledger}, expected {initial} - {done} x {price}"
                            f" = {initial - done * price}")
        kept = {r["result_path"] for r in rows if r["status"] == "done"}
        results = app.settings.results_dir
        on_disk = {p.relative_to(results).as_posix() for p in results.rglob("*") if p.is_file()} \
            if results.is_dir() else set()
        if on_disk - kept:
            problems.append(f"files no item owns (orphans or half-written): {sorted(on_disk - kept)}")
        if kept - on_disk:
            problems.append(f"done items without their file: {sorted(kept - on_disk)}")
    finally:
        check.close()
    assert not problems, "after the restart:\n- " + "\n- ".join(problems)
