"""Security rules that do not depend on the web framework: response headers, redirect targets, fetch metadata."""

from __future__ import annotations

from urllib.parse import urlsplit

from services.config import Settings

# No inline script or style anywhere: every script and style sheet is a file under public/.
# form-action also names Stripe's Checkout and Portal origins: Chrome checks it against the
# redirect that follows a form POST, and "Subscribe" / "Manage billing" are such POSTs.
_POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
           "connect-src 'self'; form-action {form}; frame-ancestors 'none'; base-uri 'none'")


def content_security_policy(form_origins: tuple[str, ...] = ()) -> str:
    """The Content-Security-Policy header, with the origins forms may be redirected to."""
    return _POLICY.format(form=" ".join(("'self'", *form_origins)))


UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def security_headers(settings: Settings, private: bool) -> list[tuple[str, str]]:
    """Headers every response carries; `private` adds no-store for pages of a signed-in visitor."""
    headers = [
        ("Content-Security-Policy", content_security_policy(settings.stripe_form_origins)),
        ("X-Content-Type-Options", "nosniff"),
        ("Referrer-Policy", "strict-origin-when-cross-origin"),
        ("X-Frame-Options", "DENY"),
        ("Cross-Origin-Opener-Policy", "same-origin"),
        ("Permissions-Policy", "camera=(), microphone=(), geolocation=(), payment=()"),
    ]
    if settings.is_https:
        headers.append(("Strict-Transport-Security", "max-age=31536000"))
    if private:
        headers.append(("Cache-Control", "no-store"))
    return headers


def safe_next(target: str | None, fallback: str = "/") -> str:
    """A same-site relative path to go to after an action, or the fallback for anything else."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return fallback
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in target):
        return fallback
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return fallback
    return target


def cross_site_request(sec_fetch_site: str | None) -> bool:
    """True when the browser says a request came from another site (Fetch Metadata)."""
    # 'same-site' covers sibling subdomains, which on shared hosting may belong to someone else.
    return (sec_fetch_site or "").lower() in ("cross-site", "same-site")
