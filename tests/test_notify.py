"""'Email me when my batch is ready' (services/notify.py) over real SMTP to the stand-in, on both engines.

Also the demo's mailbox page (/demo/mail), which reads what the stand-in wrote to its spool folder.
"""

from __future__ import annotations

import datetime
import logging
import threading
import time

import pytest

import cli
from services import batches, db, i18n, notify
from services.config import load_settings
from tests.conftest import TEST_CATALOG, BufferedClient, make_subscriber
from tools.demo import mail_spool, start_mailer
from tools.fake_smtp import FakeSMTP, read_spool

BASE = "https://images.example.com"
PROMPTS = ["a red fox in the snow", "a blue whale at dawn", "a green frog on a leaf", "a lighthouse at dusk"]
NAMES = ["secret-fox", "secret-whale", "secret-frog", "secret-lighthouse"]

@pytest.fixture
def fake():
    with FakeSMTP() as server:
        yield server


@pytest.fixture(scope="module")
def translations():
    return i18n.load_translations()


def mail_settings(fake, tmp_path, **changes):
    """Test-mode settings that send through the stand-in (no .env, no environment)."""
    return load_settings({"APP_MODE": "test", "PUBLIC_BASE_URL": BASE, "IMAGE_RETENTION_DAYS": "7",
                          **(fake.app_settings() if fake is not None else {}), **changes},
                         environ={}, env_file=tmp_path / "absent.env")


def make_batch(conn, user, statuses=("done", "delivered", "failed", "cancelled"), batch_status="done", lang="en",
               notify_email=True) -> int:
    """A batch made through review + create, then its items and itself set to these statuses."""
    count = len(statuses)
    checked = batches.review(TEST_CATALOG, datetime.date.today(), prompts=PROMPTS[:count], names=NAMES[:count],
                             style="", model_id="gpt-image-2", ratio="1:1", quality="low", image_format="png",
                             separator=", ", max_prompts=200, credits_left=10_000, notify=notify_email)
    assert checked.ok, checked.errors
    batch_id, _ = batches.create(conn, TEST_CATALOG, user, checked, f"t{time.monotonic_ns()}", int(time.time()),
                                 max_open=100)
    conn.execute("UPDATE batches SET lang = ?, notify_email = ?, status = ? WHERE id = ?",
                 (lang, int(notify_email), batch_status, batch_id))
    for item, status in zip(db.batch_items_of(conn, batch_id), statuses, strict=True):
        conn.execute("UPDATE batch_items SET status = ? WHERE id = ?", (status, item["id"]))
    return batch_id


def notified_at(conn, batch_id):
    return conn.scalar("SELECT notified_at FROM batches WHERE id = ?", (batch_id,))


def settle(fake, count: int) -> list:
    """The messages, once `count` have arrived and a moment has passed for any extra one."""
    fake.wait_for(count)
    time.sleep(0.1)
    return list(fake.messages)


# The email ------------------------------------------------------------------------------------


def test_a_finished_batch_sends_one_email_with_the_counts_and_the_link_and_never_again(conn, fake, tmp_path,
                                                                                       translations):
    settings = mail_settings(fake, tmp_path)
    user = make_subscriber(conn, email="ana@example.com")
    batch_id = make_batch(conn, user)
    assert notify.send_due(conn, settings, translations) == {"sent": 1, "retry": 0, "failed": 0}
    [received] = settle(fake, 1)
    assert notified_at(conn, batch_id) is not None
    assert notify.send_due(conn, settings, translations) == {"sent": 0, "retry": 0, "failed": 0}
    assert len(settle(fake, 1)) == 1

    item = received.as_dict()
    assert received.rcpt_tos == ("ana@example.com",) and item["to"] == "ana@example.com"
    assert item["subject"] == f"Your batch {batch_id} is ready" and item["language"] == "en"
    text = item["text"]
    for expected in ("Your batch", "2 images are ready.", "1 image failed.", "1 image was cancelled.",
                     f"{BASE}/batches/{batch_id}\n", "wait on the server for 7 days"):
        assert expected in text, text
    raw = received.raw.decode("utf-8", "replace")
    for private in PROMPTS + NAMES + ["fox", "whale", ".png"]:
        assert private not in raw, private
    assert item["html"] is None and not any(part.get_filename() for part in received.message.walk())


def test_the_email_is_written_in_the_batch_language(conn, fake, tmp_path, translations):
    settings = mail_settings(fake, tmp_path)
    user = make_subscriber(conn)
    spanish = make_batch(conn, user, statuses=("done", "done", "failed"), lang="es")
    english = make_batch(conn, user, statuses=("done",), lang="en")
    assert notify.send_due(conn, settings, translations)["sent"] == 2
    by_language = {m.as_dict()["language"]: m.as_dict() for m in settle(fake, 2)}
    assert by_language["es"]["subject"] == f"Tu lote {spanish} está listo"
    assert "2 imágenes están listas." in by_language["es"]["text"]
    assert "1 imagen ha fallado." in by_language["es"]["text"]
    assert "7 días" in by_language["es"]["text"] and f"{BASE}/batches/{spanish}" in by_language["es"]["text"]
    assert by_language["en"]["subject"] == f"Your batch {english} is ready"
    assert "1 image is ready." in by_language["en"]["text"] and "lote" not in by_language["en"]["text"]


def test_the_spanish_email_uses_the_spanish_catalog(conn, fake, tmp_path, translations):
    settings = mail_settings(fake, tmp_path)
    batch_id = make_batch(conn, make_subscriber(conn), statuses=("done", "done"), lang="es")
    assert notify.send_due(conn, settings, translations)["sent"] == 1
    [received] = settle(fake, 1)
    item = received.as_dict()
    assert item["language"] == "es" and "lote" in item["subject"].lower() and str(batch_id) in item["subject"]
    assert "imágenes" in item["text"] and "Your batch" not in item["text"]


def test_a_batch_with_no_image_says_so_and_still_links_the_page(conn, fake, tmp_path, translations):
    settings = mail_settings(fake, tmp_path)
    batch_id = make_batch(conn, make_subscriber(conn), statuses=("cancelled", "cancelled"), batch_status="cancelled")
    assert notify.send_due(conn, settings, translations)["sent"] == 1
    text = settle(fake, 1)[0].as_dict()["text"]
    assert "0 images are ready." in text and "2 images were cancelled." in text
    assert f"{BASE}/batches/{batch_id}" in text and "wait on the server" not in text


# When not to send ------------------------------------------------------------------------------


@pytest.mark.parametrize("statuses,batch_status", [
    (("done", "queued"), "active"),        # still being made
    (("done", "held"), "active"),          # a test run waiting for the go-ahead
    (("done", "waiting"), "done"),         # an economy item still at OpenAI
    (("done", "running"), "cancelled"),    # cancelled, one call still running
    (("done", "done"), "paused"),
])
def test_an_unfinished_batch_sends_nothing(conn, fake, tmp_path, translations, statuses, batch_status):
    batch_id = make_batch(conn, make_subscriber(conn), statuses=statuses, batch_status=batch_status)
    assert notify.send_due(conn, mail_settings(fake, tmp_path), translations)["sent"] == 0
    assert notified_at(conn, batch_id) is None and fake.messages == []


def test_a_batch_without_the_box_ticked_sends_nothing(conn, fake, tmp_path, translations):
    batch_id = make_batch(conn, make_subscriber(conn), notify_email=False)
    assert notify.send_due(conn, mail_settings(fake, tmp_path), translations)["sent"] == 0
    assert notified_at(conn, batch_id) is None and fake.messages == []


def test_without_mail_settings_nothing_happens_and_nothing_fails(conn, tmp_path, translations):
    settings = mail_settings(None, tmp_path)
    assert settings.mail_enabled is False
    batch_id = make_batch(conn, make_subscriber(conn))
    assert notify.send_due(conn, settings, translations) == {"sent": 0, "retry": 0, "failed": 0}
    assert notified_at(conn, batch_id) is None


def test_a_batch_finished_longer_ago_than_images_are_kept_is_not_emailed(conn, fake, tmp_path, translations):
    batch_id = make_batch(conn, make_subscriber(conn))
    conn.execute("UPDATE batches SET updated_at = ? WHERE id = ?", (int(time.time()) - 8 * 86400, batch_id))
    assert notify.send_due(conn, mail_settings(fake, tmp_path), translations)["sent"] == 0
    assert fake.messages == []


def test_an_owner_without_an_address_is_skipped(conn, fake, tmp_path, translations):
    make_batch(conn, make_subscriber(conn, email=""))
    assert notify.send_due(conn, mail_settings(fake, tmp_path), translations)["sent"] == 0


def test_one_run_sends_at_most_its_limit_and_the_next_run_the_rest(conn, fake, tmp_path, translations):
    settings = mail_settings(fake, tmp_path)
    user = make_subscriber(conn)
    ids = [make_batch(conn, user, statuses=("done",)) for _ in range(3)]
    assert notify.send_due(conn, settings, translations, limit=2)["sent"] == 2
    assert [notified_at(conn, i) is not None for i in ids] == [True, True, False]
    assert notify.send_due(conn, settings, translations, limit=2)["sent"] == 1
    assert len(settle(fake, 3)) == 3


# Failures --------------------------------------------------------------------------------------


def test_a_server_that_is_down_leaves_the_email_for_the_next_run(conn, fake, tmp_path, translations):
    settings = mail_settings(fake, tmp_path, SMTP_TIMEOUT="2")
    user = make_subscriber(conn)
    first, second = make_batch(conn, user), make_batch(conn, user)
    fake.down()
    # Refused at the first batch: the run stops there rather than trying each batch against a dead server.
    assert notify.send_due(conn, settings, translations) == {"sent": 0, "retry": 1, "failed": 0}
    assert notified_at(conn, first) is None and notified_at(conn, second) is None
    fake.up()
    assert notify.send_due(conn, settings, translations)["sent"] == 2
    assert notify.send_due(conn, settings, translations)["sent"] == 0
    assert sorted(m.as_dict()["subject"] for m in settle(fake, 2)) == [f"Your batch {first} is ready",
                                                                       f"Your batch {second} is ready"]


@pytest.mark.parametrize("stage", ["mail", "rcpt", "data"])
def test_a_4xx_answer_is_retried_by_the_next_run(conn, fake, tmp_path, translations, stage):
    settings = mail_settings(fake, tmp_path)
    batch_id = make_batch(conn, make_subscriber(conn))
    fake.fail_next(451, stage)
    assert notify.send_due(conn, settings, translations) == {"sent": 0, "retry": 1, "failed": 0}
    assert notified_at(conn, batch_id) is None
    assert notify.send_due(conn, settings, translations)["sent"] == 1
    assert len(settle(fake, 1)) == 1


def test_a_5xx_refusal_is_not_retried_and_the_log_hides_the_address(conn, fake, tmp_path, translations, caplog):
    settings = mail_settings(fake, tmp_path)
    user = make_subscriber(conn, email="ana.garcia@example.com")
    refused, fine = make_batch(conn, user), make_batch(conn, user)
    fake.fail_next(550, "rcpt")
    with caplog.at_level(logging.INFO, logger="services.notify"):
        assert notify.send_due(conn, settings, translations) == {"sent": 1, "retry": 0, "failed": 1}
    assert notified_at(conn, refused) is not None and notified_at(conn, fine) is not None
    assert notify.send_due(conn, settings, translations) == {"sent": 0, "retry": 0, "failed": 0}
    [received] = settle(fake, 1)
    assert received.as_dict()["subject"] == f"Your batch {fine} is ready"
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert f"batch {refused}" in logged and "550" in logged and "a***@example.com" in logged
    assert "ana.garcia@example.com" not in logged


def test_the_log_never_shows_the_smtp_password(conn, tmp_path, translations, caplog):
    with FakeSMTP(user="no-reply@images-in-bulk.test", password="pw-that-must-stay-secret") as fake:
        settings = mail_settings(fake, tmp_path, SMTP_PASSWORD="a-wrong-password-42")
        make_batch(conn, make_subscriber(conn))
        with caplog.at_level(logging.INFO, logger="services.notify"):
            counts = notify.send_due(conn, settings, translations)
    assert counts["sent"] == 0 and counts["failed"] + counts["retry"] == 1
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "refused the login" in logged and "a-wrong-password-42" not in logged


def test_two_runs_at_once_send_one_email(database, conn, fake, tmp_path, translations, monkeypatch):
    settings = mail_settings(fake, tmp_path)
    batch_id = make_batch(conn, make_subscriber(conn))
    both_found_it = threading.Barrier(2)
    find = db.batches_to_notify

    def find_then_wait(*args, **kwargs):
        rows = find(*args, **kwargs)
        both_found_it.wait(timeout=10)  # both runs have the batch in hand before either claims it
        return rows

    monkeypatch.setattr(db, "batches_to_notify", find_then_wait)
    results, errors = [], []

    def run():
        own = database.connect()
        try:
            results.append(notify.send_due(own, settings, translations))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            own.close()

    runs = [threading.Thread(target=run) for _ in range(2)]
    for thread in runs:
        thread.start()
    for thread in runs:
        thread.join(timeout=30)
    assert errors == [] and sorted(r["sent"] for r in results) == [0, 1]
    assert len(settle(fake, 1)) == 1 and notified_at(conn, batch_id) is not None


# The cron worker -----------------------------------------------------------------------------------


def test_the_cron_worker_sends_the_due_emails(db_url, database, conn, fake, tmp_path, capsys):
    settings = load_settings({"APP_MODE": "test", "DATABASE_URL": db_url, "VAR_DIR": str(tmp_path / "var"),
                              "PUBLIC_BASE_URL": BASE, **fake.app_settings()},
                             environ={}, env_file=tmp_path / "absent.env")
    batch_id = make_batch(conn, make_subscriber(conn), lang="es")
    assert cli.cmd_worker(settings) == 0
    assert "worker: mail: 1 sent, 0 to retry, 0 refused" in capsys.readouterr().out
    assert notified_at(conn, batch_id) is not None and len(settle(fake, 1)) == 1
    assert cli.cmd_worker(settings) == 0
    assert "worker: mail" not in capsys.readouterr().out


# The stand-in's spool and the demo's mailbox page ------------------------------------------------


def test_the_stand_in_writes_each_message_to_its_spool_and_reads_them_back_newest_first(conn, tmp_path,
                                                                                       translations):
    spool = tmp_path / "spool"
    with FakeSMTP(spool_dir=spool) as fake:
        settings = mail_settings(fake, tmp_path)
        user = make_subscriber(conn, email="ana@example.com")
        first = make_batch(conn, user)
        assert notify.send_due(conn, settings, translations)["sent"] == 1
        second = make_batch(conn, user)
        assert notify.send_due(conn, settings, translations)["sent"] == 1
        settle(fake, 2)
    files = sorted(spool.glob("*.eml"))
    assert len(files) == 2 and not list(spool.glob(".*"))  # no partial file left behind
    newest, oldest = read_spool(spool)
    assert newest.as_dict()["subject"] == f"Your batch {second} is ready"
    assert oldest.as_dict()["subject"] == f"Your batch {first} is ready"
    assert newest.mail_from == "no-reply@images-in-bulk.test" and newest.rcpt_tos == ("ana@example.com",)
    assert "2 images are ready." in newest.body() and newest.received_at >= oldest.received_at
    assert read_spool(tmp_path / "missing") == [] and len(read_spool(spool, limit=1)) == 1


def test_the_demo_mailbox_lists_what_the_demo_sent(make_app, database, conn, tmp_path):
    with FakeSMTP(spool_dir=mail_spool(tmp_path / "var")) as fake:  # make_app's VAR_DIR
        app = make_app(APP_MODE="demo", **fake.app_settings())
        assert app.settings.var_dir == tmp_path / "var"
        client = BufferedClient(app)
        empty = client.get("/demo/mail", headers={"Accept-Language": "en"})
        assert empty.status_code == 200 and "No email yet" in empty.text
        assert 'href="/demo/mail"' in client.get("/", headers={"Accept-Language": "en"}).text  # the footer's link
        batch_id = make_batch(conn, make_subscriber(conn, email="ana@example.com"))
        assert notify.send_due(conn, app.settings, app.translations)["sent"] == 1
        settle(fake, 1)
    page = client.get("/demo/mail", headers={"Accept-Language": "en"})
    assert page.status_code == 200 and page.headers["Cache-Control"] == "no-store"
    for expected in (f"Your batch {batch_id} is ready", "ana@example.com", "no-reply@images-in-bulk.test",
                     "2 images are ready.", f"/batches/{batch_id}"):
        assert expected in page.text, expected
    assert "<style" not in page.text and " style=" not in page.text


def test_the_demo_mails_a_finished_batch_by_itself(database, conn, fake, tmp_path, translations):
    batch_id = make_batch(conn, make_subscriber(conn))
    halt = start_mailer(mail_settings(fake, tmp_path), database, translations, every=0.05)
    try:
        [received] = fake.wait_for(1)
    finally:
        halt()
    assert received.as_dict()["subject"] == f"Your batch {batch_id} is ready"
    assert len(settle(fake, 1)) == 1


def test_the_demo_mailbox_is_a_404_outside_the_demo(client):
    assert client.get("/demo/mail").status_code == 404
    assert 'href="/demo/mail"' not in client.get("/").text


def test_check_mail_sends_one_test_message_or_says_why_not(fake, tmp_path, capsys):
    settings = mail_settings(fake, tmp_path)
    assert cli.cmd_check_mail(settings, "owner@example.com") == 0
    [received] = settle(fake, 1)
    assert received.as_dict()["to"] == "owner@example.com" and "check-mail" in received.as_dict()["text"]
    assert "sent to owner@example.com" in capsys.readouterr().out
    fake.down()
    assert cli.cmd_check_mail(settings, "owner@example.com") == 1
    assert "not sent, temporary" in capsys.readouterr().err
    fake.up()
    assert cli.cmd_check_mail(settings, None) == 2
    assert cli.cmd_check_mail(mail_settings(None, tmp_path), "owner@example.com") == 2
    assert "mail is off" in capsys.readouterr().err
