"""OpenID Connect with Google and Microsoft: the authorization URL, the code exchange, the ID token's claims.

Authorization code flow with PKCE (S256), a one-time state and a nonce, through
requests-oauthlib. The ID token comes straight from the token endpoint over TLS, so its
claims are read without checking its signature (OpenID Connect Core 3.1.3.7, point 6), but
every claim that matters is checked: iss exactly, aud, azp, exp, iat and the nonce. An `iss`
in the authorization response must be the provider's (RFC 9207), and a userinfo answer is
used only when its `sub` is the ID token's (OpenID Connect Core 5.3.2).

Whether the provider vouched for the email (Identity.email_verified), decided at every sign-in:
Google: its `email_verified` is true (JSON true or the string "true"), read from wherever the email
came from (the ID token, else userinfo). Microsoft: the `email` claim "isn't guaranteed to be correct
and is mutable over time" (Microsoft's ID token claims reference), and so is `preferred_username`; it
counts as verified only for a personal account (`tid` is the consumers tenant) whose ID token carries
the optional claim `xms_edov` = true, which Microsoft defines as "whether the user's email domain owner
has been verified", counting an email "from a Microsoft account (MSA)" as verified, and sends only with
the `email` claim (learn.microsoft.com/entra/identity-platform/optional-claims-reference and
.../migrate-off-email-claim-authorization). The app registration must ask for `xms_edov` (Token
configuration, ID token); without it no Microsoft email is verified. An email taken from
`preferred_username` or from Microsoft's userinfo never is.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import json
import logging
import os
import secrets

import requests
from oauthlib.oauth2 import OAuth2Error
from requests_oauthlib import OAuth2Session

from services.config import MICROSOFT_CONSUMERS_TENANT_ID, Provider

log = logging.getLogger(__name__)

# requests-oauthlib logs request bodies (with the client secret) and tokens at DEBUG level.
for _noisy in ("requests_oauthlib", "oauthlib"):
    logging.getLogger(_noisy).setLevel(logging.WARNING)

TIMEOUT = (5, 15)  # connect, read: a provider that does not answer in time is "down"
CLOCK_SKEW = 120  # seconds of difference between our clock and the provider's that we accept


class SignInError(Exception):
    """A sign-in that cannot go on; `code` picks the message the visitor sees."""

    code = "failed"


class ProviderUnavailable(SignInError):
    """The provider did not answer, or answered with a server error."""

    code = "unavailable"


class ProviderRefused(SignInError):
    """The provider refused the code (used, expired, wrong verifier) or our client credentials."""

    code = "refused"


class InvalidIdToken(SignInError):
    """The ID token is malformed or one of its claims is wrong."""

    code = "invalid_token"


class InvalidResponse(SignInError):
    """The authorization response names another issuer, or userinfo does not carry the ID token's `sub`."""

    code = "invalid_token"


@dataclasses.dataclass(frozen=True)
class Identity:
    """Who signed in, as the provider says: the key (issuer, subject) and display details."""

    issuer: str
    subject: str
    name: str
    email: str
    email_verified: bool = False  # the provider vouched for `email` at this sign-in (see the module docstring)


def allow_plain_http_for_stand_ins() -> None:
    """Let oauthlib talk http:// to the local stand-ins (demo and tests only; production refuses http URLs)."""
    os.environ["OAUTHLIB_INSECURE_TRANSPORT"] = "1"


def new_secrets() -> dict[str, str]:
    """A fresh state and nonce (256 bits each) and a PKCE verifier (43-128 characters) for one sign-in."""
    return {"state": secrets.token_urlsafe(32), "nonce": secrets.token_urlsafe(32),
            "code_verifier": secrets.token_urlsafe(48)}


def code_challenge(verifier: str) -> str:
    """The PKCE S256 challenge for a verifier: BASE64URL(SHA256(verifier)) without padding."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def authorization_url(provider: Provider, redirect_uri: str, state: str, nonce: str, verifier: str) -> str:
    """Where to send the visitor: the provider's authorize endpoint with our client, scopes, state, nonce, PKCE."""
    session = OAuth2Session(provider.client_id, redirect_uri=redirect_uri, scope=list(provider.scopes))
    # No access_type=offline and no prompt=consent: we need no refresh token, and a returning
    # visitor should not be asked to consent again.
    url, _state = session.authorization_url(provider.authorize_url, state=state, nonce=nonce,
                                            code_challenge=code_challenge(verifier), code_challenge_method="S256")
    return url


def _refuse_server_errors(response: requests.Response) -> requests.Response:
    """A token endpoint answering 5xx is down, whatever its body says."""
    if response.status_code >= 500:
        raise ProviderUnavailable(f"token endpoint answered {response.status_code}")
    return response


def exchange_code(provider: Provider, redirect_uri: str, code: str, verifier: str) -> dict:
    """Trade the authorization code (with the PKCE verifier and our client secret) for tokens."""
    # scope=None: Google answers with its own spelling of the scopes, which oauthlib would
    # otherwise treat as a changed scope and raise on.
    session = OAuth2Session(provider.client_id, redirect_uri=redirect_uri, scope=None)
    session.register_compliance_hook("access_token_response", _refuse_server_errors)
    try:
        token = session.fetch_token(provider.token_url, code=code, client_secret=provider.client_secret,
                                    code_verifier=verifier, include_client_id=True, timeout=TIMEOUT)
    except requests.RequestException as exc:
        raise ProviderUnavailable(f"token endpoint unreachable: {type(exc).__name__}") from None
    except OAuth2Error as exc:
        raise ProviderRefused(f"token endpoint refused the code: {exc.error}") from None
    except ValueError as exc:  # a body that is neither JSON nor a token
        raise ProviderUnavailable(f"token endpoint answered something unreadable: {type(exc).__name__}") from None
    if not token.get("id_token"):
        raise InvalidIdToken("the token response has no id_token")
    return dict(token)


def read_claims(id_token: str) -> dict:
    """The claims of a compact JWT, read without checking the signature (see the module docstring)."""
    try:
        payload = id_token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError) as exc:
        raise InvalidIdToken(f"the ID token cannot be read: {type(exc).__name__}") from None
    if not isinstance(claims, dict):
        raise InvalidIdToken("the ID token's payload is not an object")
    return claims


def _issuer_ok(provider: Provider, claims: dict) -> bool:
    """True when `iss` is exactly one of the provider's issuers ({tenantid} filled from `tid`)."""
    issuer = claims.get("iss")
    if not isinstance(issuer, str):
        return False
    for expected in provider.issuers:
        if "{tenantid}" in expected:
            tenant = claims.get("tid")
            if not isinstance(tenant, str) or not tenant:
                continue
            expected = expected.replace("{tenantid}", tenant)
        if issuer == expected:
            return True
    return False


def _response_issuer_ok(provider: Provider, issuer: str) -> bool:
    """True when an authorization response's `iss` is one of the provider's issuers ({tenantid}: any one tenant)."""
    for expected in provider.issuers:
        if "{tenantid}" in expected:
            # No `tid` travels with the authorization response: any single path segment stands for the tenant.
            head, _, tail = expected.partition("{tenantid}")
            tenant = issuer[len(head):len(issuer) - len(tail)]
            if (issuer.startswith(head) and issuer.endswith(tail) and len(issuer) > len(head) + len(tail)
                    and "/" not in tenant):
                return True
        elif issuer == expected:
            return True
    return False


def check_response_issuer(provider: Provider, issuers: list[str]) -> None:
    """Refuse an authorization response whose `iss` (RFC 9207) is not the provider's; no `iss` at all is fine."""
    if not issuers:
        return
    if len(issuers) > 1:
        raise InvalidResponse(f"the authorization response carries {len(issuers)} iss parameters")
    if not _response_issuer_ok(provider, issuers[0]):
        raise InvalidResponse(f"the authorization response's iss {issuers[0][:100]!r} is not {provider.label}'s "
                              "issuer")


def check_claims(provider: Provider, claims: dict, nonce: str, now: int) -> None:
    """Refuse an ID token whose iss, aud, azp, exp, iat, nonce or sub is not what this sign-in expects."""
    if not _issuer_ok(provider, claims):
        raise InvalidIdToken(f"iss {claims.get('iss')!r} is not {provider.label}'s issuer")
    audience = claims.get("aud")
    audiences = audience if isinstance(audience, list) else [audience]
    if provider.client_id not in audiences:
        raise InvalidIdToken("aud is not our client id")
    # OpenID Connect Core 3.1.3.7 step 3: no audience we do not trust, and we trust only our own client id.
    if any(member != provider.client_id for member in audiences):
        raise InvalidIdToken("aud lists an audience other than our client id")
    if len(audiences) > 1 and claims.get("azp") != provider.client_id:
        raise InvalidIdToken("several audiences and azp is not our client id")
    if "azp" in claims and claims["azp"] != provider.client_id:  # 3.1.3.7 step 5: when present, it is us
        raise InvalidIdToken("azp is not our client id")
    expires, issued = claims.get("exp"), claims.get("iat")
    if not isinstance(expires, int | float) or not isinstance(issued, int | float):
        raise InvalidIdToken("exp or iat is missing")
    if expires + CLOCK_SKEW <= now:
        raise InvalidIdToken("the ID token has expired")
    if issued - CLOCK_SKEW > now:
        raise InvalidIdToken("the ID token was issued in the future")
    token_nonce = claims.get("nonce")
    if not isinstance(token_nonce, str) or not hmac.compare_digest(token_nonce.encode(), nonce.encode()):
        raise InvalidIdToken("the nonce does not match this sign-in")
    if not isinstance(claims.get("sub"), str) or not claims["sub"]:
        raise InvalidIdToken("sub is missing")


def userinfo(provider: Provider, access_token: str, subject: str) -> dict:
    """The provider's userinfo for an access token, refused unless its `sub` is exactly the ID token's."""
    try:
        response = requests.get(provider.userinfo_url, headers={"Authorization": f"Bearer {access_token}"},
                                timeout=TIMEOUT)
    except requests.RequestException as exc:
        raise ProviderUnavailable(f"userinfo unreachable: {type(exc).__name__}") from None
    with response:
        if response.status_code >= 500:
            raise ProviderUnavailable(f"userinfo answered {response.status_code}")
        if response.status_code != 200:
            raise ProviderRefused(f"userinfo answered {response.status_code}")
        try:
            data = response.json()
        except ValueError:
            raise ProviderUnavailable("userinfo answered something unreadable") from None
    # OpenID Connect Core 5.3.2: without the ID token's exact `sub`, none of the answer may be used.
    found = data.get("sub") if isinstance(data, dict) else None
    if not isinstance(found, str) or not found:
        raise InvalidResponse("userinfo carries no sub")
    if found != subject:
        raise InvalidResponse("userinfo describes another account than the ID token")
    return data


def identify(provider: Provider, redirect_uri: str, code: str, verifier: str, nonce: str, now: int) -> Identity:
    """Exchange the code, check the ID token, and fill in name and email from userinfo if needed."""
    token = exchange_code(provider, redirect_uri, code, verifier)
    claims = read_claims(token["id_token"])
    check_claims(provider, claims, nonce, now)
    name, email = claims.get("name") or "", claims.get("email") or ""
    verified = bool(email) and id_token_email_verified(provider.name, claims)
    if (not name or not email) and token.get("access_token"):
        extra = userinfo(provider, token["access_token"], claims["sub"])
        name = name or extra.get("name") or ""
        if not email:
            email = extra.get("email") or ""
            # Google's userinfo carries email_verified; Microsoft's (Graph) has no xms_edov, so never verified.
            verified = bool(email) and provider.name == "google" and claim_is_true(extra.get("email_verified"))
    email = email or claims.get("preferred_username") or ""  # a sign-in name, never a verified email
    # One spelling per provider as the key (Google sends "accounts.google.com" with or without
    # https://); a tenant-specific Microsoft issuer stays as it came.
    issuer = claims["iss"] if "{tenantid}" in provider.issuers[0] else provider.issuers[0]
    return Identity(issuer=issuer, subject=claims["sub"], name=str(name)[:200], email=str(email)[:320],
                    email_verified=bool(verified and isinstance(email, str) and 0 < len(email.strip()) <= 320))


def claim_is_true(value) -> bool:
    """A boolean claim's value is true: JSON true, or the string "true" (any case) as some endpoints send it."""
    return value is True or (isinstance(value, str) and value.strip().lower() == "true")


def id_token_email_verified(provider_name: str, claims: dict) -> bool:
    """Whether an ID token's `email` is one the provider vouches for (the rules in the module docstring)."""
    if provider_name == "google":
        return claim_is_true(claims.get("email_verified"))
    if provider_name == "microsoft":
        return claims.get("tid") == MICROSOFT_CONSUMERS_TENANT_ID and claim_is_true(claims.get("xms_edov"))
    return False
