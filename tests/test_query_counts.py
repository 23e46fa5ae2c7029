"""How many SQL statements each subscriber page and the batch poll run, on both engines: a regression shows.

The counts are what the pages cost today (one query per thing shown, none per row); lowering one is
welcome and means updating its number here, raising one needs a reason.
"""

import pytest

from services import db
from tests.conftest import make_subscriber, openai_settings, signed_in_client
from tests.test_studio import FORM, hidden_fields


@pytest.fixture
def counted(monkeypatch):
    """Count every statement a Connection runs (the call goes through unchanged)."""
    calls = []
    original = db.Connection._run

    def run(self, sql, params=()):
        calls.append(sql)
        return original(self, sql, params)

    monkeypatch.setattr(db.Connection, "_run", run)
    return calls


@pytest.fixture
def studio(make_app, database, fake_openai):
    return make_app(**openai_settings(fake_openai), WORKER_LAUNCH="none")


def queries(calls, action, status: int | None = None) -> int:
    """How many statements one request runs."""
    calls.clear()
    response = action()
    assert response.status_code in ((status,) if status else (200, 303)), response.status_code
    return len(calls)


def test_query_counts_per_page_do_not_grow_with_the_items(studio, conn, counted):
    user = make_subscriber(conn)
    client, token = signed_in_client(studio, conn, user)
    client.set_cookie("lang", "en")
    small = client.post("/batches", data=hidden_fields(client.post(
        "/generate/review", data={**FORM, "names": "", "csrf_token": token}).text)).headers["Location"]
    big = client.post("/batches", data=hidden_fields(client.post(
        "/generate/review", data={**FORM, "names": "", "prompts": "\n".join(f"p{n}" for n in range(100)),
                                  "csrf_token": token}).text)).headers["Location"]
    small_id, big_id = (int(url.rsplit("/", 1)[1]) for url in (small, big))
    client.get("/library")  # the first page with images makes the user's library key (two statements, once)
    figures = {
        "account": queries(counted, lambda: client.get("/account")),
        "compose": queries(counted, lambda: client.get("/generate")),
        "library": queries(counted, lambda: client.get("/library")),
        "batch page, 4 items": queries(counted, lambda: client.get(f"/batches/{small_id}")),
        "batch page, 100 items": queries(counted, lambda: client.get(f"/batches/{big_id}")),
        "poll, 4 items": queries(counted, lambda: client.get(f"/api/batches/{small_id}")),
        "poll, 100 items": queries(counted, lambda: client.get(f"/api/batches/{big_id}")),
    }
    first = client.get(f"/api/batches/{big_id}")
    cursor, etag = first.json["cursor"], first.headers["ETag"]
    figures["poll, nothing new (304)"] = queries(counted, lambda: client.get(
        f"/api/batches/{big_id}?since={cursor}", headers={"If-None-Match": etag}), status=304)
    figures["poll, nothing new (no validator)"] = queries(counted, lambda: client.get(
        f"/api/batches/{big_id}?since={cursor}"))
    conn.execute("UPDATE batch_items SET changed_seq = changed_seq + 1, status = 'running' WHERE batch_id = ? "
                 "AND position = 7", (big_id,))
    conn.execute("UPDATE batches SET change_seq = change_seq + 1 WHERE id = ?", (big_id,))
    figures["poll, one change"] = queries(counted, lambda: client.get(f"/api/batches/{big_id}?since={cursor}",
                                                                       headers={"If-None-Match": etag}))
    # No query per item: 4 items and 100 cost the same.
    assert figures["batch page, 4 items"] == figures["batch page, 100 items"], figures
    assert figures["poll, 4 items"] == figures["poll, 100 items"], figures
    assert figures == EXPECTED, figures


# Measured 2026-12-02, without ADMIN_EMAILS (an owner check adds one query to every signed-in page); 2026-12-03
# the session and its user read in one query, the batch with its owner's credits and the service pause in one,
# and the delta polls. Later on 2026-12-03: a page reads the plan (latest subscription) and the credits with the
# session, the account its identities with the count of finished batches, and a poll the session with the batch:
# a poll with nothing new answers 304 after that one query, a full poll adds the items, a delta with a change
# the changed items and the counts.
EXPECTED = {"account": 3, "compose": 1, "library": 4, "batch page, 4 items": 3, "batch page, 100 items": 3,
            "poll, 4 items": 2, "poll, 100 items": 2, "poll, nothing new (304)": 1,
            "poll, nothing new (no validator)": 2, "poll, one change": 3}


def test_the_owner_check_costs_no_query_of_its_own(make_app, database, fake_openai, conn, counted):
    """With ADMIN_EMAILS set every signed-in page asks whether to show Admin: the session's one query answers it."""
    app = make_app(**openai_settings(fake_openai), WORKER_LAUNCH="none", ADMIN_EMAILS="boss@example.com")
    user = make_subscriber(conn)
    client, _token = signed_in_client(app, conn, user)
    client.set_cookie("lang", "en")
    client.get("/library")  # makes the library key
    figures = {path: queries(counted, lambda path=path: client.get(path)) for path in ("/account", "/generate")}
    assert figures == {"/account": EXPECTED["account"], "/generate": EXPECTED["compose"]}, figures
