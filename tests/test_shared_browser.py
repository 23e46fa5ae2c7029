"""Two subscribers in one browser profile (a shared computer), in a real Chromium: each sees only the images they
collected, and signing out with "Also remove my images from this browser" deletes exactly the signer's rows."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest

from tests import test_journey
from tests.test_journey import (
    TIMEOUT,
    accessible,
    compose,
    csp_problems,
    errors,
    shot,
    start,
    subscribe,
    wait_until_collected,
)

site = test_journey.site  # the app with sign-in, billing and generation on the stand-ins, and the worker thread

pytestmark = pytest.mark.browser

# What the page's own store.js (the module the batch and library pages load) hands out for a batch id.
SEEN = """async (batchId) => {
  const store = await import('/js/store.js');
  const [batches, batch, images, keys] = await Promise.all([store.listBatches(), store.getBatch(batchId),
    store.imagesOf(batchId), store.imageKeys(batchId)]);
  return {batches: batches.map(b => b.id), batch: batch ? batch.id : null, images: images.length, keys: keys.size};
}"""

# Every row of both stores as it is on disk: store, batch id, owner.
ROWS = """async () => {
  const db = await new Promise((ok, fail) => {
    const r = indexedDB.open('images-in-bulk'); r.onsuccess = () => ok(r.result); r.onerror = fail; });
  const all = name => new Promise((ok, fail) => {
    const r = db.transaction(name).objectStore(name).getAll(); r.onsuccess = () => ok(r.result); r.onerror = fail; });
  const rows = [...(await all('batches')).map(b => ['batches', b.id, b.owner ?? null]),
                ...(await all('images')).map(i => ['images', i.batchId, i.owner ?? null])];
  db.close();
  return rows;
}"""


@pytest.fixture
def db_url(sqlite_url):
    """The browser's storage is what is tested: SQLite is enough for the server."""
    return sqlite_url


def sign_in(page, base: str, account: str, next_path: str = "/library") -> None:
    """Sign in with the Google stand-in (already subscribed)."""
    page.goto(f"{base}/login?next={next_path}")
    page.click("a.provider-google")
    page.click(f"button.account[data-sub='{account}']")
    page.wait_for_url(base + next_path)


def run_batch(page, base: str, prompts: list[str]) -> int:
    """Compose, start and wait until this browser has collected every image; the batch id."""
    compose(page, base, prompts, fmt="png", ratio="1:1")
    batch_id = start(page, base)
    wait_until_collected(page, len(prompts))
    return batch_id


def library_ids(page, base: str, expect: int | None) -> list[int]:
    """The batch ids the library lists, once library.js has listed them (`expect`: the one to wait for, or None)."""
    page.goto(base + "/library")
    wanted = ".library-item" if expect is None else f".library-item[data-batch-id='{expect}']"
    page.wait_for_selector(f"#library-empty:not([hidden]), {wanted}", timeout=TIMEOUT)
    return [int(i) for i in page.locator(".library-item").evaluate_all("els => els.map(e => e.dataset.batchId)")]


def test_subscribers_sharing_a_browser_see_only_their_own_images_and_can_remove_them(page, site):
    base, _app = site

    # A collects a batch, then signs out (from the account page, keeping the images).
    subscribe(page, base, "g-1001")
    a_batch = run_batch(page, base, ["a red fox", "a blue whale"])
    a_key = page.get_attribute("#batch", "data-library-key")
    page.goto(base + "/account")  # the account page's Sign out leads to the same page as the header's
    page.click("#account-signout")
    page.wait_for_url(base + "/logout")
    page.click("#signout-button")
    page.wait_for_url(base + "/")

    # B signs in in the same browser: nothing of A's in the library, from store.js, or at A's batch page.
    subscribe(page, base, "g-1002")
    assert library_ids(page, base, None) == []
    assert page.evaluate(SEEN, a_batch) == {"batches": [], "batch": None, "images": 0, "keys": 0}
    assert page.goto(f"{base}/batches/{a_batch}").status == 404

    # B's own batch: B's batch page and library show B's rows only.
    b_batch = run_batch(page, base, ["a green frog"])
    assert page.evaluate(SEEN, a_batch) == {"batches": [b_batch], "batch": None, "images": 0, "keys": 0}
    assert page.evaluate(SEEN, b_batch) == {"batches": [b_batch], "batch": b_batch, "images": 1, "keys": 1}
    assert library_ids(page, base, b_batch) == [b_batch]
    b_key = page.get_attribute("#library", "data-library-key")
    assert a_key and b_key and a_key != b_key

    # B signs out through the header's sign-out page, keeping the images: the choice is there, unticked.
    page.click(".nav-signout")
    page.wait_for_url(base + "/logout")
    assert page.is_visible("#signout-remove") and not page.is_checked("#signout-remove")
    accessible(page)
    page.click("#signout-button")
    page.wait_for_url(base + "/")

    # A again: A's batch is back, only A's.
    sign_in(page, base, "g-1001")
    assert library_ids(page, base, a_batch) == [a_batch]
    assert page.evaluate(SEEN, a_batch) == {"batches": [a_batch], "batch": a_batch, "images": 2, "keys": 2}
    assert page.evaluate(SEEN, b_batch) == {"batches": [a_batch], "batch": None, "images": 0, "keys": 0}

    # A signs out and removes A's images: no row with A's key is left, B's rows are all there.
    before = page.evaluate(ROWS)
    assert sorted(before) == sorted([["batches", a_batch, a_key], ["images", a_batch, a_key],
                                     ["images", a_batch, a_key], ["batches", b_batch, b_key],
                                     ["images", b_batch, b_key]])
    page.click(".nav-signout")
    page.wait_for_url(base + "/logout")
    page.check("#signout-remove")
    accessible(page)
    shot(page, "09-sign-out")
    page.click("#signout-button")
    page.wait_for_url(base + "/")
    assert page.locator(".nav-user").count() == 0
    assert sorted(page.evaluate(ROWS)) == sorted([["batches", b_batch, b_key], ["images", b_batch, b_key]])

    assert csp_problems(page) == []
    assert [p for p in errors(page) if f"/batches/{a_batch})" not in p] == [], page.problems  # but B's 404


# The browser as the previous store.js left it (IndexedDB version 1, rows without an owner): a batch of ids[0] with
# two images, and one of ids[1].
LEGACY = """async (ids) => {
  const db = await new Promise((ok, fail) => {
    const r = indexedDB.open('images-in-bulk', 1);
    r.onupgradeneeded = () => {
      r.result.createObjectStore('batches', {keyPath: 'id'});
      r.result.createObjectStore('images', {keyPath: ['batchId', 'itemId']}).createIndex('batchId', 'batchId');
    };
    r.onsuccess = () => ok(r.result); r.onerror = fail; });
  const t = db.transaction(['batches', 'images'], 'readwrite');
  const png = n => new Blob([new Uint8Array([137, 80, 78, 71, 13, 10, 26, 10, n])], {type: 'image/png'});
  ids.forEach((id, b) => {
    const items = [1, 2].slice(0, 2 - b).map(p => ({id: id * 10 + p, position: p, name: `old-${id}-${p}.png`,
      prompt: `old prompt ${p}`, finalPrompt: `old prompt ${p}`, status: 'done', error: null}));
    t.objectStore('batches').put({id, createdAt: 1764460800, date: '2026-11-30', model: 'gpt-image-2', ratio: '1:1',
      quality: 'low', format: 'png', width: 1024, height: 1024, count: items.length, items});
    for (const item of items) t.objectStore('images').put({batchId: id, itemId: item.id, position: item.position,
      name: item.name, type: 'image/png', bytes: 9, width: 1024, height: 1024, blob: png(item.position)});
  });
  await new Promise((ok, fail) => { t.oncomplete = ok; t.onabort = fail; });
  db.close();
}"""


def test_rows_kept_before_owners_show_only_to_the_subscriber_whose_batch_they_are(browser, site):
    base, _app = site
    # A's batch, made in another browser: the server knows it is A's.
    elsewhere = browser.new_context(locale="en-US")
    try:
        first = elsewhere.new_page()
        subscribe(first, base, "g-1001")
        a_batch = run_batch(first, base, ["a red fox"])
    finally:
        elsewhere.close()
    stranger = a_batch + 1000  # no one's batch on this server

    context = browser.new_context(locale="en-US", accept_downloads=True)
    try:
        page = context.new_page()
        page.goto(base + "/")
        page.evaluate(LEGACY, [a_batch, stranger])

        # B is not shown A's old rows (nor the stranger's), and does not take them.
        subscribe(page, base, "g-1002")
        assert library_ids(page, base, None) == []
        assert page.evaluate(SEEN, a_batch) == {"batches": [], "batch": None, "images": 0, "keys": 0}
        assert sorted(page.evaluate(ROWS)) == sorted([["batches", a_batch, None], ["images", a_batch, None],
                                                      ["images", a_batch, None], ["batches", stranger, None],
                                                      ["images", stranger, None]])
        page.goto(base + "/logout")
        page.click("#signout-button")
        page.wait_for_url(base + "/")

        # A's library takes A's old rows, which zip as before; the stranger's stay as they were, hidden.
        sign_in(page, base, "g-1001")
        assert library_ids(page, base, a_batch) == [a_batch]
        a_key = page.get_attribute("#library", "data-library-key")
        assert sorted(page.evaluate(ROWS)) == sorted([["batches", a_batch, a_key], ["images", a_batch, a_key],
                                                      ["images", a_batch, a_key], ["batches", stranger, None],
                                                      ["images", stranger, None]])
        with page.expect_download(timeout=TIMEOUT) as info:
            page.locator(f".library-item[data-batch-id='{a_batch}'] .library-zip").click()
        with zipfile.ZipFile(io.BytesIO(Path(info.value.path()).read_bytes())) as archive:
            assert sorted(archive.namelist()) == ["manifest.csv", f"old-{a_batch}-1.png", f"old-{a_batch}-2.png"]
    finally:
        context.close()
