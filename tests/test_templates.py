"""Templates keep all CSS and JS in files, and every string they show is translated into Spanish."""

import re
from pathlib import Path

from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po

ROOT = Path(__file__).resolve().parent.parent
VIEWS = ROOT / "views"
PO_FILE = ROOT / "translations" / "es" / "LC_MESSAGES" / "messages.po"

INLINE_STYLE = re.compile(r"\sstyle\s*=|<style[\s>]", re.IGNORECASE)
INLINE_HANDLER = re.compile(r"\son[a-z]+\s*=", re.IGNORECASE)
SCRIPT = re.compile(r"<script\b([^>]*)>(.*?)</script\s*>", re.IGNORECASE | re.DOTALL)
PLACEHOLDER = re.compile(r"%\((\w+)\)s")


def templates():
    found = sorted(VIEWS.rglob("*.html"))
    assert found, "no templates found"
    return found


def test_no_template_has_inline_css_or_inline_javascript():
    problems = []
    for path in templates():
        text = path.read_text(encoding="utf-8")
        name = path.relative_to(ROOT)
        if INLINE_STYLE.search(text):
            problems.append(f"{name}: inline style")
        if INLINE_HANDLER.search(text):
            problems.append(f"{name}: inline event handler")
        for attributes, body in SCRIPT.findall(text):
            if body.strip():
                problems.append(f"{name}: inline <script> code")
            if "src=" not in attributes:
                problems.append(f"{name}: <script> without src")
    assert problems == []


def test_the_lint_itself_catches_each_kind():
    samples = ['<p style="color:red">', "<style>p{}</style>", '<a onclick="x()">', "<script>alert(1)</script>"]
    for sample in samples:
        assert INLINE_STYLE.search(sample) or INLINE_HANDLER.search(sample) or SCRIPT.search(sample), sample
    assert not INLINE_STYLE.search('<p class="styled">') and not INLINE_HANDLER.search('<a href="/online">')


def extracted_messages():
    method_map = [("routes/**.py", "python"), ("services/**.py", "python"), ("views/**.html", "jinja2")]
    messages = {}
    for filename, _lineno, message, _comments, _context in extract_from_dir(str(ROOT), method_map):
        key = message if isinstance(message, str) else message[0]
        messages[key] = filename
    return messages


def test_every_string_is_translated_into_spanish():
    with PO_FILE.open("rb") as handle:
        catalog = read_po(handle, locale="es")
    messages = extracted_messages()
    assert len(messages) > 20
    missing = [m for m in messages if m not in catalog or not catalog[m].string]
    fuzzy = [m for m in messages if m in catalog and catalog[m].fuzzy]
    assert missing == [], f"untranslated: {missing[:5]}"
    assert fuzzy == [], f"fuzzy: {fuzzy[:5]}"


def test_translations_keep_their_placeholders():
    with PO_FILE.open("rb") as handle:
        catalog = read_po(handle, locale="es")
    for message in catalog:
        if not message.id or not message.string:
            continue
        source = message.id if isinstance(message.id, str) else message.id[0]
        target = message.string if isinstance(message.string, str) else message.string[0]
        assert set(PLACEHOLDER.findall(source)) == set(PLACEHOLDER.findall(target)), source
