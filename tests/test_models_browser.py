"""Every current model at every resolution, end to end in Chromium, on SQLite and MariaDB; and the batch page's check
that the batch will fit in the browser's storage.

One one-image batch per model × resolution (5 × 3), made through the JSON API with the ratio and the format varied so
that every ratio is met at every resolution and both formats at each: the worker generates them through the OpenAI
stand-in, batch.js keeps each image in IndexedDB, the page's ZIP button packs it, and each image, in IndexedDB and in
the ZIP, is exactly its size and format. The stand-in gets `complexity` as sent for the 2.6 models, never for the
others.

The storage check needs a small quota that navigator.storage.estimate() reports. CDP's Storage.overrideQuotaForOrigin
sets the quota the browser enforces, but Chromium (since 138, "predictable reported quota", feature
StaticStorageQuota) reports usage + min(10 GiB, disk) to pages whatever the real quota: so that test launches its own
Chromium with that feature off.
"""

from __future__ import annotations

import datetime
import re
import time

import pytest
from PIL import Image

from services import batches, db, worker
from tests.conftest import CHROMIUM, CHROMIUM_ARGS, TEST_CATALOG, make_subscriber, openai_settings, signed_in_client
from tests.test_journey import (
    TIMEOUT,
    accessible,
    csp_problems,
    download_zip,
    errors,
    shot,
    stored_images,
    wait_until_collected,
)

MODELS = ["gpt-image-2", "gpt-image-2.5-flare", "gpt-image-2.5-sunburst", "gpt-image-2.6-flare",
          "gpt-image-2.6-sunburst"]
RATIOS = ["1:1", "9:16", "16:9"]
# The exact sizes the catalogue promises, written out here (not read from it) so a wrong catalogue fails too.
SIZES = {"1K": {"1:1": (1024, 1024), "9:16": (864, 1536), "16:9": (1536, 864)},
         "2K": {"1:1": (2048, 2048), "9:16": (1152, 2048), "16:9": (2048, 1152)},
         "4K": {"1:1": (2880, 2880), "9:16": (2160, 3840), "16:9": (3840, 2160)}}
COMPLEXITIES = {"gpt-image-2.6-flare": ["low", "medium", "high"], "gpt-image-2.6-sunburst": ["medium", "high", "low"]}
MIME = {"png": "image/png", "jpeg": "image/jpeg"}
PILLOW = {"png": "PNG", "jpeg": "JPEG"}
SUFFIX = {"png": ".png", "jpeg": ".jpg"}


def cases() -> list[dict]:
    """The 15 batches: at each resolution the five models take the three ratios in turn; 1K and 2K alternate PNG and
    JPG, 4K is JPG but for one PNG (a 4K PNG is the heaviest image to move); complexity only on the 2.6 models."""
    found = []
    for m, model in enumerate(MODELS):
        for r, resolution in enumerate(SIZES):
            ratio = RATIOS[(m + r) % 3]
            if resolution == "4K":
                fmt = "png" if model == "gpt-image-2" else "jpeg"
            else:
                fmt = "png" if (m + r) % 2 == 0 else "jpeg"
            found.append({"model": model, "resolution": resolution, "ratio": ratio, "format": fmt,
                          "complexity": COMPLEXITIES[model][r] if model in COMPLEXITIES else None,
                          "size": SIZES[resolution][ratio], "prompt": f"case {len(found) + 1}: {model} {resolution}",
                          "name": f"case-{len(found) + 1:02d}"})
    return found


CASES = cases()


def test_the_cases_cover_every_model_resolution_ratio_and_format():
    assert {(c["model"], c["resolution"]) for c in CASES} == {(m, r) for m in MODELS for r in SIZES}
    for resolution in SIZES:
        at = [c for c in CASES if c["resolution"] == resolution]
        assert {c["ratio"] for c in at} == set(RATIOS), resolution
        assert {c["format"] for c in at} == {"png", "jpeg"}, resolution
    assert sum(c["format"] == "png" for c in CASES if c["resolution"] == "4K") == 1
    assert {c["complexity"] for c in CASES if c["complexity"]} == {"low", "medium", "high"}
    # The catalogue the app runs with agrees with the sizes written here.
    for case in CASES:
        model = TEST_CATALOG.get(case["model"])
        assert model.size(case["resolution"], case["ratio"]).output == case["size"], case


def test_estimated_bytes_is_the_reviews_download_estimate():
    batch = {"width": 2880, "height": 2880, "image_format": "png", "item_count": 3}
    assert batches.estimated_bytes(batch) == int(2880 * 2880 * 1.5 * 3)
    assert batches.estimated_bytes({**batch, "image_format": "jpeg", "item_count": 1}) == int(2880 * 2880 * 0.25)
    assert batches.estimated_bytes({**batch, "item_count": 0}) == 0
    checked = batches.review(TEST_CATALOG, datetime.date(2026, 12, 1), prompts=["a", "b"], names=[], style="",
                             model_id="gpt-image-2", ratio="16:9", quality="low", image_format="jpeg",
                             separator=", ", max_prompts=10, credits_left=1000, resolution="4K")
    assert checked.ok and checked.size == (3840, 2160)
    assert batches.estimated_bytes({"width": 3840, "height": 2160, "image_format": "jpeg", "item_count": 2}) == \
        checked.download_bytes


def signed_in_context(browser, app, conn, user_id, **options):
    """A new browser context carrying a session of the user's (the cookie the site sets at sign-in); and an
    in-process API client of the same user with its CSRF token."""
    from services import sessions

    client, token = signed_in_client(app, conn, user_id)
    name = sessions.cookie_name(app.settings)
    context = browser.new_context(**options)
    context.add_cookies([{"name": name, "value": client.get_cookie(name).value,
                          "url": app.settings.public_base_url}])
    return context, client, token


def new_page(context):
    """A page of the context collecting console errors and CSP violations in page.problems, as conftest's `page`."""
    page = context.new_page()
    page.problems = []
    page.on("console", lambda msg: msg.type == "error" and page.problems.append(
        f"{msg.text} ({msg.location.get('url', '')})"))
    page.on("pageerror", lambda exc: page.problems.append(str(exc)))
    return page


def create_batch(client, token, **fields) -> int:
    """POST /api/batches (one prompt); the new batch's id."""
    body = {"names": "", "style": "", "quality": "low", **fields}
    created = client.post("/api/batches", json=body, headers={"X-CSRF-Token": token})
    assert created.status_code == 201, created.text
    return created.json["batch"]["id"]


@pytest.mark.browser
def test_every_model_at_every_resolution_arrives_exact_in_indexeddb_and_in_the_zip(browser, serve, fake_openai):
    started = time.monotonic()
    base, app = serve(**openai_settings(fake_openai), WORKER_LAUNCH="none", MAX_OPEN_BATCHES=str(len(CASES)))
    conn = app.database.connect()
    try:
        user_id = make_subscriber(conn, balance=2000)
        context, client, token = signed_in_context(browser, app, conn, user_id, locale="en-US")
    finally:
        conn.close()
    try:
        for case in CASES:
            fields = {"prompts": case["prompt"], "names": case["name"], "model": case["model"],
                      "resolution": case["resolution"], "ratio": case["ratio"], "format": case["format"]}
            if case["complexity"]:
                fields["complexity"] = case["complexity"]
            case["batch_id"] = create_batch(client, token, **fields)
        # Every image is made before a page opens: the pages render "done" and never reload under the test.
        worker.run(app.settings, app.database, app.catalog, threads=4, max_seconds=120)
        conn = app.database.connect()
        try:
            for case in CASES:
                assert [i["status"] for i in db.batch_items_of(conn, case["batch_id"])] == ["done"], case
        finally:
            conn.close()

        # The stand-in got each batch's model, size and format, and complexity exactly where it was sent.
        sent = {body["prompt"]: body for body in fake_openai.requests}
        assert len(fake_openai.requests) == len(CASES) == len(sent)
        for case in CASES:
            body = sent[case["prompt"]]
            width, height = case["size"]
            assert (body["model"], body["size"], body["output_format"], body["quality"]) == \
                (case["model"], f"{width}x{height}", case["format"], "low"), case
            if case["complexity"]:
                assert body["complexity"] == case["complexity"], case
            else:
                assert "complexity" not in body, case

        page = new_page(context)
        for case in CASES:
            batch_id, (width, height), fmt = case["batch_id"], case["size"], case["format"]
            file_name = case["name"] + SUFFIX[fmt]
            page.goto(f"{base}/batches/{batch_id}")
            wait_until_collected(page, 1)
            stored = stored_images(page, batch_id)
            assert [(s["name"], s["type"], s["width"], s["height"]) for s in stored] == \
                [(file_name, MIME[fmt], width, height)], case
            archive, suggested = download_zip(page)
            assert suggested.endswith(f"-{batch_id}.zip")
            assert sorted(archive.namelist()) == sorted([file_name, "manifest.csv"]), case
            with Image.open(archive.open(file_name)) as image:
                assert (image.format, image.size) == (PILLOW[fmt], (width, height)), case
            assert len(archive.read(file_name)) == stored[0]["bytes"], case  # the very blob IndexedDB holds
        # Each server copy went once collected.
        conn = app.database.connect()
        try:
            for case in CASES:
                assert [i["status"] for i in db.batch_items_of(conn, case["batch_id"])] == ["delivered"], case
        finally:
            conn.close()
        assert csp_problems(page) == [] and errors(page) == [], page.problems
    finally:
        context.close()
    print(f"\n{len(CASES)} batches in {time.monotonic() - started:.1f} s")


# --- the storage check ----------------------------------------------------------------------------------------------

QUOTA = 5_000_000  # bytes: more than the stand-in's images weigh, less than a 4K PNG is expected to


@pytest.fixture(scope="module")
def reporting_browser(browser):
    """A second Chromium whose navigator.storage.estimate() reports the quota it enforces (and CDP's override of it)."""
    found = browser.browser_type.launch(executable_path=CHROMIUM,
                                        args=[*CHROMIUM_ARGS, "--disable-features=StaticStorageQuota"])
    yield found
    found.close()


@pytest.mark.browser
def test_the_batch_page_says_when_the_batch_will_not_fit_and_still_collects_what_fits(reporting_browser, serve,
                                                                                      fake_openai):
    base, app = serve(**openai_settings(fake_openai), WORKER_LAUNCH="none")
    conn = app.database.connect()
    try:
        user_id = make_subscriber(conn, balance=1000)
        context, client, token = signed_in_context(reporting_browser, app, conn, user_id, locale="en-US")
    finally:
        conn.close()
    try:
        page = new_page(context)
        context.new_cdp_session(page).send("Storage.overrideQuotaForOrigin", {"origin": base, "quotaSize": QUOTA})
        big = create_batch(client, token, prompts="a lighthouse at dusk", model="gpt-image-2", resolution="4K",
                           ratio="1:1", format="png")  # expected 2880 × 2880 × 1.5 = 12.4 MB
        small = create_batch(client, token, prompts="a bowl of ramen", model="gpt-image-2", resolution="1K",
                             ratio="1:1", format="jpeg")  # expected 1024 × 1024 × 0.25 = 0.26 MB

        # Nothing made yet: the check runs before the first poll, on what the page is about to collect.
        with page.expect_response(lambda r: r.url == f"{base}/api/batches/{big}", timeout=TIMEOUT):
            page.goto(f"{base}/batches/{big}")
        estimate = page.evaluate("navigator.storage.estimate()")
        assert estimate["quota"] == QUOTA, estimate
        assert page.get_attribute("#batch", "data-expected-bytes") == str(2880 * 2880 * 3 // 2)
        space = page.locator("#batch-space")
        assert space.is_visible()
        text = space.text_content()
        found = re.fullmatch(r"This batch needs about (\d+) MB and this browser has about (\d+) MB free: free some "
                             r"space in the library, or download what is ready as a ZIP now\.", text)
        assert found, text
        assert int(found[1]) == 13 and int(found[2]) <= QUOTA // 1_000_000, text
        assert page.locator("#zip-button").is_hidden()  # nothing stored here yet: nothing to download
        shot(page, "09-batch-space-notice")
        accessible(page)

        with page.expect_response(lambda r: r.url == f"{base}/api/batches/{small}", timeout=TIMEOUT):
            page.goto(f"{base}/batches/{small}")
        assert page.get_attribute("#batch", "data-expected-bytes") == str(1024 * 1024 // 4)
        assert page.locator("#batch-space").is_hidden()
        assert page.locator("#batch-space").text_content() == ""

        # The notice warns and nothing more: what fits is collected (the stand-in's 4K PNG is far below 5 MB).
        worker.run(app.settings, app.database, app.catalog, threads=2, max_seconds=60)
        page.goto(f"{base}/batches/{big}")
        wait_until_collected(page, 1)
        assert page.locator("#batch-space").is_visible()
        stored = stored_images(page, big)
        assert [(s["type"], s["width"], s["height"]) for s in stored] == [("image/png", 2880, 2880)]
        # Collected here, nothing is left to need space: the next check (back on the tab) takes the notice away.
        page.evaluate("document.dispatchEvent(new Event('visibilitychange'))")
        page.wait_for_selector("#batch-space", state="hidden", timeout=TIMEOUT)
        assert csp_problems(page) == [] and errors(page) == [], page.problems
    finally:
        context.close()
