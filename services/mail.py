"""Outgoing mail over SMTP: one plain-text (and optionally HTML) message to one person.

`send(settings, message)` connects to SMTP_HOST:SMTP_PORT with a timeout, secures the connection
as SMTP_SECURITY says (STARTTLS on 587, TLS from the first byte on 465; "none" only outside
production), verifies the server's certificate (against SMTP_CA_FILE when set, else the system's
trusted CAs), logs in when SMTP_USER is set, and hands over the message. Any failure is a
`MailError` whose text says what went wrong and never contains the password. These are the
settings a cPanel account's Email Accounts → Connect Devices page lists for an address.
"""

from __future__ import annotations

import base64
import dataclasses
import email.policy
import email.utils
import ipaddress
import smtplib
import socket
import ssl
from email.headerregistry import Address
from email.message import EmailMessage
from urllib.parse import urlsplit

from services.config import Settings


class MailError(Exception):
    """Sending failed; the message says why (it never contains the password).

    `temporary` is True when trying again later may work (the server is down or slow, or
    answered 4xx); `code` is the server's SMTP reply code when it gave one.
    """

    def __init__(self, text: str, *, temporary: bool = False, code: int | None = None):
        super().__init__(text)
        self.temporary = temporary
        self.code = code


@dataclasses.dataclass(frozen=True)
class Message:
    """One email to one person: a subject and a plain-text body, optionally an HTML alternative."""

    to: str
    subject: str
    text: str
    html: str | None = None
    language: str = "es"


_POLICY = email.policy.SMTP  # RFC 5322 lines ending in CRLF, long headers folded and encoded


def _address(raw: str, what: str) -> tuple[str, str]:
    """Split `Name <local@domain>` into (display name, address) with an ASCII (IDNA) domain; MailError if malformed."""
    if "\r" in raw or "\n" in raw:
        raise MailError(f"the {what} address contains a line break")
    display, address = email.utils.parseaddr(raw)
    local, _, domain = address.rpartition("@")
    if not local or "." not in domain.strip(".") or any(ch in address for ch in " <>\"'(),;"):
        raise MailError(f"the {what} address is not an email address (got {raw!r})")
    try:
        domain = domain.encode("idna").decode("ascii")
    except UnicodeError as exc:
        raise MailError(f"the {what} address has a domain that cannot be used (got {raw!r})") from exc
    return display, f"{local}@{domain.lower()}"


def _ehlo_name(settings: Settings) -> str:
    """The name we greet the server with: the site's own host name ([address] for an IP literal)."""
    host = urlsplit(settings.public_base_url).hostname or "localhost"
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return host
    return f"[{host}]"


def build_message(settings: Settings, message: Message) -> EmailMessage:
    """The complete email (headers, text part, HTML alternative) that send() hands to the server."""
    sender_name, sender = _address(settings.smtp_from, "sender (SMTP_FROM)")
    recipient_name, recipient = _address(message.to, "recipient")
    mail = EmailMessage(policy=_POLICY)
    mail["From"] = Address(display_name=sender_name, addr_spec=sender)
    mail["To"] = Address(display_name=recipient_name, addr_spec=recipient)
    if settings.contact_email:
        mail["Reply-To"] = settings.contact_email
    # A subject is one line: a stray line break would otherwise start a header of its own.
    mail["Subject"] = " ".join(message.subject.split())
    mail["Date"] = email.utils.formatdate(localtime=False, usegmt=True)
    mail["Message-ID"] = email.utils.make_msgid(domain=sender.rpartition("@")[2])
    # RFC 3834: sent by a program, not a person; out-of-office robots should not answer it.
    mail["Auto-Submitted"] = "auto-generated"
    mail["X-Auto-Response-Suppress"] = "All"
    # Quoted-printable keeps every line 7-bit (no 8BITMIME needed) and the text readable in the source.
    mail.set_content(message.text, subtype="plain", charset="utf-8", cte="quoted-printable")
    if message.html is not None:
        mail.add_alternative(message.html, subtype="html", charset="utf-8", cte="quoted-printable")
    # After the content: setting the content clears every Content-* header.
    mail["Content-Language"] = message.language
    return mail


def tls_context(settings: Settings) -> ssl.SSLContext:
    """The client TLS context: certificate and host name verified, against SMTP_CA_FILE when it is set."""
    context = ssl.create_default_context(cafile=settings.smtp_ca_file or None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def send(settings: Settings, message: Message) -> str:
    """Send one message through the configured SMTP server; return its Message-ID or raise MailError."""
    if not settings.mail_enabled:
        raise MailError("mail is off: SMTP_HOST is not set")
    mail = build_message(settings, message)
    _name, sender = _address(settings.smtp_from, "sender (SMTP_FROM)")
    _name, recipient = _address(message.to, "recipient")
    where = f"{settings.smtp_host}:{settings.smtp_port}"
    try:
        _deliver(settings, mail, sender, recipient)
    except MailError as exc:
        raise MailError(_scrub(str(exc), settings), temporary=exc.temporary, code=exc.code) from None
    except smtplib.SMTPAuthenticationError as exc:
        # `from None`: the login's exchange stays out of the traceback.
        raise MailError(_scrub(f"{where} refused the login of {settings.smtp_user!r} (check SMTP_USER, "
                               f"the full email address, and SMTP_PASSWORD): {_reply(exc)}", settings),
                        code=exc.smtp_code, temporary=400 <= exc.smtp_code < 500) from None
    except smtplib.SMTPRecipientsRefused as exc:
        code, reply = next(iter(exc.recipients.values()), (None, b""))
        raise _smtp_failure(settings, f"{where} refused the recipient {recipient}", code, reply) from None
    except smtplib.SMTPSenderRefused as exc:
        raise _smtp_failure(settings, f"{where} refused the sender {sender} (SMTP_FROM should be the "
                                      "address SMTP_USER logs in as)", exc.smtp_code, exc.smtp_error) from None
    except smtplib.SMTPDataError as exc:
        raise _smtp_failure(settings, f"{where} refused the message", exc.smtp_code, exc.smtp_error) from None
    except smtplib.SMTPConnectError as exc:
        raise _smtp_failure(settings, f"{where} refused the connection", exc.smtp_code, exc.smtp_error) from None
    except smtplib.SMTPResponseException as exc:
        raise _smtp_failure(settings, f"{where} answered with an error", exc.smtp_code, exc.smtp_error) from None
    except smtplib.SMTPNotSupportedError as exc:
        raise MailError(_scrub(f"{where} does not support what sending needs: {exc}", settings)) from None
    except smtplib.SMTPServerDisconnected as exc:
        if isinstance(exc.__context__, TimeoutError):  # smtplib turns a read timeout into a disconnect
            raise MailError(f"{where} did not answer within {settings.smtp_timeout} s (SMTP_TIMEOUT)",
                            temporary=True) from None
        raise MailError(_scrub(f"{where} closed the connection unexpectedly ({exc or 'no reason given'})",
                               settings), temporary=True) from None
    except smtplib.SMTPException as exc:
        raise MailError(_scrub(f"SMTP error with {where}: {exc}", settings), temporary=True) from None
    except ssl.SSLCertVerificationError as exc:
        raise MailError(f"the certificate of {where} could not be verified ({exc.verify_message}); "
                        "SMTP_HOST must be the name the certificate is for (cPanel shows it under Secure "
                        "SSL/TLS Settings)") from None
    except ssl.SSLError as exc:
        raise MailError(f"TLS with {where} failed ({exc.reason or exc}); SMTP_SECURITY tls goes with port 465, "
                        "starttls with 587", temporary=True) from None
    except ConnectionRefusedError:
        raise MailError(f"could not connect to {where}: connection refused (is the mail server down, or "
                        "SMTP_PORT wrong?)", temporary=True) from None
    except TimeoutError:
        raise MailError(f"{where} did not answer within {settings.smtp_timeout} s (SMTP_TIMEOUT)",
                        temporary=True) from None
    except socket.gaierror as exc:
        raise MailError(f"could not find the mail server {settings.smtp_host!r} ({exc.strerror})",
                        temporary=True) from None
    except OSError as exc:
        raise MailError(f"could not reach {where}: {exc.strerror or exc}", temporary=True) from None
    return mail["Message-ID"]


def _deliver(settings: Settings, mail: EmailMessage, sender: str, recipient: str) -> None:
    """Connect, secure, log in and send; lets smtplib's and the socket's exceptions through."""
    timeout = settings.smtp_timeout
    local_name = _ehlo_name(settings)
    if settings.smtp_security == "tls":
        client = smtplib.SMTP_SSL(settings.smtp_host, settings.smtp_port, local_hostname=local_name,
                                  timeout=timeout, context=tls_context(settings))
    else:
        client = smtplib.SMTP(settings.smtp_host, settings.smtp_port, local_hostname=local_name, timeout=timeout)
    with client:
        client.ehlo()
        if settings.smtp_security == "starttls":
            if not client.has_extn("starttls"):
                raise MailError(f"{settings.smtp_host}:{settings.smtp_port} does not offer STARTTLS: the login "
                                "and the mail would travel unencrypted (is SMTP_SECURITY right for this port?)")
            client.starttls(context=tls_context(settings))
            client.ehlo()
        if settings.smtp_user:
            _login(client, settings.smtp_user, settings.smtp_password)
        client.send_message(mail, from_addr=sender, to_addrs=[recipient])


def _login(client: smtplib.SMTP, user: str, password: str) -> None:
    """Log in; smtplib's login() sends ASCII only, so a non-ASCII user or password goes as UTF-8 PLAIN or LOGIN."""
    if (user + password).isascii():
        client.login(user, password)
        return
    if not client.has_extn("auth"):
        raise smtplib.SMTPNotSupportedError("SMTP AUTH extension not supported by server.")
    mechanisms = client.esmtp_features["auth"].upper().split()
    if "PLAIN" in mechanisms:  # RFC 4616: the user and password are UTF-8
        code, reply = client.docmd("AUTH", "PLAIN " + _b64(f"\0{user}\0{password}"))
    elif "LOGIN" in mechanisms:
        code, reply = client.docmd("AUTH", "LOGIN " + _b64(user))
        if code == 334:
            code, reply = client.docmd(_b64(password))
    else:
        raise smtplib.SMTPNotSupportedError("no AUTH mechanism that takes a non-ASCII password (PLAIN or LOGIN)")
    if code not in (235, 503):
        raise smtplib.SMTPAuthenticationError(code, reply)


def _b64(text: str) -> str:
    """Base64 of UTF-8 text, as AUTH sends it."""
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


def _reply(exc: smtplib.SMTPResponseException) -> str:
    """The server's reply as text: `550 5.1.1 No such user`."""
    return f"{exc.smtp_code} {_text(exc.smtp_error)}".strip()


def _text(reply: bytes | str) -> str:
    """A server reply (bytes from smtplib) as one line of text."""
    if isinstance(reply, bytes):
        reply = reply.decode("utf-8", "replace")
    return " ".join(str(reply).split())


def _smtp_failure(settings: Settings, what: str, code: int | None, reply: bytes | str) -> MailError:
    """A MailError for a refusal with a reply code: 4xx is temporary, 5xx is not."""
    temporary = code is not None and 400 <= code < 500
    return MailError(_scrub(f"{what}: {code} {_text(reply)}", settings), temporary=temporary, code=code)


def _scrub(text: str, settings: Settings) -> str:
    """Remove the password, and the forms AUTH PLAIN and LOGIN send it in, from a message."""
    password = settings.smtp_password
    if not password:
        return text
    encoded = [_b64(password), _b64(f"\0{settings.smtp_user}\0{password}")]
    for secret in sorted([password, *encoded], key=len, reverse=True):
        text = text.replace(secret, "***")
    return text
