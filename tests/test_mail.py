"""Outgoing mail: the SMTP settings, services.mail over real SMTP to the stand-in (tools/fake_smtp.py)."""

from __future__ import annotations

import base64
import dataclasses
import email.utils
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from services.config import ConfigError, load_settings
from services.mail import MailError, Message, build_message, send
from tools.fake_smtp import FakeSMTP

ROOT = Path(__file__).resolve().parent.parent
GOOD = {"SECRET_KEY": "k" * 40, "PUBLIC_BASE_URL": "https://images.example.com",
        "GOOGLE_CLIENT_ID": "123.apps.googleusercontent.com", "GOOGLE_CLIENT_SECRET": "google-secret-value",
        "STRIPE_SECRET_KEY": "sk_test_example_key", "STRIPE_WEBHOOK_SECRET": "whsec_example_secret",
        "OPENAI_API_KEY": "sk-example-openai-key"}
# What a cPanel account's Email Accounts → Connect Devices page lists for no-reply@example.com.
CPANEL = {"SMTP_HOST": "mail.example.com", "SMTP_PORT": "465", "SMTP_SECURITY": "tls",
          "SMTP_USER": "no-reply@example.com", "SMTP_PASSWORD": "correct-horse-battery-staple",
          "SMTP_FROM": "images-in-bulk <no-reply@example.com>"}
USER, PASSWORD = "no-reply@images-in-bulk.test", "s3cret-Pässword-42"
SUBJECT = "¿Listo? Tu lote «Cañón» ya está: 12 imágenes"
TEXT = ("Hola, Ana:\n\nTu lote «Cañón» está listo. Descárgalo aquí: https://images.example.com/batches/7\n\n"
        "— Año ñandú\n")


def load(environ, tmp_path, **overrides):
    return load_settings(overrides or None, environ=environ, env_file=tmp_path / "absent.env")


def settings_for(fake: FakeSMTP, tmp_path, **changes):
    """Test-mode settings that send through the stand-in."""
    return load({"APP_MODE": "test", **fake.app_settings(), **changes}, tmp_path)


def spanish(to="Ana García <ana@example.com>", **changes) -> Message:
    return Message(to=to, subject=SUBJECT, text=TEXT, **changes)


def assert_secret_free(exc: MailError):
    text = f"{exc} {exc!r} {exc.args}"
    for secret in (PASSWORD, base64.b64encode(PASSWORD.encode()).decode(),
                   base64.b64encode(f"\0{USER}\0{PASSWORD}".encode()).decode()):
        assert secret not in text, text


@pytest.fixture
def fake_smtp():
    with FakeSMTP() as fake:
        yield fake


@pytest.fixture
def secure_smtp():
    """STARTTLS with a throwaway CA, and AUTH required (like port 587 on a cPanel server)."""
    with FakeSMTP(security="starttls", user=USER, password=PASSWORD) as fake:
        yield fake


# Settings ---------------------------------------------------------------------------------------


def test_mail_is_off_without_smtp_host(tmp_path):
    settings = load(GOOD, tmp_path)
    assert settings.mail_enabled is False
    assert (settings.smtp_port, settings.smtp_security, settings.smtp_timeout) == (587, "starttls", 20)
    assert load({"APP_MODE": "demo"}, tmp_path).mail_enabled is False


@pytest.mark.parametrize("port,security", [("465", "tls"), ("587", "starttls")])
def test_cpanel_connect_devices_settings_are_accepted_in_production(tmp_path, port, security):
    settings = load({**GOOD, **CPANEL, "SMTP_PORT": port, "SMTP_SECURITY": security}, tmp_path)
    assert settings.mail_enabled
    assert (settings.smtp_host, settings.smtp_port, settings.smtp_security) == ("mail.example.com", int(port),
                                                                                security)
    assert settings.smtp_user == "no-reply@example.com"
    assert settings.smtp_from == "images-in-bulk <no-reply@example.com>"
    assert CPANEL["SMTP_PASSWORD"] not in repr(settings)


@pytest.mark.parametrize("changes,expected", [
    ({"SMTP_SECURITY": "none", "SMTP_PORT": "25"}, "SMTP_SECURITY none sends the password"),
    ({"SMTP_HOST": "127.0.0.1"}, "SMTP_HOST points at this machine"),
    ({"SMTP_HOST": "localhost."}, "SMTP_HOST points at this machine"),
    ({"SMTP_HOST": "::1"}, "SMTP_HOST points at this machine"),
    ({"SMTP_FROM": ""}, "SMTP_FROM is missing"),
    ({"SMTP_PASSWORD": ""}, "SMTP_PASSWORD is missing"),
    ({"SMTP_USER": ""}, "SMTP_USER is missing"),
    ({"SMTP_PORT": "587"}, "SMTP_SECURITY tls (TLS from the first byte) goes with SMTP_PORT 465"),
    ({"SMTP_SECURITY": "starttls"}, "SMTP_SECURITY starttls goes with SMTP_PORT 587"),
])
def test_production_refuses_unsafe_or_incomplete_mail_settings(tmp_path, changes, expected):
    with pytest.raises(ConfigError) as caught:
        load({**GOOD, **CPANEL, **changes}, tmp_path)
    assert expected in str(caught.value)
    assert len(caught.value.problems) == 1, caught.value.problems
    assert CPANEL["SMTP_PASSWORD"] not in str(caught.value)


def test_malformed_mail_settings_are_reported_together(tmp_path):
    environ = {**GOOD, **CPANEL, "SMTP_HOST": "smtps://mail.example.com:465", "SMTP_PORT": "70000",
               "SMTP_SECURITY": "ssl", "SMTP_FROM": "no reply", "SMTP_CA_FILE": str(tmp_path / "missing.pem"),
               "SMTP_TIMEOUT": "0"}
    with pytest.raises(ConfigError) as caught:
        load(environ, tmp_path)
    text = str(caught.value)
    for name in ("SMTP_HOST must be a host name", "SMTP_PORT must be a port number", "SMTP_SECURITY must be",
                 "SMTP_FROM must be an address", "SMTP_CA_FILE names a file", "SMTP_TIMEOUT must be"):
        assert name in text
    assert CPANEL["SMTP_PASSWORD"] not in text


def test_outside_production_the_stand_in_may_be_plain_and_local(tmp_path):
    for mode in ("demo", "test"):
        settings = load({"APP_MODE": mode, "SMTP_HOST": "127.0.0.1", "SMTP_PORT": "8025", "SMTP_SECURITY": "none",
                         "SMTP_FROM": "no-reply@images-in-bulk.test"}, tmp_path)
        assert settings.mail_enabled and settings.smtp_security == "none"
    with pytest.raises(ConfigError, match="SMTP_FROM is missing"):
        load({"APP_MODE": "test", "SMTP_HOST": "127.0.0.1"}, tmp_path)


# Sending ----------------------------------------------------------------------------------------


def test_plain_message_arrives_with_proper_headers_and_spanish_text(fake_smtp, tmp_path):
    settings = settings_for(fake_smtp, tmp_path, SMTP_FROM="Imágenes en lote <no-reply@images-in-bulk.test>",
                            CONTACT_EMAIL="ayuda@images-in-bulk.test")
    message_id = send(settings, spanish())
    [received] = fake_smtp.messages
    assert received.mail_from == "no-reply@images-in-bulk.test"
    assert received.rcpt_tos == ("ana@example.com",)
    mail = received.message
    assert str(mail["Subject"]) == SUBJECT
    assert mail["From"].addresses[0].display_name == "Imágenes en lote"
    assert mail["From"].addresses[0].addr_spec == "no-reply@images-in-bulk.test"
    assert mail["To"].addresses[0].display_name == "Ana García"
    assert str(mail["Reply-To"]) == "ayuda@images-in-bulk.test"
    assert mail["Message-ID"] == message_id
    assert message_id.startswith("<") and message_id.endswith("@images-in-bulk.test>")
    sent_at = email.utils.parsedate_to_datetime(str(mail["Date"]))
    assert abs(time.time() - sent_at.timestamp()) < 60
    assert mail["Auto-Submitted"] == "auto-generated"
    assert mail["Content-Language"] == "es"
    assert mail.get_content_type() == "text/plain" and mail.get_content_charset() == "utf-8"
    assert mail.get_content().replace("\r\n", "\n") == TEXT
    assert received.body() == TEXT
    # On the wire every header and line is 7-bit ASCII: no 8BITMIME or SMTPUTF8 needed.
    received.raw.decode("ascii")
    assert b"=?utf-8?" in received.raw.split(b"\r\n\r\n")[0]


def test_html_goes_as_a_multipart_alternative(fake_smtp, tmp_path):
    html = "<p>Tu lote <strong>«Cañón»</strong> está listo.</p>"
    send(settings_for(fake_smtp, tmp_path), spanish(html=html, language="en"))
    [received] = fake_smtp.messages
    assert received.message.get_content_type() == "multipart/alternative"
    assert received.body("plain") == TEXT
    assert received.body("html").strip() == html
    assert received.message["Content-Language"] == "en"


def test_starttls_with_the_stand_ins_certificate_and_login(secure_smtp, tmp_path):
    settings = settings_for(secure_smtp, tmp_path)
    assert settings.smtp_security == "starttls" and settings.smtp_ca_file
    send(settings, spanish())
    [received] = secure_smtp.messages
    assert received.tls and received.login == USER
    assert str(received.message["Subject"]) == SUBJECT
    assert received.body() == TEXT


def test_implicit_tls_like_port_465(tmp_path):
    # An ASCII password goes through smtplib's own login(); the non-ASCII PASSWORD elsewhere as UTF-8 AUTH PLAIN.
    with FakeSMTP(security="tls", user=USER, password="ascii-only-password") as fake:
        send(settings_for(fake, tmp_path), spanish())
        [received] = fake.messages
        assert received.tls and received.login == USER


def test_the_certificate_is_verified(secure_smtp, tmp_path):
    settings = settings_for(secure_smtp, tmp_path, SMTP_CA_FILE="")  # the system CAs do not know the stand-in
    with pytest.raises(MailError, match="certificate of 127.0.0.1:\\d+ could not be verified") as caught:
        send(settings, spanish())
    assert_secret_free(caught.value)
    assert secure_smtp.messages == []


def test_starttls_is_required_when_configured(fake_smtp, tmp_path):
    settings = settings_for(fake_smtp, tmp_path, SMTP_SECURITY="starttls")
    with pytest.raises(MailError, match="does not offer STARTTLS"):
        send(settings, spanish())
    assert fake_smtp.messages == []


def test_tls_against_a_plain_port_fails_clearly(fake_smtp, tmp_path):
    with pytest.raises(MailError, match="TLS with 127.0.0.1:\\d+ failed") as caught:
        send(settings_for(fake_smtp, tmp_path, SMTP_SECURITY="tls"), spanish())
    assert caught.value.temporary


def test_a_wrong_password_is_refused_without_showing_it(tmp_path):
    with FakeSMTP(security="starttls", user=USER, password="the-real-one") as fake:
        with pytest.raises(MailError, match="refused the login of 'no-reply@images-in-bulk.test'") as caught:
            send(settings_for(fake, tmp_path, SMTP_USER=USER, SMTP_PASSWORD=PASSWORD), spanish())
        assert caught.value.code == 535 and not caught.value.temporary
        assert_secret_free(caught.value)
        assert fake.messages == []


def test_without_login_the_server_refuses_the_sender(secure_smtp, tmp_path):
    settings = settings_for(secure_smtp, tmp_path, SMTP_USER="", SMTP_PASSWORD="")
    with pytest.raises(MailError, match="refused the sender no-reply@images-in-bulk.test.*530"):
        send(settings, spanish())


@pytest.mark.parametrize("stage,code,expected,temporary", [
    ("rcpt", 550, "refused the recipient ana@example.com: 550 5.1.1 No such user here", False),
    ("rcpt", 450, "refused the recipient ana@example.com: 450", True),
    ("mail", 451, "refused the sender no-reply@images-in-bulk.test", True),
    ("data", 554, "refused the message: 554", False),
    ("data", 452, "refused the message: 452", True),
])
def test_refusals_are_mail_errors(secure_smtp, tmp_path, stage, code, expected, temporary):
    secure_smtp.fail_next(code, stage)
    with pytest.raises(MailError) as caught:
        send(settings_for(secure_smtp, tmp_path), spanish())
    assert expected in str(caught.value)
    assert (caught.value.code, caught.value.temporary) == (code, temporary)
    assert_secret_free(caught.value)
    assert secure_smtp.messages == []
    send(settings_for(secure_smtp, tmp_path), spanish())  # one refusal only
    assert len(secure_smtp.messages) == 1


def test_a_server_reply_that_echoes_the_password_is_scrubbed(secure_smtp, tmp_path):
    echoed = base64.b64encode(f"\0{USER}\0{PASSWORD}".encode()).decode()
    secure_smtp.fail_next(554, "data", f"5.7.1 rejected {PASSWORD} / {echoed}")
    with pytest.raises(MailError, match="rejected \\*\\*\\* / \\*\\*\\*") as caught:
        send(settings_for(secure_smtp, tmp_path), spanish())
    assert_secret_free(caught.value)


def test_server_down_then_up_again(secure_smtp, tmp_path):
    settings = settings_for(secure_smtp, tmp_path)
    send(settings, spanish())
    secure_smtp.down()
    with pytest.raises(MailError, match="could not connect to 127.0.0.1:\\d+: connection refused") as caught:
        send(settings, spanish())
    assert caught.value.temporary
    assert_secret_free(caught.value)
    secure_smtp.up()
    send(settings, spanish())
    assert len(secure_smtp.messages) == 2


def test_a_server_that_never_answers_times_out(tmp_path):
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts connections (backlog), says nothing
        port = silent.getsockname()[1]
        settings = load({"APP_MODE": "test", "SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(port),
                         "SMTP_SECURITY": "none", "SMTP_FROM": "no-reply@images-in-bulk.test",
                         "SMTP_TIMEOUT": "1"}, tmp_path)
        started = time.monotonic()
        with pytest.raises(MailError, match=f"127.0.0.1:{port} did not answer within 1 s") as caught:
            send(settings, spanish())
        assert time.monotonic() - started < 5
        assert caught.value.temporary


def test_mail_off_and_malformed_recipients(fake_smtp, tmp_path):
    with pytest.raises(MailError, match="mail is off"):
        send(load({"APP_MODE": "test"}, tmp_path), spanish())
    settings = settings_for(fake_smtp, tmp_path)
    for bad in ("ana@example.com\r\nBcc: everyone@example.com", "not an address", "ana@localhost", ""):
        with pytest.raises(MailError, match="recipient"):
            send(settings, spanish(to=bad))
    assert fake_smtp.messages == []


def test_a_subject_stays_on_one_line_and_idn_domains_are_encoded(fake_smtp, tmp_path):
    settings = settings_for(fake_smtp, tmp_path)
    mail = build_message(settings, Message(to="José <jose@españa.example>", subject="Hola\r\nBcc: x@example.com",
                                           text="Hola"))
    assert str(mail["Subject"]) == "Hola Bcc: x@example.com" and "Bcc" not in mail
    send(settings, Message(to="José <jose@españa.example>", subject="Hola", text="Hola"))
    assert fake_smtp.messages[0].rcpt_tos == ("jose@xn--espaa-rta.example",)


def test_timeout_setting_reaches_smtplib(fake_smtp, tmp_path):
    settings = dataclasses.replace(settings_for(fake_smtp, tmp_path), smtp_timeout=7)
    assert send(settings, spanish())


# The stand-in itself ----------------------------------------------------------------------------


def test_inbox_lists_messages_for_a_page_newest_first(fake_smtp, tmp_path):
    settings = settings_for(fake_smtp, tmp_path)
    send(settings, Message(to="ana@example.com", subject="Primero", text="uno"))
    send(settings, spanish(html="<p>dos</p>"))
    assert len(fake_smtp.wait_for(2, timeout=1)) == 2
    newest, oldest = fake_smtp.inbox()
    assert (newest["subject"], oldest["subject"]) == (SUBJECT, "Primero")
    assert newest["to"] == "Ana García <ana@example.com>" and newest["envelope_to"] == ["ana@example.com"]
    assert newest["text"] == TEXT and newest["html"].strip() == "<p>dos</p>"
    assert oldest["html"] is None and oldest["tls"] is False and oldest["login"] is None
    assert ("Auto-Submitted", "auto-generated") in newest["headers"]
    assert all(isinstance(value, (str, int, bool, list, type(None))) for value in newest.values())
    fake_smtp.clear()
    assert fake_smtp.inbox() == []
    with pytest.raises(TimeoutError):
        fake_smtp.wait_for(1, timeout=0.05)


def test_fail_next_checks_its_arguments(fake_smtp):
    with pytest.raises(ValueError):
        fake_smtp.fail_next(250)
    with pytest.raises(ValueError):
        fake_smtp.fail_next(550, "helo")


def test_command_line_prints_settings_and_received_mail(tmp_path):
    process = subprocess.Popen([sys.executable, str(ROOT / "tools" / "fake_smtp.py"), "--port", "0"],
                               cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                               encoding="utf-8", env={**os.environ, "PYTHONIOENCODING": "utf-8"})
    try:
        first = process.stdout.readline()
        assert first.startswith("smtp://127.0.0.1:"), first
        settings = {}
        for _ in range(4):  # SMTP_HOST, SMTP_PORT, SMTP_SECURITY, SMTP_FROM
            name, _, value = process.stdout.readline().strip().partition("=")
            settings[name] = value
        assert settings["SMTP_HOST"] == "127.0.0.1" and settings["SMTP_SECURITY"] == "none"
        send(load({"APP_MODE": "test", **settings}, tmp_path), spanish())
        lines = []
        while len(lines) < 12 and "Tu lote «Cañón» está listo" not in "".join(lines):
            lines.append(process.stdout.readline())
        assert any(line.strip() == f"Subject: {SUBJECT}" for line in lines), lines
        assert "Tu lote «Cañón» está listo" in lines[-1], lines
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        finally:
            process.stdout.close()
    assert process.returncode == 0
