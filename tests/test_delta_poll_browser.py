"""The batch page polls in deltas: in Chromium, against the real server and against hand-made answers of the contract.

The contract of GET /api/batches/<id>: without `since` the full state plus "cursor" and "full": true,
with an ETag; with ?since=<cursor> the batch, counts, credits and clock in full but only the items
that changed ("full": false) and a new cursor (every item, "full": true, when the cursor is too old);
with If-None-Match of the last ETag and nothing changed, 304 and no body. An answer without "full"
(an older server) is a full one. The page sends the last cursor and ETag on each poll, merges the
delta by item id, and on a 304 shows the same state with its clock moved on.

page.route() only observes the page's polls (passing them through to the server) or, in the test of
the page's side of the contract, answers them with JSON shaped exactly like the contract's.
"""

from __future__ import annotations

import json
import re
import time
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.test_batch_live import sign_in_page, start_batch
from tests.test_journey import csp_problems, errors, site  # noqa: F401 - the fixture

pytestmark = pytest.mark.browser
TIMEOUT = 60_000
POLL = re.compile(r"/api/batches/\d+(\?[^/]*)?$")

# The IndexedDB record putBatch keeps for a batch (the ZIP's manifest is made from it).
STORED_RECORD = """async (id) => {
  const db = await new Promise((ok, fail) => {
    const r = indexedDB.open('images-in-bulk'); r.onsuccess = () => ok(r.result); r.onerror = fail; });
  const row = await new Promise((ok, fail) => {
    const r = db.transaction('batches').objectStore('batches').get(id); r.onsuccess = () => ok(r.result);
    r.onerror = fail; });
  db.close();
  return row || null;
}"""

# What each row shows: {item id: [data-status, status text, error text, has a retry/edit form]}.
ROWS = """() => Object.fromEntries([...document.querySelectorAll('#results .result')].map(r => [r.dataset.itemId, [
  r.dataset.status, r.querySelector('.result-status').textContent, r.querySelector('.result-error').textContent,
  !!r.querySelector('.result-retry')]]))"""

# The page's own strings for a status (data-t-<status>) and its counter for given counts.
STATUS_TEXT = "(s) => document.getElementById('batch').dataset['t' + s[0].toUpperCase() + s.slice(1)]"
COUNTER_TEXT = """(v) => document.getElementById('batch').dataset.tCounter.replace(/\\{(\\w+)\\}/g, (m, k) => v[k])"""


class Poll:
    """One poll of the page: what it asked (since, If-None-Match) and what it got (status, ETag, body)."""

    def __init__(self, url: str, headers: dict):
        self.since = parse_qs(urlsplit(url).query).get("since", [None])[0]
        self.if_none_match = headers.get("if-none-match")
        self.status, self.etag, self.body = None, None, None

    def __repr__(self):
        items = None if self.body is None else [i["id"] for i in self.body.get("items", [])]
        return (f"Poll(since={self.since!r}, inm={self.if_none_match!r} -> {self.status}, etag={self.etag!r}, "
                f"cursor={(self.body or {}).get('cursor')!r}, full={(self.body or {}).get('full')!r}, items={items})")


class Polls:
    """Routes the page's polls of its batch (fetches asking for JSON: not the tests' own reads).

    Each is recorded; `answer(poll, route)` may answer it (returning True), else it goes to the server.
    """

    def __init__(self, page, answer=None):
        self.list: list[Poll] = []
        self.answer = answer
        page.route(POLL, self._handle)

    def _handle(self, route, request):
        if request.method != "GET" or request.headers.get("accept") != "application/json":
            return route.continue_()
        poll = Poll(request.url, request.headers)
        self.list.append(poll)
        if self.answer and self.answer(poll, route):
            return None
        response = route.fetch()
        poll.status, poll.etag = response.status, response.headers.get("etag")
        if response.status == 200:
            poll.body = response.json()
        return route.fulfill(response=response)

    def count(self) -> int:
        return len(self.list)


def fulfill(poll: Poll, route, body: dict | None, etag: str | None = None, status: int = 200) -> bool:
    """Answer a poll with hand-made JSON (or a bodiless 304) and record it."""
    poll.status, poll.etag, poll.body = status, etag, body
    headers = {"Cache-Control": "no-store", **({"ETag": etag} if etag else {})}
    if status == 304:
        route.fulfill(status=304, headers=headers)
    else:
        route.fulfill(status=status, headers=headers, content_type="application/json", body=json.dumps(body))
    return True


def assert_chained(polls: list[Poll]) -> None:
    """Each poll sends the cursor and the ETag of the last 200 before it, and neither before the first 200."""
    last = None
    for n, poll in enumerate(polls):
        want_since = last.body.get("cursor") if last else None
        want_etag = last.etag if last else None
        assert (poll.since, poll.if_none_match) == (want_since, want_etag), (n, polls)
        if poll.status == 200:
            last = poll


def seconds(text: str) -> int:
    """The first "N s" of a text."""
    found = re.search(r"(\d+) s\b", text)
    assert found, text
    return int(found.group(1))


@pytest.fixture
def quiet_site(serve, fake_openai):
    """The app without a worker: a batch's images stay queued, so nothing changes between two polls."""
    from tests.conftest import openai_settings

    return serve(**openai_settings(fake_openai), WORKER_LAUNCH="none")


def test_the_polls_carry_the_cursor_and_etag_and_the_page_ends_with_every_item(page, site, fake_openai):  # noqa: F811
    """Against the real server while a batch runs: every poll chains on the last 200, deltas merge into the whole."""
    base, app = site
    fake_openai.latency = 1.5  # under the 2-s read timeout: polls every 2 s see some items change, not all
    sign_in_page(page, base, app)
    polls = Polls(page)
    batch_id = start_batch(page, base, [f"image {n}" for n in range(8)])
    page.wait_for_function("() => document.querySelector('#batch-progress').value === 8", timeout=TIMEOUT)
    page.wait_for_function("() => document.querySelectorAll('.result-img:not([hidden])').length === 8",
                           timeout=TIMEOUT)
    page.wait_for_timeout(2500)  # the last poll has been answered
    seen = polls.list
    assert len(seen) >= 3 and seen[0].status == 200, seen
    assert_chained(seen)
    final = page.request.get(f"{base}/api/batches/{batch_id}").json()
    ids = [item["id"] for item in final["items"]]
    for poll in seen:
        if poll.status == 200 and poll.body.get("full") is False:  # a delta: some of the batch's items, no others
            assert {i["id"] for i in poll.body["items"]} <= set(ids), poll
        elif poll.status == 200:
            assert [i["id"] for i in poll.body["items"]] == ids, poll
    assert seen[0].body["full"] is True and seen[0].body["cursor"] and seen[0].etag, seen[0]
    assert all(p.since and p.if_none_match for p in seen[1:]), seen  # every later poll asks for a delta
    assert any(p.status == 200 and p.body["full"] is False for p in seen), seen

    rows = page.evaluate(ROWS)
    delivered = page.evaluate(STATUS_TEXT, "delivered")
    assert {int(k): v[1] for k, v in rows.items()} == {i: delivered for i in ids}, rows
    record = page.evaluate(STORED_RECORD, batch_id)
    assert [(i["id"], i["status"]) for i in record["items"]] == [(i["id"], i["status"]) for i in final["items"]]
    assert {i["status"] for i in final["items"]} == {"delivered"}, final["items"]
    assert csp_problems(page) == [] and errors(page) == [], page.problems


def test_a_quiet_batch_keeps_its_state_while_its_clock_ticks(page, quiet_site):
    """Against the real server with nothing changing: the polls chain, and the elapsed time goes on."""
    base, app = quiet_site
    sign_in_page(page, base, app)
    polls = Polls(page)
    batch_id = start_batch(page, base, ["a fox", "a whale"])
    page.wait_for_function("() => /\\d s/.test(document.querySelector('#batch-eta').textContent)", timeout=TIMEOUT)
    first_rows, first_counter = page.evaluate(ROWS), page.text_content("#batch-counter")
    first = seconds(page.text_content("#batch-eta"))
    count = polls.count()
    deadline = time.monotonic() + 30
    while polls.count() < count + 3 and time.monotonic() < deadline:
        page.wait_for_timeout(500)
    page.wait_for_timeout(300)
    seen = polls.list
    assert len(seen) >= count + 3, seen
    assert_chained(seen)
    assert seen[0].etag and [p.status for p in seen[1:]].count(304) >= 2, seen  # an unchanged batch: 304
    assert page.evaluate(ROWS) == first_rows and page.text_content("#batch-counter") == first_counter
    assert seconds(page.text_content("#batch-eta")) >= first + 4
    queued = page.evaluate(STATUS_TEXT, "queued")
    assert [v[1] for v in first_rows.values()] == [queued, queued]
    assert page.evaluate(STORED_RECORD, batch_id) is None  # nothing done yet: no record, as before
    assert csp_problems(page) == [] and errors(page) == [], page.problems


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_the_page_merges_deltas_and_shows_the_same_state_on_a_304(page, quiet_site):
    """The page's side of the contract, with hand-made answers: 304s, a delta of one item, a full answer, 404."""
    base, app = quiet_site
    sign_in_page(page, base, app)
    plan = {"mode": "full"}

    def answer(poll, route):
        mode = plan["mode"]
        if mode == "full":  # the first poll: the real state made into a fixture with a cursor and an ETag
            state = route.fetch().json()
            now = state["now"]
            a, b, c = (dict(i) for i in state["items"])
            a.update(status="running", started_at=now - 5)
            c.update(status="done", started_at=now - 9, finished_at=now - 1, width=1024, height=1024, bytes=1000)
            body = {**state, "items": [a, b, c], "counts": {"running": 1, "queued": 1, "done": 1},
                    "cursor": "7", "full": True}
            plan.update(mode="304", body=body)
            return fulfill(poll, route, body, 'W/"v7"')
        if mode == "304":
            return fulfill(poll, route, None, status=304)
        if mode == "delta":  # only the first item changed: it failed
            body = plan["body"]
            a = {**body["items"][0], "status": "failed", "error_code": "upstream", "error": "It broke.",
                 "finished_at": body["now"]}
            delta = {**body, "now": body["now"] + 1, "items": [a], "counts": {"failed": 1, "queued": 1, "done": 1},
                     "cursor": "8", "full": False}
            plan.update(mode="304")
            return fulfill(poll, route, delta, 'W/"v8"')
        if mode == "older":  # an older server's answer: every item, no cursor, no "full", no ETag
            body = plan["body"]
            b = {**body["items"][1], "status": "running", "started_at": body["now"]}
            older = {k: v for k, v in body.items() if k not in ("cursor", "full")}
            a = {**body["items"][0], "status": "failed", "error_code": "upstream", "error": "It broke."}
            older.update(items=[a, b, body["items"][2]], counts={"failed": 1, "running": 1, "done": 1})
            return fulfill(poll, route, older)
        return fulfill(poll, route, {"error": {"code": "not_found", "message": "Gone."}}, status=404)

    polls = Polls(page, answer)
    batch_id = start_batch(page, base, ["a fox", "a whale", "a boat"])
    ids = [str(i["id"]) for i in page.request.get(f"{base}/api/batches/{batch_id}").json()["items"]]
    text = {s: page.evaluate(STATUS_TEXT, s) for s in ("running", "queued", "done", "failed")}

    # The full answer, then 304s: the same rows and counts, the running image's seconds go on.
    page.wait_for_function("(id) => document.getElementById('item-' + id).dataset.status === 'running'", arg=ids[0],
                           timeout=TIMEOUT)
    rows, counter = page.evaluate(ROWS), page.text_content("#batch-counter")
    assert [rows[i][0] for i in ids] == ["running", "queued", "done"], rows
    assert counter == page.evaluate(COUNTER_TEXT, {"total": 3, "done": 1, "failed": 0, "running": 1})
    running, elapsed = seconds(rows[ids[0]][1]), seconds(page.text_content("#batch-eta"))
    assert rows[ids[0]][1].startswith(text["running"]) and 5 <= running <= 7, rows
    started = time.monotonic()
    page.wait_for_function(f"() => /(\\d+) s/.exec(document.getElementById('item-{ids[0]}')"
                           f".querySelector('.result-status').textContent)[1] >= {running + 4}", timeout=TIMEOUT)
    waited = time.monotonic() - started
    after = page.evaluate(ROWS)
    assert [p.status for p in polls.list[1:]] == [304] * (polls.count() - 1) and polls.count() >= 3, polls.list
    assert seconds(after[ids[0]][1]) - running <= waited + 2
    assert [after[i][0] for i in ids] == ["running", "queued", "done"] and after[ids[1]] == rows[ids[1]]
    assert page.text_content("#batch-counter") == counter
    assert seconds(page.text_content("#batch-eta")) >= elapsed + 3
    assert_chained(polls.list)
    assert {(p.since, p.if_none_match) for p in polls.list[1:]} == {("7", 'W/"v7"')}
    record = page.evaluate(STORED_RECORD, batch_id)  # a done item: the record holds the whole batch
    assert [str(i["id"]) for i in record["items"]] == ids
    assert [i["status"] for i in record["items"]] == ["running", "queued", "done"]

    # A delta of the one item that changed: its row and the counts follow, the other rows stay.
    plan["mode"] = "delta"
    page.wait_for_function("(id) => document.getElementById('item-' + id).dataset.status === 'failed'", arg=ids[0],
                           timeout=TIMEOUT)
    rows = page.evaluate(ROWS)
    assert rows[ids[0]] == ["failed", text["failed"], "It broke.", True], rows
    assert rows[ids[1]] == ["queued", text["queued"], "", False] and rows[ids[2]] == ["done", text["done"], "", False]
    assert page.text_content("#batch-counter") == page.evaluate(
        COUNTER_TEXT, {"total": 3, "done": 1, "failed": 1, "running": 0})
    assert page.locator("#retry-form").is_visible() and page.locator("#failed-filter").is_visible()
    record = page.evaluate(STORED_RECORD, batch_id)  # written again from the merged list: every item
    assert [str(i["id"]) for i in record["items"]] == ids
    assert [i["status"] for i in record["items"]] == ["failed", "queued", "done"]
    assert record["items"][0]["error"] == "It broke." and record["count"] == 3
    count = polls.count()
    deadline = time.monotonic() + 20
    while polls.count() < count + 2 and time.monotonic() < deadline:
        page.wait_for_timeout(300)
    assert page.evaluate(ROWS) == rows, "a 304 after the delta keeps the merged state"
    delta_at = next(n for n, p in enumerate(polls.list) if p.body and p.body.get("cursor") == "8")
    assert {(p.since, p.if_none_match) for p in polls.list[delta_at + 1:]} == {("8", 'W/"v8"')}, polls.list

    # An answer without "full", cursor or ETag (an older server) is full: the polls go back to plain ones.
    plan["mode"] = "older"
    page.wait_for_function("(id) => document.getElementById('item-' + id).dataset.status === 'running'", arg=ids[1],
                           timeout=TIMEOUT)
    count = polls.count()
    plan["mode"] = "gone"
    page.wait_for_function("() => document.getElementById('batch-notice').textContent === 'Gone.'", timeout=TIMEOUT)
    assert {(p.since, p.if_none_match) for p in polls.list[count:]} == {(None, None)}, polls.list
    assert polls.list[-1].status == 404, polls.list
    stopped = polls.count()
    page.wait_for_timeout(4500)  # after a 404 the page polls no more
    assert polls.count() == stopped
    assert page.evaluate(ROWS)[ids[0]][0] == "failed"
    assert csp_problems(page) == [], page.problems
