"""Economy batches through OpenAI's Batch API (the stand-in over real HTTP), on both engines: send, poll, collect.

Each test checks the ledger exactly: half the catalogue's price reserved per image at
submission (reason `economy`), and every item without an image refunded once.
"""

import datetime
import io
import time

import pytest
from PIL import Image

from services import batches, credits, db, economy
from tests.conftest import TEST_CATALOG, make_subscriber, openai_settings


@pytest.fixture
def studio(make_app, database, fake_openai):
    return make_app(**openai_settings(fake_openai))


def economy_batch(conn, user, prompts, resolution="1K", ratio="1:1", image_format="png", model="gpt-image-2") -> dict:
    checked = batches.review(TEST_CATALOG, datetime.date.today(), prompts=prompts, names=[], style="studio light",
                             model_id=model, ratio=ratio, quality="low", image_format=image_format, separator=", ",
                             max_prompts=200, credits_left=10_000, resolution=resolution, speed="economy")
    assert checked.ok, checked.errors
    batch_id, _ = batches.create(conn, TEST_CATALOG, user, checked, f"t{time.monotonic_ns()}", int(time.time()))
    return db.batch_get(conn, batch_id)


def settle(studio, conn, seconds=60) -> dict:
    """Tick (as cron does, without the minute between polls) until nothing is waiting or sent."""
    deadline, totals = time.monotonic() + seconds, {"sent": 0, "done": 0, "failed": 0}
    minutes = 0
    while time.monotonic() < deadline:
        minutes += 1  # each tick a minute later than the last, as cron's are: each open job is asked again
        got = economy.tick(conn, studio.settings, studio.catalog,
                           int(time.time()) + minutes * (economy.POLL_EVERY + 1))
        totals = {k: totals[k] + got[k] for k in totals}
        if not conn.scalar("SELECT COUNT(*) AS n FROM batch_items WHERE status IN ('queued', 'waiting')"):
            return totals
        time.sleep(0.05)
    raise AssertionError(f"still waiting after {seconds} s: {totals}")


def ledger(conn, user) -> list[tuple[str, int]]:
    return [(r["reason"], r["delta"]) for r in conn.all(
        "SELECT reason, delta FROM credit_ledger WHERE user_id = ? AND reason <> 'grant' ORDER BY id", (user,))]


def test_the_economy_price_is_half_rounded_up():
    assert [batches.economy_price(n) for n in (0, 1, 2, 3, 22, 397)] == [0, 1, 1, 2, 11, 199]
    full = TEST_CATALOG.get("gpt-image-2").price("2K", "16:9", "high")
    review = batches.review(TEST_CATALOG, datetime.date.today(), prompts=["a"], names=[], style="",
                            model_id="gpt-image-2", ratio="16:9", quality="high", image_format="png", separator=", ",
                            max_prompts=200, credits_left=300, resolution="2K", speed="economy")
    assert review.credits_per_item == (full + 1) // 2 and review.speed == "economy"
    wrong = batches.review(TEST_CATALOG, datetime.date.today(), prompts=["a"], names=[], style="",
                           model_id="gpt-image-2", ratio="16:9", quality="high", image_format="png", separator=", ",
                           max_prompts=200, credits_left=300, speed="tomorrow")
    assert [p.code for p in wrong.errors] == ["unknown_speed"]


def test_an_economy_batch_goes_upstream_as_one_job_and_every_image_comes_back(studio, conn, fake_openai):
    user = make_subscriber(conn, balance=300)
    batch = economy_batch(conn, user, ["a red fox", "a blue whale", "a green frog"], resolution="2K", ratio="16:9",
                          image_format="jpeg")
    full = TEST_CATALOG.get("gpt-image-2").price("2K", "16:9", "low")
    assert batch["speed"] == "economy" and batch["credits_per_item"] == (full + 1) // 2
    totals = settle(studio, conn)
    assert totals == {"sent": 3, "done": 3, "failed": 0}
    assert fake_openai.requests == []  # nothing went through the synchronous endpoint
    [job] = conn.all("SELECT status, total, openai_batch_id FROM upstream_batches")
    assert job["status"] == "collected" and job["total"] == 3
    items = db.batch_items_of(conn, batch["id"])
    assert [i["status"] for i in items] == ["done"] * 3 and db.batch_get(conn, batch["id"])["status"] == "done"
    for item in items:
        image = Image.open(io.BytesIO((studio.settings.results_dir / item["result_path"]).read_bytes()))
        assert (image.size, image.format) == ((2048, 1152), "JPEG") and item["output_tokens"] > 0
    per = batch["credits_per_item"]
    assert ledger(conn, user) == [("economy", -per)] * 3 and credits.balance(conn, user) == 300 - 3 * per
    kept = studio.settings.var_dir / "economy"
    assert not kept.exists() or not any(kept.iterdir())  # a collected job's files are gone
    # The synchronous worker never takes an economy item.
    assert db.next_batch_to_serve(conn, int(time.time()), int(time.time() * 1000)) is None


def test_lines_that_fail_and_lines_that_never_come_back_are_refunded_once(studio, conn, fake_openai):
    user = make_subscriber(conn, balance=300)
    batch = economy_batch(conn, user, [f"prompt {n}" for n in range(6)] + ["FORBIDDEN thing"])
    ids = [i["id"] for i in db.batch_items_of(conn, batch["id"])]
    fake_openai.batch_line_faults = {f"item:{ids[1]}:1": "server_error"}
    fake_openai.batch_expire_after_requests = 5  # the job expires with the last two never run
    totals = settle(studio, conn)
    assert totals["sent"] == 7 and totals["done"] + totals["failed"] == 7
    items = {i["id"]: i for i in db.batch_items_of(conn, batch["id"])}
    assert items[ids[1]]["status"] == "failed" and items[ids[1]]["error_code"] == "upstream"
    codes = sorted(i["error_code"] or i["status"] for i in items.values())
    assert codes.count("economy_expired") == 2 and codes.count("done") == totals["done"]
    per = batch["credits_per_item"]
    refunded = [line for line in ledger(conn, user) if line[0] == "refund"]
    assert len(refunded) == totals["failed"] == 7 - totals["done"] and all(d == per for _, d in refunded)
    assert credits.balance(conn, user) == 300 - totals["done"] * per
    assert settle(studio, conn) == {"sent": 0, "done": 0, "failed": 0}  # collecting again changes nothing


def test_a_failed_upload_keeps_the_items_queued_and_charges_once(studio, conn, fake_openai):
    user = make_subscriber(conn, balance=300)
    batch = economy_batch(conn, user, ["one", "two"])
    fake_openai.api_key = "sk-other"  # the upload is refused: nothing starts upstream
    assert economy.tick(conn, studio.settings, studio.catalog)["sent"] == 0
    assert [i["status"] for i in db.batch_items_of(conn, batch["id"])] == ["queued", "queued"]
    assert conn.scalar("SELECT status FROM upstream_batches") == "not_sent"
    fake_openai.api_key = studio.settings.openai_api_key
    assert settle(studio, conn)["done"] == 2
    assert ledger(conn, user) == [("economy", -batch["credits_per_item"])] * 2  # reserved once, at the first try


def test_a_worker_killed_while_collecting_settles_the_rest_without_doing_anything_twice(studio, conn, fake_openai):
    user = make_subscriber(conn, balance=300)
    batch = economy_batch(conn, user, [f"p{n}" for n in range(4)])
    economy.submit(conn, studio.settings, studio.catalog, int(time.time()))
    job = conn.one("SELECT id, openai_batch_id FROM upstream_batches")
    deadline = time.monotonic() + 30  # wait for the job upstream, without collecting it
    while conn.scalar("SELECT status FROM upstream_batches") != "completed" and time.monotonic() < deadline:
        answer = economy.openai_batches.retrieve(studio.settings.openai_base_url, studio.settings.openai_api_key,
                                                 job["openai_batch_id"])
        db.upstream_update(conn, job["id"], int(time.time()), status=answer["status"],
                           output_file_id=answer.get("output_file_id"), error_file_id=answer.get("error_file_id"))
        time.sleep(0.05)
    # As if a collector died after settling the first two lines: they are done, the files are on disk.
    first = db.batch_items_of(conn, batch["id"])[:2]
    real_results = economy.openai_batches.results

    def two_then_die(path):
        for n, result in enumerate(real_results(path)):
            if n == 2:
                raise KeyboardInterrupt("killed")
            yield result

    economy.openai_batches.results = two_then_die
    try:
        with pytest.raises(KeyboardInterrupt):
            economy.collect(conn, studio.settings, studio.catalog, db.upstream_get(conn, job["id"]), int(time.time()))
    finally:
        economy.openai_batches.results = real_results
    assert [i["status"] for i in db.batch_items_of(conn, batch["id"])] == ["done", "done", "waiting", "waiting"]
    assert all(db.batch_item_get(conn, i["id"])["status"] == "done" for i in first)
    assert settle(studio, conn)["done"] == 2  # the next tick collects the other two, and only those
    assert [i["status"] for i in db.batch_items_of(conn, batch["id"])] == ["done"] * 4
    assert ledger(conn, user) == [("economy", -batch["credits_per_item"])] * 4


def test_cancel_stops_the_job_and_refunds_what_did_not_run(studio, conn, fake_openai):
    user = make_subscriber(conn, balance=300)
    fake_openai.batch_pace = {"validating": 0.0, "per_request": 0.4, "finalizing": 0.0, "cancelling": 0.1}
    batch = economy_batch(conn, user, [f"p{n}" for n in range(10)])
    economy.submit(conn, studio.settings, studio.catalog, int(time.time()))
    assert economy.cancel(conn, studio.settings, batch["id"]) == 1
    settle(studio, conn)
    items = db.batch_items_of(conn, batch["id"])
    done = [i for i in items if i["status"] == "done"]
    cancelled = [i for i in items if i["status"] == "cancelled"]
    assert len(done) + len(cancelled) == 10 and cancelled
    assert credits.balance(conn, user) == 300 - len(done) * batch["credits_per_item"]
    assert db.batch_get(conn, batch["id"])["status"] == "done"


def test_a_worker_that_died_while_building_a_job_leaves_nothing_stuck(studio, conn, fake_openai):
    user = make_subscriber(conn, balance=300)
    batch = economy_batch(conn, user, ["one", "two"])
    long_ago = int(time.time()) - economy.BUILDING_TIMEOUT - 1
    # As if a worker reserved, marked the items as sent and died before the upload.
    items = db.batch_items_of(conn, batch["id"])
    for item in items:
        credits.reserve(conn, user, batch["credits_per_item"], f"item:{item['id']}:{item['charge']}", long_ago,
                        reason="economy")
        db.batch_item_set_charged(conn, item["id"], batch["credits_per_item"])
    stuck = db.upstream_insert(conn, "gpt-image-2", long_ago)
    db.batch_items_send(conn, [item["id"] for item in items], stuck)
    assert settle(studio, conn)["done"] == 2
    assert db.upstream_get(conn, stuck)["status"] == "not_sent"
    assert ledger(conn, user) == [("economy", -batch["credits_per_item"])] * 2  # charged once


def test_a_worker_process_killed_while_it_downloads_the_output_resumes_without_doing_anything_twice(
        studio, conn, fake_openai):
    import os
    import signal
    import subprocess
    import sys

    from tests.conftest import ROOT
    from tests.test_worker import worker_env

    user = make_subscriber(conn, balance=300)
    batch = economy_batch(conn, user, [f"p{n}" for n in range(6)], resolution="2K")
    economy.submit(conn, studio.settings, studio.catalog, int(time.time()))
    job = conn.one("SELECT id, openai_batch_id FROM upstream_batches")
    deadline = time.monotonic() + 30
    while economy.openai_batches.retrieve(studio.settings.openai_base_url, studio.settings.openai_api_key,
                                          job["openai_batch_id"])["status"] != "completed":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    db.upstream_update(conn, job["id"], int(time.time()), polled_at=0)  # due for a question at once
    fake_openai.content_pace = 0.5  # a slow link: the output file takes seconds to come
    part = economy.folder(studio.settings, job["id"]) / "output.jsonl.part"
    process = subprocess.Popen([sys.executable, "cli.py", "worker", "--once"], cwd=ROOT,
                               env=worker_env(studio, fake_openai), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    try:
        while not part.exists():  # the answer's headers are in; its body comes 16 KB every half second
            assert time.monotonic() < deadline + 30 and process.poll() is None, process.communicate()[0]
            time.sleep(0.02)
        time.sleep(1)
    finally:
        process.send_signal(signal.SIGKILL)
        process.communicate(timeout=10)
    assert part.exists() and not part.with_suffix("").exists()  # killed midway: only the partial file
    assert [i["status"] for i in db.batch_items_of(conn, batch["id"])] == ["waiting"] * 6
    fake_openai.content_pace = 0.0
    assert settle(studio, conn)["done"] == 6  # the next run downloads the file again, whole, and stores each once
    items = db.batch_items_of(conn, batch["id"])
    assert [i["status"] for i in items] == ["done"] * 6 and len({i["result_path"] for i in items}) == 6
    stored = sorted(p.name for p in (studio.settings.results_dir / str(batch["id"])).iterdir())
    assert stored == sorted(os.path.basename(i["result_path"]) for i in items)  # no stray or second copies
    assert not part.parent.exists()
    assert ledger(conn, user) == [("economy", -batch["credits_per_item"])] * 6


def test_a_job_whose_input_would_pass_openais_file_limit_takes_what_fits_and_the_rest_follows(
        studio, conn, fake_openai, monkeypatch):
    user = make_subscriber(conn, balance=300)
    # Long prompts in a script JSON keeps as it is: a limit of about 3 lines per file, as 200 MB is at scale.
    prompt = "東京の夜景、雨に濡れた路地、ネオンの反射 " * 40
    batch = economy_batch(conn, user, [f"{n} {prompt}" for n in range(7)])
    monkeypatch.setattr(economy, "MAX_INPUT_BYTES", 3 * len(prompt.encode()) + 3 * 600)
    sent = economy.tick(conn, studio.settings, studio.catalog)["sent"]
    assert 0 < sent < 7
    assert conn.scalar("SELECT COUNT(*) AS n FROM batch_items WHERE status = 'queued'") == 7 - sent
    totals = settle(studio, conn)
    assert totals["done"] == 7 and conn.scalar("SELECT COUNT(*) AS n FROM upstream_batches") >= 3
    assert all(job["total"] <= 3 for job in conn.all("SELECT total FROM upstream_batches"))
    assert ledger(conn, user) == [("economy", -batch["credits_per_item"])] * 7  # each reserved once
