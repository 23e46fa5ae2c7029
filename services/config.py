"""Settings in one place: defaults, then the environment (and an optional .env file), then overrides.

Every problem is collected and reported at once, so an operator fixes the settings in one
round. Secret values never appear in a message.
"""

from __future__ import annotations

import dataclasses
import os
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

    @property
    def is_https(self) -> bool:
        """True when the public base URL is https (secure cookies, HSTS)."""
        return self.public_base_url.startswith("https://")

    def url(self, path: str) -> str:
        """Build an absolute URL for a site path from the configured public base URL."""
        return self.public_base_url + "/" + path.lstrip("/")


# name -> (default, kind, secret). A default of None means "required in production".
_SPEC: dict[str, tuple[object, str, bool]] = {
    "APP_MODE": ("production", "mode", False),
    "SECRET_KEY": (None, "secret", True),
    "PUBLIC_BASE_URL": (None, "base_url", False),
    "DATABASE_URL": ("", "database_url", False),
    "VAR_DIR": (str(APP_ROOT / "var"), "path", False),
    "SERVE_STATIC": ("", "bool", False),
    "DEFAULT_LANGUAGE": ("es", "language", False),
    "SESSION_IDLE_SECONDS": ("604800", "positive_int", False),
    "SESSION_MAX_SECONDS": ("2592000", "positive_int", False),
    "IMAGE_RETENTION_DAYS": ("7", "positive_int", False),
    "PLAN_PRICE_USD": ("5", "positive_int", False),
    "PLAN_CREDITS": ("300", "positive_int", False),
    "PLAN_MAX_PROMPTS": ("200", "positive_int", False),
    "LOG_LEVEL": ("INFO", "log_level", False),
    "CONTACT_EMAIL": ("", "email", False),
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


def _check_base_url(value: str, mode: str) -> str | None:
    """Return a problem with a public base URL, or None when it is usable."""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"PUBLIC_BASE_URL must be an absolute http(s) URL such as https://example.com (got {value!r})"
    if parts.query or parts.fragment or parts.path not in ("", "/"):
        return "PUBLIC_BASE_URL must be the site's root, without a path, query or fragment"
    if mode == "production" and parts.scheme != "https":
        return "PUBLIC_BASE_URL must use https in production (sessions and payments need it)"
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
                  env_file: Path | None = None) -> Settings:
    """Build the settings from defaults, the .env file, the environment and overrides; raise ConfigError."""
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
    for name, (default, kind, secret) in _SPEC.items():
        raw = source.get(name, "").strip()
        if not raw:
            if default is None:
                if not relaxed:
                    hint = _SECRET_HINT if secret else ""
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
    )


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
    elif kind == "email":
        local, _, domain = raw.partition("@")
        if not local or "." not in domain or any(ch in raw for ch in " <>\"'"):
            return f"{name} must be an email address such as help@example.com (got {raw!r})"
    elif kind == "log_level":
        if raw.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            return f"{name} must be DEBUG, INFO, WARNING or ERROR (got {raw!r})"
    return None
