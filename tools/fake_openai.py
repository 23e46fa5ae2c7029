"""A small OpenAI Images API stand-in on 127.0.0.1: ``POST /v1/images/generations`` and ``GET /v1/models``.

Used by the app's tests, the benchmarks and the local demo instead of api.openai.com. The app
reaches it with ``OPENAI_BASE_URL = fake.base_url + "/v1"``. Standard library and Pillow only.
Every answer is a real image: a background colour derived from the prompt's hash, the prompt
wrapped on it and the size written at the bottom, encoded as the requested PNG, JPEG or WebP.

Real behaviours copied, and where they were read (2026):

* Request and response shapes: the Images API reference ("Create image", developers.openai.com
  /api/reference, CLI and HTTP pages) and the OpenAPI-generated types of openai-python
  (``types/images_response.py``: ``created``, ``data[].b64_json``, ``background``,
  ``output_format``, ``quality``, ``size``, ``usage`` with ``input_tokens``,
  ``input_tokens_details.{text_tokens,image_tokens}``, ``output_tokens``, ``total_tokens``); the
  spec's ``output_tokens_details.{image_tokens,text_tokens}`` is sent too. Prompts up to 32000
  characters for the GPT image models; ``n`` 1..10; ``output_compression`` 0..100;
  ``moderation`` auto/low; ``background`` transparent/opaque/auto, and ``gpt-image-2`` refuses
  ``transparent`` ("Transparent background is not supported for this model.").
* ``gpt-image-2`` sizes: any ``WIDTHxHEIGHT`` with both edges multiples of 16, longest edge at
  most 3840, long:short ratio at most 3:1, 655,360 to 8,294,400 pixels, or ``auto`` (OpenAI's
  image-generation guide as quoted by several gateways' docs, MicrosoftDocs/azure-ai-docs#779,
  openclaw/openclaw#118476). Its size errors are ``image_generation_user_error`` /
  ``invalid_value`` / param ``size``: "Invalid size 'bogus'. Expected WIDTHxHEIGHT, for example
  '1824x1024'." and "Invalid size '1792x936'. Width and height must both be divisible by 16."
  (jezweb/claude-skills#91 and a public conformance matrix of live gpt-image-2 probes). The other
  three limits have no published wording: the messages for them are this stand-in's own.
* GPT Image 2.5 and 2.6 (read 2026-12): the model ids ``gpt-image-2.5-flare``,
  ``gpt-image-2.5-sunburst`` (and their ``-2026-09-08`` snapshots), ``gpt-image-2.6-flare``,
  ``gpt-image-2.6-sunburst`` and the ``gpt-image-2-2026-04-21`` snapshot come from the "Create
  image" reference (developers.openai.com/api/reference/resources/images/methods/generate), which
  also says the 2.5 models take ``transparent`` and ``opaque`` backgrounds, that ``gpt-image-1``
  was shut down on 2026-10-23 and ``dall-e-2``/``dall-e-3`` retired on 2026-05-12 (the stand-in
  still serves ``gpt-image-1`` and never served DALL-E). The 2.6 models take ``complexity``
  (``low``/``medium``/``high``, ``high`` when left out, no extra charge) and transparent
  backgrounds (OpenAI's image-generation guide, ko-KR edition, and the GPT Image 2.6 prompting
  guide). Their ``quality`` adds ``xhigh`` and ``max`` to low/medium/high/auto; ``gpt-image-2``
  stops at ``high``. All of them use the ``gpt-image-2`` size rules and errors above. A quality a
  model lacks gets the enum wording above ("Invalid value: 'xhigh'. Supported values are: 'low',
  'medium', 'high', and 'auto'." / ``invalid_value``); ``complexity`` sent to any other model is
  an unknown key ("Unknown parameter: 'complexity'." / ``unknown_parameter``) and a wrong value
  is "Invalid value: 'x'. Supported values are: 'low', 'medium', and 'high'." Neither wording was
  found published for these two cases: they follow OpenAI's generic envelopes. The 2.6 GIF and
  SVG outputs are not served.
* ``gpt-image-1.5``, ``gpt-image-1-mini``, ``gpt-image-1``: sizes 1024x1024, 1024x1536,
  1536x1024, auto; a wrong one gets ``invalid_request_error`` / ``invalid_value`` / ``size``:
  "Invalid value: '1254x836'. Supported values are: '1024x1024', '1024x1536', '1536x1024', and
  'auto'." (pollinations/pollinations#5037). The same wording for ``quality`` ("... 'low',
  'medium', 'high', and 'auto'.", griptape-ai/griptape-nodes-engine#1031), ``output_format``
  ('png', 'webp', and 'jpeg'), ``moderation`` and ``background``.
* Validation order and the generic envelopes, as measured on the live API in that conformance
  matrix: model, then unknown keys ("Unknown parameter: 'response_format'." /
  ``unknown_parameter``, also GetfroggyHoe/universal-immersion-engine#5), then prompt
  (``missing_required_parameter``, ``invalid_type``, ``empty_string``, "Invalid 'prompt': string
  too long. Expected a string with maximum length 32000, but got a string with length N
  instead." / ``string_above_max_length``), then ``n`` ("Invalid 'n': integer below minimum
  value. Expected a value >= 1, but got 0 instead." / ``integer_below_min_value``), then the
  rest. ``null`` for an optional field means "left out". An unknown model is
  ``image_generation_user_error`` / ``invalid_value`` / ``model``: "The model 'x' does not exist."
* Errors are ``{"error": {"message", "type", "param", "code"}}``. 401 without a key: "You didn't
  provide an API key. ..." (code null, chatboxai/chatbox#98); 401 with a wrong one: "Incorrect
  API key provided: sk-PMafP****...E873. You can find your API key at
  https://platform.openai.com/account/api-keys." / ``invalid_api_key`` (the first 8 and last 4
  characters shown, popjane/free_chatgpt_api#3, continuedev/continue#12778). 429 rate limit:
  type ``requests``, code ``rate_limit_exceeded``, "Rate limit reached for gpt-image-2 in
  organization org-... on images per min (IPM): Limit 5, Used 5, Requested 1. Please try again
  in 12s. Visit https://platform.openai.com/account/rate-limits to learn more." 429 quota:
  "You exceeded your current quota, please check your plan and billing details. ..." /
  ``insufficient_quota``. 400 safety system: "Your request was rejected by the safety system. If
  you believe this is an error, contact us at help.openai.com and include the request ID ...
  safety_violations=[...]." / type ``image_generation_user_error`` / code ``moderation_blocked``
  (ucx0204/CarrotMangaTranslator#122, jeffstric/ZJT#480). 500: "The server had an error while
  processing your request. Sorry about that!" / ``server_error`` (LlmKira/Openaibot#177). 503:
  "That model is currently overloaded with other requests. ..." / ``server_error``
  (ikechan8370/chatgpt-plugin#125). 502: an HTML page from the edge proxy, not JSON. A body that
  is not JSON: "We could not parse the JSON body of your request. ...". An unknown path: 404
  with an empty body.
* Headers: every answer carries ``x-request-id: req_<32 hex>``, ``openai-processing-ms``,
  ``openai-version: 2020-10-01`` and ``openai-organization``. Rate-limit headers
  ``x-ratelimit-limit-requests``, ``x-ratelimit-remaining-requests``,
  ``x-ratelimit-reset-requests`` with Go-style durations ("12ms", "1s", "6m0s"; community.openai.com
  "How to get rate limit reset time", thoughtbot's "How to respect OpenAI's rate limits"), plus
  the ``-images`` trio that image clients read (its existence is reported by client code, not
  documented by OpenAI); a 429 adds ``retry-after`` (whole seconds) and ``retry-after-ms``.
* ``GET /v1/models``: ``{"object": "list", "data": [{"id", "object": "model", "created",
  "owned_by"}]}``; ``GET /v1/models/{id}`` answers one, or 404 ``model_not_found``.

Where the stand-in differs from OpenAI (on purpose):

* No streaming (``stream: true`` gets a 400 saying so), no edits or variations, no URLs.
* The rate limit is a rolling window of images (``images_per_minute``), not a token bucket; 60 s
  long by default. OpenAI's rate-limit guide warns that limits "may be quantized", enforced over
  shorter periods (60,000 a minute as 1,000 a second): ``window_seconds`` (``--window-seconds``)
  shortens the window and scales the limit to it (at least 1), so a client cannot burst a whole
  minute's images at once; the ``x-ratelimit-limit-*`` and ``-remaining-*`` headers still give
  per-minute figures, as OpenAI's do. ``x-ratelimit-reset-*`` says when the oldest image in the
  window leaves it, that is when the next one fits (OpenAI documents the time until the limit is
  back to full; in a rolling window that is always about 60 s right after a call, which tells a
  client nothing). Without a
  limit no ``x-ratelimit-*`` headers are sent. Injected faults never use the window.
* ``quality: auto`` answers ``high``, ``background: auto`` answers ``opaque``, ``size: auto``
  answers 1024x1024; ``complexity`` left out on a 2.6 model means ``high``.
* ``usage`` is in every 200 with images, from ``usage_for(model, width, height, quality, prompt,
  complexity=None, n=1)``, a pure function other tests can call: text input tokens =
  max(1, ceil(len(prompt) / 4)), no image input tokens; output (image) tokens =
  ``image_tokens(quality, width, height)`` * n, OpenAI's gpt-image-2 formula from its pricing
  calculator (quality factors 16 / 48 / 96 for low / medium / high; 144 / 192 for xhigh / max
  are estimates; ``auto`` counts as ``high``): 1024x1024 high is 7,024 tokens. Tokens grow with
  pixel count and quality, and not with ``complexity`` (OpenAI: no extra charge). ``output_tokens_details`` (optional in
  openai-python's ``ImagesResponse.Usage``) is sent too. ``usage_cost(usage)`` prices it at
  USD 5 / 8 / 30 per 1M text input / image input / image output tokens.
* JPEG and WebP use quality 85 unless ``output_compression`` is sent (OpenAI's default is 100),
  WebP method 0, PNG compression level 1: a 1536x1024 PNG takes about 20 ms; a 3840x2160 PNG or
  WebP 0.08 to 0.14 s and a JPEG 0.02 to 0.06 s on a 2-core machine.
* ``transparent`` with ``jpeg`` gets a 400 with this stand-in's own wording.
* ``fake.requests`` records every authenticated JSON body sent to /images/generations, valid or
  not, as sent (``quality`` and ``complexity`` included, or absent when the client left them out);
  ``count_by_status``, ``in_flight`` and ``max_in_flight`` count only that endpoint.

Python use::

    fake = FakeOpenAI(api_key="sk-test-fake-openai", latency=0.0, images_per_minute=None, port=0, clock=None)
    fake.start()                      # OPENAI_BASE_URL = fake.base_url + "/v1"
    fake.latency = 0.25; fake.images_per_minute = 60; fake.moderation_marker = "FORBIDDEN"
    fake.fail_next("rate_limit", count=1, retry_after_ms=200)
    fake.fault_rates({"rate_limit": 0.1, "server_error": 0.1}, seed=1)
    fake.requests, fake.count_by_status, fake.in_flight, fake.max_in_flight
    fake.reset(); fake.stop()

Fault kinds (``fail_next`` and ``fault_rates``; they act after validation, before the rate limit
and the safety check): ``rate_limit`` (429 ``rate_limit_exceeded`` with ``retry-after`` /
``retry-after-ms``), ``insufficient_quota`` (429), ``server_error`` (500), ``unavailable`` (503),
``bad_gateway`` (502, an HTML page), ``hang`` (sleeps ``fake.hang_seconds``, default 30, then a
normal 200), ``malformed`` (200, the JSON cut in half), ``empty`` (200, ``"data": []``),
``bad_base64`` (200, ``b64_json`` that is not base64). ``stop()`` wakes sleeping requests and drops
their connections, so it returns at once even during a hang or a long ``latency``.

Command line::

    python tools/fake_openai.py --port 8010 --api-key sk-test-fake-openai --latency 0.5 \\
        --images-per-minute 60 --fault rate_limit=0.05 --fault server_error=0.02 --seed 1
"""

from __future__ import annotations

import argparse
import base64
import functools
import hashlib
import hmac
import io
import json
import logging
import math
import random
import re
import secrets
import sys
import textwrap
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from urllib.parse import urlsplit

from PIL import Image, ImageDraw, ImageFont

try:
    from tools.standin_http import ServedStandIn, TrackingHTTPServer, serve_until_stopped
except ImportError:  # run as a file (python tools/<stand-in>.py): tools/ itself is on the path
    from standin_http import ServedStandIn, TrackingHTTPServer, serve_until_stopped

log = logging.getLogger("tools.fake_openai")

QUALITIES = ("low", "medium", "high", "auto")
QUALITIES_2_5 = ("low", "medium", "high", "xhigh", "max", "auto")  # GPT Image 2.5 and 2.6 add xhigh and max
COMPLEXITIES = ("low", "medium", "high")  # GPT Image 2.6 only; "high" when left out
DEFAULT_COMPLEXITY = "high"
FORMATS = ("png", "webp", "jpeg")  # the order OpenAI's error message lists them in
BACKGROUNDS = ("transparent", "opaque", "auto")
MODERATIONS = ("auto", "low")
FIXED_SIZES = ("1024x1024", "1024x1536", "1536x1024", "auto")
AUTO_SIZE = "1024x1024"
FLEXIBLE_SIZE = {"multiple": 16, "max_edge": 3840, "max_ratio": 3, "min_pixels": 655_360, "max_pixels": 8_294_400}
MAX_PROMPT_CHARS = 32_000


def _model(created: int, *, flexible: bool, qualities=QUALITIES, backgrounds=BACKGROUNDS, complexities=None) -> dict:
    return {"sizes": None if flexible else FIXED_SIZES, "flexible": FLEXIBLE_SIZE if flexible else None,
            "qualities": qualities, "formats": FORMATS, "backgrounds": backgrounds,
            "complexities": complexities, "max_prompt_chars": MAX_PROMPT_CHARS, "created": created}


#: The image models the stand-in serves and their rules. ``sizes`` is the fixed list, or None when
#: ``flexible`` (the constraints) applies; ``complexities`` is None for a model that has no ``complexity``
#: parameter. ``created`` is the release day where OpenAI gave one, otherwise a plausible date.
MODELS: dict[str, dict] = {
    "gpt-image-2": _model(1776729600, flexible=True, backgrounds=("opaque", "auto")),
    "gpt-image-1.5": _model(1765843200, flexible=False),
    "gpt-image-1-mini": _model(1759708800, flexible=False),
    "gpt-image-1": _model(1745388000, flexible=False),
    "gpt-image-2-2026-04-21": _model(1776729600, flexible=True, backgrounds=("opaque", "auto")),
    "gpt-image-2.5-flare": _model(1788825600, flexible=True, qualities=QUALITIES_2_5),
    "gpt-image-2.5-flare-2026-09-08": _model(1788825600, flexible=True, qualities=QUALITIES_2_5),
    "gpt-image-2.5-sunburst": _model(1788825600, flexible=True, qualities=QUALITIES_2_5),
    "gpt-image-2.5-sunburst-2026-09-08": _model(1788825600, flexible=True, qualities=QUALITIES_2_5),
    "gpt-image-2.6-flare": _model(1793750400, flexible=True, qualities=QUALITIES_2_5, complexities=COMPLEXITIES),
    "gpt-image-2.6-sunburst": _model(1793750400, flexible=True, qualities=QUALITIES_2_5, complexities=COMPLEXITIES),
}

FAULT_KINDS = ("rate_limit", "insufficient_quota", "server_error", "unavailable", "bad_gateway", "hang", "malformed",
               "empty", "bad_base64")
KNOWN_PARAMS = ("model", "prompt", "n", "size", "quality", "output_format", "output_compression", "background",
                "moderation", "user", "stream", "partial_images")
ORGANIZATION = "org-fake-images-in-bulk"
WINDOW_SECONDS = 60.0
MAX_BODY = 1024 * 1024
#: Output tokens of one 1024x1024 image per quality (see usage_for); USD per 1M tokens (see usage_cost).
# OpenAI's image-output token formula for gpt-image-2, as its pricing calculator computes it (read out of the
# calculator by the developer community, community.openai.com/t/1382699): a quality factor, a short-axis factor
# and the area plus an offset. 1024x1024 high is 7,024 tokens, which OpenAI's calculator shows. xhigh and max are
# not in that formula: their factors here (144, 192) are estimates, used for the 2.5 and 2.6 models as well.
QUALITY_FACTORS = {"low": 16, "medium": 48, "high": 96, "xhigh": 144, "max": 192}


def image_tokens(quality: str, width: int, height: int) -> int:
    """Output tokens of one image of this size and quality (OpenAI's gpt-image-2 formula)."""
    factor = QUALITY_FACTORS[quality]
    long_edge, short_edge = max(width, height), min(width, height)
    short_axis = (2 * factor * short_edge + long_edge) // (2 * long_edge)
    return (factor * short_axis * (2_000_000 + width * height) + 4_000_000 - 1) // 4_000_000
PRICE_PER_MILLION = {"text_input": 5.0, "image_input": 8.0, "image_output": 30.0}
DOCS = "https://platform.openai.com/docs/guides/error-codes/api-errors"
SIZE_RE = re.compile(r"^([0-9]+)x([0-9]+)$")
BAD_GATEWAY_HTML = ("<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
                    "<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>cloudflare</center>\r\n</body>\r\n"
                    "</html>\r\n")


class ApiError(Exception):
    """An OpenAI-style error answer: status, message, type, param, code and extra headers."""

    def __init__(self, status: int, message: str, type_: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type_
        self.param = param
        self.code = code
        self.headers = dict(headers or {})

    def body(self) -> dict:
        """The JSON body OpenAI sends for this error."""
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


# ----- validation helpers (OpenAI's wording) ---------------------------------------------------------

def _quoted_list(values, last: str = "and") -> str:
    items = [f"'{v}'" for v in values]
    if len(items) <= 2:
        return f" {last} ".join(items)
    return ", ".join(items[:-1]) + f", {last} " + items[-1]


def _kind(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a decimal number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _invalid_type(param: str, expected: str, value) -> ApiError:
    return ApiError(400, f"Invalid type for '{param}': expected {expected}, but got {_kind(value)} instead.",
                    param=param, code="invalid_type")


def _invalid_value(param: str, value, allowed) -> ApiError:
    return ApiError(400, f"Invalid value: '{value}'. Supported values are: {_quoted_list(allowed)}.", param=param,
                    code="invalid_value")


def _enum(body: dict, param: str, allowed, default: str) -> str:
    value = body.get(param)
    if value is None:
        return default
    if not isinstance(value, str):
        raise _invalid_type(param, f"one of {_quoted_list(allowed, 'or')}", value)
    if value not in allowed:
        raise _invalid_value(param, value, allowed)
    return value


def _integer(body: dict, param: str, low: int, high: int, default: int | None) -> int | None:
    value = body.get(param)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise _invalid_type(param, "an integer", value)
    if value < low:
        raise ApiError(400, f"Invalid '{param}': integer below minimum value. Expected a value >= {low}, but got "
                            f"{value} instead.", param=param, code="integer_below_min_value")
    if value > high:
        raise ApiError(400, f"Invalid '{param}': integer above maximum value. Expected a value <= {high}, but got "
                            f"{value} instead.", param=param, code="integer_above_max_value")
    return value


def _size_problem(message: str) -> ApiError:
    return ApiError(400, message, type_="image_generation_user_error", param="size", code="invalid_value")


def resolve_size(model: str, size) -> tuple[int, int]:
    """The (width, height) a model makes for a requested size; raises ApiError as OpenAI would refuse it."""
    rules = MODELS[model]
    if size is None or size == "auto":
        return _dimensions(AUTO_SIZE)
    if not isinstance(size, str):
        raise _invalid_type("size", "a string", size)
    flexible = rules["flexible"]
    if flexible is None:
        if size not in rules["sizes"]:
            raise _invalid_value("size", size, rules["sizes"])
        return _dimensions(size)
    match = SIZE_RE.match(size)
    if not match or int(match.group(1)) == 0 or int(match.group(2)) == 0:
        raise _size_problem(f"Invalid size '{size}'. Expected WIDTHxHEIGHT, for example '1824x1024'.")
    width, height = int(match.group(1)), int(match.group(2))
    step = flexible["multiple"]
    if width % step or height % step:
        raise _size_problem(f"Invalid size '{size}'. Width and height must both be divisible by {step}.")
    if max(width, height) > flexible["max_edge"]:
        raise _size_problem(f"Invalid size '{size}'. The longest edge must be at most {flexible['max_edge']} "
                            "pixels.")
    if max(width, height) > flexible["max_ratio"] * min(width, height):
        raise _size_problem(f"Invalid size '{size}'. The ratio of the longest edge to the shortest must be at most "
                            f"{flexible['max_ratio']}:1.")
    if not flexible["min_pixels"] <= width * height <= flexible["max_pixels"]:
        raise _size_problem(f"Invalid size '{size}'. The total number of pixels must be between "
                            f"{flexible['min_pixels']} and {flexible['max_pixels']}.")
    return width, height


def valid_size(model: str, size: str) -> bool:
    """Whether the model accepts this size (a helper for tests and catalogue checks)."""
    try:
        resolve_size(model, size)
    except ApiError:
        return False
    return True


def _dimensions(size: str) -> tuple[int, int]:
    width, _, height = size.partition("x")
    return int(width), int(height)


def mask_key(key: str) -> str:
    """A key as OpenAI's 401 shows it: the first 8 and last 4 characters, stars between."""
    if len(key) <= 12:
        return key
    return key[:8] + "*" * (len(key) - 12) + key[-4:]


def go_duration(seconds: float) -> str:
    """A duration written the way OpenAI's x-ratelimit-reset-* headers write it: 12ms, 1.5s, 6m0s."""
    seconds = max(0.0, seconds)
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    minutes, rest = divmod(round(seconds, 3), 60)
    text = f"{rest:.3f}".rstrip("0").rstrip(".") + "s"
    return f"{int(minutes)}m{text}" if minutes else text


# ----- the image -----------------------------------------------------------------------------------

@functools.lru_cache(maxsize=32)
def _font(size: int):
    return ImageFont.load_default(size=size)


def render_image(prompt: str, width: int, height: int, output_format: str = "png", transparent: bool = False,
                 compression: int | None = None) -> bytes:
    """A real image of the given size and format: a colour from the prompt's hash, the prompt and the size on it."""
    digest = hashlib.sha256(prompt.encode("utf-8")).digest()
    colour = (96 + digest[0] % 144, 96 + digest[1] % 144, 96 + digest[2] % 144)
    ink = (0, 0, 0) if sum(colour) > 380 else (255, 255, 255)
    if transparent:
        image = Image.new("RGBA", (width, height), (*colour, 0))
        ink = (*ink, 255)
    else:
        image = Image.new("RGB", (width, height), colour)
    draw = ImageDraw.Draw(image)
    font_size = max(12, min(width, height) // 24)
    font = _font(font_size)
    margin = font_size
    columns = max(8, int((width - 2 * margin) / (font_size * 0.55)))
    rows = max(1, (height - 4 * margin) // int(font_size * 1.3))
    lines = textwrap.wrap(" ".join(prompt.split()), width=columns)[:rows] or [""]
    y = margin
    for line in lines:
        draw.text((margin, y), line, fill=ink, font=font)
        y += int(font_size * 1.3)
    draw.text((margin, height - 2 * margin), f"{width}x{height} {output_format}", fill=ink, font=font)
    out = io.BytesIO()
    quality = 85 if compression is None else max(1, compression)
    if output_format == "png":
        image.save(out, "PNG", compress_level=1)
    elif output_format == "jpeg":
        image.convert("RGB").save(out, "JPEG", quality=quality)
    else:
        image.save(out, "WEBP", quality=quality, method=0)
    return out.getvalue()


def usage_for(model: str, width: int, height: int, quality: str, prompt: str, complexity: str | None = None,
              n: int = 1) -> dict:
    """The ``usage`` object the stand-in answers for these settings (the formula is in the module docstring)."""
    rules = MODELS.get(model)
    if rules is None:
        raise ValueError(f"unknown model {model!r}")
    if quality not in rules["qualities"]:
        raise ValueError(f"{model} takes quality {rules['qualities']}, not {quality!r}")
    if complexity is not None and complexity not in (rules["complexities"] or ()):
        raise ValueError(f"{model} takes complexity {rules['complexities']}, not {complexity!r}")
    quality = "high" if quality == "auto" else quality
    text_tokens = max(1, math.ceil(len(prompt) / 4))
    output = image_tokens(quality, width, height) * n  # complexity: no extra tokens
    return {"input_tokens": text_tokens, "input_tokens_details": {"image_tokens": 0, "text_tokens": text_tokens},
            "output_tokens": output, "output_tokens_details": {"image_tokens": output, "text_tokens": 0},
            "total_tokens": text_tokens + output}


def usage_cost(usage: dict) -> float:
    """What a ``usage`` object costs in USD at the GPT Image 2.x token prices (PRICE_PER_MILLION)."""
    details = usage["input_tokens_details"]
    return (details["text_tokens"] * PRICE_PER_MILLION["text_input"]
            + details["image_tokens"] * PRICE_PER_MILLION["image_input"]
            + usage["output_tokens"] * PRICE_PER_MILLION["image_output"]) / 1_000_000


# ----- the stand-in ----------------------------------------------------------------------------------

@dataclass
class _Reply:
    status: int
    body: bytes
    ctype: str = "application/json"
    headers: dict = field(default_factory=dict)
    model: str = "-"
    size: str = "-"
    prompt: str = ""


@dataclass
class _Order:
    """A validated generation request."""

    model: str
    prompt: str
    n: int
    size: str
    width: int
    height: int
    quality: str
    output_format: str
    background: str
    compression: int | None
    complexity: str | None = None


class FakeOpenAI(ServedStandIn):
    """The OpenAI Images API stand-in over real HTTP on 127.0.0.1, with latency, a rate limit and faults."""

    label = "OpenAI stand-in"
    thread_name = "fake-openai"
    log_name = "tools.fake_openai"

    def __init__(self, api_key: str = "sk-test-fake-openai", latency: float = 0.0, images_per_minute: int | None = None,
                 port: int = 0, clock=None, host: str = "127.0.0.1", moderation_marker: str = "FORBIDDEN",
                 hang_seconds: float = 30.0, models=None, window_seconds: float = WINDOW_SECONDS):
        if host != "127.0.0.1":
            raise ValueError("the OpenAI stand-in binds 127.0.0.1 only")
        self.api_key = api_key
        self.clock = clock or time.time
        if not 0 < window_seconds <= WINDOW_SECONDS:
            raise ValueError("window_seconds must be more than 0 and at most 60")
        self.window_seconds = float(window_seconds)
        self._defaults = {"latency": float(latency), "images_per_minute": images_per_minute,
                          "moderation_marker": moderation_marker, "hang_seconds": float(hang_seconds),
                          "models": list(models) if models is not None else list(MODELS)}
        self.latency = float(latency)
        self.images_per_minute = images_per_minute
        self.moderation_marker = moderation_marker
        self.hang_seconds = float(hang_seconds)
        self.models: list[str] = list(self._defaults["models"])
        self.requests: list[dict] = []
        self.count_by_status: dict[int, int] = {}
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.RLock()
        self._window: deque[tuple[float, int]] = deque()
        self._queue: deque[tuple[str, dict]] = deque()
        self._rates: dict[str, float] = {}
        self._random = random.Random()
        self._stopping = threading.Event()
        self._server = _Server((host, port), _Handler)
        self._server.fake = self
        self._thread: threading.Thread | None = None
        self.base_url = f"http://{host}:{self._server.server_address[1]}"

    # ----- test switches -------------------------------------------------------------------------

    def fail_next(self, kind: str, count: int = 1, retry_after_ms: int | None = None) -> None:
        """Make the next ``count`` generations fail this way (see FAULT_KINDS); queued after earlier ones."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"kind must be one of {FAULT_KINDS}, not {kind!r}")
        if retry_after_ms is not None and kind != "rate_limit":
            raise ValueError("retry_after_ms only goes with rate_limit")
        options = {"retry_after_ms": 1000 if retry_after_ms is None else int(retry_after_ms)}
        with self._lock:
            self._queue.extend((kind, options) for _ in range(int(count)))

    def fault_rates(self, rates: dict, seed: int | None = None) -> None:
        """Fail each generation at random with these probabilities per kind ({} turns it off)."""
        for kind, rate in rates.items():
            if kind not in FAULT_KINDS:
                raise ValueError(f"kind must be one of {FAULT_KINDS}, not {kind!r}")
            if not 0 <= rate <= 1:
                raise ValueError(f"rate for {kind} must be between 0 and 1")
        if sum(rates.values()) > 1:
            raise ValueError("the rates add up to more than 1")
        with self._lock:
            self._rates = dict(rates)
            self._random = random.Random(seed)

    def reset(self) -> None:
        """Clear queued and random faults and the rate window; latency, limits, marker, models as constructed."""
        with self._lock:
            self._queue.clear()
            self._rates = {}
            self._window.clear()
            self.latency = self._defaults["latency"]
            self.images_per_minute = self._defaults["images_per_minute"]
            self.moderation_marker = self._defaults["moderation_marker"]
            self.hang_seconds = self._defaults["hang_seconds"]
            self.models = list(self._defaults["models"])

    # ----- internals -----------------------------------------------------------------------------

    def _now(self) -> float:
        return float(self.clock())

    def _sleep(self, seconds: float) -> bool:
        """Sleep unless stopping; True when the stand-in is being stopped."""
        if seconds > 0:
            self._stopping.wait(seconds)
        return self._stopping.is_set()

    def _enter(self) -> None:
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def _leave(self, status: int | None) -> None:
        with self._lock:
            self.in_flight -= 1
            if status is not None:
                self.count_by_status[status] = self.count_by_status.get(status, 0) + 1

    def _authenticate(self, authorization: str) -> None:
        scheme, _, credentials = (authorization or "").partition(" ")
        key = credentials.strip() if scheme.lower() == "bearer" else ""
        if not key:
            raise ApiError(401, "You didn't provide an API key. You need to provide your API key in an Authorization "
                                "header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY), or as the password "
                                "field (with blank username) if you're accessing the API from your browser and are "
                                "prompted for a username and password. You can obtain an API key from "
                                "https://platform.openai.com/account/api-keys.")
        if not hmac.compare_digest(key.encode("utf-8"), self.api_key.encode("utf-8")):
            raise ApiError(401, f"Incorrect API key provided: {mask_key(key)}. You can find your API key at "
                                "https://platform.openai.com/account/api-keys.", code="invalid_api_key")

    def _next_fault(self) -> tuple[str, dict] | None:
        with self._lock:
            if self._queue:
                return self._queue.popleft()
            if self._rates:
                draw = self._random.random()
                for kind, rate in self._rates.items():
                    if draw < rate:
                        return kind, {"retry_after_ms": 1000}
                    draw -= rate
        return None

    def _validate(self, body: dict) -> _Order:
        """Check a request body in OpenAI's order: model, unknown keys, prompt, n, then the rest."""
        if "model" not in body:
            raise ApiError(400, "Missing required parameter: 'model'.", param="model",
                           code="missing_required_parameter")
        model = body["model"]
        if not isinstance(model, str):
            raise _invalid_type("model", "a string", model)
        with self._lock:
            served = model in MODELS and model in self.models
        if not served:
            raise ApiError(400, f"The model '{model}' does not exist.", type_="image_generation_user_error",
                           param="model", code="invalid_value")
        rules = MODELS[model]
        known = KNOWN_PARAMS + (("complexity",) if rules["complexities"] else ())
        for key in body:
            if key not in known:
                raise ApiError(400, f"Unknown parameter: '{key}'.", param=key, code="unknown_parameter")
        if "prompt" not in body:
            raise ApiError(400, "Missing required parameter: 'prompt'.", param="prompt",
                           code="missing_required_parameter")
        prompt = body["prompt"]
        if not isinstance(prompt, str):
            raise _invalid_type("prompt", "a string", prompt)
        if not prompt:
            raise ApiError(400, "Invalid 'prompt': empty string. Expected a string with minimum length 1, but got an "
                                "empty string instead.", param="prompt", code="empty_string")
        if len(prompt) > rules["max_prompt_chars"]:
            raise ApiError(400, f"Invalid 'prompt': string too long. Expected a string with maximum length "
                                f"{rules['max_prompt_chars']}, but got a string with length {len(prompt)} instead.",
                           param="prompt", code="string_above_max_length")
        n = _integer(body, "n", 1, 10, 1)
        compression = _integer(body, "output_compression", 0, 100, None)
        _integer(body, "partial_images", 0, 3, 0)
        quality = _enum(body, "quality", rules["qualities"], "auto")
        complexity = None
        if rules["complexities"]:
            complexity = _enum(body, "complexity", rules["complexities"], DEFAULT_COMPLEXITY)
        output_format = _enum(body, "output_format", rules["formats"], "png")
        background = _enum(body, "background", BACKGROUNDS, "auto")
        _enum(body, "moderation", MODERATIONS, "auto")
        width, height = resolve_size(model, body.get("size"))
        stream = body.get("stream")
        if stream is not None and not isinstance(stream, bool):
            raise _invalid_type("stream", "a boolean", stream)
        if stream:
            raise ApiError(400, "This stand-in does not stream: leave 'stream' out or send false.", param="stream",
                           code="unsupported_value")
        if background not in rules["backgrounds"]:
            raise ApiError(400, "Transparent background is not supported for this model.",
                           type_="image_generation_user_error", param="background", code="invalid_value")
        if background == "transparent" and output_format == "jpeg":
            raise ApiError(400, "Transparent background needs output_format 'png' or 'webp'.", param="background",
                           code="invalid_value")
        return _Order(model=model, prompt=prompt, n=n, size=f"{width}x{height}", width=width, height=height,
                      quality="high" if quality == "auto" else quality, output_format=output_format,
                      background="transparent" if background == "transparent" else "opaque",
                      compression=compression, complexity=complexity)

    def _admit(self, model: str, images: int) -> dict:
        """Take room in the rolling window for these images, or raise the 429; returns the x-ratelimit headers."""
        with self._lock:
            if self.images_per_minute is None:
                return {}
            span = self.window_seconds
            limit = max(1, round(self.images_per_minute * span / WINDOW_SECONDS))
            now = self._now()
            while self._window and self._window[0][0] <= now - span:
                self._window.popleft()
            used = sum(count for _, count in self._window)
            if used + images > limit:
                wait, freed = 0.0, 0
                for stamp, count in self._window:
                    freed += count
                    if used + images - freed <= limit:
                        wait = stamp + span - now
                        break
                else:
                    wait = span
                headers = self._ratelimit_headers(self._per_minute(limit), self._per_minute(max(0, limit - used)), wait)
                headers.update({"retry-after": str(max(1, math.ceil(wait))),
                                "retry-after-ms": str(math.ceil(wait * 1000))})
                raise ApiError(429, f"Rate limit reached for {model} in organization {ORGANIZATION} on images per min "
                                    f"(IPM): Limit {limit}, Used {used}, Requested {images}. Please try again in "
                                    f"{go_duration(wait)}. Visit https://platform.openai.com/account/rate-limits to "
                                    "learn more.", type_="requests", code="rate_limit_exceeded", headers=headers)
            self._window.append((now, images))
            reset = self._window[0][0] + span - now
            return self._ratelimit_headers(self._per_minute(limit), self._per_minute(limit - used - images), reset)

    def _per_minute(self, count: int) -> int:
        """A count in the shortened window as the per-minute figure OpenAI's headers give (limits are per minute)."""
        return int(count * WINDOW_SECONDS / self.window_seconds)

    @staticmethod
    def _ratelimit_headers(limit: int, remaining: int, reset: float) -> dict:
        headers = {}
        for unit in ("requests", "images"):
            headers.update({f"x-ratelimit-limit-{unit}": str(limit), f"x-ratelimit-remaining-{unit}": str(remaining),
                            f"x-ratelimit-reset-{unit}": go_duration(reset)})
        return headers

    def _fault(self, kind: str, options: dict, order: _Order, request_id: str) -> _Reply | None:
        """The answer for an injected fault; None when the fault still ends in a normal (or doctored) 200."""
        if kind == "rate_limit":
            wait_ms = options["retry_after_ms"]
            limit = self.images_per_minute or 5
            headers = self._ratelimit_headers(limit, 0, wait_ms / 1000)
            headers.update({"retry-after": str(max(1, math.ceil(wait_ms / 1000))), "retry-after-ms": str(wait_ms)})
            raise ApiError(429, f"Rate limit reached for {order.model} in organization {ORGANIZATION} on requests "
                                f"per min (RPM): Limit {limit}, Used {limit}, Requested 1. Please try again in "
                                f"{go_duration(wait_ms / 1000)}. Visit https://platform.openai.com/account/rate-limits "
                                "to learn more.", type_="requests", code="rate_limit_exceeded", headers=headers)
        if kind == "insufficient_quota":
            raise ApiError(429, "You exceeded your current quota, please check your plan and billing details. For more "
                                f"information on this error, read the docs: {DOCS}.", type_="insufficient_quota",
                           code="insufficient_quota")
        if kind == "server_error":
            raise ApiError(500, "The server had an error while processing your request. Sorry about that!",
                           type_="server_error")
        if kind == "unavailable":
            raise ApiError(503, "That model is currently overloaded with other requests. You can retry your request, "
                                "or contact us through our help center at help.openai.com if the error persists. "
                                f"(Please include the request ID {request_id} in your message.)", type_="server_error")
        if kind == "bad_gateway":
            return _Reply(502, BAD_GATEWAY_HTML.encode("ascii"), "text/html")
        return None

    def _generations(self, headers, raw: bytes, request_id: str) -> _Reply | None:
        """Answer POST /v1/images/generations; None when the stand-in stopped while the request slept."""
        started = time.monotonic()
        self._authenticate(headers.get("Authorization") or "")
        try:
            body = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            body = None
        if not isinstance(body, dict):
            raise ApiError(400, "We could not parse the JSON body of your request. (HINT: This likely means you "
                                "aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, but "
                                "what was sent was not valid JSON. If you have trouble figuring out how to fix this, "
                                "please contact us through our help center at help.openai.com.)")
        with self._lock:
            self.requests.append(body)
        order = self._validate(body)
        fault = self._next_fault()
        limit_headers: dict = {}
        if fault is not None:
            kind, options = fault
            reply = self._fault(kind, options, order, request_id)
            if reply is not None:
                return reply
            if kind == "hang" and self._sleep(self.hang_seconds):
                return None
        else:
            limit_headers = self._admit(order.model, order.n)
            marker = self.moderation_marker
            if marker and marker.lower() in order.prompt.lower():
                raise ApiError(400, "Your request was rejected by the safety system. If you believe this is an error, "
                                    f"contact us at help.openai.com and include the request ID {request_id}. "
                                    "safety_violations=[violence].", type_="image_generation_user_error",
                               code="moderation_blocked", headers=limit_headers)
        kind = fault[0] if fault else None
        created = int(self._now())
        if kind == "empty":
            payload = {"created": created, "data": []}
        else:
            if kind == "bad_base64":
                images = ["iVBORw0KGgo%%%not-base64%%%"] * order.n
            else:
                data = render_image(order.prompt, order.width, order.height, order.output_format,
                                    transparent=order.background == "transparent", compression=order.compression)
                images = [base64.b64encode(data).decode("ascii")] * order.n
            payload = {"created": created, "background": order.background, "data": [{"b64_json": b} for b in images],
                       "output_format": order.output_format, "quality": order.quality, "size": order.size,
                       "usage": usage_for(order.model, order.width, order.height, order.quality, order.prompt,
                                          order.complexity, n=order.n)}
        text = json.dumps(payload, indent=2).encode("utf-8")
        if kind == "malformed":
            text = text[: len(text) // 2]
        # The latency is the whole time the API takes, drawing included (as openai-processing-ms would show).
        if kind != "hang" and self._sleep(max(0.0, self.latency - (time.monotonic() - started))):
            return None
        return _Reply(200, text, headers=limit_headers, model=order.model, size=order.size)

    def _models(self, headers, model_id: str | None) -> _Reply:
        """Answer GET /v1/models and GET /v1/models/{id}."""
        self._authenticate(headers.get("Authorization") or "")
        with self._lock:
            ids = list(self.models)
        objects = [{"id": i, "object": "model", "created": MODELS.get(i, {}).get("created", 1_700_000_000),
                    "owned_by": "system"} for i in ids]
        if model_id is None:
            payload = {"object": "list", "data": objects}
        else:
            found = [o for o in objects if o["id"] == model_id]
            if not found:
                raise ApiError(404, f"The model `{model_id}` does not exist or you do not have access to it.",
                               param="model", code="model_not_found")
            payload = found[0]
        return _Reply(200, json.dumps(payload, indent=2).encode("utf-8"))


class _Server(TrackingHTTPServer):
    fake: FakeOpenAI


class _BodyTooLarge(Exception):
    pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "FakeOpenAI/1.0"
    sys_version = ""
    timeout = 15
    disable_nagle_algorithm = True
    server: _Server

    def log_request(self, code="-", size="-"):
        pass  # _dispatch logs each answer itself, with the model and size and without the key

    def log_message(self, format, *args):
        log.info("%s", format % args)

    def do_GET(self):
        self._dispatch("GET")

    def do_POST(self):
        self._dispatch("POST")

    def _dispatch(self, method: str):
        fake = self.server.fake
        started = time.monotonic()
        request_id = "req_" + secrets.token_hex(16)
        path = urlsplit(self.path).path.rstrip("/")
        generation = path == "/v1/images/generations" and method == "POST"
        if generation:
            fake._enter()
        reply = None
        try:
            reply = self._answer(fake, method, path, request_id)
        finally:
            if generation:  # counted before the answer goes out, so a client that has it sees the counters
                fake._leave(reply.status if reply is not None else None)
        if reply is None:  # stopped while sleeping: drop the connection, answer nothing
            self.close_connection = True
            return
        self._send(reply, request_id, started)
        if generation:
            prompt = reply.prompt[:30]
            log.info("%s %s -> %s model=%s size=%s %.0fms prompt=%r", method, path, reply.status, reply.model,
                     reply.size, (time.monotonic() - started) * 1000, prompt)
        else:
            log.info("%s %s -> %s", method, path, reply.status)

    def _answer(self, fake: FakeOpenAI, method: str, path: str, request_id: str) -> _Reply | None:
        try:
            raw = self._read_body()
        except _BodyTooLarge:
            self.close_connection = True
            return _Reply(413, json.dumps(ApiError(413, "Request body too large.").body()).encode("utf-8"))
        model, size, prompt = "-", "-", ""
        try:
            if path == "/v1/images/generations":
                model, size, prompt = _peek(raw)
                if method != "POST":
                    raise ApiError(405, f"Invalid method for URL ({method} {path}).", headers={"Allow": "POST"})
                reply = fake._generations(self.headers, raw, request_id)
            elif path == "/v1/models" and method == "GET":
                reply = fake._models(self.headers, None)
            elif path.startswith("/v1/models/") and method == "GET":
                reply = fake._models(self.headers, path[len("/v1/models/"):])
            else:
                reply = _Reply(404, b"", "text/plain", {"x-content-type-options": "nosniff"})
        except ApiError as exc:
            reply = _Reply(exc.status, json.dumps(exc.body(), indent=2).encode("utf-8"), headers=exc.headers)
        except Exception:
            log.exception("internal error in %s %s", method, path)
            error = ApiError(500, "The server had an error while processing your request. Sorry about that!",
                             type_="server_error")
            reply = _Reply(500, json.dumps(error.body(), indent=2).encode("utf-8"))
        if reply is not None and reply.model == "-":
            reply.model, reply.size = model, size
        if reply is not None:
            reply.prompt = prompt
        return reply

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            raise _BodyTooLarge
        return self.rfile.read(length) if length else b""

    def _send(self, reply: _Reply, request_id: str, started: float) -> None:
        try:
            self.send_response(reply.status)
            self.send_header("Content-Type", reply.ctype)
            self.send_header("Content-Length", str(len(reply.body)))
            self.send_header("x-request-id", request_id)
            self.send_header("openai-processing-ms", str(round((time.monotonic() - started) * 1000)))
            self.send_header("openai-version", "2020-10-01")
            self.send_header("openai-organization", ORGANIZATION)
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(reply.body)
        except OSError:  # the client gave up (a read timeout) or stop() dropped the connection
            self.close_connection = True


def _peek(raw: bytes) -> tuple[str, str, str]:
    """Model, size and prompt of a request body, for the log line (never trusted for anything else)."""
    try:
        body = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return "-", "-", ""
    if not isinstance(body, dict):
        return "-", "-", ""
    pick = [body.get(k) for k in ("model", "size", "prompt")]
    model, size, prompt = (v if isinstance(v, str) else "-" for v in pick)
    return model[:40], size[:20], prompt if prompt != "-" else ""


# ----- command line ------------------------------------------------------------------------------

def parse_args(argv=None):
    """Parse the command line (see the module docstring)."""
    parser = argparse.ArgumentParser(description="OpenAI Images API stand-in on 127.0.0.1.")
    parser.add_argument("--port", type=int, default=8010, help="port on 127.0.0.1 (0 = any free port)")
    parser.add_argument("--api-key", default="sk-test-fake-openai", help="the key clients must send")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds each generation takes")
    parser.add_argument("--images-per-minute", type=int, default=None, help="rolling 60-s limit (default: none)")
    parser.add_argument("--moderation-marker", default="FORBIDDEN", help="prompts containing it are refused")
    parser.add_argument("--window-seconds", type=float, default=WINDOW_SECONDS,
                        help="the rate window (default 60); shorter scales the limit to it, as a quantized limit")
    parser.add_argument("--hang-seconds", type=float, default=30.0, help="how long a 'hang' fault sleeps")
    parser.add_argument("--fault", action="append", default=[], metavar="KIND=RATE",
                        help=f"random faults per generation; KIND one of {', '.join(FAULT_KINDS)}")
    parser.add_argument("--seed", type=int, default=None, help="seed for the random faults")
    parser.add_argument("--models", default=None, help="comma-separated model ids to serve (default: all)")
    return parser.parse_args(argv)


def build_from_args(args) -> FakeOpenAI:
    """A configured (not yet started) FakeOpenAI from parsed command-line arguments."""
    models = [m for m in args.models.split(",") if m] if args.models else None
    fake = FakeOpenAI(api_key=args.api_key, latency=args.latency, images_per_minute=args.images_per_minute,
                      port=args.port, moderation_marker=args.moderation_marker, hang_seconds=args.hang_seconds,
                      models=models, window_seconds=args.window_seconds)
    rates = {}
    for spec in args.fault:
        kind, _, rate = spec.partition("=")
        rates[kind] = float(rate)
    if rates:
        fake.fault_rates(rates, seed=args.seed)
    return fake


def main(argv=None) -> int:
    """Run the stand-in from the command line until Ctrl+C."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        fake = build_from_args(parse_args(argv))
    except (ValueError, OSError) as exc:
        print(f"fake_openai: {exc}", file=sys.stderr)
        return 2
    return serve_until_stopped(fake, f"{fake.base_url}/v1")



if __name__ == "__main__":
    sys.exit(main())
