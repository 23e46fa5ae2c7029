"""The owner's console on both engines: who may see it, every figure of the overview against known data,
the subscriber pages, the support actions with their audit lines and effects, and the CSV exports."""

import csv
import datetime
import io
import time
from decimal import Decimal

import pytest

from services import admin, batches, credits, db
from tests.conftest import TEST_CATALOG, BufferedClient, make_subscriber, openai_settings, signed_in_client

OWNER = "owner@example.com"


@pytest.fixture
def console(make_app, database, fake_openai):
    return make_app(**openai_settings(fake_openai), WORKER_LAUNCH="none", ADMIN_EMAILS=f"{OWNER}, boss@example.com",
                    STRIPE_FEE_PERCENT="2.9", STRIPE_FEE_FIXED_CENTS="30", PLAN_PRICE_USD="5", PLAN_CREDITS="300")


def identity(conn, user_id, email, verified, provider="google"):
    conn.execute("INSERT INTO identities (user_id, provider, issuer, subject, email, display_name, created_at, "
                 "last_login_at, email_verified) VALUES (?, ?, ?, ?, ?, '', 1, 1, ?)",
                 (user_id, provider, f"https://{provider}.test", f"sub-{user_id}-{provider}", email, int(verified)))


def make_owner(conn, email=OWNER, verified=True):
    user_id = make_subscriber(conn, name="Owner", email=email, balance=0)
    identity(conn, user_id, email, verified)
    return user_id


def owner_client(console, conn):
    owner_id = make_owner(conn)
    client, token = signed_in_client(console, conn, owner_id)
    client.set_cookie("lang", "en")
    return owner_id, client, token


def make_batch(conn, user_id, prompts, speed="now", model="gpt-image-2"):
    checked = batches.review(TEST_CATALOG, datetime.date.today(), prompts=prompts, names=[], style="",
                             model_id=model, ratio="1:1", quality="low", image_format="png", separator=", ",
                             max_prompts=200, credits_left=10_000, speed=speed)
    batch_id, _ = batches.create(conn, TEST_CATALOG, user_id, checked, f"t{time.monotonic_ns()}", int(time.time()),
                                 max_open=100)
    return batch_id, [item["id"] for item in db.batch_items_of(conn, batch_id)]


def settle_item(conn, item_id, status, when, tokens=None, charged=2, error_code=None):
    conn.execute("UPDATE batch_items SET status = ?, finished_at = ?, input_tokens = ?, output_tokens = ?, "
                 "charged = ?, error_code = ? WHERE id = ?",
                 (status, when, tokens[0] if tokens else None, tokens[1] if tokens else None, charged, error_code,
                  item_id))


def invoice(conn, user_id, invoice_id, cents, paid_at, refunded=0):
    conn.execute("INSERT INTO invoices (stripe_invoice_id, user_id, amount_paid, amount_refunded, currency, paid_at, "
                 "created_at, updated_at) VALUES (?, ?, ?, ?, 'usd', ?, ?, ?)",
                 (invoice_id, user_id, cents, refunded, paid_at, paid_at, paid_at))


# --- who may see it --------------------------------------------------------------------------------

ADMIN_GETS = ["/admin", "/admin/users", "/admin/users/1", "/admin/months.csv", "/admin/users/1/ledger.csv"]
ADMIN_POSTS = ["/admin/users/1/adjust", "/admin/users/1/block", "/admin/users/1/unblock",
               "/admin/users/1/batches/1/retry", "/admin/users/1/items/1/prompt"]


def test_everyone_but_an_owner_with_a_verified_email_gets_404(console, conn):
    anonymous = BufferedClient(console)
    for path in ADMIN_GETS:
        assert anonymous.get(path).status_code == 404, path
    subscriber = make_subscriber(conn, email="ana@example.com")
    identity(conn, subscriber, "ana@example.com", True)
    unverified = make_owner(conn, email="boss@example.com", verified=False)  # listed, but the provider did not vouch
    for user_id in (subscriber, unverified):
        client, token = signed_in_client(console, conn, user_id)
        home = client.get("/").text
        assert 'href="/admin"' not in home
        for path in ADMIN_GETS:
            assert client.get(path).status_code == 404, path
        for path in ADMIN_POSTS:
            assert client.post(path, data={"csrf_token": token, "reason": "x", "credits": "5"}).status_code == 404
    assert credits.balance(conn, subscriber) == 300 and conn.scalar("SELECT COUNT(*) AS n FROM admin_audit") == 0


def test_an_owner_sees_the_link_and_the_console_and_nobody_is_an_owner_without_admin_emails(console, make_app, conn,
                                                                                               fake_openai):
    owner_id, client, _token = owner_client(console, conn)
    assert 'href="/admin"' in client.get("/").text
    page = client.get("/admin")
    assert page.status_code == 200 and page.headers["Cache-Control"] == "no-store" and "Money" in page.text
    plain = make_app(**openai_settings(fake_openai), WORKER_LAUNCH="none")  # no ADMIN_EMAILS: no owner at all
    other, _ = signed_in_client(plain, conn, owner_id)
    assert other.get("/admin").status_code == 404


# --- the figures -------------------------------------------------------------------------------------

def test_every_figure_of_the_overview_from_known_data(console, conn, tmp_path):
    now = int(time.time())
    this_month, last_month = admin.month_start(now), admin.month_start(now, 1)
    a = make_subscriber(conn, name="A", email="a@example.com")
    b = make_subscriber(conn, name="B", email="b@example.com")
    conn.execute("UPDATE subscriptions SET cancel_at_period_end = 1 WHERE user_id = ?", (b,))
    c = make_subscriber(conn, name="C", email="c@example.com", status="past_due")
    make_subscriber(conn, name="D", email="d@example.com", status="trialing")
    e = make_subscriber(conn, name="E", email="e@example.com")
    conn.execute("UPDATE users SET billing_hold = 'dispute' WHERE id = ?", (e,))
    f = make_subscriber(conn, name="F", email="f@example.com", status="canceled")
    conn.execute("UPDATE users SET blocked_at = ?, blocked_reason = 'abuse' WHERE id = ?", (now, f))

    invoice(conn, a, "in_a_this", 500, this_month + 3600)
    invoice(conn, b, "in_b_this", 500, this_month + 7200, refunded=500)
    invoice(conn, c, "in_c_last", 500, last_month + 3600)
    invoice(conn, a, "in_a_last", 500, last_month + 7200)

    _batch, items = make_batch(conn, a, ["one", "two", "three", "four", "five"])
    today = admin.day_start(now) + 60
    settle_item(conn, items[0], "done", today, tokens=(100, 7024))
    settle_item(conn, items[1], "delivered", today, tokens=(100, 7024))
    settle_item(conn, items[2], "done", today, tokens=None, charged=2)  # no usage recorded: estimated
    settle_item(conn, items[3], "failed", today, charged=0, error_code="refused")
    settle_item(conn, items[4], "failed", today, charged=0, error_code="upstream")
    _eco, [eco_item] = make_batch(conn, a, ["six"], speed="economy")
    settle_item(conn, eco_item, "done", today, tokens=(100, 7024), charged=1)

    raw = TEST_CATALOG_RAW()
    f_ = admin.overview(conn, console.settings, raw, now)
    assert f_["subscribers"] == {"active": 2, "trialing": 1, "cancelling": 1, "past_due": 1, "unpaid": 0,
                                 "paused": 0, "disputed": 1, "blocked": 1}
    # Active A, E (disputed, still paying) and cancelling B count until they end; past due C too; trialing D not.
    assert f_["mrr_cents"] == 4 * 500
    tm, lm = f_["this_month"], f_["last_month"]
    assert tm["revenue_cents"] == 500 and tm["invoices"] == 2 and lm["revenue_cents"] == 1000
    assert tm["fees_cents"] == Decimal("1000") * Decimal("0.029") + 60
    now_cost = Decimal(2 * 100 * 5 + 2 * 7024 * 30) / 1_000_000
    economy_cost = Decimal(100 * 5 + 7024 * 30) / 1_000_000 / 2
    estimate = 2 * Decimal("0.005")
    assert tm["cost_usd"] == now_cost + economy_cost + estimate
    assert tm["margin_cents"] == 500 - tm["fees_cents"] - tm["cost_usd"] * 100
    assert tm["images"] == 4 and lm["images"] == 0
    assert tm["credits_granted"] == 6 * 300  # make_subscriber's grants (the owner's console has no owner here)
    [model] = f_["per_model"]
    assert model["model"] == "gpt-image-2" and model["images"] == 4 and model["credits"] == 2 + 2 + 2 + 1
    assert f_["outcomes"][-1] == {"done": 4, "refused": 1, "upstream": 1, "timeout": 0, "invalid": 0,
                                  "economy_expired": 0, "other": 0}
    assert f_["cost_per_day"][-1] == tm["cost_usd"] and f_["revenue_per_day"][-1] in (Decimal(0), Decimal(5))
    assert len(f_["days"]) == 30
    rows = list(csv.reader(io.StringIO(admin.months_csv(f_).lstrip("\ufeff"))))
    assert rows[0][:4] == ["month", "invoices", "revenue_usd", "stripe_fees_usd"] and len(rows) == 13
    assert rows[-1][1:3] == ["2", "5.00"] and rows[-2][2] == "10.00"


def TEST_CATALOG_RAW():
    from services import catalog
    from tests.conftest import UNRETIRED_CATALOG_DATA
    return UNRETIRED_CATALOG_DATA if "token_prices_usd_per_million" in UNRETIRED_CATALOG_DATA \
        else catalog.read_json(catalog.DEFAULT_FILE)


def test_the_queue_and_the_owners_events(console, conn):
    now = int(time.time())
    user = make_subscriber(conn)
    make_batch(conn, user, ["a", "b", "c"])
    log_dir = console.settings.var_dir / "log"
    log_dir.mkdir(parents=True, exist_ok=True)
    (log_dir / "worker.log").write_text(
        "2026-12-01 10:00:00,000 ERROR services.worker [-] OPERATOR: the OpenAI account refused work (quota)\n"
        "2026-12-01 10:00:01,000 INFO services.worker [-] an ordinary line\n", encoding="utf-8")
    (log_dir / "web.log").write_text(
        "2026-12-02 09:00:00,000 WARNING services.billing [-] OPERATOR: the Stripe webhook endpoint sends events "
        "in API version 2024-06-20\n", encoding="utf-8")
    from services import worker
    with conn.transaction():
        worker.count_minute(conn, "calls", now * 1000)
        worker.count_minute(conn, "calls", now * 1000)
        worker.count_minute(conn, "rate_limited", now * 1000)
    f = admin.overview(conn, console.settings, TEST_CATALOG_RAW(), now)
    assert f["queue"]["by_status"] == {"queued": 3} and f["queue"]["calls_last_hour"] == 2
    assert f["queue"]["rate_limited_last_hour"] == 1 and f["queue"]["busiest_minute"] == 2
    assert [e["time"][:10] for e in f["operator_events"]] == ["2026-12-02", "2026-12-01"]
    assert "webhook endpoint" in f["operator_events"][0]["text"]


# --- subscribers and support actions --------------------------------------------------------------

def audit(conn):
    return [(r["action"], r["target_user_id"], r["reason"]) for r in
            conn.all("SELECT action, target_user_id, reason FROM admin_audit ORDER BY id")]


def test_search_and_a_subscribers_page_without_prompts(console, conn):
    _owner, client, _token = owner_client(console, conn)
    ana = make_subscriber(conn, name="Ana García", email="ana@example.com")
    make_subscriber(conn, name="Ben", email="ben_1%@example.com")
    batch_id, items = make_batch(conn, ana, ["a secret prompt about foxes", "another"])
    settle_item(conn, items[0], "failed", int(time.time()), charged=0, error_code="refused")
    found = client.get("/admin/users?q=GARC").text
    assert "Ana García" in found and "ben_1%@" not in found
    assert "ben_1%@example.com" in client.get("/admin/users?q=_1%25").text  # LIKE's wildcards taken literally
    assert "Ana" not in client.get("/admin/users?q=_1%25").text.split("users-table")[1]
    page = client.get(f"/admin/users/{ana}").text
    assert f">{batch_id}<" in page and "ana@example.com" in page and "Refused by the safety system" in page
    assert "secret prompt" not in page and "another" not in page
    assert client.get("/admin/users/999999").status_code == 404


def test_adjust_credits_needs_a_reason_and_never_goes_below_zero(console, conn):
    owner_id, client, token = owner_client(console, conn)
    ana = make_subscriber(conn, balance=10)
    missing = client.post(f"/admin/users/{ana}/adjust", data={"csrf_token": token, "credits": "50", "reason": " "})
    assert missing.status_code == 422 and "Say why" in missing.text
    done = client.post(f"/admin/users/{ana}/adjust", data={"csrf_token": token, "credits": "+50",
                                                           "reason": "sorry for the outage"})
    assert done.status_code == 303 and credits.balance(conn, ana) == 60
    too_much = client.post(f"/admin/users/{ana}/adjust", data={"csrf_token": token, "credits": "-61",
                                                               "reason": "mistake"})
    assert too_much.status_code == 422 and "only 60 credits" in too_much.text and credits.balance(conn, ana) == 60
    client.post(f"/admin/users/{ana}/adjust", data={"csrf_token": token, "credits": "-60", "reason": "mistake"})
    assert credits.balance(conn, ana) == 0
    assert [(r["reason"], r["delta"]) for r in conn.all("SELECT reason, delta FROM credit_ledger WHERE user_id = ? "
                                                        "AND reason = 'adjust' ORDER BY id", (ana,))] \
        == [("adjust", 50), ("adjust", -60)]
    assert audit(conn) == [("adjust", ana, "sorry for the outage"), ("adjust", ana, "mistake")]
    assert conn.scalar("SELECT COUNT(*) AS n FROM admin_audit WHERE admin_user_id = ?", (owner_id,)) == 2
    for bad in ("0", "abc", "1000001", ""):
        assert client.post(f"/admin/users/{ana}/adjust", data={"csrf_token": token, "credits": bad,
                                                               "reason": "x"}).status_code == 422
    assert client.post(f"/admin/users/{ana}/adjust", data={"credits": "5", "reason": "no token"}).status_code == 403


def test_retry_on_the_house_gives_the_credits_the_retry_takes(console, conn):
    _owner, client, token = owner_client(console, conn)
    ana = make_subscriber(conn, balance=0)
    batch_id, items = make_batch(conn, ana, ["a", "b", "c"])
    for item in items[:2]:
        settle_item(conn, item, "failed", int(time.time()), charged=0, error_code="upstream")
    settle_item(conn, items[2], "done", int(time.time()), tokens=(1, 1))
    response = client.post(f"/admin/users/{ana}/batches/{batch_id}/retry", data={"csrf_token": token,
                                                                                "reason": "our outage"})
    assert response.status_code == 303
    assert sorted(i["status"] for i in db.batch_items_of(conn, batch_id)) == ["done", "queued", "queued"]
    assert credits.balance(conn, ana) == 2 * 2  # exactly what the two retries will reserve
    assert audit(conn) == [("retry_free", ana, "our outage")]
    other = make_subscriber(conn, email="x@example.com")
    assert client.post(f"/admin/users/{other}/batches/{batch_id}/retry",
                       data={"csrf_token": token, "reason": "x"}).status_code == 404  # not their batch


def test_block_signs_out_refunds_what_waits_and_refuses_new_batches_until_unblocked(console, conn):
    _owner, client, token = owner_client(console, conn)
    ana = make_subscriber(conn, balance=300)
    ana_client, ana_token = signed_in_client(console, conn, ana)
    batch_id, items = make_batch(conn, ana, ["a", "b", "c"])
    credits.reserve(conn, ana, 2, f"item:{items[0]}:1", int(time.time()))
    db.batch_item_set_charged(conn, items[0], 2)
    assert client.post(f"/admin/users/{ana}/block", data={"csrf_token": token, "reason": "chargeback fraud"}) \
        .status_code == 303
    assert [i["status"] for i in db.batch_items_of(conn, batch_id)] == ["cancelled"] * 3
    assert credits.balance(conn, ana) == 300  # the reserved image came back
    assert conn.scalar("SELECT COUNT(*) AS n FROM sessions WHERE user_id = ?", (ana,)) == 0
    assert ana_client.get("/generate").status_code == 303  # signed out
    ana_client, ana_token = signed_in_client(console, conn, ana)  # signs in again
    page = ana_client.get("/generate").text
    assert 'id="blocked-text"' in page and 'id="blocked-banner"' in page
    api = ana_client.post("/api/batches", json={"prompts": "x", "model": "gpt-image-2", "ratio": "1:1",
                                                "quality": "low", "format": "png"}, headers={"X-CSRF-Token": ana_token})
    assert api.status_code == 403 and api.json["error"]["code"] == "blocked"
    assert "Blocked on" in client.get(f"/admin/users/{ana}").text
    assert client.post(f"/admin/users/{ana}/unblock", data={"csrf_token": token, "reason": "settled"}) \
        .status_code == 303
    assert 'id="blocked-text"' not in ana_client.get("/generate").text
    assert audit(conn) == [("block", ana, "chargeback fraud"), ("unblock", ana, "settled")]


def test_a_refused_prompt_is_shown_only_on_request_and_the_request_is_audited(console, conn):
    _owner, client, token = owner_client(console, conn)
    ana = make_subscriber(conn)
    _batch, items = make_batch(conn, ana, ["a FORBIDDEN thing", "fine"])
    settle_item(conn, items[0], "failed", int(time.time()), charged=0, error_code="refused")
    settle_item(conn, items[1], "failed", int(time.time()), charged=0, error_code="upstream")
    assert "FORBIDDEN" not in client.get(f"/admin/users/{ana}").text
    shown = client.post(f"/admin/users/{ana}/items/{items[0]}/prompt", data={"csrf_token": token,
                                                                            "reason": "appeal by email"})
    assert shown.status_code == 200 and "a FORBIDDEN thing" in shown.text
    assert audit(conn) == [("show_prompt", ana, "appeal by email")]
    assert client.post(f"/admin/users/{ana}/items/{items[1]}/prompt",
                       data={"csrf_token": token, "reason": "curious"}).status_code == 404  # only refused ones


def test_the_ledger_csv_is_formula_safe(console, conn):
    _owner, client, _token = owner_client(console, conn)
    ana = make_subscriber(conn, balance=300)
    credits.adjust(conn, ana, -5, "=HYPERLINK(\"http://evil\")", int(time.time()))
    response = client.get(f"/admin/users/{ana}/ledger.csv")
    assert response.status_code == 200 and response.headers["Content-Type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(response.text.lstrip("\ufeff"))))
    assert rows[0] == ["id", "time_utc", "delta", "reason", "reference"]
    assert rows[-1][2:] == ["'-5", "adjust", "'=HYPERLINK(\"http://evil\")"]
    assert admin.csv_cell("@SUM(A1)") == "'@SUM(A1)" and admin.csv_cell("fine") == "fine"


def test_spanish_console(console, conn):
    _owner, client, _token = owner_client(console, conn)
    client.set_cookie("lang", "es")
    page = client.get("/admin").text
    assert "Ingresos" in page and "Suscriptores" in page


def test_closed_days_are_rolled_up_once_and_survive_the_purge_of_their_batches(console, conn, database):
    now = int(time.time())
    today = admin.day_start(now)
    ana = make_subscriber(conn, name="Ana", email="a@example.com")
    batch_id, items = make_batch(conn, ana, ["one", "two", "three", "four"])
    settle_item(conn, items[0], "done", today - 86400 + 60, tokens=(100, 7024))  # yesterday
    settle_item(conn, items[1], "failed", today - 86400 + 120, charged=0, error_code="refused")
    settle_item(conn, items[2], "delivered", today - 5 * 86400, tokens=(100, 7024))  # five days ago
    settle_item(conn, items[3], "done", today + 30, tokens=(100, 7024))  # today: read live
    before = admin.overview(conn, console.settings, TEST_CATALOG_RAW(), now)
    assert conn.scalar("SELECT COUNT(*) AS n FROM daily_images") >= 3
    assert admin.rollup(conn, now) == 0  # nothing new to roll up: the same call again does nothing
    assert before["outcomes"][-1]["done"] == 1 and before["outcomes"][-2] == {**dict.fromkeys(admin.OUTCOMES, 0),
                                                                             "done": 1, "refused": 1}
    assert before["outcomes"][-6]["done"] == 1
    # A second process rolling up at the same time changes nothing either (the state row is locked).
    other = database.connect()
    try:
        assert admin.rollup(other, now) == 0
    finally:
        other.close()
    # The batch goes (its owner deletes it, or the history is purged): the figures of closed days stay.
    conn.execute("UPDATE batches SET status = 'done' WHERE id = ?", (batch_id,))
    assert batches.delete_history(conn, console.settings.results_dir, ana) == 1
    after = admin.overview(conn, console.settings, TEST_CATALOG_RAW(), now)
    assert after["outcomes"][:-1] == before["outcomes"][:-1] and after["outcomes"][-1]["done"] == 0
    assert after["cost_per_day"][:-1] == before["cost_per_day"][:-1]
    assert after["this_month"]["credits_granted"] == before["this_month"]["credits_granted"]
