"""The subscriber's pages in-process on both engines: compose, review, start (twice), test run, stop, the library."""

import io
import re

import pytest

from services import credits, db, worker
from tests.conftest import BufferedClient, make_subscriber, openai_settings, signed_in_client


@pytest.fixture
def studio(make_app, database, fake_openai):
    return make_app(**openai_settings(fake_openai), WORKER_LAUNCH="none")


@pytest.fixture
def ana(studio, conn):
    user = make_subscriber(conn)
    client, token = signed_in_client(studio, conn, user)
    client.set_cookie("lang", "en")
    return user, client, token


FORM = {"prompts": "a red fox\r\na lighthouse at dusk\r\na boat\r\na kite\r\n", "names": "fox\nfox\n../etc/passwd",
        "style": "watercolor", "model": "gpt-image-2", "format": "jpeg", "ratio": "9:16", "quality": "low"}


def hidden_fields(html: str) -> dict:
    fields = dict(re.findall(r'<input type="hidden" name="([a-z_]+)" value="([^"]*)"', html))
    return {k: v.replace("&#10;", "\n").replace("&#39;", "'").replace("&amp;", "&") for k, v in fields.items()}


def shown(html: str, element_id: str) -> bool:
    """True when the element with this id is on the page without the `hidden` attribute (the page renders every
    control and hides those that do not apply; batch.js keeps them in step with each poll)."""
    match = re.search(r'<[a-z]+ [^>]*\bid="' + re.escape(element_id) + r'"[^>]*>', html)
    return bool(match) and not re.search(r"\shidden(\s|>|=)", match.group(0))


def review(client, token, **changes):
    return client.post("/generate/review", data={**FORM, **changes, "csrf_token": token})


def start(client, review_html, **extra):
    return client.post("/batches", data={**hidden_fields(review_html), **extra})


def test_compose_needs_sign_in_and_a_plan(studio, conn):
    anonymous = BufferedClient(studio)
    response = anonymous.get("/generate")
    assert response.status_code == 303 and response.headers["Location"].endswith("/login?next=/generate")
    user = make_subscriber(conn, email="nobody@example.com", balance=0, status="canceled")
    client, _token = signed_in_client(studio, conn, user)
    page = client.get("/generate")
    assert page.status_code == 200 and 'href="/pricing"' in page.text and "<textarea" not in page.text


def test_compose_shows_every_choice_with_its_price(studio, ana):
    _user, client, _token = ana
    page = client.get("/generate").text
    for field in ('name="prompts"', 'name="names"', 'name="style"', 'name="prompts_file"', 'value="png"',
                  'value="jpeg"', 'value="1:1"', 'value="9:16"', 'value="16:9"', 'value="low"', 'value="high"'):
        assert field in page, field
    assert "GPT Image 2" in page and "2–100 credits per image" in page
    for field in ('value="1K"', 'value="2K"', 'value="4K"', 'value="xhigh"', 'value="max"', 'name="complexity"',
                  "GPT Image 2.6 Sunburst", "2880×2880", "3840×2160"):
        assert field in page, field
    assert page.count('<details class="price-details"') == 7 and page.count("open>") == 1  # unretired in tests
    assert client.get("/generate/template.csv").text.startswith("\ufeffprompt,name")


def test_review_shows_the_final_prompts_names_warnings_and_credits(studio, ana):
    _user, client, token = ana
    response = review(client, token)
    assert response.status_code == 200, response.text
    page = response.text
    assert "Review: 4 images" in page
    assert "a red fox, watercolor" in page
    assert "fox.jpg" in page and "fox-2.jpg" in page and "etcpasswd.jpg" in page and "004-a-kite.jpg" in page
    assert "was already used" in page and "file name cannot hold" in page and "3 names for 4 prompts" in page
    assert "8 needed (2 per image) · you have 300" in page
    assert "Generate 4 images · 8 credits" in page and "Test the first 3 · 6 credits" in page


def test_errors_send_the_form_back_with_what_was_typed(studio, ana):
    _user, client, token = ana
    # A too-long prompt alone gets the review (tests/test_review_helps.py); with a wrong quality, the form.
    response = review(client, token, prompts="x" * 33000 + "\nsecond", style="my style", quality="ultra")
    assert response.status_code == 422
    assert response.text.count("Line 1") == 1 and "Line 1: 33,010 characters, the model takes 32,000" in response.text
    assert "my style</textarea>" in response.text and "second</textarea>" in response.text
    empty = review(client, token, prompts="  \n ")
    assert empty.status_code == 422 and "Add at least one prompt" in empty.text


def test_a_csv_upload_fills_the_review_and_comes_back_when_editing(studio, ana):
    _user, client, token = ana
    data = {**FORM, "prompts": "", "names": "", "csrf_token": token,
            "prompts_file": (io.BytesIO("\ufeffprompt;name\nuno;primero\ndos;\n".encode()), "list.csv")}
    page = client.post("/generate/review", data=data, content_type="multipart/form-data").text
    assert "primero.jpg" in page and "002-dos.jpg" in page
    back = client.post("/generate", data=hidden_fields(page)).text
    assert "uno\ndos</textarea>" in back and "primero\n</textarea>" in back
    bad = client.post("/generate/review", data={**data, "prompts_file": (io.BytesIO(b"\xff\xfe"), "list.csv")},
                      content_type="multipart/form-data")
    assert bad.status_code == 422 and "UTF-8" in bad.text


def test_start_creates_the_batch_once_however_often_it_is_pressed(studio, ana, conn):
    user, client, token = ana
    page = review(client, token).text
    first = start(client, page)
    assert first.status_code == 303
    batch_path = first.headers["Location"].removeprefix(studio.settings.public_base_url)
    assert re.fullmatch(r"/batches/\d+", batch_path)
    again = start(client, page)
    assert again.headers["Location"] == first.headers["Location"]
    assert conn.scalar("SELECT COUNT(*) AS n FROM batches") == 1
    assert credits.balance(conn, user) == 300  # nothing is charged before the worker makes an image
    batch_page = client.get(batch_path)
    assert batch_page.status_code == 200
    assert batch_page.text.count('class="result"') == 4 and 'data-status="queued"' in batch_page.text
    assert "Ready: 0 of 4" in batch_page.text and 'id="stop-button"' in batch_page.text
    assert '<script type="module" src="/js/batch.js?v=' in batch_page.text


def test_start_without_the_token_is_refused(studio, ana):
    _user, client, token = ana
    fields = hidden_fields(review(client, token).text)
    fields.pop("csrf_token")
    assert client.post("/batches", data=fields).status_code == 403


def test_a_test_run_makes_three_and_holds_the_rest_until_go_ahead(studio, ana, conn):
    user, client, token = ana
    location = start(client, review(client, token).text, test_run="1").headers["Location"]
    batch_id = int(location.rsplit("/", 1)[1])
    statuses = [i["status"] for i in db.batch_items_of(conn, batch_id)]
    assert statuses == ["queued", "queued", "queued", "held"]
    worker.run(studio.settings, studio.database, studio.catalog, threads=2)
    assert [i["status"] for i in db.batch_items_of(conn, batch_id)] == ["done", "done", "done", "held"]
    assert credits.balance(conn, user) == 300 - 3 * 2
    page = client.get(f"/batches/{batch_id}").text
    assert "Test run: the other image waits for you. Happy with these? Generate it for 2 credits." in page
    assert shown(page, "test-banner") and not shown(page, "retry-form")
    assert client.post(f"/batches/{batch_id}/continue", data={"csrf_token": token}).status_code == 303
    worker.run(studio.settings, studio.database, studio.catalog, threads=2)
    assert [i["status"] for i in db.batch_items_of(conn, batch_id)] == ["done"] * 4
    assert credits.balance(conn, user) == 300 - 4 * 2
    assert db.batch_get(conn, batch_id)["status"] == "done"


def test_cancelling_a_test_run_cancels_the_held_items_without_a_charge(studio, ana, conn):
    user, client, token = ana
    batch_id = int(start(client, review(client, token).text, test_run="1").headers["Location"].rsplit("/", 1)[1])
    client.post(f"/batches/{batch_id}/cancel", data={"csrf_token": token})
    assert {i["status"] for i in db.batch_items_of(conn, batch_id)} == {"cancelled"}
    assert db.batch_get(conn, batch_id)["status"] == "done" and credits.balance(conn, user) == 300


def test_stop_and_resume(studio, ana, conn):
    _user, client, token = ana
    batch_id = int(start(client, review(client, token).text).headers["Location"].rsplit("/", 1)[1])
    client.post(f"/batches/{batch_id}/stop", data={"csrf_token": token})
    batch = db.batch_get(conn, batch_id)
    assert (batch["status"], batch["pause_reason"]) == ("paused", "stopped")
    assert worker.run(studio.settings, studio.database, studio.catalog, threads=1).get("done", 0) == 0
    page = client.get(f"/batches/{batch_id}").text
    assert "Stopped: the remaining images wait" in page and shown(page, "resume-form")
    assert shown(page, "batch-banner") and not shown(page, "stop-form") and not shown(page, "close-hint")
    client.post(f"/batches/{batch_id}/resume", data={"csrf_token": token})
    worker.run(studio.settings, studio.database, studio.catalog, threads=2)
    assert {i["status"] for i in db.batch_items_of(conn, batch_id)} == {"done"}


def test_someone_elses_batch_page_and_actions_are_not_found(studio, ana, conn):
    _user, client, token = ana
    batch_id = int(start(client, review(client, token).text).headers["Location"].rsplit("/", 1)[1])
    ben = make_subscriber(conn, name="Ben", email="ben@example.com")
    other, other_token = signed_in_client(studio, conn, ben)
    assert other.get(f"/batches/{batch_id}").status_code == 404
    for action in ("retry", "cancel", "stop", "resume", "continue"):
        assert other.post(f"/batches/{batch_id}/{action}", data={"csrf_token": other_token}).status_code == 404
    assert db.batch_get(conn, batch_id)["status"] == "active"


def test_the_library_lists_the_accounts_latest_batches(studio, ana):
    _user, client, token = ana
    start(client, review(client, token).text)
    page = client.get("/library").text
    assert 'id="library-list"' in page and "<noscript>" in page and "· 4 images" in page
    assert '<script type="module" src="/js/library.js?v=' in page


def test_spanish_pages(studio, ana):
    _user, client, token = ana
    client.set_cookie("lang", "es")
    assert "Nuevo lote" in client.get("/generate").text
    page = review(client, token).text
    assert "Revisión: 4 imágenes" in page


def test_one_banner_when_the_image_service_is_paused_for_everyone(studio, ana, conn):
    import json
    import time

    _user, client, token = ana
    batch_id = int(start(client, review(client, token).text).headers["Location"].rsplit("/", 1)[1])
    assert not shown(client.get(f"/batches/{batch_id}").text, "service-banner")
    db.worker_state_set(conn, "pause", json.dumps({"until_ms": int(time.time() * 1000) + 60_000, "reason": "quota"}),
                        int(time.time()))
    page = client.get(f"/batches/{batch_id}").text
    assert page.count('id="service-banner"') == 1 and shown(page, "service-banner") and "nothing is charged" in page


def test_one_failed_image_can_be_retried_alone_and_the_failed_filter_appears(studio, ana, conn):
    user, client, token = ana
    page = review(client, token, prompts="a cat\na dog\na calm sea", names="").text
    batch_id = int(start(client, page).headers["Location"].rsplit("/", 1)[1])
    items = db.batch_items_of(conn, batch_id)
    for item in items[:2]:  # as the worker leaves an image OpenAI kept failing: refunded, failed "upstream"
        conn.execute("UPDATE batch_items SET status = 'failed', error_code = 'upstream', charged = 0 WHERE id = ?",
                     (item["id"],))
    worker.run(studio.settings, studio.database, studio.catalog, threads=2)
    failed = [i for i in db.batch_items_of(conn, batch_id) if i["status"] == "failed"]
    assert len(failed) == 2 and credits.balance(conn, user) == 300 - 2
    batch_page = client.get(f"/batches/{batch_id}").text
    rows = batch_page.split('id="retry-template"')[0]  # the rows, without the template batch.js clones
    assert shown(batch_page, "failed-filter") and rows.count('class="result-retry"') == 2
    assert "Retry the 2 failed" in batch_page and shown(batch_page, "retry-form")
    response = client.post(f"/batches/{batch_id}/items/{failed[1]['id']}/retry", data={"csrf_token": token})
    assert response.status_code == 303
    assert [i["status"] for i in db.batch_items_of(conn, batch_id)] == ["failed", "queued", "done"]
    assert db.batch_get(conn, batch_id)["status"] == "active"
    other = make_subscriber(conn, name="Ben", email="ben@example.com")
    ben, ben_token = signed_in_client(studio, conn, other)
    assert ben.post(f"/batches/{batch_id}/items/{failed[0]['id']}/retry",
                    data={"csrf_token": ben_token}).status_code == 404


def test_a_refused_image_is_edited_then_made_again_and_never_plainly_retried(studio, ana, conn):
    user, client, token = ana
    page = review(client, token, prompts="a FORBIDDEN cat\na calm sea", names="").text
    batch_id = int(start(client, page).headers["Location"].rsplit("/", 1)[1])
    worker.run(studio.settings, studio.database, studio.catalog, threads=2)
    refused = db.batch_items_of(conn, batch_id)[0]
    assert (refused["status"], refused["error_code"]) == ("failed", "refused")
    batch_page = client.get(f"/batches/{batch_id}").text
    assert 'class="result-retry result-edit"' in batch_page and "Edit and retry" in batch_page
    assert not shown(batch_page, "retry-form")  # the same prompt would be refused again: no plain retry
    client.post(f"/batches/{batch_id}/retry", data={"csrf_token": token})
    assert db.batch_item_get(conn, refused["id"])["status"] == "failed"  # a forged plain retry leaves it alone
    too_long = client.post(f"/batches/{batch_id}/items/{refused['id']}/edit",
                           data={"csrf_token": token, "prompt": "x" * 40_000})
    assert too_long.status_code == 303 and "edit_error=prompt_too_long" in too_long.headers["Location"]
    assert "That prompt is too long for this model" in client.get(too_long.headers["Location"]).text
    done = client.post(f"/batches/{batch_id}/items/{refused['id']}/edit",
                       data={"csrf_token": token, "prompt": "  a  sleepy cat "})
    assert done.status_code == 303
    item = db.batch_item_get(conn, refused["id"])
    assert (item["status"], item["prompt"], item["charge"]) == ("queued", "a sleepy cat", 2)
    worker.run(studio.settings, studio.database, studio.catalog, threads=1)
    assert db.batch_item_get(conn, refused["id"])["status"] == "done"
    assert credits.balance(conn, user) == 300 - 2 * 2
    again = client.post(f"/batches/{batch_id}/items/{refused['id']}/edit", data={"csrf_token": token, "prompt": "x"})
    assert "edit_error=not_ready" in again.headers["Location"]
