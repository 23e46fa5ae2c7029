"""The batch page tells the truth while it runs: in Chromium, every control and count against the API's state.

After each step (running, done with a refused image, stopped, resumed, credits running out, an
economy batch waiting and expired) the page's visible buttons, banners and their counts are read
from the DOM and compared with what the rules say for the state the API reports, without the
page reloading itself; the same is checked without JavaScript after a reload.
"""

import time

import pytest

from services import credits, db
from tests.conftest import make_subscriber
from tests.test_journey import accessible, csp_problems, errors, shot, site  # noqa: F401 - the fixture

pytestmark = pytest.mark.browser
TIMEOUT = 60_000

READ_CONTROLS = """() => {
  const ids = ['batch-banner', 'service-banner', 'economy-banner', 'expired-banner', 'test-banner', 'close-hint',
               'short-text', 'retry-form', 'stop-form', 'resume-form', 'cancel-form', 'failed-filter', 'zip-button'];
  const out = {};
  for (const id of ids) {
    const el = document.getElementById(id);
    out[id] = !!el && el.checkVisibility();
  }
  out.cancel = document.getElementById('cancel-button').textContent.trim();
  out.retry = document.getElementById('retry-button').textContent.trim();
  out.resumeDisabled = document.getElementById('resume-button').disabled;
  out.edits = document.querySelectorAll('#results .result-edit').length;
  out.retries = document.querySelectorAll('#results .result-retry:not(.result-edit)').length;
  return out;
}"""


# A count's text as the page's own strings give it (data-t-<key>-one / -other, by the language's plural rules).
PLURAL_TEXT = """([key, n]) => {
  const t = document.getElementById('batch').dataset;
  const form = new Intl.PluralRules(document.documentElement.lang).select(n);
  return (t[key + form[0].toUpperCase() + form.slice(1)] ?? t[key + 'Other']).replace('{n}', n);
}"""


def expected(state: dict) -> dict:
    """What the page must show for an API state (the rules the server and batch.js share)."""
    b, counts, items = state["batch"], state["counts"], state["items"]
    n = counts.get
    failed, refused, held = n("failed", 0), state["refused"], n("held", 0)
    not_started = n("queued", 0) + held + n("waiting", 0)
    short = b["credits_per_item"] > state["credits_left"]
    expired = sum(1 for i in items if i["status"] == "failed" and i["error_code"] == "economy_expired")
    return {
        "batch-banner": b["status"] == "paused" and bool(b["pause_message"]),
        "service-banner": b["pause_reason"] == "service_paused",
        "economy-banner": b["speed"] == "economy" and (n("waiting", 0) > 0 or (b["status"] == "active"
                                                                              and n("queued", 0) > 0)),
        "expired-banner": b["speed"] == "economy" and expired > 0,
        "test-banner": held > 0,
        "close-hint": b["status"] == "active",
        "short-text": short and (b["status"] == "paused" or failed - refused > 0),
        "retry-form": failed - refused > 0,
        "stop-form": b["status"] == "active" and n("queued", 0) + n("running", 0) > 0,
        "resume-form": b["status"] == "paused",
        "cancel-form": not_started > 0,
        "failed-filter": failed > 0,
        "edits": refused,
        "retries": failed - refused,
        "cancel_count": not_started,
    }


def check(page, batch_id: int) -> dict:
    """The page's controls equal what the API's state calls for, once the state held still for a poll; the state."""
    read = f"async () => (await fetch('/api/batches/{batch_id}', {{cache: 'no-store'}})).json()"
    state = page.evaluate(read)
    for _ in range(20):
        page.wait_for_timeout(2200)  # the page polls every 2 s: it has seen at least this state
        again = page.evaluate(read)
        if (again["counts"], again["batch"]["status"]) == (state["counts"], state["batch"]["status"]):
            break
        state = again
    seen, want = page.evaluate(READ_CONTROLS), expected(state)
    for key in [k for k in want if k.endswith(("banner", "hint", "text", "form", "filter"))]:
        assert seen[key] == want[key], (key, seen, state["counts"], state["batch"]["status"])
    assert seen["edits"] == want["edits"] and seen["retries"] == want["retries"], (seen, state["counts"])
    if want["cancel-form"]:
        assert seen["cancel"] == page.evaluate(PLURAL_TEXT, ["tCancel", want["cancel_count"]]), seen["cancel"]
    return state


def sign_in_page(page, base: str, app, balance=300) -> int:
    """A subscriber with a session cookie in this browser; returns their id."""
    from routes import web
    from services import sessions

    conn = app.database.connect()
    try:
        user = make_subscriber(conn, balance=balance)
        session = sessions.create(conn, app.settings, web.now(), user_id=user)
    finally:
        conn.close()
    page.context.add_cookies([{"name": sessions.cookie_name(app.settings), "value": session.token, "url": base}])
    return user


def start_batch(page, base: str, prompts, quality="low", speed="now") -> int:
    page.goto(base + "/generate")
    page.fill("#prompts", "\n".join(prompts))
    page.check(f"input[name=quality][value='{quality}']")
    page.check(f"input[name=speed][value='{speed}']")
    page.check("input[name=ratio][value='1:1']")
    page.click("#review-button")
    page.click("#start-button")
    page.wait_for_url(f"{base}/batches/*")
    return int(page.url.rsplit("/", 1)[1])


def test_the_controls_follow_a_running_batch_without_reloading(page, site, fake_openai):  # noqa: F811
    base, app = site
    fake_openai.latency = 6.0  # each call takes 6 s: the running state holds still long enough to be compared
    sign_in_page(page, base, app)
    batch_id = start_batch(page, base, ["a fox", "a FORBIDDEN thing", "a whale", "a boat", "a kite", "a cup"])
    page.evaluate("window.__notReloaded = true")
    running = check(page, batch_id)  # running: stop, cancel "N not started", close hint
    assert running["batch"]["status"] == "active" and running["counts"].get("running", 0) > 0
    shot(page, "50-batch-running-es")
    fake_openai.latency = 0.2
    page.wait_for_function("() => document.querySelector('#batch-progress').value === 6", timeout=TIMEOUT)
    state = check(page, batch_id)  # done: one refused image, edit and retry on its row, no plain retry
    assert state["refused"] == 1 and page.evaluate("window.__notReloaded === true")
    assert page.locator("#zip-button").is_visible()
    accessible(page)
    shot(page, "51-batch-done-es")
    # The refused image, rewritten, is made again; the page follows without a reload of its own.
    page.fill("#results .result-edit textarea", "a friendly thing")
    page.click("#results .result-edit button")
    page.wait_for_function("() => document.querySelector('#batch-progress').value === 6 && "
                           "!document.querySelector('#results .result-edit')", timeout=TIMEOUT)
    check(page, batch_id)
    assert csp_problems(page) == [] and errors(page) == [], page.problems


def test_stop_resume_and_credits_running_out(page, site, fake_openai):  # noqa: F811
    base, app = site
    fake_openai.latency = 3.0
    user = sign_in_page(page, base, app, balance=16)  # eight images at 2 credits, more than the worker's slots
    batch_id = start_batch(page, base, [f"image {n}" for n in range(8)])
    page.click("#stop-button")
    page.wait_for_url(f"{base}/batches/{batch_id}")
    state = check(page, batch_id)
    assert state["batch"]["status"] == "paused" and state["counts"].get("queued", 0) > 0
    conn = app.database.connect()
    try:  # meanwhile the credits go elsewhere: what is left cannot pay for one more image
        credits.reserve(conn, user, credits.balance(conn, user) - 1, "elsewhere", int(time.time()))
    finally:
        conn.close()
    page.click("#resume-button")
    page.wait_for_url(f"{base}/batches/{batch_id}")
    page.wait_for_function("() => !document.querySelector('#resume-form').hidden", timeout=TIMEOUT)
    state = check(page, batch_id)
    assert state["batch"]["pause_reason"] == "no_credits" and state["counts"].get("failed", 0) == 0
    assert page.evaluate(READ_CONTROLS)["resumeDisabled"] and page.locator("#short-text").is_visible()
    shot(page, "52-batch-out-of-credits-es")
    conn = app.database.connect()
    try:
        statuses = [(i["status"], i["error_code"]) for i in db.batch_items_of(conn, batch_id)]
        assert all(status in ("done", "queued", "delivered") for status, _code in statuses), statuses
    finally:
        conn.close()


def test_without_javascript_the_page_shows_the_same_truth_on_each_load(browser, site, fake_openai):  # noqa: F811
    base, app = site
    context = browser.new_context(locale="en-US", java_script_enabled=False)
    page = context.new_page()
    try:
        sign_in_page(page, base, app)
        page.goto(base + "/generate")
        page.fill("#prompts", "a fox\na FORBIDDEN thing\na whale")
        page.check("input[name=quality][value='low']")
        page.click("#review-button")
        page.click("#start-button")
        page.wait_for_url(f"{base}/batches/*")
        batch_id = int(page.url.rsplit("/", 1)[1])
        conn = app.database.connect()
        try:
            deadline = time.monotonic() + 60
            while conn.scalar("SELECT COUNT(*) AS n FROM batch_items WHERE batch_id = ? AND status IN "
                              "('queued', 'running')", (batch_id,)) and time.monotonic() < deadline:
                time.sleep(0.2)
        finally:
            conn.close()
        page.reload()
        seen = page.evaluate(READ_CONTROLS)
        assert not seen["zip-button"] and not seen["stop-form"] and not seen["close-hint"]
        assert seen["failed-filter"] and not seen["retry-form"] and seen["edits"] == 1
        assert page.locator("noscript").count() >= 1
    finally:
        context.close()


def test_cancel_midway_and_an_economy_batch_from_waiting_to_expired_to_made_now(page, site, fake_openai):  # noqa: F811
    base, app = site
    fake_openai.latency = 30.0  # the first images hang in their calls: the rest stay queued until Cancel
    sign_in_page(page, base, app)
    batch_id = start_batch(page, base, [f"image {n}" for n in range(7)])
    state = check(page, batch_id)
    assert state["counts"].get("queued", 0) > 0 and page.locator("#cancel-button").is_visible()
    page.click("#cancel-button")
    page.wait_for_url(f"{base}/batches/{batch_id}")
    state = check(page, batch_id)
    assert state["counts"].get("cancelled", 0) > 0 and not page.locator("#cancel-form").is_visible()

    fake_openai.latency = 0.2
    fake_openai.batch_pace = {"validating": 2.0, "per_request": 3.0, "finalizing": 0.5, "cancelling": 0.1}
    fake_openai.batch_expire_after_requests = 1  # one image made, the other two never within the window
    economy_id = start_batch(page, base, ["a fox", "a whale", "a boat"], speed="economy")
    page.wait_for_function("() => /\\d/.test(document.querySelector('#economy-progress').textContent)",
                           timeout=TIMEOUT)
    state = check(page, economy_id)
    assert state["counts"].get("waiting", 0) == 3 and page.locator("#economy-banner").is_visible()
    page.wait_for_function("() => !document.querySelector('#expired-banner').hidden", timeout=TIMEOUT)
    state = check(page, economy_id)
    assert page.locator("#expired-banner").is_visible() and "2" in page.text_content("#now-button")
    shot(page, "53-batch-economy-expired-es")
    page.click("#now-button")
    page.wait_for_url(f"{base}/batches/{economy_id}")
    page.wait_for_function("() => document.querySelector('#batch-progress').value === 3 && "
                           "document.querySelector('#expired-banner').hidden", timeout=TIMEOUT)
    state = check(page, economy_id)
    assert state["batch"]["speed"] == "now" and state["counts"].get("failed", 0) == 0
    assert csp_problems(page) == [] and errors(page) == [], page.problems


def test_screenshots_in_english_mid_run_at_the_end_and_the_review_short_of_credits(browser, site, fake_openai):  # noqa: F811
    base, app = site
    context = browser.new_context(locale="en-US", viewport={"width": 1280, "height": 800})
    page = context.new_page()
    try:
        fake_openai.latency = 4.0
        sign_in_page(page, base, app, balance=7)
        page.goto(f"{base}/lang/en?next=/generate")
        page.fill("#prompts", "\n".join(f"image {n}" for n in range(5)))  # 10 credits, 7 left
        page.check("input[name=quality][value='low']")
        page.check("input[name=ratio][value='1:1']")
        page.click("#review-button")
        assert page.locator("#start-button").is_disabled()
        accessible(page)
        shot(page, "54-review-short-of-credits-en")
        page.goto(f"{base}/lang/es?next=/generate")
        page.fill("#prompts", "\n".join(f"image {n}" for n in range(5)))
        page.check("input[name=quality][value='low']")
        page.click("#review-button")
        shot(page, "54-review-short-of-credits-es")
        page.goto(f"{base}/lang/en?next=/generate")
        page.fill("#prompts", "\n".join(f"image {n}" for n in range(3)))
        page.check("input[name=quality][value='low']")
        page.click("#review-button")
        page.click("#start-button")
        page.wait_for_url(f"{base}/batches/*")
        page.wait_for_function("() => document.querySelectorAll('.result[data-status=running]').length > 0",
                               timeout=TIMEOUT)
        shot(page, "55-batch-running-en")
        fake_openai.latency = 0.2
        page.wait_for_function("() => document.querySelector('#batch-progress').value === 3", timeout=TIMEOUT)
        page.wait_for_selector("#zip-button:not([hidden])", timeout=TIMEOUT)
        accessible(page)
        shot(page, "56-batch-done-en")
    finally:
        context.close()


def test_a_failed_image_is_retried_from_the_page_and_the_controls_follow(page, site, fake_openai):  # noqa: F811
    base, app = site
    fake_openai.latency = 0.1
    fake_openai.fail_next("server_error", count=3)  # the first image's three attempts all fail: it is refunded
    sign_in_page(page, base, app)
    batch_id = start_batch(page, base, ["a lighthouse"])
    page.wait_for_function("() => !document.querySelector('#retry-form').hidden", timeout=TIMEOUT)
    state = check(page, batch_id)
    assert state["counts"] == {"failed": 1} and state["refused"] == 0
    assert page.locator("#results .result-retry:not(.result-edit)").count() == 1
    page.click("#retry-button")
    page.wait_for_url(f"{base}/batches/{batch_id}")
    page.wait_for_function("() => document.querySelector('#batch-progress').value === 1 && "
                           "document.querySelector('#retry-form').hidden", timeout=TIMEOUT)
    state = check(page, batch_id)
    assert state["counts"].get("failed", 0) == 0 and page.locator("#results .result-retry").count() == 0
