"""Settings in one place: defaults, then the environment (and an optional .env file), then overrides.

Every problem is collected and reported at once, so an operator fixes the settings in one
round. Secret values never appear in a message.
"""

from __future__ import annotations

import dataclasses
import email.utils
import ipaddress
import os
import re
import secrets
from pathlib import Path
from urllib.parse import urlsplit

APP_ROOT = Path(__file__).resolve().parent.parent

MODES = ("production", "demo", "test")
LANGUAGES = ("es", "en")


class ConfigError(Exception):
    """The settings are incomplete or malformed; the message lists every problem."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"images-in-bulk cannot start; fix these settings:\n{lines}")


MICROSOFT_CONSUMERS_TENANT_ID = "9188040d-6c67-4c5b-b112-36a304b66dad"
MICROSOFT_TENANTS = ("consumers", "common")


@dataclasses.dataclass(frozen=True)
class Provider:
    """A sign-in provider: our client at it and its endpoints."""

    name: str
    label: str
    client_id: str
    client_secret: str = dataclasses.field(repr=False)
    # Accepted `iss` values, compared exactly; "{tenantid}" stands for the ID token's `tid`.
    issuers: tuple[str, ...]
    authorize_url: str
    token_url: str
    userinfo_url: str
    scopes: tuple[str, ...] = ("openid", "email", "profile")


@dataclasses.dataclass(frozen=True)
class Settings:
    """The validated settings the app runs with."""

    app_mode: str
    secret_key: str
    public_base_url: str
    database_url: str
    var_dir: Path
    serve_static: bool
    default_language: str
    session_idle_seconds: int
    session_max_seconds: int
    image_retention_days: int
    plan_price_usd: int
    plan_credits: int
    plan_max_prompts: int
    log_level: str
    contact_email: str
    providers: tuple[Provider, ...] = ()
    auth_starts_per_ip: int = 20
    stripe_secret_key: str = dataclasses.field(default="", repr=False)
    stripe_webhook_secret: str = dataclasses.field(default="", repr=False)
    stripe_price_id: str = ""
    stripe_price_lookup_key: str = "images_in_bulk_bulk_monthly"
    stripe_api_base: str = "https://api.stripe.com"
    stripe_form_origins: tuple[str, ...] = ("https://checkout.stripe.com", "https://billing.stripe.com")
    openai_api_key: str = dataclasses.field(default="", repr=False)
    openai_base_url: str = "https://api.openai.com/v1"
    openai_read_timeout: int = 300
    worker_slots: int = 4
    images_per_minute: int = 50
    worker_launch: str = "none"
    model_catalog: str = ""
    prompt_separator: str = ", "
    upload_max_bytes: int = 1048576
    form_max_bytes: int = 2097152
    worker_processes: int = 2
    max_open_batches: int = 5
    batch_history_days: int = 90
    quota_pause_seconds: int = 900
    retry_base_ms: int = 2000
    # Outgoing mail ("email me when the batch is ready"); off without SMTP_HOST.
    smtp_host: str = ""
    smtp_port: int = 587
    smtp_user: str = ""
    smtp_password: str = dataclasses.field(default="", repr=False)
    smtp_from: str = ""
    smtp_security: str = "starttls"
    smtp_ca_file: str = ""
    smtp_timeout: int = 20
    # The owner's console: who may open /admin, and Stripe's fees as the owner's account pays them.
    admin_emails: tuple[str, ...] = ()
    stripe_fee_percent: str = "2.9"
    stripe_fee_fixed_cents: int = 30

    @property
    def results_dir(self) -> Path:
        """Where finished images wait for the browser (under VAR_DIR, outside the web root)."""
        return self.var_dir / "results"

    @property
    def billing_enabled(self) -> bool:
        """True when Stripe is configured (always in production; optional in the demo and tests)."""
        return bool(self.stripe_secret_key and self.stripe_webhook_secret)

    @property
    def mail_enabled(self) -> bool:
        """True when outgoing mail is configured (SMTP_HOST is set)."""
        return bool(self.smtp_host)

    @property
    def is_https(self) -> bool:
        """True when the public base URL is https (secure cookies, HSTS)."""
        return self.public_base_url.startswith("https://")

    def url(self, path: str) -> str:
        """Build an absolute URL for a site path from the configured public base URL."""
        return self.public_base_url + "/" + path.lstrip("/")

    def provider(self, name: str) -> Provider | None:
        """The configured provider with this name, or None."""
        return next((p for p in self.providers if p.name == name), None)


# name -> (default, kind). A default of None means "required in production".
_SPEC: dict[str, tuple[object, str]] = {
    "APP_MODE": ("production", "mode"),
    "SECRET_KEY": (None, "secret"),
    "PUBLIC_BASE_URL": (None, "base_url"),
    "DATABASE_URL": ("", "database_url"),
    "VAR_DIR": (str(APP_ROOT / "var"), "path"),
    "SERVE_STATIC": ("", "bool"),
    "DEFAULT_LANGUAGE": ("es", "language"),
    "SESSION_IDLE_SECONDS": ("604800", "positive_int"),
    "SESSION_MAX_SECONDS": ("2592000", "positive_int"),
    "IMAGE_RETENTION_DAYS": ("7", "positive_int"),
    "PLAN_PRICE_USD": ("5", "positive_int"),
    "PLAN_CREDITS": ("300", "positive_int"),
    "PLAN_MAX_PROMPTS": ("200", "positive_int"),
    "LOG_LEVEL": ("INFO", "log_level"),
    "CONTACT_EMAIL": ("", "email"),
    "GOOGLE_CLIENT_ID": ("", "text"),
    "GOOGLE_CLIENT_SECRET": ("", "text"),
    "GOOGLE_ISSUER": ("", "url"),
    "GOOGLE_AUTHORIZE_URL": ("https://accounts.google.com/o/oauth2/v2/auth", "url"),
    "GOOGLE_TOKEN_URL": ("https://oauth2.googleapis.com/token", "url"),
    "GOOGLE_USERINFO_URL": ("https://openidconnect.googleapis.com/v1/userinfo", "url"),
    "MICROSOFT_CLIENT_ID": ("", "text"),
    "MICROSOFT_CLIENT_SECRET": ("", "text"),
    "MICROSOFT_TENANT": ("consumers", "tenant"),
    "MICROSOFT_ISSUER": ("", "url"),
    "MICROSOFT_AUTHORIZE_URL": ("", "url"),
    "MICROSOFT_TOKEN_URL": ("", "url"),
    "MICROSOFT_USERINFO_URL": ("https://graph.microsoft.com/oidc/userinfo", "url"),
    "AUTH_STARTS_PER_IP": ("20", "positive_int"),
    "STRIPE_SECRET_KEY": (None, "text"),
    "STRIPE_WEBHOOK_SECRET": (None, "text"),
    "STRIPE_PRICE_ID": ("", "text"),
    "STRIPE_PRICE_LOOKUP_KEY": ("images_in_bulk_bulk_monthly", "text"),
    "STRIPE_API_BASE": ("https://api.stripe.com", "url"),
    "STRIPE_FORM_ORIGINS": ("https://checkout.stripe.com https://billing.stripe.com", "origins"),
    "OPENAI_API_KEY": (None, "text"),
    "OPENAI_BASE_URL": ("https://api.openai.com/v1", "url"),
    "OPENAI_READ_TIMEOUT": ("300", "positive_int"),
    "WORKER_SLOTS": ("4", "positive_int"),
    "IMAGES_PER_MINUTE": ("50", "positive_int"),
    "WORKER_LAUNCH": ("", "launch"),
    "MODEL_CATALOG": ("", "path"),
    "PROMPT_SEPARATOR": (", ", "separator"),
    "UPLOAD_MAX_BYTES": ("1048576", "positive_int"),
    "FORM_MAX_BYTES": ("2097152", "positive_int"),
    "WORKER_PROCESSES": ("2", "positive_int"),
    "MAX_OPEN_BATCHES": ("5", "positive_int"),
    "BATCH_HISTORY_DAYS": ("90", "positive_int"),
    "QUOTA_PAUSE_SECONDS": ("900", "positive_int"),
    "RETRY_BASE_MS": ("2000", "positive_int"),
    "SMTP_HOST": ("", "smtp_host"),
    "SMTP_PORT": ("587", "port"),
    "SMTP_USER": ("", "text"),
    "SMTP_PASSWORD": ("", "text"),
    "SMTP_FROM": ("", "mailbox"),
    "SMTP_SECURITY": ("starttls", "smtp_security"),
    "SMTP_CA_FILE": ("", "file"),
    "SMTP_TIMEOUT": ("20", "positive_int"),
    "ADMIN_EMAILS": ("", "emails"),
    "STRIPE_FEE_PERCENT": ("2.9", "percent"),
    "STRIPE_FEE_FIXED_CENTS": ("30", "whole_number"),
}

SETTING_NAMES = tuple(_SPEC)

_SECRET_HINT = " (a long random string: python -c 'import secrets; print(secrets.token_urlsafe(48))')"
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def read_env_file(path: Path) -> dict[str, str]:
    """Read KEY=VALUE lines from a .env file (comments, blank lines, export and quotes allowed)."""
    values: dict[str, str] = {}
    if not path.is_file():
        return values
    for raw in path.read_text(encoding="utf-8-sig").splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        if line.startswith("export "):
            line = line[len("export "):]
        key, _, value = line.partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        values[key.strip()] = value
    return values


_LOOPBACK = ("localhost", "127.0.0.1", "::1", "0.0.0.0")


def _loopback(host: str | None) -> bool:
    """True for an address on this machine: where the demo's and tests' stand-ins listen."""
    host = (host or "").lower()
    return host in _LOOPBACK or host.endswith(".localhost") or host.startswith("127.")


def _check_base_url(value: str, mode: str) -> str | None:
    """Return a problem with a public base URL, or None when it is usable."""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"PUBLIC_BASE_URL must be an absolute http(s) URL such as https://example.com (got {value!r})"
    if parts.query or parts.fragment or parts.path not in ("", "/"):
        return "PUBLIC_BASE_URL must be the site's root, without a path, query or fragment"
    if mode == "production" and parts.scheme != "https":
        return "PUBLIC_BASE_URL must use https in production (sessions and payments need it)"
    if mode == "production" and _loopback(parts.hostname):
        return "PUBLIC_BASE_URL points at this machine: in production it is the site's public address"
    return None


def _check_database_url(value: str) -> str | None:
    """Return a problem with a database URL, or None when it is usable."""
    parts = urlsplit(value)
    if parts.scheme == "sqlite":
        if not value.startswith("sqlite:///") or value == "sqlite:///":
            return "DATABASE_URL for SQLite must look like sqlite:///path/to/app.db"
        return None
    if parts.scheme in ("mysql", "mariadb"):
        try:
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError:
            return "DATABASE_URL has a port that is not a number"
        if not parts.hostname or not parts.path.strip("/"):
            return "DATABASE_URL for MariaDB must look like mysql://user:password@host:3306/database"
        return None
    return "DATABASE_URL must start with sqlite:/// or mysql:// (got a different scheme)"


def load_settings(overrides: dict | None = None, environ: dict | None = None,
                  env_file: Path | None = None, allow_missing: tuple[str, ...] = ()) -> Settings:
    """Build the settings from defaults, the .env file, the environment and overrides; raise ConfigError.

    `allow_missing` names required settings a command can do without (setup-stripe makes the webhook secret).
    """
    source: dict[str, str] = {}
    source.update(read_env_file(env_file if env_file is not None else APP_ROOT / ".env"))
    env = os.environ if environ is None else environ
    source.update({k: v for k, v in env.items() if k in _SPEC})
    for key, value in (overrides or {}).items():
        key = key.upper()
        if key not in _SPEC:
            raise ConfigError([f"unknown setting {key}"])
        source[key] = str(value)

    problems: list[str] = []
    mode = source.get("APP_MODE", "production").strip().lower() or "production"
    if mode not in MODES:
        problems.append(f"APP_MODE must be one of {', '.join(MODES)} (got {mode!r})")
        mode = "production"
    relaxed = mode != "production"

    values: dict[str, object] = {}
    for name, (default, kind) in _SPEC.items():
        raw = source.get(name, "")
        raw = raw if kind == "separator" else raw.strip()
        if not raw:
            if default is None:
                if not relaxed and name not in allow_missing:
                    hint = _SECRET_HINT if kind == "secret" else ""
                    problems.append(f"{name} is missing; set it in the environment or the private settings file{hint}")
                values[name] = None
                continue
            raw = str(default)
        values[name] = raw
        if not raw:
            continue
        problem = _validate(name, raw, kind, mode)
        if problem:
            problems.append(problem)

    providers = _providers(values, mode, problems)
    _check_smtp(values, problems)
    if problems:
        raise ConfigError(problems)

    var_dir = Path(values["VAR_DIR"])
    if not var_dir.is_absolute():
        var_dir = APP_ROOT / var_dir
    # The demo keeps its own file so it never touches a real app.db in the same folder.
    default_file = var_dir / ("demo.db" if mode == "demo" else "app.db")
    database_url = values["DATABASE_URL"] or f"sqlite:///{default_file}"
    serve_static = values["SERVE_STATIC"]
    serve_static = relaxed if serve_static == "" else serve_static.lower() in _TRUE
    idle = int(values["SESSION_IDLE_SECONDS"])
    longest = int(values["SESSION_MAX_SECONDS"])
    if idle > longest:
        raise ConfigError(["SESSION_IDLE_SECONDS must not be larger than SESSION_MAX_SECONDS"])
    if int(values["FORM_MAX_BYTES"]) < int(values["UPLOAD_MAX_BYTES"]) + 65536:
        raise ConfigError(["FORM_MAX_BYTES must be at least UPLOAD_MAX_BYTES + 65536 (the file and the form's "
                           "other fields travel in one request)"])
    if len(values["PROMPT_SEPARATOR"]) > 32:
        raise ConfigError(["PROMPT_SEPARATOR must be at most 32 characters"])

    return Settings(
        app_mode=mode,
        # Demo and tests get a fresh random key per process: nothing they sign needs to outlive it.
        secret_key=values["SECRET_KEY"] or secrets.token_urlsafe(48),
        public_base_url=(values["PUBLIC_BASE_URL"] or "http://127.0.0.1:8000").rstrip("/"),
        database_url=database_url,
        var_dir=var_dir,
        serve_static=serve_static,
        default_language=values["DEFAULT_LANGUAGE"].lower(),
        session_idle_seconds=idle,
        session_max_seconds=longest,
        image_retention_days=int(values["IMAGE_RETENTION_DAYS"]),
        plan_price_usd=int(values["PLAN_PRICE_USD"]),
        plan_credits=int(values["PLAN_CREDITS"]),
        plan_max_prompts=int(values["PLAN_MAX_PROMPTS"]),
        log_level=values["LOG_LEVEL"].upper(),
        contact_email=values["CONTACT_EMAIL"],
        providers=providers,
        auth_starts_per_ip=int(values["AUTH_STARTS_PER_IP"]),
        stripe_secret_key=values["STRIPE_SECRET_KEY"] or "",
        stripe_webhook_secret=values["STRIPE_WEBHOOK_SECRET"] or "",
        stripe_price_id=values["STRIPE_PRICE_ID"],
        stripe_price_lookup_key=values["STRIPE_PRICE_LOOKUP_KEY"],
        stripe_api_base=values["STRIPE_API_BASE"].rstrip("/"),
        stripe_form_origins=tuple(values["STRIPE_FORM_ORIGINS"].split()),
        openai_api_key=values["OPENAI_API_KEY"] or "",
        openai_base_url=values["OPENAI_BASE_URL"].rstrip("/"),
        openai_read_timeout=int(values["OPENAI_READ_TIMEOUT"]),
        worker_slots=int(values["WORKER_SLOTS"]),
        images_per_minute=int(values["IMAGES_PER_MINUTE"]),
        # Production starts a detached worker when a batch starts (cron does the rest); the demo
        # runs one as a thread; tests run the worker themselves.
        worker_launch=values["WORKER_LAUNCH"] or {"production": "spawn", "demo": "thread"}.get(mode, "none"),
        model_catalog=values["MODEL_CATALOG"],
        prompt_separator=values["PROMPT_SEPARATOR"],
        upload_max_bytes=int(values["UPLOAD_MAX_BYTES"]),
        form_max_bytes=int(values["FORM_MAX_BYTES"]),
        worker_processes=int(values["WORKER_PROCESSES"]),
        max_open_batches=int(values["MAX_OPEN_BATCHES"]),
        batch_history_days=int(values["BATCH_HISTORY_DAYS"]),
        quota_pause_seconds=int(values["QUOTA_PAUSE_SECONDS"]),
        retry_base_ms=int(values["RETRY_BASE_MS"]),
        smtp_host=values["SMTP_HOST"].lower(),
        smtp_port=int(values["SMTP_PORT"]),
        smtp_user=values["SMTP_USER"],
        smtp_password=values["SMTP_PASSWORD"],
        smtp_from=values["SMTP_FROM"],
        smtp_security=values["SMTP_SECURITY"].lower(),
        smtp_ca_file=str(_app_path(values["SMTP_CA_FILE"])) if values["SMTP_CA_FILE"] else "",
        smtp_timeout=int(values["SMTP_TIMEOUT"]),
        admin_emails=tuple(sorted({e.strip().lower() for e in values["ADMIN_EMAILS"].split(",") if e.strip()})),
        stripe_fee_percent=values["STRIPE_FEE_PERCENT"],
        stripe_fee_fixed_cents=int(values["STRIPE_FEE_FIXED_CENTS"]),
    )


SMTP_SECURITY = ("starttls", "tls", "none")
_HOST_NAME = re.compile(r"(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                        r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?")


def _ip_address(raw: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The IPv4 or IPv6 address a literal stands for, or None for a name."""
    try:
        return ipaddress.ip_address(raw)
    except ValueError:
        return None


def _check_mailbox(name: str, raw: str) -> str | None:
    """Return a problem with a sender such as `images-in-bulk <no-reply@example.com>`, or None."""
    _display, address = email.utils.parseaddr(raw)
    local, _, domain = address.rpartition("@")
    if ("\r" in raw or "\n" in raw or not local or "." not in domain.strip(".")
            or any(ch in address for ch in " <>\"'(),;")):
        return (f"{name} must be an address such as no-reply@example.com or "
                f"images-in-bulk <no-reply@example.com> (got {raw!r})")
    return None


def _app_path(raw: str) -> Path:
    """A path from the settings: absolute, or relative to the application folder."""
    path = Path(raw)
    return path if path.is_absolute() else APP_ROOT / path


def _check_smtp(values: dict, problems: list[str]) -> None:
    """Problems with the outgoing-mail settings taken together (each value alone is checked by _validate)."""
    host = values["SMTP_HOST"]
    if not host:
        return
    if not values["SMTP_FROM"]:
        problems.append("SMTP_FROM is missing: mail needs a sender, such as "
                        "images-in-bulk <no-reply@example.com> (the address SMTP_USER logs in as)")
    if bool(values["SMTP_USER"]) != bool(values["SMTP_PASSWORD"]):
        missing = "SMTP_PASSWORD" if values["SMTP_USER"] else "SMTP_USER"
        problems.append(f"{missing} is missing: the SMTP login needs both the user and the password")
    security = values["SMTP_SECURITY"].lower()
    port = values["SMTP_PORT"]
    # The two ports whose security is fixed (RFC 8314): a mismatch only shows up as a hang or a TLS error.
    if security == "tls" and port == "587":
        problems.append("SMTP_SECURITY tls (TLS from the first byte) goes with SMTP_PORT 465; port 587 uses starttls")
    if security == "starttls" and port == "465":
        problems.append("SMTP_SECURITY starttls goes with SMTP_PORT 587; port 465 uses tls (TLS from the first byte)")


def _providers(values: dict, mode: str, problems: list[str]) -> tuple[Provider, ...]:
    """The sign-in providers that have a client id and secret; problems for half-configured ones."""
    found = []
    tenant = (values["MICROSOFT_TENANT"] or "consumers").lower()
    ms_base = f"https://login.microsoftonline.com/{tenant}/oauth2/v2.0"
    ms_tenant_id = MICROSOFT_CONSUMERS_TENANT_ID if tenant == "consumers" else "{tenantid}"
    defaults = {
        "google": ("Google", ("https://accounts.google.com", "accounts.google.com")),
        "microsoft": ("Microsoft", (f"https://login.microsoftonline.com/{ms_tenant_id}/v2.0",)),
    }
    for name, (label, issuers) in defaults.items():
        prefix = name.upper()
        client_id, secret = values[f"{prefix}_CLIENT_ID"], values[f"{prefix}_CLIENT_SECRET"]
        if bool(client_id) != bool(secret):
            missing = f"{prefix}_CLIENT_SECRET" if client_id else f"{prefix}_CLIENT_ID"
            problems.append(f"{missing} is missing: {label} sign-in needs both the client id and the secret")
            continue
        if not client_id:
            continue
        found.append(Provider(
            name=name, label=label, client_id=client_id, client_secret=secret,
            issuers=(values[f"{prefix}_ISSUER"],) if values[f"{prefix}_ISSUER"] else issuers,
            authorize_url=values[f"{prefix}_AUTHORIZE_URL"] or f"{ms_base}/authorize",
            token_url=values[f"{prefix}_TOKEN_URL"] or f"{ms_base}/token",
            userinfo_url=values[f"{prefix}_USERINFO_URL"]))
    if mode == "production" and not found and not any("CLIENT" in p for p in problems):
        problems.append("no sign-in provider is configured: set GOOGLE_CLIENT_ID and GOOGLE_CLIENT_SECRET, "
                        "and/or MICROSOFT_CLIENT_ID and MICROSOFT_CLIENT_SECRET")
    return tuple(found)


def _validate(name: str, raw: str, kind: str, mode: str) -> str | None:
    """Return a problem with one raw setting value, or None."""
    if kind == "secret":
        if len(raw) < 32:
            return f"{name} is too short: use at least 32 random characters"
    elif kind == "base_url":
        return _check_base_url(raw, mode)
    elif kind == "database_url":
        return _check_database_url(raw)
    elif kind == "bool":
        if raw.lower() not in _TRUE | _FALSE:
            return f"{name} must be true or false (got {raw!r})"
    elif kind == "language":
        if raw.lower() not in LANGUAGES:
            return f"{name} must be one of {', '.join(LANGUAGES)} (got {raw!r})"
    elif kind == "positive_int":
        if not raw.isdigit() or int(raw) <= 0:
            return f"{name} must be a whole number above zero (got {raw!r})"
    elif kind == "emails":
        for address in (part.strip() for part in raw.split(",")):
            local, _, domain = address.partition("@")
            if address and (not local or "." not in domain or any(ch in address for ch in " <>\"'")):
                return f"{name} must be email addresses separated by commas (got {address!r})"
    elif kind == "percent":
        try:
            if not 0 <= float(raw) < 100:
                raise ValueError(raw)
        except ValueError:
            return f"{name} must be a percentage from 0 to under 100, such as 2.9 (got {raw!r})"
    elif kind == "whole_number":
        if not raw.isdigit():
            return f"{name} must be a whole number, 0 or more (got {raw!r})"
    elif kind == "email":
        local, _, domain = raw.partition("@")
        if not local or "." not in domain or any(ch in raw for ch in " <>\"'"):
            return f"{name} must be an email address such as help@example.com (got {raw!r})"
    elif kind == "url":
        parts = urlsplit(raw)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            return f"{name} must be an absolute URL (got {raw!r})"
        if mode == "production" and parts.scheme != "https":
            return f"{name} must use https in production"
        if mode == "production" and _loopback(parts.hostname):
            return f"{name} points at this machine (a stand-in?): production talks to the real service"
    elif kind == "origins":
        for origin in raw.split():
            parts = urlsplit(origin)
            if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/"):
                return f"{name} must list origins such as https://checkout.stripe.com (got {origin!r})"
            if mode == "production" and parts.scheme != "https":
                return f"{name} must use https in production"
    elif kind == "launch":
        if raw.lower() not in ("spawn", "thread", "none"):
            return f"{name} must be spawn, thread or none (got {raw!r})"
    elif kind == "tenant":
        if raw.lower() not in MICROSOFT_TENANTS:
            return f"{name} must be one of {', '.join(MICROSOFT_TENANTS)} (got {raw!r})"
    elif kind == "smtp_host":
        address = _ip_address(raw)
        if not _HOST_NAME.fullmatch(raw) and address is None:
            return f"{name} must be a host name such as mail.example.com, without scheme or port (got {raw!r})"
        local = _loopback(raw.rstrip(".")) or (address is not None and (address.is_loopback or address.is_unspecified))
        if mode == "production" and local:
            return f"{name} points at this machine (a stand-in?): production sends through the real mail server"
    elif kind == "port":
        if not raw.isdigit() or not 0 < int(raw) < 65536:
            return f"{name} must be a port number from 1 to 65535 (got {raw!r})"
    elif kind == "mailbox":
        return _check_mailbox(name, raw)
    elif kind == "smtp_security":
        if raw.lower() not in SMTP_SECURITY:
            return f"{name} must be starttls, tls or none (got {raw!r})"
        if mode == "production" and raw.lower() == "none":
            return f"{name} none sends the password and the mail unencrypted: production uses starttls or tls"
    elif kind == "file":
        if not _app_path(raw).is_file():
            return f"{name} names a file that does not exist (got {raw!r})"
    elif kind == "log_level":
        if raw.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            return f"{name} must be DEBUG, INFO, WARNING or ERROR (got {raw!r})"
    return None
