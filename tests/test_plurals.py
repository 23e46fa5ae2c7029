"""Every count string at 0, 1 and 2 in both languages: the catalogue's plural messages, the batch page's
data-t-*-one/-other pairs, and the pages a subscriber reads with counts of one."""

import re

import pytest
from babel.messages.pofile import read_po

from services import db, i18n
from tests.conftest import make_subscriber, openai_settings, signed_in_client
from tests.test_studio import FORM, hidden_fields

PLACEHOLDER = re.compile(r"%\((\w+)\)s")
# What a count-blind template writes: a 1 before a plural word.
WRONG_ONE = re.compile(r"\b1 (images|credits|things|prompts|lines|imágenes|créditos|fallidas|líneas|prompts|cosas)\b"
                       r"|\blas 1 |\bunos 1 min|\b1 (failed|not started) ·")


def plural_messages():
    with (i18n.TRANSLATIONS_DIR / "es" / "LC_MESSAGES" / "messages.po").open("rb") as handle:
        catalog = read_po(handle, locale="es")
    return [message for message in catalog if message.id and isinstance(message.id, tuple)]


def test_every_plural_message_reads_right_at_0_1_and_2_in_both_languages():
    translations = i18n.load_translations()
    messages = plural_messages()
    assert len(messages) >= 30
    for message in messages:
        singular, plural = message.id
        for lang in ("en", "es"):
            for n in (0, 1, 2):
                text = translations[lang].ngettext(singular, plural, n)
                # The counting variable takes n; any other number (credits, a total) a neutral 7.
                names = set(PLACEHOLDER.findall(text))
                values = {name: n if name in ("count", "num") else 7 for name in names}
                filled = text % values if names else text
                filled = re.sub(r"\{(\w+)\}", lambda m, n=n: str(n) if m.group(1) == "n" else "7", filled)
                assert not WRONG_ONE.search(filled), (lang, n, filled)
                if lang == "es" and n == 1:
                    assert text == message.string[0], (singular, text)
                if lang == "es" and n != 1:
                    assert text == message.string[1], (singular, text)


@pytest.fixture
def studio(make_app, database, fake_openai):
    return make_app(**openai_settings(fake_openai), WORKER_LAUNCH="none")


@pytest.mark.parametrize("lang", ["en", "es"])
def test_pages_with_counts_of_one_never_say_one_in_the_plural(studio, conn, lang):
    user = make_subscriber(conn, balance=300)
    client, token = signed_in_client(studio, conn, user)
    client.set_cookie("lang", lang)
    review = client.post("/generate/review", data={**FORM, "prompts": "a fox", "names": "", "csrf_token": token})
    assert review.status_code == 200 and not WRONG_ONE.search(review.text), WRONG_ONE.search(review.text)
    started = client.post("/batches", data={**hidden_fields(review.text)})
    batch_id = int(started.headers["Location"].rsplit("/", 1)[1])
    # One of each: made, failed (not refused), queued, and a test run's held image.
    for position, (status, code) in enumerate([("done", None)], start=1):
        conn.execute("UPDATE batch_items SET status = ?, error_code = ? WHERE batch_id = ? AND position = ?",
                     (status, code, batch_id, position))
    page = client.get(f"/batches/{batch_id}").text
    assert not WRONG_ONE.search(page), WRONG_ONE.search(page)
    more = client.post("/generate/review", data={**FORM, "prompts": "a\nb\nc\nd", "names": "",
                                                 "csrf_token": token})
    second = int(client.post("/batches", data={**hidden_fields(more.text), "test_run": "1"})
                 .headers["Location"].rsplit("/", 1)[1])
    items = db.batch_items_of(conn, second)
    conn.execute("UPDATE batch_items SET status = 'failed', error_code = 'upstream' WHERE id = ?", (items[0]["id"],))
    page = client.get(f"/batches/{second}").text
    for wanted in ({"en": "Retry the 1 failed", "es": "Reintentar 1 fallida"}[lang],
                   {"en": "Test run: the other image waits for you", "es": "Prueba: la otra imagen te espera"}[lang]):
        assert wanted in page, wanted
    assert not WRONG_ONE.search(page), WRONG_ONE.search(page)
    assert not WRONG_ONE.search(client.get("/library").text)
