"""zip.js in Chromium: a blob that cannot be read or is empty is skipped and named, the rest are packed in order,
and manifest.csv says which image is missing."""

import csv
import io
import zipfile

import pytest

pytestmark = pytest.mark.browser

PACK = """async () => {
  const {zipBatch} = await import('/js/zip.js');
  const png = n => new Blob([new Uint8Array([137, 80, 78, 71, 13, 10, 26, 10, n])], {type: 'image/png'});
  const items = ['a', 'b', 'c', 'd', 'e'].map((k, i) => ({position: i + 1, name: k + '.png', prompt: 'p' + k,
    finalPrompt: 'p' + k + ', style', status: 'done', error: null}));
  const batch = {id: 7, createdAt: 1764460800, date: '2026-11-30', model: 'gpt-image-2', width: 1024,
    height: 1024, format: 'png', items};
  // Out of order, an empty blob (b), a record without one (d): packed a, c, e.
  const images = [{position: 5, name: 'e.png', blob: png(5)}, {position: 2, name: 'b.png', blob: new Blob([])},
    {position: 1, name: 'a.png', blob: png(1)}, {position: 4, name: 'd.png', blob: null},
    {position: 3, name: 'c.png', blob: png(3)}];
  const seen = [];
  const zip = await zipBatch(batch, images, (n, total) => seen.push(`${n}/${total}`));
  return {skipped: zip.skipped, name: zip.name, seen,
          bytes: Array.from(new Uint8Array(await zip.blob.arrayBuffer()))};
}"""


@pytest.fixture(params=["sqlite"])
def db_url(request, sqlite_url):
    """The ZIP is built in the browser from data the test makes: SQLite is enough for the page."""
    return sqlite_url


def test_unreadable_or_empty_images_are_skipped_and_named_and_the_rest_are_packed_in_order(page, live_server):
    base, _app = live_server
    page.goto(base + "/")
    result = page.evaluate(PACK)
    assert result["skipped"] == ["b.png", "d.png"]
    assert result["name"] == "images-in-bulk-2026-11-30-7.zip"
    assert result["seen"] == ["0/5", "1/5", "2/5", "3/5", "4/5", "5/5"]
    with zipfile.ZipFile(io.BytesIO(bytes(result["bytes"]))) as archive:
        assert archive.testzip() is None
        assert archive.namelist() == ["a.png", "c.png", "e.png", "manifest.csv"]
        assert archive.read("c.png")[-1] == 3
        manifest = archive.read("manifest.csv").decode("utf-8")
    assert manifest.startswith("\ufeff")
    rows = list(csv.DictReader(io.StringIO(manifest.lstrip("\ufeff"))))
    assert [(r["file_name"], r["status"]) for r in rows] == [
        ("a.png", "done"), ("b.png", "missing"), ("c.png", "done"), ("d.png", "missing"), ("e.png", "done")]
    assert rows[0]["final_prompt"] == "pa, style" and rows[0]["size"] == "1024x1024"
