"""The worker against the OpenAI stand-in over real HTTP: the fault matrix with credits checked after each,
two worker processes, a killed worker, cancel, fairness and the limits, on SQLite and MariaDB."""

import datetime
import io
import os
import signal
import subprocess
import sys
import time

import pytest
from PIL import Image

from services import batches, catalog, credits, db, worker
from services.config import SETTING_NAMES
from tests.conftest import ROOT, TEST_CATALOG, make_subscriber, openai_settings

CATALOG = TEST_CATALOG


@pytest.fixture
def studio(make_app, database, fake_openai):
    """An app whose generation goes to the stand-in."""
    return make_app(**openai_settings(fake_openai))


def new_batch(app, conn, user_id, prompts, *, model="gpt-image-2", ratio="16:9", image_format="jpeg",
              quality="low", names=()):
    checked = batches.review(CATALOG, datetime.date.today(), prompts=list(prompts), names=list(names), style="",
                             model_id=model, ratio=ratio, quality=quality, image_format=image_format,
                             separator=", ", max_prompts=200, credits_left=credits.balance(conn, user_id))
    assert checked.ok, checked.errors
    batch_id, _ = batches.create(conn, CATALOG, user_id, checked, "", int(time.time()))
    return batch_id


def work(app, threads=2, **options):
    return worker.run(app.settings, app.database, app.catalog, threads=threads, **options)


def items(conn, batch_id):
    return db.batch_items_of(conn, batch_id)


def assert_ledger_consistent(conn, user_id):
    assert credits.balance(conn, user_id) >= 0
    assert db.credit_ledger_sum(conn, user_id) == credits.balance(conn, user_id)


def test_a_batch_is_generated_with_exact_sizes_names_and_credits(studio, conn, fake_openai):
    user = make_subscriber(conn)
    batch_id = new_batch(studio, conn, user, ["a red car", "a boat", "a lighthouse"], names=["car", "boat"])
    stats = work(studio)
    assert stats == {"done": 3}
    rows = items(conn, batch_id)
    assert [r["status"] for r in rows] == ["done"] * 3
    assert [r["file_name"] for r in rows] == ["car.jpg", "boat.jpg", "003-a-lighthouse.jpg"]
    for row in rows:
        with Image.open(io.BytesIO((studio.settings.results_dir / row["result_path"]).read_bytes())) as image:
            assert image.size == (1536, 864) and image.format == "JPEG"
        assert (row["result_width"], row["result_height"]) == (1536, 864) and row["request_id"]
    assert credits.balance(conn, user) == 300 - 3 * 2
    assert_ledger_consistent(conn, user)
    assert db.batch_get(conn, batch_id)["status"] == "done"
    sent = fake_openai.requests
    assert [r["size"] for r in sent] == ["1536x864"] * 3 and {r["n"] for r in sent} == {1}
    assert all(len(r["user"]) == 32 and str(user) != r["user"] for r in sent)


@pytest.mark.parametrize("model, ratio, requested", [("gpt-image-1-mini", "9:16", "1024x1536"),
                                                     ("gpt-image-1.5", "16:9", "1536x1024"),
                                                     ("gpt-image-2", "9:16", "864x1536")])
def test_models_without_the_exact_size_are_cropped(studio, conn, fake_openai, model, ratio, requested):
    user = make_subscriber(conn)
    batch_id = new_batch(studio, conn, user, ["p"], model=model, ratio=ratio, image_format="png")
    work(studio, threads=1)
    row = items(conn, batch_id)[0]
    assert fake_openai.requests[0]["size"] == requested
    with Image.open(studio.settings.results_dir / row["result_path"]) as image:
        assert image.size == CATALOG.get(model).size("1K", ratio).output and image.format == "PNG"


# --- the fault matrix: each fault once (or until the attempts run out), credits checked after each ---------------

RECOVERS = ["rate_limit", "server_error", "unavailable", "bad_gateway", "malformed", "empty", "bad_base64", "hang"]


@pytest.mark.parametrize("fault", RECOVERS)
def test_a_passing_fault_is_retried_and_charged_once(studio, conn, fake_openai, fault):
    fake_openai.hang_seconds = 4  # longer than the test's 2 s read timeout
    fake_openai.fail_next(fault, count=1, **({"retry_after_ms": 50} if fault == "rate_limit" else {}))
    user = make_subscriber(conn)
    batch_id = new_batch(studio, conn, user, ["one prompt"])
    work(studio, threads=1)
    row = items(conn, batch_id)[0]
    assert row["status"] == "done", row
    assert len(fake_openai.requests) == 2
    assert credits.balance(conn, user) == 298
    assert conn.scalar("SELECT COUNT(*) AS n FROM credit_ledger WHERE reason = 'reserve'") == 1
    assert row["attempts"] == (1 if fault == "rate_limit" else 2)  # a 429 does not count against the item
    assert_ledger_consistent(conn, user)


@pytest.mark.parametrize("fault, code", [("server_error", "upstream"), ("hang", "timeout")])
def test_a_lasting_fault_fails_after_three_attempts_and_refunds(studio, conn, fake_openai, fault, code):
    fake_openai.hang_seconds = 4
    fake_openai.fail_next(fault, count=3)
    user = make_subscriber(conn)
    batch_id = new_batch(studio, conn, user, ["one prompt"])
    work(studio, threads=1)
    row = items(conn, batch_id)[0]
    assert (row["status"], row["error_code"], row["attempts"]) == ("failed", code, 3)
    assert len(fake_openai.requests) == 3
    assert credits.balance(conn, user) == 300
    assert [r["reason"] for r in credits.recent(conn, user, 0)][:2] == ["refund", "reserve"]
    assert_ledger_consistent(conn, user)


def test_a_refused_prompt_fails_at_once_and_refunds(studio, conn, fake_openai):
    user = make_subscriber(conn)
    batch_id = new_batch(studio, conn, user, [f"a {fake_openai.moderation_marker} thing", "a fine thing"])
    work(studio, threads=1)
    refused, fine = items(conn, batch_id)
    assert (refused["status"], refused["error_code"]) == ("failed", "refused")
    assert "safety system" in refused["error_message"]
    assert fine["status"] == "done"
    assert len(fake_openai.requests) == 2  # no retry for the refused one
    assert credits.balance(conn, user) == 298
    assert_ledger_consistent(conn, user)


def test_insufficient_quota_pauses_all_work_and_refunds(studio, conn, fake_openai, caplog):
    fake_openai.fail_next("insufficient_quota", count=1)
    user = make_subscriber(conn)
    batch_id = new_batch(studio, conn, user, ["first", "second"])
    stats = work(studio, threads=1, max_seconds=1.5)
    assert stats == {"paused": 1}
    assert "OPERATOR" in caplog.text
    assert [r["status"] for r in items(conn, batch_id)] == ["queued", "queued"]
    assert credits.balance(conn, user) == 300
    assert_ledger_consistent(conn, user)
    assert worker.paused(conn, int(time.time() * 1000))["reason"] == "quota"
    db.worker_state_set(conn, "pause", "{}", int(time.time()))  # the operator topped up the account
    work(studio, threads=1)
    assert [r["status"] for r in items(conn, batch_id)] == ["done", "done"]
    assert credits.balance(conn, user) == 296
    assert_ledger_consistent(conn, user)


def test_running_out_of_credits_pauses_the_batch_and_the_item_waits_unfailed(studio, conn):
    user = make_subscriber(conn, balance=4)
    batch_id = new_batch(studio, conn, user, ["a", "b"], quality="low")  # 2 credits each: the review allows it
    credits.reserve(conn, user, 3, "elsewhere", int(time.time()))  # then credits go elsewhere: 1 left
    work(studio, threads=1)
    first, second = items(conn, batch_id)
    assert (first["status"], first["error_code"], first["attempts"]) == ("queued", None, 0)  # waits, not failed
    assert second["status"] == "queued"
    batch = db.batch_get(conn, batch_id)
    assert (batch["status"], batch["pause_reason"]) == ("paused", "no_credits")
    assert credits.balance(conn, user) == 1
    assert_ledger_consistent(conn, user)


def test_a_retired_model_fails_queued_items_without_charging(studio, conn, tmp_path):
    import json

    user = make_subscriber(conn)
    batch_id = new_batch(studio, conn, user, ["p"], model="gpt-image-1.5")
    data = json.loads(catalog.DEFAULT_FILE.read_text(encoding="utf-8"))
    data["models"][1]["retires"] = "2000-01-01"
    (tmp_path / "retired.json").write_text(json.dumps(data), encoding="utf-8")
    worker.run(studio.settings, studio.database, catalog.load(tmp_path / "retired.json"), threads=1)
    row = items(conn, batch_id)[0]
    assert (row["status"], row["error_code"]) == ("failed", "model_retired")
    assert credits.balance(conn, user) == 300


# --- several workers, a killed one, cancel ------------------------------------------------------------------

def worker_env(app, fake):
    env = {k: v for k, v in os.environ.items() if k not in SETTING_NAMES}
    env.update({"APP_MODE": "test", "DATABASE_URL": app.settings.database_url, "VAR_DIR": str(app.settings.var_dir),
                **openai_settings(fake), "MODEL_CATALOG": app.settings.model_catalog, "WORKER_SLOTS": "4",
                "IMAGES_PER_MINUTE": "6000"})
    return env


def test_two_worker_processes_share_fifty_items_without_doing_one_twice(studio, conn, fake_openai):
    fake_openai.latency = 0.05
    user = make_subscriber(conn)
    batch_id = new_batch(studio, conn, user, [f"prompt {n}" for n in range(50)], image_format="png", ratio="1:1")
    processes = [subprocess.Popen([sys.executable, "cli.py", "worker", "--max-seconds", "120"], cwd=ROOT,
                                  env=worker_env(studio, fake_openai), stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = []
    for process in processes:
        out, err = process.communicate(timeout=180)
        assert process.returncode == 0, err
        outputs.append(out)
    rows = items(conn, batch_id)
    assert [r["status"] for r in rows] == ["done"] * 50
    prompts = [r["prompt"] for r in fake_openai.requests]
    assert sorted(prompts) == sorted({r["prompt"] for r in rows}) and len(prompts) == 50
    assert all("done" in out for out in outputs), outputs  # both processes took a share
    assert fake_openai.max_in_flight <= 4
    assert credits.balance(conn, user) == 300 - 50 * 2
    assert conn.scalar("SELECT COUNT(*) AS n FROM credit_ledger WHERE reason = 'reserve'") == 50
    assert_ledger_consistent(conn, user)


def test_an_item_of_a_killed_worker_is_recovered_and_charged_once(studio, conn, fake_openai):
    fake_openai.latency = 30
    user = make_subscriber(conn)
    batch_id = new_batch(studio, conn, user, ["slow one"])
    env = worker_env(studio, fake_openai) | {"OPENAI_READ_TIMEOUT": "60"}
    process = subprocess.Popen([sys.executable, "cli.py", "worker"], cwd=ROOT, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while fake_openai.in_flight == 0:
            assert time.monotonic() < deadline, "the worker never called the API"
            time.sleep(0.05)
        assert items(conn, batch_id)[0]["status"] == "running"
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
    fake_openai.latency = 0
    assert work(studio, threads=1) == {}  # the lease has not run out: nobody may take the item yet
    conn.execute("UPDATE batch_items SET lease_until = ?", (int(time.time()) - 1,))  # as if it had
    assert work(studio, threads=1) == {"done": 1}
    row = items(conn, batch_id)[0]
    assert row["status"] == "done" and row["attempts"] == 2
    assert credits.balance(conn, user) == 298
    assert conn.scalar("SELECT COUNT(*) AS n FROM credit_ledger WHERE reason = 'reserve'") == 1
    assert_ledger_consistent(conn, user)


def test_cancel_stops_queued_items_and_refunds_any_that_held_credits(studio, conn, fake_openai):
    user = make_subscriber(conn)
    batch_id = new_batch(studio, conn, user, ["a", "b", "c"])
    fake_openai.fail_next("rate_limit", count=1, retry_after_ms=60_000)  # the first item waits a minute, charged
    work(studio, threads=1, max_seconds=1)
    assert credits.balance(conn, user) == 298
    cancelled = batches.cancel(conn, user, batch_id, int(time.time()))
    assert cancelled == 3
    assert {r["status"] for r in items(conn, batch_id)} == {"cancelled"}
    assert credits.balance(conn, user) == 300
    assert_ledger_consistent(conn, user)
    assert db.batch_get(conn, batch_id)["status"] == "done"
    assert work(studio, threads=1) == {}


def test_slots_are_shared_fairly_between_subscribers(make_app, database, conn, fake_openai):
    app = make_app(**openai_settings(fake_openai, WORKER_SLOTS="2", IMAGES_PER_MINUTE="6000"))
    fake_openai.latency = 0.1
    ana, ben = make_subscriber(conn, "Ana", "a@example.com"), make_subscriber(conn, "Ben", "b@example.com")
    first = new_batch(app, conn, ana, [f"ana {n}" for n in range(6)])
    new_batch(app, conn, ben, [f"ben {n}" for n in range(6)])
    work(app, threads=2)
    order = [r["prompt"].split()[0] for r in fake_openai.requests]
    assert sorted(order) == ["ana"] * 6 + ["ben"] * 6
    # Two slots, two subscribers: every pair of starts serves both (Ana's earlier batch does not go first in full).
    assert all(sorted(order[i:i + 2]) == ["ana", "ben"] for i in range(0, 12, 2)), order
    assert fake_openai.max_in_flight <= 2
    assert [r["position"] for r in items(conn, first)] == list(range(1, 7))


def test_a_lone_subscriber_uses_every_slot(make_app, database, conn, fake_openai):
    app = make_app(**openai_settings(fake_openai, WORKER_SLOTS="4", IMAGES_PER_MINUTE="6000"))
    fake_openai.latency = 0.2
    user = make_subscriber(conn)
    new_batch(app, conn, user, [f"p {n}" for n in range(8)])
    work(app, threads=4)
    assert fake_openai.max_in_flight == 4  # in parallel, not one after another


def test_the_images_per_minute_budget_is_kept(make_app, database, conn, fake_openai):
    app = make_app(**openai_settings(fake_openai, WORKER_SLOTS="4", IMAGES_PER_MINUTE="120"))
    user = make_subscriber(conn)
    new_batch(app, conn, user, [f"p {n}" for n in range(5)])
    started = time.monotonic()
    work(app, threads=4)
    elapsed = time.monotonic() - started
    assert elapsed >= 4 * 0.5 * 0.9  # 120 a minute: one start every 0.5 s
    assert fake_openai.count_by_status.get(429, 0) == 0


def test_a_429_lowers_the_pace_for_every_worker(studio, conn, fake_openai):
    user = make_subscriber(conn)
    new_batch(studio, conn, user, ["a", "b"])
    fake_openai.fail_next("rate_limit", count=1, retry_after_ms=300)
    work(studio, threads=2)
    pace = worker._load_pace(conn, studio.settings)
    assert pace.ipm < studio.settings.images_per_minute * 1.0 or pace.cooldown_until_ms > 0
    assert fake_openai.count_by_status.get(429) == 1


def test_cleanup_expires_old_results_and_deletes_orphans(studio, conn, fake_openai):
    user = make_subscriber(conn)
    batch_id = new_batch(studio, conn, user, ["a", "b"])
    work(studio, threads=1)
    old = items(conn, batch_id)[0]
    conn.execute("UPDATE batch_items SET finished_at = ? WHERE id = ?", (int(time.time()) - 8 * 86400, old["id"]))
    orphan = studio.settings.results_dir / "999" / "1-1.jpg"
    orphan.parent.mkdir(parents=True, exist_ok=True)
    orphan.write_bytes(b"x")
    os.utime(orphan, (time.time() - 3600, time.time() - 3600))
    expired, orphans, leases = worker.cleanup(conn, studio.settings, int(time.time()))
    assert (expired, orphans, leases) == (1, 1, 0)
    assert items(conn, batch_id)[0]["status"] == "expired" and items(conn, batch_id)[1]["status"] == "done"
    assert not (studio.settings.results_dir / old["result_path"]).exists() and not orphan.exists()
    assert (studio.settings.results_dir / items(conn, batch_id)[1]["result_path"]).exists()
    assert worker.cleanup(conn, studio.settings, int(time.time())) == (0, 0, 0)


# --- the command line: models-check and two cleanups at once ---------------------------------------------------

def test_models_check_names_the_models_the_key_lacks_and_the_retirements(studio, fake_openai):
    fake_openai.models = ["gpt-image-2", "gpt-image-1.5"]
    env = worker_env(studio, fake_openai) | {"MODEL_CATALOG": str(catalog.DEFAULT_FILE)}  # the real dates
    result = subprocess.run([sys.executable, "cli.py", "models-check"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1, result.stderr
    lines = result.stdout.splitlines()
    assert "models-check: gpt-image-2: ok" in lines
    assert any(line.startswith("models-check: gpt-image-1-mini: NOT available to this key") for line in lines)
    assert any("gpt-image-1.5: retire" in line and "2026-12-01" in line for line in lines), lines
    wrong = subprocess.run([sys.executable, "cli.py", "models-check"], cwd=ROOT, capture_output=True, text=True,
                           env=worker_env(studio, fake_openai) | {"OPENAI_API_KEY": "sk-wrong-secret-key"}, timeout=60)
    assert wrong.returncode == 3 and "cannot list the models (auth" in wrong.stderr
    assert "sk-wrong-secret-key" not in wrong.stderr + wrong.stdout and "Traceback" not in wrong.stderr


def test_two_cleanups_at_once_expire_each_image_once(studio, conn, fake_openai):
    user = make_subscriber(conn)
    batch_id = new_batch(studio, conn, user, ["a", "b", "c"])
    work(studio, threads=2)
    conn.execute("UPDATE batch_items SET finished_at = ?", (int(time.time()) - 8 * 86400,))
    env = worker_env(studio, fake_openai)
    runs = [subprocess.Popen([sys.executable, "cli.py", "cleanup"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [run.communicate(timeout=60) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], outputs
    expired = [int(out.split(" uncollected images expired")[0].rsplit(" ", 1)[-1]) for out, _ in outputs]
    assert sum(expired) == 3, outputs
    assert {r["status"] for r in items(conn, batch_id)} == {"expired"}
    assert not any(studio.settings.results_dir.rglob("*.jpg"))


def test_a_used_up_window_cools_down_from_the_calls_start_not_its_end(studio, conn):
    now_ms = int(time.time() * 1000)
    headers = {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "500ms"}
    worker._on_success(conn, studio.settings, headers, now_ms - 2000, now_ms)  # the window moved on mid-call
    assert worker._load_pace(conn, studio.settings).cooldown_until_ms == 0
    worker._on_success(conn, studio.settings, headers | {"x-ratelimit-reset-requests": "6s"}, now_ms - 2000, now_ms)
    assert worker._load_pace(conn, studio.settings).cooldown_until_ms == now_ms + 4000


def test_a_claim_whose_answer_was_lost_with_the_database_is_queued_again_when_it_is_back(studio, conn, monkeypatch):
    """The claim's COMMIT reached the database, then the connection died before its answer came back (seen in the
    MariaDB restart test): the item is `running` under the thread's name while the thread holds nothing. When the
    database is back the thread queues it again, instead of leaving it until its lease runs out."""
    user = make_subscriber(conn)
    batch_id = new_batch(studio, conn, user, ["a lighthouse"])
    real_claim, lost = worker.claim, []

    def claim_then_lose_the_answer(connection, settings, name, now_ms):
        item, wait = real_claim(connection, settings, name, now_ms)
        if item is not None and not lost:
            lost.append((item["id"], name))
            raise db.DatabaseUnavailable("lost the database connection: Lost connection to MySQL server during query")
        return item, wait

    monkeypatch.setattr(worker, "claim", claim_then_lose_the_answer)
    started = time.monotonic()
    stats = work(studio, threads=1, max_seconds=30)
    assert lost and stats == {"done": 1}
    row = items(conn, batch_id)[0]
    assert row["status"] == "done" and row["charge"] == 1 and row["attempts"] == 2  # the lost claim used one up
    assert time.monotonic() - started < worker.LEASE_EXTRA  # not freed by its lease running out
    assert credits.balance(conn, user) == 300 - 2
    assert_ledger_consistent(conn, user)


# --- pacing from the rate-limit headers, one cut per Retry-After window -------------------------------------------

def paced_app(make_app, fake_openai, budget="100"):
    """An app whose IMAGES_PER_MINUTE makes the pace's arithmetic easy to read."""
    return make_app(**openai_settings(fake_openai, IMAGES_PER_MINUTE=budget))


def test_429s_within_one_retry_after_window_lower_the_pace_once(make_app, database, conn, fake_openai):
    app = paced_app(make_app, fake_openai)
    now_ms = int(time.time() * 1000)
    for n in range(12):  # twelve calls in flight at once, all refused within the first one's 20 s
        worker._on_rate_limit(conn, app.settings, 20.0 if n != 5 else 25.0, now_ms + n * 100)
    pace = worker._load_pace(conn, app.settings)
    assert pace.ipm == pytest.approx(100 * 0.7)  # once, not 100 x 0.7 ** 12
    assert pace.cooldown_until_ms == pace.cut_until_ms == now_ms + 500 + 25_000  # the longest Retry-After
    worker._on_rate_limit(conn, app.settings, 20.0, now_ms + 500 + 25_000)  # a 429 after that window is news
    assert worker._load_pace(conn, app.settings).ipm == pytest.approx(100 * 0.7 * 0.7)


def test_the_pace_follows_a_lower_limit_from_the_headers(make_app, database, conn, fake_openai):
    app = paced_app(make_app, fake_openai)
    user = make_subscriber(conn)
    new_batch(app, conn, user, ["a", "b"])
    now_ms = int(time.time() * 1000)
    headers = {"x-ratelimit-limit-requests": "40", "x-ratelimit-remaining-requests": "39",
               "x-ratelimit-reset-requests": "1.5s"}
    worker._on_success(conn, app.settings, headers, now_ms - 1000, now_ms)
    pace = worker._load_pace(conn, app.settings)
    assert (pace.limit_ipm, pace.ipm) == (40, 40)
    assert worker._spacing_ms(pace, now_ms) == 1500 + worker.PACE_MARGIN_MS
    # Few requests left for the window: they are spread over it (2 in 20 s), older calls' headers change nothing.
    worker._on_success(conn, app.settings, headers | {"x-ratelimit-remaining-requests": "2",
                                                      "x-ratelimit-reset-requests": "20s"}, now_ms, now_ms)
    worker._on_success(conn, app.settings, headers, now_ms - 500, now_ms)
    item, wait = worker.claim(conn, app.settings, "w-1", now_ms)
    assert item is not None and wait == 0.0
    assert worker.claim(conn, app.settings, "w-1", now_ms) == (None, (10_000 + worker.PACE_MARGIN_MS) / 1000)
    assert worker._spacing_ms(worker._load_pace(conn, app.settings), now_ms + 20_000) == 1500 + worker.PACE_MARGIN_MS
    # A limit above IMAGES_PER_MINUTE is stored, but the pace never climbs past the budget.
    for _ in range(10):
        worker._on_success(conn, app.settings, headers | {"x-ratelimit-limit-requests": "5000"}, now_ms, now_ms)
    pace = worker._load_pace(conn, app.settings)
    assert (pace.limit_ipm, pace.ipm) == (5000, 100)


def test_the_pace_climbs_back_with_successes(make_app, database, conn, fake_openai):
    app = paced_app(make_app, fake_openai)
    now_ms = int(time.time() * 1000)
    worker._on_rate_limit(conn, app.settings, 0.05, now_ms)
    worker._on_rate_limit(conn, app.settings, 0.05, now_ms + 100)  # a later window: a second cut
    climbed = [worker._load_pace(conn, app.settings).ipm]
    for n in range(4):
        worker._on_success(conn, app.settings, {}, now_ms + 200 + n, now_ms + 200 + n)
        climbed.append(worker._load_pace(conn, app.settings).ipm)
    assert climbed == pytest.approx([49, 59, 69, 79, 89])  # 10 % of the budget a success
    for n in range(3):
        worker._on_success(conn, app.settings, {}, now_ms + 300 + n, now_ms + 300 + n)
    assert worker._load_pace(conn, app.settings).ipm == 100  # up to the budget, not past it
    worker._on_success(conn, app.settings, {"x-ratelimit-limit-requests": "40"}, now_ms + 400, now_ms + 400)
    worker._on_rate_limit(conn, app.settings, 0.05, now_ms + 500)
    worker._on_success(conn, app.settings, {}, now_ms + 600, now_ms + 600)
    assert worker._load_pace(conn, app.settings).ipm == pytest.approx(40 * 0.7 + 4)  # 10 % of the header's limit


def test_the_stand_in_s_headers_set_the_pace_and_it_climbs_back_after_a_429(studio, conn, fake_openai):
    fake_openai.images_per_minute = 600  # the account's limit, far under the app's IMAGES_PER_MINUTE of 6000
    user = make_subscriber(conn)
    new_batch(studio, conn, user, ["first"])
    assert work(studio, threads=1) == {"done": 1}
    pace = worker._load_pace(conn, studio.settings)
    assert (pace.limit_ipm, pace.ipm) == (600, 600)
    fake_openai.fail_next("rate_limit", count=1, retry_after_ms=50)
    batch_id = new_batch(studio, conn, user, ["second", "third"])
    assert work(studio, threads=1) == {"retry": 1, "done": 2}
    assert [r["status"] for r in items(conn, batch_id)] == ["done", "done"]
    assert fake_openai.count_by_status.get(429) == 1
    assert worker._load_pace(conn, studio.settings).ipm == pytest.approx(600 * 0.7 + 2 * 60)  # cut once, two steps up


# --- a model OpenAI refuses as set up: the model pauses, not each item -------------------------------------------

REFUSED_MODEL = "gpt-image-2.5-flare"


def refusing(kind, fake_openai, monkeypatch):
    """Make the upstream refuse REFUSED_MODEL as `kind` does; returns (the worker's catalogue, calls per model, fix)."""
    import copy
    import json

    from services import openai_images
    from tests.conftest import UNRETIRED_CATALOG_DATA

    broken = {"on": True}
    calls: dict[str, int] = {}
    worker_catalog = CATALOG
    if kind == "size":  # the catalogue asks for a size the model refuses: a 400 with param size
        data = copy.deepcopy(UNRETIRED_CATALOG_DATA)
        entry = next(m for m in data["models"] if m["id"] == REFUSED_MODEL)
        entry["sizes"]["1K"]["16:9"] = {"request": "1544x872", "output": "1536x864"}  # 1544 is no multiple of 16
        worker_catalog = catalog.parse(json.loads(json.dumps(data)), "a wrong catalogue")
    elif kind == "unserved":  # the key cannot use the model: the stand-in's 400 with param model
        fake_openai.models = [m for m in fake_openai.models if m != REFUSED_MODEL]
    real = openai_images.generate

    def generate(*args, **kwargs):
        calls[kwargs["model"]] = calls.get(kwargs["model"], 0) + 1
        if kind == "model_not_found" and broken["on"] and kwargs["model"] == REFUSED_MODEL:
            raise openai_images.ImageAPIError(
                "invalid", f"The model `{REFUSED_MODEL}` does not exist or you do not have access to it.", status=404,
                error_type="invalid_request_error", code="model_not_found", request_id="req_notfound", param="model")
        return real(*args, **kwargs)

    monkeypatch.setattr(openai_images, "generate", generate)

    def fix():
        broken["on"] = False
        fake_openai.models = list(fake_openai._defaults["models"])
        return CATALOG

    return worker_catalog, calls, fix


def operator_lines(caplog):
    """The OPERATOR lines logged so far."""
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("OPERATOR")]


def expire_marks(conn):
    """As if QUOTA_PAUSE_SECONDS had passed since every model was marked."""
    import json

    marks = json.loads(db.worker_state_get(conn, batches.MODELS_DOWN) or "{}")
    for mark in marks.values():
        mark["until_ms"] = int(time.time() * 1000) - 1
    db.worker_state_set(conn, batches.MODELS_DOWN, json.dumps(marks), int(time.time()))


@pytest.mark.parametrize("kind", ["unserved", "size", "model_not_found"])
def test_a_model_openai_refuses_pauses_its_batches_once_and_fails_nothing(studio, conn, fake_openai, caplog,
                                                                           monkeypatch, kind):
    worker_catalog, calls, fix = refusing(kind, fake_openai, monkeypatch)
    ana, ben = make_subscriber(conn), make_subscriber(conn, "Ben", "ben@example.com")
    refused = new_batch(studio, conn, ana, [f"refused {n}" for n in range(5)], model=REFUSED_MODEL)
    other = new_batch(studio, conn, ben, ["fine one", "fine two"])  # gpt-image-2, served as usual
    stats = worker.run(studio.settings, studio.database, worker_catalog, threads=3)
    assert "failed" not in stats and stats["done"] == 2, stats
    rows = items(conn, refused)
    assert [r["status"] for r in rows] == ["queued"] * 5
    assert [r["charged"] for r in rows] == [0] * 5 and not any(r["error_code"] for r in rows)
    batch = db.batch_get(conn, refused)
    assert (batch["status"], batch["pause_reason"]) == ("paused", "model_unavailable")
    assert 1 <= calls[REFUSED_MODEL] <= 3  # the calls in flight when it was refused, not one per item
    reserved = conn.scalar("SELECT COUNT(*) AS n FROM credit_ledger WHERE user_id = ? AND reason = 'reserve'", (ana,))
    refunded = conn.scalar("SELECT COUNT(*) AS n FROM credit_ledger WHERE user_id = ? AND reason = 'refund'", (ana,))
    assert reserved == refunded == calls[REFUSED_MODEL]
    assert credits.balance(conn, ana) == 300
    assert_ledger_consistent(conn, ana)
    assert [r["status"] for r in items(conn, other)] == ["done", "done"]
    assert db.batch_get(conn, other)["status"] == "done"
    assert credits.balance(conn, ben) == 300 - 2 * 2
    lines = operator_lines(caplog)
    assert len(lines) == 1, lines
    assert f"model {REFUSED_MODEL} refused by OpenAI" in lines[0] and "its batches are paused" in lines[0]
    mark = batches.unavailable_models(conn, int(time.time() * 1000))[REFUSED_MODEL]
    assert mark["code"] == {"unserved": "invalid_value", "size": "invalid_value", "model_not_found": "model_not_found"}[
        kind]
    assert mark["param"] == ("size" if kind == "size" else "model") and mark["request_id"] and mark["message"]
    assert mark["until_ms"] - mark["since"] * 1000 == pytest.approx(studio.settings.quota_pause_seconds * 1000,
                                                                    abs=2000)

    # While it is marked, a new batch of that model is refused, at the review and at the start; others go on.
    with pytest.raises(batches.BatchError) as refused_again:
        new_batch(studio, conn, ben, ["another"], model=REFUSED_MODEL)
    assert refused_again.value.code == "model_unavailable"
    assert refused_again.value.values == {"model": "GPT Image 2.5 Flare"}
    checked = batches.review(CATALOG, datetime.date.today(), prompts=["x"], names=[], style="", model_id=REFUSED_MODEL,
                             ratio="16:9", quality="low", image_format="jpeg", separator=", ", max_prompts=200,
                             credits_left=300, unavailable=batches.unavailable_models(conn, int(time.time() * 1000)))
    assert [(p.code, p.values) for p in checked.errors] == [("model_unavailable", {"model": "GPT Image 2.5 Flare"})]
    assert new_batch(studio, conn, ben, ["fine three"])

    # The mark runs out; resumed while still wrong, the batch tries again, is paused again and logs once more.
    expire_marks(conn)
    assert batches.resume(conn, ana, refused, int(time.time()))
    stats = worker.run(studio.settings, studio.database, worker_catalog, threads=3)
    assert "failed" not in stats
    assert db.batch_get(conn, refused)["pause_reason"] == "model_unavailable"
    assert [r["status"] for r in items(conn, refused)] == ["queued"] * 5 and credits.balance(conn, ana) == 300
    assert len(operator_lines(caplog)) == 2

    # Fixed: after the mark, a resume generates every image, each charged once.
    worker_catalog = fix()
    expire_marks(conn)
    assert batches.resume(conn, ana, refused, int(time.time()))
    assert worker.run(studio.settings, studio.database, worker_catalog, threads=3) == {"done": 5}
    assert [r["status"] for r in items(conn, refused)] == ["done"] * 5
    assert db.batch_get(conn, refused)["status"] == "done"
    assert credits.balance(conn, ana) == 300 - 5 * 2
    assert_ledger_consistent(conn, ana)
    assert len(operator_lines(caplog)) == 2


def test_a_prompt_s_own_400_still_fails_only_that_item(studio, conn, fake_openai, caplog):
    user = make_subscriber(conn)
    batch_id = new_batch(studio, conn, user, ["fine", f"a {fake_openai.moderation_marker} one", "too long", "fine 2"])
    # The review keeps prompts within the model's limit: as if the limit had been wrong in the catalogue.
    conn.execute("UPDATE batch_items SET prompt = ? WHERE batch_id = ? AND position = 3", ("x" * 32_001, batch_id))
    assert work(studio, threads=2) == {"done": 2, "failed": 2}
    rows = items(conn, batch_id)
    assert [(r["status"], r["error_code"]) for r in rows] == [("done", None), ("failed", "refused"),
                                                              ("failed", "invalid"), ("done", None)]
    assert "string too long" in rows[2]["error_message"]
    assert db.batch_get(conn, batch_id)["status"] == "done"
    assert batches.unavailable_models(conn, int(time.time() * 1000)) == {} and not operator_lines(caplog)
    assert credits.balance(conn, user) == 300 - 2 * 2
    assert_ledger_consistent(conn, user)


@pytest.mark.parametrize("status, error_type, code, param, setup", [
    (404, "invalid_request_error", "model_not_found", "model", True),
    (403, "invalid_request_error", "model_not_found", None, True),
    (400, "image_generation_user_error", "invalid_value", "size", True),
    (400, "invalid_request_error", "invalid_value", "quality", True),
    (400, "invalid_request_error", "unknown_parameter", "complexity", True),
    (400, "image_generation_user_error", "invalid_value", "model", True),
    (400, "invalid_request_error", "string_above_max_length", "prompt", False),
    (400, "image_generation_user_error", "moderation_blocked", None, False),
    (400, "invalid_request_error", None, None, False),
    (401, "invalid_request_error", "invalid_api_key", None, False),
    (500, "server_error", None, None, False),
])
def test_which_refusals_are_set_up_mistakes(status, error_type, code, param, setup):
    from services.openai_images import ImageAPIError, _classify

    kind = _classify(status, {"type": error_type, "code": code})
    error = ImageAPIError(kind, "refused", status=status, error_type=error_type, code=code, param=param)
    assert worker._setup_mistake(error) is setup
