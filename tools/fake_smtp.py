"""An SMTP server stand-in on 127.0.0.1 that keeps every message it receives, for the demo and the tests.

It is a real SMTP server (aiosmtpd, in a thread of its own): the app's `services.mail.send` talks
to it exactly as it talks to a cPanel account's mail server, and the demo can show what arrived
on a page of its own (`inbox()`). Knobs:

* security: ``none`` (plain), ``starttls`` (offers STARTTLS, as port 587 does; AUTH only after
  it) or ``tls`` (TLS from the first byte, as port 465 does). Both TLS modes use a throwaway CA
  and a certificate for ``localhost`` / ``127.0.0.1`` made at start (needs the ``cryptography``
  package, which requirements-dev.txt installs); ``ca_file`` is the CA to trust
  (``SMTP_CA_FILE``).
* ``user`` and ``password``: AUTH PLAIN and LOGIN are offered, and MAIL FROM is refused
  (530) until the client logged in; a wrong password gets 535.
* ``fail_next(code, stage)``: the next MAIL, RCPT or DATA gets that 4xx/5xx reply.
* ``down()`` / ``up()``: stop listening (clients get "connection refused") and listen again on
  the same port, keeping what was received.
* ``spool_dir``: also write each message there as an ``.eml`` file (the raw message after
  Return-Path, Delivered-To and Received lines, as a mailbox stores it), named so that the names
  sort by arrival; ``read_spool(folder)`` reads them back, newest first. The demo's page of
  received mail reads this folder, so it works from any process that shares VAR_DIR.

Run it alone with ``python tools/fake_smtp.py --port 8025 [--security starttls] [--user U
--password P] [--spool DIR]``: it prints the settings that point the app at it and every message it
receives.
"""

from __future__ import annotations

import argparse
import datetime as dt
import email
import email.policy
import email.utils
import logging
import os
import signal
import socket
import ssl
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

log = logging.getLogger("tools.fake_smtp")


class _QuietDeprecation(logging.Filter):
    """Drop aiosmtpd 1.4's own warning, logged on every successful AUTH, that it set the old `login_data`."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Keep every record but that one."""
        return not str(record.msg).startswith("Session.login_data is deprecated")


_aiosmtpd_log = logging.getLogger("mail.log")
if not any(isinstance(f, _QuietDeprecation) for f in _aiosmtpd_log.filters):
    _aiosmtpd_log.addFilter(_QuietDeprecation())

SECURITY = ("none", "starttls", "tls")
STAGES = ("mail", "rcpt", "data")
_DEFAULT_REPLIES = {
    ("mail", 4): "4.3.0 Temporary failure, please try again later",
    ("rcpt", 4): "4.2.0 Mailbox temporarily unavailable, please try again later",
    ("data", 4): "4.3.0 Temporary failure, please try again later",
    ("mail", 5): "5.7.1 Sender address rejected",
    ("rcpt", 5): "5.1.1 No such user here",
    ("data", 5): "5.7.1 Message rejected",
}


@dataclass(frozen=True)
class Received:
    """One message as it arrived: the envelope, the raw bytes and the parsed message."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    raw: bytes
    message: EmailMessage
    received_at: dt.datetime
    tls: bool
    login: str | None

    def body(self, subtype: str = "plain") -> str | None:
        """The decoded text of the text/plain (or text/html) part with \\n line ends, or None when there is none."""
        part = self.message.get_body(preferencelist=(subtype,))
        if part is None or part.get_content_subtype() != subtype:
            return None
        return part.get_content().replace("\r\n", "\n")

    def as_dict(self) -> dict:
        """The message for a web page: decoded headers and bodies, plain values only."""
        headers = self.message
        return {
            "received_at": self.received_at.isoformat(timespec="seconds"),
            "envelope_from": self.mail_from,
            "envelope_to": list(self.rcpt_tos),
            "from": str(headers.get("From", "")),
            "to": str(headers.get("To", "")),
            "reply_to": str(headers.get("Reply-To", "")),
            "subject": str(headers.get("Subject", "")),
            "date": str(headers.get("Date", "")),
            "message_id": str(headers.get("Message-ID", "")),
            "language": str(headers.get("Content-Language", "")),
            "text": self.body("plain"),
            "html": self.body("html"),
            "headers": [(name, str(value)) for name, value in headers.items()],
            "tls": self.tls,
            "login": self.login,
            "size": len(self.raw),
        }


class FakeSMTP:
    """The stand-in: start(), stop(), `with`; `messages` (oldest first), `inbox()` (dicts, newest first)."""

    label = "SMTP stand-in"
    log_name = "tools.fake_smtp"

    def __init__(self, port: int = 0, host: str = "127.0.0.1", security: str = "none",
                 user: str | None = None, password: str | None = None,
                 on_message: Callable[[Received], None] | None = None, spool_dir: Path | str | None = None):
        if security not in SECURITY:
            raise ValueError(f"security must be one of {', '.join(SECURITY)} (got {security!r})")
        if bool(user) != bool(password):
            raise ValueError("give both user and password, or neither")
        self.host = host
        self.port = port
        self.security = security
        self.user = user
        self.password = password
        self.on_message = on_message
        self.spool_dir = Path(spool_dir) if spool_dir is not None else None
        self.messages: list[Received] = []
        self._spooled = 0
        self.ca_file: Path | None = None
        self._lock = threading.Condition()
        self._refusals: list[tuple[str, int, str]] = []
        self._controller: Controller | None = None
        self._certs: tempfile.TemporaryDirectory | None = None
        self._server_context: ssl.SSLContext | None = None

    # Life cycle -------------------------------------------------------------------------------

    def start(self) -> FakeSMTP:
        """Make the certificates (TLS modes), then listen; returns self."""
        if self._controller is not None:
            raise RuntimeError("already started")
        if self.security != "none" and self._server_context is None:
            self._certs = tempfile.TemporaryDirectory(prefix="fake_smtp-")
            ca_file, cert_file, key_file = make_certificates(Path(self._certs.name))
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(cert_file, key_file)
            self._server_context, self.ca_file = context, ca_file
        self.up()
        log.info("%s listening on %s:%d (%s)", self.label, self.host, self.port, self.security)
        return self

    def up(self) -> None:
        """Listen (again): on the same port as before, or a free one the first time."""
        if self._controller is not None:
            return
        sock = socket.create_server((self.host, self.port))
        self.port = sock.getsockname()[1]
        kwargs = {"authenticator": self._authenticate, "auth_require_tls": self.security == "starttls"}
        if self.security == "starttls":
            kwargs["tls_context"] = self._server_context
        controller = _SocketController(self._handler(), sock, ssl_context=self._server_context
                                       if self.security == "tls" else None, server_hostname="localhost", **kwargs)
        try:
            controller.start()
        except BaseException:
            sock.close()
            raise
        self._controller = controller

    def down(self) -> None:
        """Stop listening: clients now get "connection refused". Received messages are kept."""
        controller, self._controller = self._controller, None
        if controller is not None:
            controller.stop()

    def stop(self) -> None:
        """Stop listening and delete the certificates."""
        self.down()
        if self._certs is not None:
            self._certs.cleanup()
            self._certs, self._server_context, self.ca_file = None, None, None

    def __enter__(self) -> FakeSMTP:
        """Start on entering a ``with`` block."""
        return self.start()

    def __exit__(self, *exc) -> None:
        """Stop on leaving a ``with`` block."""
        self.stop()

    @property
    def is_up(self) -> bool:
        """True while the stand-in is listening."""
        return self._controller is not None

    # Knobs and results ------------------------------------------------------------------------

    def fail_next(self, code: int, stage: str = "rcpt", text: str | None = None) -> None:
        """Answer the next MAIL, RCPT or DATA (`stage`) with `code` (400-599) and `text`."""
        if stage not in STAGES:
            raise ValueError(f"stage must be one of {', '.join(STAGES)} (got {stage!r})")
        if not 400 <= code <= 599:
            raise ValueError(f"code must be a 4xx or 5xx reply code (got {code})")
        reply = text or _DEFAULT_REPLIES[(stage, code // 100)]
        with self._lock:
            self._refusals.append((stage, code, reply))

    def app_settings(self, sender: str = "images-in-bulk <no-reply@images-in-bulk.test>") -> dict[str, str]:
        """The app settings that send mail through this stand-in."""
        settings = {"SMTP_HOST": self.host, "SMTP_PORT": str(self.port), "SMTP_SECURITY": self.security,
                    "SMTP_FROM": sender, "SMTP_USER": self.user or "", "SMTP_PASSWORD": self.password or ""}
        if self.ca_file is not None:
            settings["SMTP_CA_FILE"] = str(self.ca_file)
        return settings

    def inbox(self) -> list[dict]:
        """Every received message as a dict for a web page, newest first."""
        with self._lock:
            received = list(self.messages)
        return [item.as_dict() for item in reversed(received)]

    def wait_for(self, count: int, timeout: float = 5.0) -> list[Received]:
        """Wait until at least `count` messages have arrived; returns them (TimeoutError after `timeout`)."""
        with self._lock:
            if not self._lock.wait_for(lambda: len(self.messages) >= count, timeout):
                raise TimeoutError(f"{len(self.messages)} of {count} messages arrived within {timeout} s")
            return list(self.messages)

    def clear(self) -> None:
        """Forget the received messages and any pending refusals."""
        with self._lock:
            self.messages.clear()
            self._refusals.clear()

    # The server's side ------------------------------------------------------------------------

    def _refusal(self, stage: str) -> str | None:
        """The reply a pending fail_next() gives this stage, or None."""
        with self._lock:
            for index, (wanted, code, text) in enumerate(self._refusals):
                if wanted == stage:
                    del self._refusals[index]
                    return f"{code} {text}"
        return None

    def _authenticate(self, server, session, envelope, mechanism: str, auth_data) -> AuthResult:
        """Accept the configured user and password (AUTH PLAIN or LOGIN)."""
        if (self.user and isinstance(auth_data, LoginPassword)
                and auth_data.login.decode("utf-8", "replace") == self.user
                and auth_data.password.decode("utf-8", "replace") == self.password):
            return AuthResult(success=True, auth_data=auth_data)
        return AuthResult(success=False, handled=False)

    def _record(self, session, envelope) -> Received:
        """Keep one accepted message."""
        raw = envelope.original_content or envelope.content
        if isinstance(raw, str):
            raw = raw.encode("utf-8")
        auth = session.auth_data if session.authenticated else None
        login = auth.login.decode("utf-8", "replace") if isinstance(auth, LoginPassword) else None
        received = Received(mail_from=envelope.mail_from, rcpt_tos=tuple(envelope.rcpt_tos), raw=raw,
                            message=email.message_from_bytes(raw, policy=email.policy.default),
                            received_at=dt.datetime.now(dt.UTC),
                            tls=self.security == "tls" or session.ssl is not None, login=login)
        if self.spool_dir is not None:
            try:
                self._spool(received)
            except OSError:  # a full or read-only disk must not break the server: the message is still kept
                log.exception("could not write the message to %s", self.spool_dir)
        with self._lock:
            self.messages.append(received)
            self._lock.notify_all()
        if self.on_message is not None:
            try:
                self.on_message(received)
            except Exception:  # a printing callback must not break the server
                log.exception("on_message failed")
        return received

    def _spool(self, received: Received) -> Path:
        """Write one message to the spool folder as an .eml file (whole or not at all); returns its path."""
        protocol = "ESMTP" + ("S" if received.tls else "") + ("A" if received.login else "")
        trace = [f"Return-Path: <{received.mail_from}>"]
        trace += [f"Delivered-To: {rcpt}" for rcpt in received.rcpt_tos]
        trace.append(f"Received: by {self.host} ({self.label}) with {protocol}; "
                     f"{email.utils.format_datetime(received.received_at)}")
        with self._lock:
            self._spooled += 1
            number = self._spooled
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        name = f"{received.received_at:%Y%m%dT%H%M%S%f}-{os.getpid()}-{number:05d}.eml"
        path = self.spool_dir / name
        partial = self.spool_dir / f".{name}.tmp"
        partial.write_bytes("\r\n".join(trace).encode("utf-8") + b"\r\n" + received.raw)
        os.replace(partial, path)
        return path

    def _handler(self):
        """The aiosmtpd handler: refusals on demand, login required when a user is set, every message kept."""
        fake = self

        class Handler:
            async def handle_MAIL(self, server, session, envelope, address, mail_options):
                refusal = fake._refusal("mail")
                if refusal:
                    return refusal
                if fake.user and not session.authenticated:
                    return "530 5.7.0 Authentication required"
                envelope.mail_from = address
                envelope.mail_options.extend(mail_options)
                return "250 OK"

            async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
                refusal = fake._refusal("rcpt")
                if refusal:
                    return refusal
                envelope.rcpt_tos.append(address)
                envelope.rcpt_options.extend(rcpt_options)
                return "250 OK"

            async def handle_DATA(self, server, session, envelope):
                refusal = fake._refusal("data")
                if refusal:
                    return refusal
                fake._record(session, envelope)
                return "250 2.0.0 OK: queued"

        return Handler()


class _SocketController(Controller):
    """aiosmtpd's threaded Controller on a socket bound beforehand (so port 0 gets a free port, race-free)."""

    def __init__(self, handler, sock: socket.socket, **kwargs):
        host, port = sock.getsockname()[:2]
        super().__init__(handler, hostname=host, port=port, **kwargs)
        self._sock = sock

    def _create_server(self):
        """Serve on the bound socket (asyncio's server owns it and closes it on stop)."""
        return self.loop.create_server(self._factory_invoker, sock=self._sock, ssl=self.ssl_context)


def read_spool(folder: Path | str, limit: int = 100) -> list[Received]:
    """The messages a FakeSMTP wrote to `folder` (spool_dir), newest first, at most `limit`; none if it is missing."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = []
    for path in sorted(folder.glob("*.eml"), key=lambda p: p.name, reverse=True)[:limit]:
        try:
            raw = path.read_bytes()
        except OSError:  # deleted meanwhile
            continue
        message = email.message_from_bytes(raw, policy=email.policy.default)
        trace = str(message.get("Received", ""))
        try:
            received_at = email.utils.parsedate_to_datetime(trace.rpartition(";")[2].strip())
        except (TypeError, ValueError):
            received_at = dt.datetime.fromtimestamp(path.stat().st_mtime, dt.UTC)
        protocol = trace.partition(" with ")[2].partition(";")[0].strip()
        found.append(Received(mail_from=str(message.get("Return-Path", "")).strip("<>"),
                              rcpt_tos=tuple(str(rcpt) for rcpt in message.get_all("Delivered-To", [])),
                              raw=raw, message=message, received_at=received_at,
                              tls=protocol.startswith("ESMTPS"), login=None))
    return found


def make_certificates(directory: Path) -> tuple[Path, Path, Path]:
    """Write a throwaway CA and a server certificate for localhost/127.0.0.1 it signed: (ca, cert, key) files."""
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
    except ImportError as exc:
        raise RuntimeError("the SMTP stand-in's TLS modes need the cryptography package "
                           "(pip install -r requirements-dev.txt); security 'none' works without it") from exc
    import ipaddress

    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fake_smtp throwaway CA")])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number())
          .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=2))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                       crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
          .add_extension(ca_ski, critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
             x509.IPAddress(ipaddress.ip_address("::1"))]
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                         crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
            .sign(ca_key, hashes.SHA256()))
    ca_file, cert_file, key_file = directory / "ca.pem", directory / "cert.pem", directory / "key.pem"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_file.chmod(0o600)
    return ca_file, cert_file, key_file


def describe(received: Received) -> str:
    """A received message as the command line prints it: envelope, headers, the text body."""
    item = received.as_dict()
    security = "TLS" if item["tls"] else "plain"
    login = f", logged in as {item['login']}" if item["login"] else ""
    lines = [f"--- {item['received_at']} {item['envelope_from']} -> {', '.join(item['envelope_to'])} "
             f"({security}{login}, {item['size']} bytes)",
             f"From: {item['from']}", f"To: {item['to']}", f"Subject: {item['subject']}",
             f"Message-ID: {item['message_id']}", ""]
    lines.append(item["text"] if item["text"] is not None else "(no text/plain part)")
    if item["html"] is not None:
        lines.append(f"(and an HTML part of {len(item['html'])} characters)")
    return "\n".join(lines)


def parse_args(argv=None):
    """Parse the command line (see the module docstring)."""
    parser = argparse.ArgumentParser(description="SMTP server stand-in on 127.0.0.1 that prints what it receives.")
    parser.add_argument("--port", type=int, default=8025, help="port on 127.0.0.1 (0 = any free port)")
    parser.add_argument("--security", choices=SECURITY, default="none",
                        help="none, starttls (like port 587) or tls (like port 465)")
    parser.add_argument("--user", default=None, help="require AUTH with this user (with --password)")
    parser.add_argument("--password", default=None, help="the password AUTH must give")
    parser.add_argument("--spool", default=None, metavar="DIR", help="also write each message to DIR as an .eml file")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    """Run the stand-in from the command line until Ctrl+C, printing each message it receives."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd's per-command chatter
    args = parse_args(argv)

    def show(received: Received) -> None:
        print(describe(received), flush=True)

    def exit_on_sigterm(signum, frame):
        raise KeyboardInterrupt

    try:
        fake = FakeSMTP(port=args.port, security=args.security, user=args.user, password=args.password,
                        on_message=show, spool_dir=args.spool).start()
    except (ValueError, OSError, RuntimeError) as exc:
        print(f"fake_smtp: {exc}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, exit_on_sigterm)
    print(f"smtp://{fake.host}:{fake.port} ({fake.security}); the app's settings for it:", flush=True)
    for name, value in fake.app_settings().items():
        if value:
            print(f"  {name}={value}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second TERM (a process group's) must not cut stop() short
        fake.stop()
        log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
