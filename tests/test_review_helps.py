"""A batch that cannot start, reviewed in-process on both engines: Start disabled with its reason, and what works.

Too few credits: a test run, the first prompts that fit, economy, a cheaper quality or size, each
only when its total fits (GPT Image 2 at 1K 1:1 is 2 credits low, 6 medium, 1 and 3 in economy;
4K low is 7); nothing fits: a link to the account page. Too-long prompts: each line said once, and
the batch without them. Every alternative is a plain form that goes through the review again.
"""

import re

import pytest

from services import credits, db
from tests.conftest import make_subscriber, openai_settings, signed_in_client
from tests.test_studio import hidden_fields

FORM = {"prompts": "a red fox\na lighthouse at dusk\na boat\na kite\na cat\n", "names": "fox\n\nboat\nkite\ncat",
        "style": "", "model": "gpt-image-2", "format": "png", "ratio": "1:1", "quality": "low", "resolution": "1K",
        "speed": "now"}


@pytest.fixture
def studio(make_app, database, fake_openai):
    return make_app(**openai_settings(fake_openai), WORKER_LAUNCH="none")


def sign_in(app, conn, balance):
    user = make_subscriber(conn, balance=balance)
    client, token = signed_in_client(app, conn, user)
    client.set_cookie("lang", "en")
    return user, client, token


def review(client, token, **changes):
    return client.post("/generate/review", data={**FORM, **changes, "csrf_token": token})


def helps(page: str) -> dict:
    """The alternatives the page offers: kind -> (action, button text, hidden fields)."""
    found = {}
    for kind, body in re.findall(r'<li class="help-option" id="help-([a-z_]+)">(.*?)</li>', page, re.S):
        action = re.search(r'<form method="post" action="([^"]+)"', body).group(1)
        button = " ".join(re.search(r"<button[^>]*>(.*?)</button>", body, re.S).group(1).split())
        found[kind] = (action, button, hidden_fields(body))
    return found


def press(client, page: str, kind: str):
    action, _button, fields = helps(page)[kind]
    return client.post(action, data=fields)


def start_disabled(page: str) -> bool:
    return bool(re.search(r'id="start-button" disabled aria-describedby="start-reason"', page)) \
        and 'id="start-reason"' in page


def file_names(conn, response) -> list[str]:
    assert response.status_code == 303, response.text[:300]
    batch_id = int(response.headers["Location"].rsplit("/", 1)[1])
    return [item["file_name"] for item in db.batch_items_of(conn, batch_id)]


def test_too_few_credits_show_the_review_with_start_disabled_and_what_fits(studio, conn):
    _user, client, token = sign_in(studio, conn, balance=7)  # 5 images at 2: 10 needed
    response = review(client, token)
    assert response.status_code == 422
    page = response.text
    assert 'id="review-title"' in page and start_disabled(page) and 'id="test-button"' not in page
    reason = re.search(r'<p class="start-reason" id="start-reason">(.*?)</p>', page, re.S).group(1)
    assert "This batch needs 10 credits and you have 7." in reason
    offered = {kind: button for kind, (_action, button, _fields) in helps(page).items()}
    assert offered == {"test_run": "Test the first 3 · 6 credits", "first": "Keep the first 3 prompts · 6 credits",
                       "economy": "Economy · 5 credits"}  # low at 1K is the cheapest: no cheaper quality or size
    assert helps(page)["test_run"][0] == "/batches" and helps(page)["economy"][0] == "/generate/review"
    assert 'id="help-none"' not in page


def test_keep_the_first_prompts_carries_them_with_their_names(studio, conn):
    _user, client, token = sign_in(studio, conn, balance=7)
    kept = press(client, review(client, token).text, "first")
    assert kept.status_code == 200
    page = kept.text
    assert "Review: 3 images" in page and not start_disabled(page) and "6 needed (2 per image) · you have 7" in page
    assert "kite" not in page and "a cat" not in page
    names = file_names(conn, client.post("/batches", data=hidden_fields(page)))
    assert names == ["fox.png", "002-a-lighthouse-at-dusk.png", "boat.png"]


def test_the_test_run_starts_the_first_three_and_holds_the_rest(studio, conn):
    user, client, token = sign_in(studio, conn, balance=7)
    started = press(client, review(client, token).text, "test_run")
    assert started.status_code == 303
    batch_id = int(started.headers["Location"].rsplit("/", 1)[1])
    items = db.batch_items_of(conn, batch_id)
    assert [i["status"] for i in items] == ["queued"] * 3 + ["held"] * 2
    assert [i["file_name"] for i in items] == ["fox.png", "002-a-lighthouse-at-dusk.png", "boat.png", "kite.png",
                                               "cat.png"]
    assert credits.balance(conn, user) == 7  # nothing charged before the worker makes an image


def test_economy_gives_a_review_that_can_start(studio, conn):
    _user, client, token = sign_in(studio, conn, balance=7)
    page = press(client, review(client, token).text, "economy").text
    assert "5 needed (1 per image) · you have 7" in page and not start_disabled(page)
    assert hidden_fields(page)["speed"] == "economy"
    started = client.post("/batches", data=hidden_fields(page))
    batch = db.batch_get(conn, int(started.headers["Location"].rsplit("/", 1)[1]))
    assert (batch["speed"], batch["credits_per_item"], batch["item_count"]) == ("economy", 1, 5)


def test_a_cheaper_quality_when_it_fits(studio, conn):
    _user, client, token = sign_in(studio, conn, balance=12)  # 5 medium at 6: 30 needed
    page = review(client, token, quality="medium").text
    offered = helps(page)
    assert set(offered) == {"first", "quality"}  # a test run (18) and economy (15) do not fit in 12
    assert offered["first"][1] == "Keep the first 2 prompts · 12 credits"
    assert offered["quality"][1] == "A cheaper quality · 10 credits" and offered["quality"][2]["quality"] == "low"
    assert "Low: drafts, fastest instead of Medium" in page
    cheaper = press(client, page, "quality").text
    assert "10 needed (2 per image) · you have 12" in cheaper and not start_disabled(cheaper)


def test_a_smaller_size_when_no_cheaper_quality_fits(studio, conn):
    _user, client, token = sign_in(studio, conn, balance=12)  # 5 low at 4K, 7 each: 35 needed
    page = review(client, token, resolution="4K").text
    offered = helps(page)
    assert set(offered) == {"first", "resolution"}
    assert offered["first"][1] == "Keep the first 1 prompt · 7 credits"
    assert offered["resolution"][1] == "A smaller size · 10 credits" and "1K instead of 4K" in page
    smaller = press(client, page, "resolution").text
    assert "10 needed (2 per image)" in smaller and not start_disabled(smaller)


def test_nothing_fits_says_so_and_links_to_the_account(studio, conn):
    _user, client, token = sign_in(studio, conn, balance=1)
    response = review(client, token)
    assert response.status_code == 422 and start_disabled(response.text)
    assert helps(response.text) == {}
    none = re.search(r'<p class="help-none" id="help-none">(.*?)</p>', response.text, re.S).group(1)
    assert "Nothing smaller or cheaper fits the 1 credit you have." in none and 'href="/account"' in none


def test_a_too_long_prompt_is_listed_once_and_can_be_dropped(studio, conn):
    _user, client, token = sign_in(studio, conn, balance=300)
    prompts = "a red fox\n" + "x" * 33000 + "\na boat\n" + "y" * 32500 + "\na cat"
    response = review(client, token, prompts=prompts, names="fox\nlong\nboat\nlonger\ncat")
    assert response.status_code == 422
    page = response.text
    assert start_disabled(page) and "2 prompts are too long for the model." in page
    assert page.count("Line 2") == 1 and "Line 2: 33,000 characters, the model takes 32,000 (with the style)." in page
    assert page.count("Line 4") == 1 and "Line 4: 32,500 characters, the model takes 32,000" in page
    assert "Prompt 2" not in page
    assert [len(q) for q in re.findall(r'<q class="too-long-prompt">([xy]+)…</q>', page)] == [79, 79]
    offered = helps(page)
    assert set(offered) == {"drop", "edit"} and offered["drop"][1] == "Drop these 2 lines · 6 credits"
    assert offered["edit"][0] == "/generate"
    dropped = press(client, page, "drop")
    assert dropped.status_code == 200 and not start_disabled(dropped.text)
    assert hidden_fields(dropped.text)["names"] == "fox\nboat\ncat"
    assert file_names(conn, client.post("/batches", data=hidden_fields(dropped.text))) == ["fox.png", "boat.png",
                                                                                           "cat.png"]


def test_dropping_the_long_lines_then_meets_the_credits(studio, conn):
    _user, client, token = sign_in(studio, conn, balance=5)
    prompts = "x" * 33000 + "\na red fox\na boat\na kite\na cat"
    page = review(client, token, prompts=prompts, names="long\nfox\nboat\nkite\ncat").text
    assert set(helps(page)) == {"drop", "edit"}  # the long line first: credits only after
    after = press(client, page, "drop")
    assert after.status_code == 422 and "This batch needs 8 credits and you have 5." in after.text
    assert helps(after.text)["first"][1] == "Keep the first 2 prompts · 4 credits"
    assert hidden_fields(press(client, after.text, "first").text)["names"] == "fox\nboat"


def test_every_prompt_too_long_offers_only_going_back(studio, conn):
    _user, client, token = sign_in(studio, conn, balance=300)
    page = review(client, token, prompts="x" * 33000, names="").text
    assert set(helps(page)) == {"edit"} and "This prompt is too long for GPT Image 2:" in page
    assert "1 prompt is too long for the model." in page


def test_other_errors_still_go_back_to_the_form(studio, conn):
    _user, client, token = sign_in(studio, conn, balance=1)
    for changes, text in (({"model": "dall-e-9"}, "Choose one of the models on the form."),
                          ({"prompts": " \n "}, "Add at least one prompt"),
                          ({"prompts": "\n".join(f"p{n}" for n in range(studio.settings.plan_max_prompts + 1))},
                           "over the limit"),
                          ({"quality": "ultra"}, "Choose one of the model&#39;s qualities."),
                          ({"prompts": "x" * 33000, "quality": "ultra"}, "Line 1: 33,000 characters")):
        response = review(client, token, **changes)
        assert response.status_code == 422 and 'id="compose-title"' in response.text, changes
        assert text in response.text and 'id="review-title"' not in response.text, changes
    named = review(client, token, names="n" * 201).text  # the line is said once there too
    assert "Line 1" not in named and "Name 1 is 201 characters long" in named


def test_forged_alternatives_are_checked_again(studio, conn):
    _user, client, token = sign_in(studio, conn, balance=5)
    page = review(client, token).text  # 10 needed: the first 2 fit, a test run (6) does not
    assert set(helps(page)) == {"first", "economy"}
    _action, _button, fields = helps(page)["first"]
    more = {**fields, "prompts": FORM["prompts"] + "one more\n", "names": FORM["names"]}  # "the first 6"
    again = client.post("/generate/review", data=more)
    assert again.status_code == 422 and start_disabled(again.text) and "needs 12 credits" in again.text
    forged_test = client.post("/batches", data={**hidden_fields(page), "test_run": "1"})
    assert forged_test.status_code == 422 and start_disabled(forged_test.text)
    forged_start = client.post("/batches", data=hidden_fields(page))
    assert forged_start.status_code == 422 and "This batch needs 10 credits and you have 5." in forged_start.text
    long_test = client.post("/batches", data={**hidden_fields(page), "prompts": "x" * 33000 + "\na\nb\nc",
                                              "test_run": "1"})
    assert long_test.status_code == 422 and "Line 1: 33,000 characters" in long_test.text
    cheap_economy = client.post("/batches", data={**hidden_fields(page), "speed": "economy", "test_run": "1"})
    assert cheap_economy.status_code == 303  # economy fits: it starts, without a test run (economy has none)
    assert conn.scalar("SELECT COUNT(*) AS n FROM batches") == 1
    assert {i["status"] for i in db.batch_items_of(conn, conn.scalar("SELECT id FROM batches"))} == {"queued"}


def test_an_economy_batch_gets_no_test_run_and_economy_prices_for_a_cheaper_quality():
    import datetime

    from services import batches
    from tests.conftest import TEST_CATALOG

    checked = batches.review(TEST_CATALOG, datetime.date.today(), prompts=[f"p{n}" for n in range(5)], names=["a"],
                             style="", model_id="gpt-image-2", ratio="1:1", quality="high", image_format="png",
                             separator=", ", max_prompts=100, credits_left=20, speed="economy")
    assert [p.code for p in checked.errors] == ["not_enough_credits"] and checked.credits_needed == 55
    found = batches.alternatives(TEST_CATALOG, checked, ["a"])
    assert [(a.kind, a.count, a.credits, a.changes) for a in found] == [
        ("first", 1, 11, {"prompts": "p0", "names": "a"}), ("quality", 5, 15, {"quality": "medium"})]
