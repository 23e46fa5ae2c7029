"""Economy batches from the subscriber's side, in-process on both engines, with OpenAI's Batch API on the stand-in.

The speed choice on compose and review (both prices, what economy gives up, no test run), the
"email me" box (only when the site can send mail), the batch page while OpenAI works, expiry
with "make them now" at the full price, Cancel midway through the page, the library's list of
waiting batches, and the JSON API's speed. Each money path checks the ledger exactly.
"""

import re
import time

import pytest

from services import credits, db, economy, worker
from tests.conftest import make_subscriber, openai_settings, signed_in_client
from tests.test_economy import ledger, settle
from tests.test_studio import FORM, hidden_fields
from tools.fake_smtp import FakeSMTP

# 4 prompts of GPT Image 2 at 1K 1:1 low: 2 credits each now, 1 in economy.
ECONOMY = {**FORM, "ratio": "1:1", "speed": "economy"}


@pytest.fixture
def smtp():
    with FakeSMTP() as fake:
        yield fake


@pytest.fixture
def studio(make_app, database, fake_openai):
    return make_app(**openai_settings(fake_openai), WORKER_LAUNCH="none")


@pytest.fixture
def mail_studio(make_app, database, fake_openai, smtp):
    return make_app(**openai_settings(fake_openai), **smtp.app_settings(), WORKER_LAUNCH="none")


def sign_in(app, conn, lang="en", balance=300):
    user = make_subscriber(conn, balance=balance)
    client, token = signed_in_client(app, conn, user)
    client.set_cookie("lang", lang)
    return user, client, token


def review(client, token, **changes):
    response = client.post("/generate/review", data={**ECONOMY, **changes, "csrf_token": token})
    assert response.status_code == 200, response.text
    return response.text


def start(client, page, **extra) -> int:
    response = client.post("/batches", data={**hidden_fields(page), **extra})
    assert response.status_code == 303, response.text
    return int(response.headers["Location"].rsplit("/", 1)[1])


def test_compose_offers_both_speeds_and_keeps_the_choice(studio, conn):
    _user, client, token = sign_in(studio, conn)
    page = client.get("/generate").text
    assert 'name="speed" value="now" checked' in page and 'name="speed" value="economy" >' in page
    assert "half the credits, ready within 24 hours" in page
    back = client.post("/generate", data={**ECONOMY, "csrf_token": token}).text  # "Back to edit" keeps economy
    assert 'name="speed" value="economy" checked' in back


def test_the_review_shows_both_prices_what_economy_gives_up_and_no_test_run(studio, conn):
    _user, client, token = sign_in(studio, conn)
    page = review(client, token)
    assert "4 needed (1 per image)" in page and "Generate 4 images · 4 credits" in page
    assert re.search(r'id="speed-now">\s*<h3>Now · 8 credits', page)
    assert re.search(r'id="speed-economy">\s*<h3>Economy · 4 credits', page)
    assert "images arrive together at the end" in page and "no test run" in page
    assert 'id="test-button"' not in page and "Switch to now · 8 credits" in page
    assert 'name="notify"' not in page  # the site cannot send mail here: no box
    # The switch carries everything with the other speed: the review of the same batch, now.
    switch = re.search(r'<form method="post" action="/generate/review" class="speed-switch">(.*?)</form>', page, re.S)
    now_page = review(client, token, **{**hidden_fields(switch.group(1))})
    assert "8 needed (2 per image)" in now_page and 'id="test-button"' in now_page
    assert "Switch to economy · 4 credits" in now_page


def test_starting_an_economy_batch_ignores_a_test_run_and_charges_half_when_sent(studio, conn, fake_openai):
    user, client, token = sign_in(studio, conn)
    batch_id = start(client, review(client, token), test_run="1")  # a forged test run: economy has none
    batch = db.batch_get(conn, batch_id)
    assert (batch["speed"], batch["credits_per_item"], batch["notify_email"], batch["lang"]) == ("economy", 1, 0,
                                                                                                  "en")
    assert [i["status"] for i in db.batch_items_of(conn, batch_id)] == ["queued"] * 4  # nothing held
    assert credits.balance(conn, user) == 300  # nothing is charged before it is sent
    page = client.get(f"/batches/{batch_id}").text
    assert 'id="economy-banner"' in page and "Being sent to OpenAI" in page
    fake_openai.batch_pace = {"validating": 0.0, "per_request": 30.0, "finalizing": 0.0, "cancelling": 0.0}
    assert economy.tick(conn, studio.settings, studio.catalog)["sent"] == 4
    assert ledger(conn, user) == [("economy", -1)] * 4
    page = client.get(f"/batches/{batch_id}").text
    assert "Waiting for OpenAI (economy): usually a few hours, at most 24 h." in page
    assert page.count(">Waiting for OpenAI (economy)<") == 4 and "Cancel the 4 not started" in page
    assert "OpenAI has made 0 of 4 so far · 0 failed" in page
    status = client.get(f"/api/batches/{batch_id}").json
    assert status["batch"]["speed"] == "economy" and status["counts"] == {"waiting": 4}
    assert status["economy"]["total"] == 4 and status["economy"]["status"] in ("validating", "in_progress")
    library = client.get("/library").text
    assert 'id="economy-waiting"' in library and "4 at OpenAI" in library


def test_expiry_then_make_them_now_at_the_full_price(studio, conn, fake_openai):
    user, client, token = sign_in(studio, conn)
    batch_id = start(client, review(client, token))
    fake_openai.batch_expire_after_requests = 1  # one image made, three never run within the window
    settle(studio, conn)
    items = db.batch_items_of(conn, batch_id)
    assert sorted(i["error_code"] or i["status"] for i in items) == ["done"] + ["economy_expired"] * 3
    assert credits.balance(conn, user) == 299  # one image at 1 credit; three reserved and refunded
    page = client.get(f"/batches/{batch_id}").text
    assert "OpenAI did not make 3 images within 24 hours" in page and "Make the 3 now · 6 credits" in page
    assert client.post(f"/batches/{batch_id}/now", data={"csrf_token": token}).status_code == 303
    batch = db.batch_get(conn, batch_id)
    assert (batch["speed"], batch["credits_per_item"], batch["status"]) == ("now", 2, "active")
    assert sorted(i["status"] for i in db.batch_items_of(conn, batch_id)) == ["done", "queued", "queued", "queued"]
    worker.run(studio.settings, studio.database, studio.catalog, max_seconds=30)
    assert sorted(i["status"] for i in db.batch_items_of(conn, batch_id)) == ["done"] * 4
    assert ledger(conn, user) == [("economy", -1)] * 4 + [("refund", 1)] * 3 + [("reserve", -2)] * 3
    assert credits.balance(conn, user) == 300 - 1 - 6
    # Pressed again (an old tab): nothing more is queued or charged.
    client.post(f"/batches/{batch_id}/now", data={"csrf_token": token})
    assert credits.balance(conn, user) == 293 and len(ledger(conn, user)) == 10


def test_cancel_midway_from_the_page_refunds_what_openai_did_not_make(studio, conn, fake_openai):
    user, client, token = sign_in(studio, conn)
    fake_openai.batch_pace = {"validating": 0.0, "per_request": 0.5, "finalizing": 0.0, "cancelling": 0.1}
    batch_id = start(client, review(client, token, prompts="\n".join(f"prompt {n}" for n in range(8))))
    economy.tick(conn, studio.settings, studio.catalog)
    time.sleep(0.6)  # about one image made upstream
    assert client.post(f"/batches/{batch_id}/cancel", data={"csrf_token": token}).status_code == 303
    assert db.upstream_get(conn, conn.scalar("SELECT id FROM upstream_batches"))["status"] == "cancelling"
    settle(studio, conn)
    items = db.batch_items_of(conn, batch_id)
    done = sum(i["status"] == "done" for i in items)
    assert {i["status"] for i in items} <= {"done", "cancelled"} and done < 8
    assert credits.balance(conn, user) == 300 - done
    assert ledger(conn, user) == [("economy", -1)] * 8 + [("refund", 1)] * (8 - done)


def test_the_email_box_is_offered_when_mail_works_ticked_for_economy(mail_studio, conn):
    _user, client, token = sign_in(mail_studio, conn)
    page = review(client, token)
    assert re.search(r'name="notify" value="1" id="notify" checked', page) and "ana@example.com" in page
    now_page = review(client, token, speed="now")
    assert 'name="notify" value="1" id="notify" >' in now_page  # there, only if asked
    batch_id = start(client, page, notify="1")
    batch = db.batch_get(conn, batch_id)
    assert batch["notify_email"] == 1 and batch["notified_at"] is None
    assert "We will email you when it is ready" in client.get(f"/batches/{batch_id}").text
    unticked = start(client, review(client, token))  # the box sent unticked: no email
    assert db.batch_get(conn, unticked)["notify_email"] == 0


def test_spanish_review_and_batch_page(studio, conn, fake_openai):
    _user, client, token = sign_in(studio, conn, lang="es")
    page = review(client, token)
    assert "Económico" in page and "Ahora" in page
    batch_id = start(client, page)
    assert db.batch_get(conn, batch_id)["lang"] == "es"
    fake_openai.batch_pace = {"validating": 0.0, "per_request": 30.0, "finalizing": 0.0, "cancelling": 0.0}
    economy.tick(conn, studio.settings, studio.catalog)
    assert "Esperando a OpenAI" in client.get(f"/batches/{batch_id}").text


def test_the_api_takes_a_speed(studio, conn):
    _user, client, token = sign_in(studio, conn)
    body = {**ECONOMY, "request_token": "api-economy-1", "test_run": "1"}
    response = client.post("/api/batches", json=body, headers={"X-CSRF-Token": token})
    assert response.status_code == 201, response.text
    made = response.json
    assert made["batch"]["speed"] == "economy" and made["batch"]["credits_per_item"] == 1
    assert made["counts"] == {"queued": 4}  # no test run in economy
    wrong = client.post("/api/batches", json={**ECONOMY, "speed": "tomorrow", "request_token": "api-2"},
                        headers={"X-CSRF-Token": token})
    assert wrong.status_code == 422 and wrong.json["error"]["code"] == "unknown_speed"


def test_an_economy_batch_emails_its_owner_once_when_everything_has_settled(mail_studio, conn, fake_openai, smtp):
    from services import i18n, notify

    _user, client, token = sign_in(mail_studio, conn, lang="es")
    batch_id = start(client, review(client, token), notify="1")
    translations = i18n.load_translations()
    economy.tick(conn, mail_studio.settings, mail_studio.catalog)
    assert notify.send_due(conn, mail_studio.settings, translations)["sent"] == 0  # still at OpenAI: nothing yet
    settle(mail_studio, conn)
    assert notify.send_due(conn, mail_studio.settings, translations)["sent"] == 1
    assert notify.send_due(conn, mail_studio.settings, translations)["sent"] == 0  # never twice
    [received] = smtp.wait_for(1)
    email = received.as_dict()
    assert email["to"] == "ana@example.com" and email["subject"] == f"Tu lote {batch_id} está listo"
    assert "4 imágenes están listas." in email["text"] and f"/batches/{batch_id}" in email["text"]
    assert "a red fox" not in email["text"] and "fox" not in email["text"]  # no prompt, no file name
