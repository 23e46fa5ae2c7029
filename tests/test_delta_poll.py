"""Delta polls: `GET /api/batches/<id>?since=<cursor>` sends only the items changed since the cursor, a 304 when
nothing changed, and every item when the cursor is unknown or too old; on both engines, under concurrent updates.

The concurrency test runs the worker's own item changes (claim, done, requeue, fail with a
refund) in several threads, each with its own connection, next to a subscriber's stop,
resume, retry and cancel, while a poller asks for deltas the whole time. It checks what a page
would rely on: every item a delta carries changed after the cursor it was asked with (nothing
repeated), the cursors only move forward, and the state merged from the deltas equals a fresh
full read at the end (nothing missed). No writer may be chosen as a deadlock victim: every
change of a batch takes the batch's row first.
"""

from __future__ import annotations

import datetime
import json
import random
import socket
import threading
import time

import pytest

from services import batches, credits, db, sessions, worker
from tests.conftest import TEST_CATALOG, make_subscriber, signed_in_client

SHOWN = ("status", "error_code", "prompt", "started_at", "finished_at", "result_bytes")


def make_batch(conn, user_id, count, test_run=False):
    """A batch of `count` queued items (or held back past the first three with test_run)."""
    checked = batches.review(TEST_CATALOG, datetime.date.today(), prompts=[f"a red fox number {n}" for n in
                                                                          range(count)],
                             names=[], style="watercolour", model_id="gpt-image-2", ratio="1:1", quality="low",
                             image_format="png", separator=", ", max_prompts=1000, credits_left=100_000)
    batch_id, _ = batches.create(conn, TEST_CATALOG, user_id, checked, f"t{time.monotonic_ns()}", int(time.time()),
                                 test_run, max_open=100)
    return batch_id


@pytest.fixture
def poller(app, conn):
    """A signed-in subscriber's in-process client and a 20-item batch of theirs: (client, user, batch id)."""
    user = make_subscriber(conn, balance=10_000)
    client, _token = signed_in_client(app, conn, user)
    client.set_cookie("lang", "en")
    return client, user, make_batch(conn, user, 20)


def get(client, batch_id, since=None, etag=None):
    """One poll: (status code, JSON body or None, ETag)."""
    response = client.get(f"/api/batches/{batch_id}" + (f"?since={since}" if since is not None else ""),
                          headers={"If-None-Match": etag} if etag else {})
    return response.status_code, (response.json if response.status_code == 200 else None), response.headers.get("ETag")


def test_a_first_poll_is_full_then_304_then_only_what_changed(poller, conn):
    client, user, batch_id = poller
    status, body, etag = get(client, batch_id)
    assert status == 200 and body["full"] is True and len(body["items"]) == 20
    assert body["cursor"].isdigit() and etag.startswith('W/"') and etag.endswith('-en"')

    status, body304, etag304 = get(client, batch_id, body["cursor"], etag)
    assert (status, body304, etag304) == (304, None, etag)
    response = client.get(f"/api/batches/{batch_id}?since={body['cursor']}", headers={"If-None-Match": etag})
    assert response.data == b"" and response.headers["Cache-Control"] == "no-store"

    # The same cursor without the validator (or with another one): a 200 with nothing in it but the counts.
    for other in (None, 'W/"0-0-0-en"', "*, " + 'W/"1-2-3-en"'):
        status, empty, _ = get(client, batch_id, body["cursor"], other)
        assert status == 200 and empty["full"] is False and empty["items"] == [], other
        assert empty["counts"] == {"queued": 20} and empty["cursor"] == body["cursor"]

    # The worker takes one item and finishes another: exactly those two come back.
    items = db.batch_items_of(conn, batch_id)
    now = int(time.time())
    assert db.batch_item_claim(conn, batch_id, items[3]["id"], "w1", now + 60, now + 60, now)
    assert db.batch_item_claim(conn, batch_id, items[7]["id"], "w2", now + 60, now + 60, now)
    assert db.batch_item_done(conn, batch_id, items[7]["id"], "w2", "x.png", 1234, 1024, 1024, "req_1", now)
    status, delta, etag2 = get(client, batch_id, body["cursor"], etag)
    assert status == 200 and delta["full"] is False and etag2 != etag
    assert [(i["id"], i["status"]) for i in delta["items"]] == [(items[3]["id"], "running"),
                                                                (items[7]["id"], "done")]
    assert delta["counts"] == {"queued": 18, "running": 1, "done": 1}
    assert int(delta["cursor"]) > int(body["cursor"])
    assert get(client, batch_id, delta["cursor"], etag2)[0] == 304

    # What the page shows beside the items changes the validator too: the credits, the language.
    assert credits.adjust(conn, user, 5, "test:bonus", now)
    status, after_credits, etag3 = get(client, batch_id, delta["cursor"], etag2)
    assert status == 200 and after_credits["items"] == [] and after_credits["credits_left"] == \
        delta["credits_left"] + 5
    client.set_cookie("lang", "es")
    status, spanish, etag4 = get(client, batch_id, delta["cursor"], etag3)
    assert status == 200 and etag4.endswith('-es"') and etag4 != etag3


def test_a_service_pause_and_a_batch_change_each_end_the_304s(poller, conn):
    client, user, batch_id = poller
    _status, body, etag = get(client, batch_id)
    now_ms = int(time.time() * 1000)
    db.worker_state_set(conn, "pause", f'{{"until_ms": {now_ms + 60_000}, "reason": "quota"}}', now_ms // 1000)
    status, paused, etag2 = get(client, batch_id, body["cursor"], etag)
    assert status == 200 and paused["batch"]["pause_reason"] == "service_paused" and etag2 != etag
    assert get(client, batch_id, paused["cursor"], etag2)[0] == 304
    db.worker_state_set(conn, "pause", "", now_ms // 1000)

    assert batches.stop(conn, user, batch_id, now_ms // 1000)  # a change of the batch alone: counts it too
    status, stopped, _etag = get(client, batch_id, paused["cursor"], etag2)
    assert status == 200 and stopped["batch"]["status"] == "paused" and stopped["items"] == []
    assert int(stopped["cursor"]) == int(paused["cursor"]) + 1


@pytest.mark.parametrize("cursor", ["", "abc", "0", "-3", "1e3", "99999999999", "9" * 40, "%00", "%C2%B2", "²",
                                    "%D9%A1", "１"])
def test_an_unknown_cursor_gets_the_full_state(poller, cursor):
    client, _user, batch_id = poller
    status, body, _etag = get(client, batch_id, cursor)
    assert status == 200 and body["full"] is True and len(body["items"]) == 20, cursor


def test_a_cursor_more_changes_behind_than_the_batch_has_items_gets_the_full_state(poller, conn):
    client, user, batch_id = poller
    _status, first, _etag = get(client, batch_id)
    now = int(time.time())
    for _ in range(11):  # 22 changes of a 20-item batch: a page asleep through all that starts over
        batches.stop(conn, user, batch_id, now)
        batches.resume(conn, user, batch_id, now)
    status, body, _etag = get(client, batch_id, first["cursor"])
    assert status == 200 and body["full"] is True and len(body["items"]) == 20
    _status, later, _etag = get(client, batch_id, str(int(body["cursor"]) - 20))  # 20 behind: still a delta
    assert later["full"] is False and later["items"] == []


def test_someone_elses_batch_is_not_found_whatever_the_cursor(app, conn, poller):
    _client, _user, batch_id = poller
    other = make_subscriber(conn, name="Eve", email="eve@example.com")
    client, _token = signed_in_client(app, conn, other)
    for since in (None, "1", "5"):
        status, _body, etag = get(client, batch_id, since, 'W/"1-10000-0-en"')
        assert status == 404 and etag is None


def test_deltas_under_concurrent_worker_and_subscriber_changes_miss_nothing_and_repeat_nothing(database, conn):
    user = make_subscriber(conn, balance=100_000)
    batch_id = make_batch(conn, user, 60)
    stop_at = time.monotonic() + 3.0
    errors: list[str] = []

    def worker_thread(name: str) -> None:
        own = database.connect()
        rng = random.Random(name)
        try:
            while time.monotonic() < stop_at:
                now, now_ms = int(time.time()), int(time.time() * 1000)
                with own.transaction():
                    item = db.next_item_of_batch(own, batch_id, now, now_ms)
                    if item is None or not db.batch_item_claim(own, batch_id, item["id"], name, now + 30, now + 30,
                                                               now):
                        item = None
                    else:
                        db.batch_touch_started(own, batch_id, now_ms)
                if item is None:
                    time.sleep(0.005)
                    continue
                charge = f"item:{item['id']}:{item['charge']}"
                if credits.reserve(own, user, 1, charge, now):
                    db.batch_item_set_charged(own, item["id"], 1)
                outcome = rng.random()
                with own.transaction():
                    if outcome < 0.6:
                        if db.batch_item_done(own, batch_id, item["id"], name, f"{item['id']}.png", 100, 1, 1, None,
                                              now):
                            db.batch_finish_if_idle(own, batch_id, now)
                    elif outcome < 0.8:
                        db.batch_item_requeue(own, batch_id, item["id"], name, 0, True, "timeout", "slow")
                    elif db.batch_item_fail(own, batch_id, item["id"], name, "upstream", "broke", None, now):
                        credits.refund(own, user, 1, charge, now)
                        db.batch_finish_if_idle(own, batch_id, now)
        except Exception as exc:  # noqa: BLE001 - reported by the test
            errors.append(f"{name}: {exc!r}")
        finally:
            own.close()

    def subscriber_thread() -> None:
        own = database.connect()
        rng = random.Random(7)
        try:
            while time.monotonic() < stop_at:
                now = int(time.time())
                action = rng.choice([batches.stop, batches.resume, batches.retry_failed, batches.retry_failed])
                action(own, user, batch_id, now)
                time.sleep(0.01)
        except Exception as exc:  # noqa: BLE001 - reported by the test
            errors.append(f"subscriber: {exc!r}")
        finally:
            own.close()

    threads = [threading.Thread(target=worker_thread, args=(f"w{n}",)) for n in range(3)]
    threads.append(threading.Thread(target=subscriber_thread))
    for thread in threads:
        thread.start()

    poll_conn = database.connect()
    known: dict[int, dict] = {}
    seen: set[tuple[int, int]] = set()
    cursor, polls, deltas, carried = None, 0, 0, 0
    try:
        while True:
            last = not any(thread.is_alive() for thread in threads)
            state = batches.status(poll_conn, user, batch_id, int(time.time() * 1000), since=cursor)
            polls += 1
            if state["full"]:  # the first poll, or one more changes behind than the batch has items (too old)
                assert cursor is None or int(state["cursor"]) - int(cursor) > 60, (polls, cursor, state["cursor"])
                known, cursor, seen = {}, None, set()
            else:
                deltas += 1
                carried += len(state["items"])
            for item in state["items"]:
                assert cursor is None or item["changed_seq"] > int(cursor), (cursor, item)  # nothing repeated
                assert item["changed_seq"] <= int(state["cursor"]), (state["cursor"], item)
                assert (item["id"], item["changed_seq"]) not in seen, item
                seen.add((item["id"], item["changed_seq"]))
                known[item["id"]] = item
            assert cursor is None or int(state["cursor"]) >= int(cursor)
            cursor = state["cursor"]
            if last:
                break
            time.sleep(0.003)
        # Once everyone stopped: the merged deltas are the truth (nothing missed), counts included.
        truth = batches.status(poll_conn, user, batch_id, int(time.time() * 1000))
        assert {i: {k: v[k] for k in SHOWN} for i, v in known.items()} == \
            {i["id"]: {k: i[k] for k in SHOWN} for i in truth["items"]}
        merged_counts: dict[str, int] = {}
        for item in known.values():
            merged_counts[item["status"]] = merged_counts.get(item["status"], 0) + 1
        assert merged_counts == truth["counts"] == state["counts"]
    finally:
        poll_conn.close()
        for thread in threads:
            thread.join(10)
    assert not errors, errors  # no deadlock victim, no lost connection
    assert deltas > 20 and carried > 0, (polls, deltas, carried)
    # Every credit is either left or held by an item (done, or reserved and queued again): none lost or doubled.
    assert credits.balance(conn, user) + sum(i["charged"] for i in db.batch_items_of(conn, batch_id)) == 100_000


def test_the_worker_module_still_reads_the_service_pause(database, conn):
    now_ms = int(time.time() * 1000)
    assert worker.paused(conn, now_ms) is None
    db.worker_state_set(conn, "pause", f'{{"until_ms": {now_ms + 5000}, "reason": "auth"}}', now_ms // 1000)
    assert worker.paused(conn, now_ms)["reason"] == "auth"
    assert worker.paused(conn, now_ms + 6000) is None
    for broken in ("{", "[]", '{"until_ms": "soon"}'):
        db.worker_state_set(conn, "pause", broken, now_ms // 1000)
        assert worker.paused(conn, now_ms) is None, broken


def raw_get(base_url: str, path: str, headers: dict[str, str]) -> bytes:
    """One GET over a plain socket: every byte of the answer as the wire carries it (status line, headers, body)."""
    host, port = base_url.removeprefix("http://").split(":")
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}:{port}", "Connection: close",
             *(f"{k}: {v}" for k, v in headers.items())]
    with socket.create_connection((host, int(port)), timeout=15) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_over_http_nothing_new_costs_one_small_304(serve, conn):
    base_url, app = serve()
    user = make_subscriber(conn)
    batch_id = make_batch(conn, user, 100)
    session = sessions.create(conn, app.settings, int(time.time()), user_id=user)
    headers = {"Cookie": f"{sessions.cookie_name(app.settings)}={session.token}; lang=en",
               "Accept": "application/json"}
    full = raw_get(base_url, f"/api/batches/{batch_id}", headers)
    head, _, body = full.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and len(json.loads(body)["items"]) == 100
    etag = next(line.split(b": ", 1)[1].decode() for line in head.split(b"\r\n") if line.lower().startswith(b"etag:"))
    cursor = json.loads(body)["cursor"]

    answer = raw_get(base_url, f"/api/batches/{batch_id}?since={cursor}", {**headers, "If-None-Match": etag})
    assert answer.startswith(b"HTTP/1.1 304") and answer.endswith(b"\r\n\r\n"), answer
    assert len(answer) <= 300, (len(answer), answer)
    lines = answer.split(b"\r\n")
    assert f"etag: {etag}".encode() in [line[:5].lower() + line[5:] for line in lines]  # waitress writes "Etag"
    assert b"Cache-Control: no-store" in lines
    assert b"Content-Security-Policy" not in answer and b"Set-Cookie" not in answer
    assert len(full) > 30 * len(answer), (len(full), len(answer))  # an idle page's polls shrink 30-fold at least


def test_a_signed_out_or_expired_session_gets_no_304(poller, conn, app):
    client, _user, batch_id = poller
    _status, body, etag = get(client, batch_id)
    assert get(client, batch_id, body["cursor"], etag)[0] == 304
    conn.execute("UPDATE sessions SET expires_at = ?", (int(time.time()) - 1,))  # expired: the one query says no
    assert get(client, batch_id, body["cursor"], etag)[0] == 401
    fresh, _token = signed_in_client(app, conn, _user)
    _status, body, etag = get(fresh, batch_id)
    conn.execute("DELETE FROM sessions")  # signed out everywhere
    assert get(fresh, batch_id, body["cursor"], etag)[0] == 401


def test_a_session_due_a_touch_is_touched_by_its_poll_not_answered_from_the_shortcut(poller, conn):
    client, _user, batch_id = poller
    _status, body, etag = get(client, batch_id)
    stale = int(time.time()) - sessions.TOUCH_INTERVAL - 5
    conn.execute("UPDATE sessions SET last_seen_at = ?", (stale,))
    assert get(client, batch_id, body["cursor"], etag)[0] == 304  # answered by the whole path, which touches
    assert conn.scalar("SELECT last_seen_at FROM sessions") > stale
