"""The OpenAI Images API over plain HTTP (requests; no OpenAI library).

One call, one image: `POST {OPENAI_BASE_URL}/images/generations` with model, prompt, size,
quality, output_format, n=1 and `user` (a hash of our user id, never the id or the email).
Every failure becomes an ImageAPIError whose `kind` says what the worker should do with it.
The key only ever travels in the Authorization header: it is never logged or put in a message.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import hmac
import logging
import threading

import requests

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 10
_local = threading.local()


def _session() -> requests.Session:
    """This thread's HTTP session: one kept-alive connection per worker thread, not a TLS handshake per image."""
    session = getattr(_local, "session", None)
    if session is None:
        session = _local.session = requests.Session()
    return session

# What the worker does with each kind of failure:
#   moderation, invalid -> fail the item, refund, no retry (retrying cannot help); but an error that blames
#                          the model or a setting, not the prompt (model_not_found, a 400 on size, quality...),
#                          pauses that model's batches instead (worker._setup_mistake)
#   rate_limit          -> wait (Retry-After) and retry; the user is not charged twice
#   quota               -> pause all work (the operator must act), refund
#   server, timeout, broken -> retry up to 3 attempts with backoff, then fail and refund
#   auth                -> pause all work (the key is wrong or revoked), refund
KINDS = ("moderation", "invalid", "rate_limit", "quota", "server", "timeout", "broken", "auth")
_MODERATION_CODES = {"moderation_blocked", "content_policy_violation", "image_generation_user_error"}


class ImageAPIError(Exception):
    """A failed generation: kind, HTTP status, the API's type/code/param/message, its request id, and a wait hint.

    `param` is the request field the API blamed (size, quality, model, prompt ...), when it named one.
    """

    def __init__(self, kind: str, message: str, status: int | None = None, error_type: str | None = None,
                 code: str | None = None, request_id: str | None = None, retry_after: float | None = None,
                 param: str | None = None):
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.status = status
        self.error_type = error_type
        self.code = code
        self.request_id = request_id
        self.retry_after = retry_after
        self.param = param


@dataclasses.dataclass(frozen=True)
class Generated:
    """An image as the API returned it, with the call's request id and rate-limit headers."""

    data: bytes
    request_id: str | None
    ratelimit: dict[str, str]
    input_tokens: int | None = None
    output_tokens: int | None = None


def user_hash(secret_key: str, user_id: int) -> str:
    """The pseudonymous `user` sent to OpenAI: an HMAC of our user id, stable per user, not reversible."""
    return hmac.new(secret_key.encode(), f"user:{user_id}".encode(), hashlib.sha256).hexdigest()[:32]


def _retry_after(headers) -> float | None:
    """Seconds to wait from retry-after-ms or retry-after, when the API says."""
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name)
        if value:
            try:
                return max(0.0, float(value) * scale)
            except ValueError:
                continue
    return None


def _classify(status: int, error: dict) -> str:
    """The kind of an error answer from its status and body."""
    code, error_type = str(error.get("code") or ""), str(error.get("type") or "")
    if code in _MODERATION_CODES or "safety system" in str(error.get("message") or ""):
        return "moderation"
    if code == "insufficient_quota" or error_type == "insufficient_quota" or code == "billing_hard_limit_reached":
        return "quota"
    if status == 429:
        return "rate_limit"
    if status in (401, 403):
        return "auth"
    if status >= 500 or status == 408:
        return "server"
    return "invalid"


def _tokens(usage, name: str) -> int | None:
    """A token count from a response's `usage` object, or None when it is missing or not a count."""
    value = usage.get(name) if isinstance(usage, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def request_body(*, model: str, prompt: str, size: str, quality: str, output_format: str, user: str,
                 complexity: str | None = None) -> dict:
    """The JSON body of one generation, as the synchronous call and a Batch API line both send it.

    `complexity` is sent only when given (only the models that take it get one).
    """
    body = {"model": model, "prompt": prompt, "n": 1, "size": size, "quality": quality,
            "output_format": output_format, "user": user}
    if complexity:
        body["complexity"] = complexity
    return body


def generate(base_url: str, api_key: str, *, read_timeout: float, **fields) -> Generated:
    """Generate one image (the fields of `request_body`); return its bytes and the call's usage, or ImageAPIError."""
    body = request_body(**fields)
    try:
        response = _session().post(f"{base_url}/images/generations", json=body,
                                 headers={"Authorization": f"Bearer {api_key}"},
                                 timeout=(CONNECT_TIMEOUT, read_timeout))
    except requests.Timeout:
        raise ImageAPIError("timeout", "the image API did not answer in time") from None
    except requests.RequestException as exc:
        raise ImageAPIError("server", f"the image API could not be reached ({type(exc).__name__})") from None
    with response:
        request_id = response.headers.get("x-request-id")
        ratelimit = {k.lower(): v for k, v in response.headers.items() if k.lower().startswith("x-ratelimit-")}
        try:
            payload = response.json()
        except ValueError:
            payload = None
        if response.status_code != 200:
            error = (payload or {}).get("error") if isinstance(payload, dict) else None
            error = error if isinstance(error, dict) else {}
            kind = _classify(response.status_code, error)
            message = str(error.get("message") or f"HTTP {response.status_code}")[:500]
            raise ImageAPIError(kind, message, status=response.status_code, error_type=error.get("type"),
                                code=error.get("code"), request_id=request_id,
                                retry_after=_retry_after(response.headers),
                                param=error.get("param") if isinstance(error.get("param"), str) else None)
        try:
            encoded = payload["data"][0]["b64_json"]
            data = base64.b64decode(encoded, validate=True)
        except (TypeError, KeyError, IndexError, ValueError, binascii.Error):
            raise ImageAPIError("broken", "the image API answered without a readable image", status=200,
                                request_id=request_id) from None
    if not data:
        raise ImageAPIError("broken", "the image API answered an empty image", status=200, request_id=request_id)
    usage = payload.get("usage")
    return Generated(data=data, request_id=request_id, ratelimit=ratelimit,
                     input_tokens=_tokens(usage, "input_tokens"), output_tokens=_tokens(usage, "output_tokens"))


def list_models(base_url: str, api_key: str) -> set[str]:
    """The model ids the key can use (GET /models); raises ImageAPIError."""
    try:
        response = requests.get(f"{base_url}/models", headers={"Authorization": f"Bearer {api_key}"},
                                timeout=(CONNECT_TIMEOUT, 30))
    except requests.RequestException as exc:
        raise ImageAPIError("server", f"the API could not be reached ({type(exc).__name__})") from None
    with response:
        if response.status_code != 200:
            raise ImageAPIError("auth" if response.status_code in (401, 403) else "server",
                                f"GET /models answered {response.status_code}", status=response.status_code,
                                request_id=response.headers.get("x-request-id"))
        try:
            return {entry["id"] for entry in response.json()["data"]}
        except (ValueError, KeyError, TypeError):
            raise ImageAPIError("broken", "GET /models answered something unreadable") from None
