"""A small OpenAI stand-in on 127.0.0.1: ``POST /v1/images/generations``, ``GET /v1/models``, Files and Batch APIs.

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

Files and Batch API (read 2026-12): ``POST /v1/files`` (multipart: ``file``, ``purpose``, optional
``expires_after[anchor]`` / ``expires_after[seconds]``), ``GET /v1/files`` (``purpose``, ``order``,
``after``, ``limit``), ``GET`` / ``DELETE /v1/files/{id}``, ``GET /v1/files/{id}/content``,
``POST /v1/batches``, ``GET /v1/batches`` (``after``, ``limit`` 1..100, default 20, newest first),
``GET /v1/batches/{id}``, ``POST /v1/batches/{id}/cancel``. Only ``/v1/images/generations`` batches
run; each line's body goes through the synchronous endpoint's validation and drawing.

* Shapes from openai-python's generated types (``types/batch.py``, ``batch_error.py``,
  ``batch_request_counts.py``, ``batch_usage.py``, ``batch_create_params.py``, ``file_object.py``,
  ``file_deleted.py``) and the OpenAPI spec it ships (``api_reference/openapi.transformed.yml``:
  ``Batch``, ``ListBatchesResponse``, ``OpenAIFile``, ``BatchFileExpirationAfter``); the openai-python
  3.57 client, run once against this stand-in, parsed every answer with no unknown field. The batch
  object lists every field in the reference example's order, ``model`` and ``usage`` included
  (``usage``: ``input_tokens``,
  ``input_tokens_details.cached_tokens`` 0, ``output_tokens``, ``output_tokens_details.reasoning_tokens``
  0, ``total_tokens``, the sum of the successful lines' image usage). ``errors`` is null or
  ``{"object": "list", "data": [{code, message, param, line}]}``.
* The batch guide (platform.openai.com/docs/guides/batch): the JSONL line ``{custom_id, method:
  "POST", url, body}``, one model per file, unique ``custom_id``s, 50,000 requests and 200 MB per
  file, the statuses, the output line ``{"id": "batch_req_...", "custom_id", "response":
  {"status_code", "request_id", "body"}, "error": null}``, output files deleted after 30 days, and
  expiry: unfinished requests go to the error file as ``{"id", "custom_id", "response": null,
  "error": {"code": "batch_expired", "message": "This request could not be executed before the
  completion window expired."}}`` while the finished ones stay in the output file.
* Observed on the live API by others: a failed request's line carries its HTTP status and the error
  body (``response.status_code`` 400, ``body.error`` with message/type/param/code, ``error`` null;
  ``request_id`` 32 hex digits without ``req_``) (openai/openai-openapi#302); a failed validation is
  status ``failed`` with ``failed_at`` = ``created_at``, ``in_progress_at`` null, request_counts all 0,
  no files, errors like ``invalid_json_line`` / line 1 / "This line is not parseable as valid JSON."
  (flyteorg flytekit's openai batch test data, llamastack's integration tests); no output file when
  no request succeeded (ProjectTech4DevAI/kaapi-backend#723); a cancelled batch keeps an output and an
  error file with ``failed`` 0 for the requests that never ran, and cancelling it again answers 200
  (BerriAI/litellm#36034); cancelling a finished batch is 409 "Cannot cancel a batch with status
  'completed'." (litellm's tests, a Ruby client's comment); an upload for ``batch`` whose name is not
  ``.jsonl`` is 400 "Invalid file format for Batch API. Must be .jsonl" (code and param null), a
  ``batch`` file is ``status: "processed"`` with ``expires_at`` = created + 30 days (litellm#37527); an
  unknown file is 404 "No such File object: file-..." with param ``id``; an unknown batch is 404
  ``batch_not_found`` (litellm#37148).
* The stand-in's own wording (none published): the 404 message "No batch found with id '...'.", the
  validation codes and messages other than ``invalid_json_line`` (``url_mismatch``,
  ``duplicate_custom_id``, ``model_mismatch``, ``too_many_tasks``, ``empty_file`` are the codes a gateway
  project's review calls documented, stdapi-ai/stdapi.ai#240; ``missing_required_parameter``,
  ``invalid_type``, ``invalid_value`` reuse OpenAI's generic envelopes), the cancelled line's message
  (code ``batch_cancelled``), the metadata and file-size errors, and every refusal of this stand-in's
  limits (other endpoints, Content-Type).

Where the batches differ from OpenAI (on purpose, or where the docs are silent):

* Requests run one after another in file order and the output keeps that order (OpenAI: any order).
  ``fake.batch_pace`` (``batch_pace=`` / ``--batch-pace STAGE=SECONDS``) sets the seconds of each
  stage: ``validating``, ``per_request`` (drawing included), ``finalizing``, ``cancelling``; all 0 by
  default. Each batch runs in its own thread; the create answer is always ``validating``.
* Body problems do not fail the batch: each line gets exactly the 400 the synchronous endpoint would
  give (unknown model, bad size, unknown key, ...) in the error file, and counts as ``failed``. The
  ``moderation_marker`` refuses a line as it refuses a request; ``fake.batch_line_faults =
  {custom_id: kind}`` gives a line a ``moderation_blocked`` 400, ``server_error`` 500 or
  ``unavailable`` 503 body. ``fail_next`` / ``fault_rates``, ``latency`` and the rate limit act on the
  synchronous endpoint only (the Batch API has its own limits); batch bodies are recorded in
  ``fake.batch_requests`` ({batch_id, custom_id, body}), not in ``fake.requests``.
* Validation fails the batch with every error it finds (lines numbered from 1, blank lines skipped
  but counted); ``fake.max_batch_lines`` (50,000) and ``fake.max_batch_file_bytes`` (200 MB, checked
  at upload) make the limits testable.
* Expiry: ``expires_at`` = ``created_at`` + ``fake.batch_window_seconds`` (86,400); the batch expires
  before its next request once the clock reaches it (``clock=`` makes that testable), or once
  ``fake.batch_expire_after_requests`` requests have run (an expired batch with half the results).
  Expired and cancelled batches skip ``finalizing``; requests that never ran go to the error file
  and are not counted as failed (as observed for cancel; the docs are silent for expiry). A cancel is
  taken while ``validating`` or ``in_progress``; the request in flight finishes first.
* Files live in a private temporary folder (``fake.files_dir``, removed by ``stop()``); results are
  appended line by line as requests finish and registered (ids, ``batch_output`` files named
  ``{batch_id}_output.jsonl`` / ``_error.jsonl``) when the batch ends. ``GET .../content`` streams from
  disk with a Content-Length as ``application/octet-stream`` (the spec says only "string"), so
  gigabytes of base64 cost no memory: 63 MB of output stream with the stand-in's peak RSS up by under
  1 MB. A file past its ``expires_at`` answers 404. ``fake.content_cutoff = 0.5`` serves batch
  output files cut off mid-line near that fraction with a matching Content-Length;
  ``fake.content_cutoff_drop = True`` instead promises the whole length and drops the connection.
  ``fake.content_pace = 0.2`` sends a file 16 KB at a time, each after that wait: a slow download to kill.
* Prices: a batch line's ``usage`` is the synchronous one; OpenAI bills batches at half price
  (``BATCH_DISCOUNT``), which nothing in the API shows: ``usage_cost(usage, batch=True)`` halves.

Python use::

    fake = FakeOpenAI(api_key="sk-test-fake-openai", latency=0.0, images_per_minute=None, port=0, clock=None,
                      batch_pace=None, files_dir=None)
    fake.start()                      # OPENAI_BASE_URL = fake.base_url + "/v1"
    fake.latency = 0.25; fake.images_per_minute = 60; fake.moderation_marker = "FORBIDDEN"
    fake.fail_next("rate_limit", count=1, retry_after_ms=200)
    fake.fault_rates({"rate_limit": 0.1, "server_error": 0.1}, seed=1)
    fake.requests, fake.count_by_status, fake.in_flight, fake.max_in_flight
    fake.batch_pace = {"validating": 0.1, "per_request": 0.05, "finalizing": 0.1, "cancelling": 0.1}
    fake.batch_line_faults = {"item-7": "server_error"}; fake.batch_expire_after_requests = 3
    fake.batch_window_seconds = 86400; fake.max_batch_lines = 50_000; fake.max_batch_file_bytes = 200 * 2**20
    fake.content_cutoff = 0.5; fake.content_cutoff_drop = False; fake.content_pace = 0.0
    fake.batch_requests; fake.files_dir
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
        --images-per-minute 60 --fault rate_limit=0.05 --fault server_error=0.02 --seed 1 \\
        --batch-pace validating=1 --batch-pace per_request=0.5 --batch-expire-after-requests 10 \\
        --max-batch-lines 100 --batch-window-seconds 600 --content-cutoff 0.5 --files-dir /tmp
"""

from __future__ import annotations

import argparse
import base64
import email.message
import functools
import hashlib
import hmac
import io
import json
import logging
import math
import os
import random
import re
import secrets
import shutil
import string
import sys
import tempfile
import textwrap
import threading
import time
import weakref
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs, urlsplit

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
#: The Files API's purposes an upload may name (openai-python ``FilePurpose``) and the Batch API's endpoints
#: (``BatchCreateParams.endpoint``); the stand-in runs batches of /v1/images/generations only.
FILE_PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data", "evals")
BATCH_ENDPOINTS = ("/v1/responses", "/v1/chat/completions", "/v1/embeddings", "/v1/completions", "/v1/moderations",
                   "/v1/images/generations", "/v1/images/edits", "/v1/videos")
BATCH_SERVED_ENDPOINTS = ("/v1/images/generations",)
BATCH_MAX_LINES = 50_000  # requests per input file
BATCH_MAX_FILE_BYTES = 200 * 1024 * 1024  # a batch input file
UPLOAD_MAX_BYTES = 512 * 1024 * 1024  # any uploaded file
BATCH_WINDOW_SECONDS = 24 * 3600  # completion_window "24h", the only one
FILE_TTL_SECONDS = 30 * 24 * 3600  # batch input and output files expire after 30 days unless told otherwise
OUTPUT_TTL_RANGE = (3600, 2_592_000)  # expires_after / output_expires_after seconds
METADATA_LIMITS = {"keys": 16, "key_chars": 64, "value_chars": 512}
#: Seconds each batch stage takes (``per_request`` includes drawing the image); see FakeOpenAI.batch_pace.
BATCH_PACE = {"validating": 0.0, "per_request": 0.0, "finalizing": 0.0, "cancelling": 0.0}
#: What ``FakeOpenAI.batch_line_faults`` may make of a line (by custom_id): the 400, 500 or 503 body a request gets.
BATCH_LINE_FAULTS = ("moderation_blocked", "server_error", "unavailable")
BATCH_TERMINAL = ("failed", "completed", "expired", "cancelled")
BATCH_DISCOUNT = 0.5  # OpenAI bills batch requests at half the synchronous price; nothing in the API shows it
EXPIRED_LINE_ERROR = {"code": "batch_expired",
                      "message": "This request could not be executed before the completion window expired."}
CANCELLED_LINE_ERROR = {"code": "batch_cancelled",
                        "message": "This request was not executed because the batch was cancelled."}
STREAM_CHUNK = 256 * 1024
PACED_CHUNK = 16 * 1024  # a paced download's piece (fake.content_pace): many small pieces, each after a wait
ID_ALPHABET = string.ascii_letters + string.digits
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


def usage_cost(usage: dict, batch: bool = False) -> float:
    """What a ``usage`` object costs in USD at the GPT Image 2.x token prices; ``batch``: at the Batch API's half."""
    details = usage["input_tokens_details"]
    cost = (details["text_tokens"] * PRICE_PER_MILLION["text_input"]
            + details["image_tokens"] * PRICE_PER_MILLION["image_input"]
            + usage["output_tokens"] * PRICE_PER_MILLION["image_output"]) / 1_000_000
    return cost * BATCH_DISCOUNT if batch else cost


def _zero_batch_usage() -> dict:
    return {"input_tokens": 0, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": 0,
            "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 0}


def _new_id(prefix: str, length: int = 22, alphabet: str = ID_ALPHABET) -> str:
    return prefix + "".join(secrets.choice(alphabet) for _ in range(length))


# ----- Files and Batch API: the stored objects, the upload, the results ------------------------------

@dataclass
class _File:
    """A file of the Files API; its bytes live on disk at ``path``."""

    id: str
    filename: str
    purpose: str
    bytes: int
    created_at: int
    expires_at: int | None
    path: str

    def public(self) -> dict:
        """The file object as OpenAI answers it (``status`` and ``status_details`` are deprecated but sent)."""
        return {"id": self.id, "object": "file", "bytes": self.bytes, "created_at": self.created_at,
                "expires_at": self.expires_at, "filename": self.filename, "purpose": self.purpose,
                "status": "processed", "status_details": None}


@dataclass
class _Entry:
    """One valid line of a batch's input file: where it is, to read it again when its turn comes."""

    line: int
    offset: int
    length: int
    custom_id: str


@dataclass
class _Batch:
    """A batch and its progress; changed only under FakeOpenAI._lock."""

    id: str
    endpoint: str
    input_file_id: str
    completion_window: str
    metadata: dict | None
    output_ttl: int
    created_at: int
    expires_at: int
    input: io.BufferedReader
    status: str = "validating"
    model: str | None = None
    errors: list | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    in_progress_at: int | None = None
    finalizing_at: int | None = None
    completed_at: int | None = None
    failed_at: int | None = None
    expired_at: int | None = None
    cancelling_at: int | None = None
    cancelled_at: int | None = None
    total: int = 0
    completed: int = 0
    failed: int = 0
    usage: dict = field(default_factory=_zero_batch_usage)
    cancel_requested: bool = False
    thread: threading.Thread | None = None

    def public(self) -> dict:
        """The batch object in the order OpenAI's reference example lists its fields."""
        return {"id": self.id, "object": "batch", "endpoint": self.endpoint, "model": self.model,
                "errors": None if self.errors is None else {"object": "list", "data": list(self.errors)},
                "input_file_id": self.input_file_id, "completion_window": self.completion_window,
                "status": self.status, "output_file_id": self.output_file_id, "error_file_id": self.error_file_id,
                "created_at": self.created_at, "in_progress_at": self.in_progress_at, "expires_at": self.expires_at,
                "finalizing_at": self.finalizing_at, "completed_at": self.completed_at, "failed_at": self.failed_at,
                "expired_at": self.expired_at, "cancelling_at": self.cancelling_at, "cancelled_at": self.cancelled_at,
                "request_counts": {"total": self.total, "completed": self.completed, "failed": self.failed},
                "usage": json.loads(json.dumps(self.usage)), "metadata": self.metadata}


def _batch_error(code: str, message: str, line: int | None = None, param: str | None = None) -> dict:
    return {"code": code, "message": message, "param": param, "line": line}


class _ResultFiles:
    """A batch's output and error JSONL, appended line by line on disk (each file exists once it has a line)."""

    def __init__(self, folder: str, batch_id: str):
        self.paths = {kind: os.path.join(folder, f"{batch_id}_{kind}.jsonl") for kind in ("output", "error")}
        self._handles: dict[str, io.BufferedWriter] = {}

    def write(self, kind: str, line: dict) -> None:
        """Append one line to the output or the error file, flushed so that it is on disk at once."""
        handle = self._handles.get(kind)
        if handle is None:
            handle = self._handles[kind] = open(self.paths[kind], "wb")  # noqa: SIM115 - closed by close()
        handle.write(json.dumps(line).encode("utf-8") + b"\n")
        handle.flush()

    def close(self) -> dict[str, tuple[str, int]]:
        """Close the files; {kind: (path, bytes)} for those that got a line."""
        done = {}
        for kind, handle in self._handles.items():
            handle.close()
            done[kind] = (self.paths[kind], os.path.getsize(self.paths[kind]))
        self._handles.clear()
        return done


class _MultipartError(Exception):
    pass


class _ChunkedBody:
    """Reads a body sent with Transfer-Encoding: chunked (httpx does so when it cannot tell a file's length)."""

    def __init__(self, rfile):
        self.rfile, self.left, self.done = rfile, 0, False

    def read(self, size: int) -> bytes:
        """Up to ``size`` bytes of the decoded body; b"" at its end."""
        if self.done:
            return b""
        if self.left == 0:
            try:
                self.left = int(self.rfile.readline(1024).split(b";")[0].strip(), 16)
            except ValueError:
                raise _MultipartError("a bad chunk size") from None
            if self.left == 0:
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                self.done = True
                return b""
        data = self.rfile.read(min(size, self.left))
        if not data:
            raise _MultipartError("the body ended early")
        self.left -= len(data)
        if self.left == 0:
            self.rfile.readline(16)  # the CRLF after each chunk
        return data


class _LengthBody:
    """Reads exactly Content-Length bytes, no more."""

    def __init__(self, rfile, length: int):
        self.rfile, self.left = rfile, length

    def read(self, size: int) -> bytes:
        """Up to ``size`` bytes; b"" at the end of the body."""
        if self.left <= 0:
            return b""
        data = self.rfile.read(min(size, self.left))
        if not data:
            raise _MultipartError("the body ended early")
        self.left -= len(data)
        return data


def _content_params(header: str, value: str) -> email.message.Message:
    message = email.message.Message()
    message[header] = value
    return message


def parse_multipart(read, boundary: bytes, sink_for) -> dict[str, str]:
    """Stream a multipart/form-data body: text fields into the returned dict, files into sink_for(name, filename)."""
    # read(n) gives the next bytes of the body (b"" at its end); sink_for returns an object with write(). Only a
    # window of the body is held in memory, so an upload of hundreds of megabytes costs a few hundred KB.
    delim = b"--" + boundary
    marker = b"\r\n" + delim
    buf = bytearray()

    def fill() -> bool:
        data = read(STREAM_CHUNK)
        buf.extend(data)
        return bool(data)

    while (start := buf.find(delim)) < 0:
        if len(buf) > len(delim):
            del buf[:len(buf) - len(delim)]
        if not fill():
            raise _MultipartError("no multipart boundary in the body")
    del buf[:start + len(delim)]
    fields: dict[str, str] = {}
    while True:
        while len(buf) < 2:
            if not fill():
                raise _MultipartError("the body ended early")
        if buf[:2] == b"--":
            while read(STREAM_CHUNK):
                pass  # the epilogue
            return fields
        if buf[:2] != b"\r\n":
            raise _MultipartError("a malformed boundary line")
        del buf[:2]
        while (end := buf.find(b"\r\n\r\n")) < 0:
            if len(buf) > 16384 or not fill():
                raise _MultipartError("a part without a header block")
        head = bytes(buf[:end]).decode("utf-8", "replace")
        del buf[:end + 4]
        disposition = ""
        for header in head.split("\r\n"):
            name, _, value = header.partition(":")
            if name.strip().lower() == "content-disposition":
                disposition = value.strip()
        params = _content_params("content-disposition", disposition)
        name, filename = params.get_param("name", header="content-disposition"), params.get_filename()
        if not isinstance(name, str):
            raise _MultipartError("a part without a name")
        value = bytearray()
        write = sink_for(name, filename).write if filename is not None else value.extend
        keep = len(marker) - 1
        while (end := buf.find(marker)) < 0:
            if len(buf) > keep:
                write(bytes(buf[:-keep]))
                del buf[:-keep]
            if filename is None and len(value) > 65536:
                raise _MultipartError(f"the field '{name}' is too long")
            if not fill():
                raise _MultipartError("the body ended early")
        write(bytes(buf[:end]))
        del buf[:end + len(marker)]
        if filename is None:
            fields[name] = value.decode("utf-8", "replace")


class _UploadSink:
    """Writes an uploaded file part to disk up to ``limit`` bytes and counts all of it."""

    def __init__(self, path: str, filename: str, limit: int):
        self.path, self.filename, self.limit, self.size = path, filename, limit, 0
        self._file = open(path, "wb")  # noqa: SIM115 - closed by close()

    def write(self, data: bytes) -> None:
        """Count the bytes; keep them while the file is within the limit."""
        self.size += len(data)
        if self.size <= self.limit:
            self._file.write(data)

    def close(self) -> None:
        """Close the file on disk."""
        self._file.close()


class _NullSink:
    """Drops what is written to it."""

    def write(self, data: bytes) -> None:
        """Forget the bytes."""


def _cut_point(handle, size: int, fraction: float) -> int:
    """A byte offset near ``fraction`` of the file that falls in the middle of a line, never at its end."""
    target = max(1, min(size - 1, int(size * fraction)))
    start = 0
    position = target
    while position > 0:  # back to the newline before the target
        step = min(STREAM_CHUNK, position)
        handle.seek(position - step)
        chunk = handle.read(step)
        found = chunk.rfind(b"\n")
        if found >= 0:
            start = position - step + found + 1
            break
        position -= step
    end = size
    position = target
    while position < size:  # on to the newline after it
        handle.seek(position)
        chunk = handle.read(STREAM_CHUNK)
        found = chunk.find(b"\n")
        if found >= 0:
            end = position + found
            break
        position += len(chunk)
    handle.seek(0)
    return start + max(1, (end - start) // 2)


def _json_body(raw: bytes) -> dict:
    """A request's JSON object, or the 400 OpenAI sends for a body that is not one."""
    try:
        body = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        body = None
    if not isinstance(body, dict):
        raise ApiError(400, "We could not parse the JSON body of your request. (HINT: This likely means you "
                            "aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, but "
                            "what was sent was not valid JSON. If you have trouble figuring out how to fix this, "
                            "please contact us through our help center at help.openai.com.)")
    return body


def _checked_metadata(metadata) -> dict | None:
    """Batch metadata as OpenAI limits it: at most 16 string pairs, keys up to 64 and values up to 512 characters."""
    if metadata is None:
        return None
    if not isinstance(metadata, dict):
        raise _invalid_type("metadata", "an object", metadata)
    if len(metadata) > METADATA_LIMITS["keys"]:
        raise ApiError(400, f"Invalid 'metadata': too many properties. Expected an object with at most "
                            f"{METADATA_LIMITS['keys']} properties, but got an object with {len(metadata)} properties "
                            "instead.", param="metadata", code="object_above_max_properties")
    for key, value in metadata.items():
        if len(key) > METADATA_LIMITS["key_chars"]:
            raise ApiError(400, f"Invalid 'metadata': the key '{key[:20]}...' is longer than "
                                f"{METADATA_LIMITS['key_chars']} characters.", param="metadata",
                           code="invalid_value")
        if not isinstance(value, str):
            raise _invalid_type(f"metadata.{key}", "a string", value)
        if len(value) > METADATA_LIMITS["value_chars"]:
            raise ApiError(400, f"Invalid 'metadata.{key}': string too long. Expected a string with maximum length "
                                f"{METADATA_LIMITS['value_chars']}, but got a string with length {len(value)} instead.",
                           param=f"metadata.{key}", code="string_above_max_length")
    return dict(metadata)


def _query_integer(query: dict, name: str, low: int, high: int, default: int) -> int:
    """An integer query parameter (limit), checked with the API's integer wording."""
    if name not in query:
        return default
    text = query[name]
    if not re.fullmatch(r"-?[0-9]+", text.strip()):
        raise _invalid_type(name, "an integer", text)
    return _integer({name: int(text)}, name, low, high, default)


def _page(objects: list[dict], after: str | None, limit: int) -> dict:
    """A cursor page of a list: the objects after the one with id ``after``, at most ``limit`` of them."""
    if after:
        ids = [o["id"] for o in objects]
        objects = objects[ids.index(after) + 1:] if after in ids else []
    page = objects[:limit]
    return {"object": "list", "data": page, "first_id": page[0]["id"] if page else None,
            "last_id": page[-1]["id"] if page else None, "has_more": len(objects) > limit}


def _line_problem(line, endpoint: str) -> dict | None:
    """What is wrong with one parsed line of a batch input file ({custom_id, method, url, body}), or None."""
    if not isinstance(line, dict):
        return _batch_error("invalid_request", "Each line must be a JSON object with 'custom_id', 'method', 'url' "
                                               "and 'body'.")
    for key in ("custom_id", "method", "url", "body"):
        if key not in line:
            return _batch_error("missing_required_parameter", f"Missing required parameter: '{key}'.", param=key)
    for key in ("custom_id", "method", "url"):
        if not isinstance(line[key], str):
            problem = _invalid_type(key, "a string", line[key])
            return _batch_error(problem.code, problem.message, param=key)
    if not isinstance(line["body"], dict):
        problem = _invalid_type("body", "an object", line["body"])
        return _batch_error(problem.code, problem.message, param="body")
    if not line["custom_id"]:
        return _batch_error("empty_string", "Invalid 'custom_id': empty string. Expected a string with minimum length "
                                            "1, but got an empty string instead.", param="custom_id")
    if line["method"] != "POST":
        return _batch_error("invalid_value", f"Invalid value: '{line['method']}'. Supported values are: 'POST'.",
                            param="method")
    if line["url"] != endpoint:
        return _batch_error("url_mismatch", f"The URL '{line['url']}' of this request does not match the batch's "
                                            f"endpoint '{endpoint}'. A batch's requests must all use its endpoint.",
                            param="url")
    return None


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
    stream: io.BufferedReader | None = None  # a file sent from disk instead of ``body``: ``length`` bytes of it
    length: int = 0
    advertised: int | None = None  # a Content-Length larger than ``length``: the connection drops after ``length``
    pace: float = 0.0  # seconds to wait before each chunk of ``stream`` (a slow link, for tests that kill mid-way)


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
                 hang_seconds: float = 30.0, models=None, window_seconds: float = WINDOW_SECONDS,
                 batch_pace: dict | None = None, files_dir: str | None = None):
        if host != "127.0.0.1":
            raise ValueError("the OpenAI stand-in binds 127.0.0.1 only")
        self.api_key = api_key
        self.clock = clock or time.time
        if not 0 < window_seconds <= WINDOW_SECONDS:
            raise ValueError("window_seconds must be more than 0 and at most 60")
        self.window_seconds = float(window_seconds)
        self._defaults = {"latency": float(latency), "images_per_minute": images_per_minute,
                          "moderation_marker": moderation_marker, "hang_seconds": float(hang_seconds),
                          "models": list(models) if models is not None else list(MODELS),
                          "batch_pace": self._checked_pace(batch_pace or {})}
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
        # Files and batches: the files' bytes in a private folder, removed by stop() (or when the object goes).
        self.files_dir = tempfile.mkdtemp(prefix="fake-openai-files-", dir=files_dir)
        self._remove_files = weakref.finalize(self, shutil.rmtree, self.files_dir, True)
        self._files: dict[str, _File] = {}
        self._batches: dict[str, _Batch] = {}
        self._batch_pace = dict(self._defaults["batch_pace"])
        self.batch_line_faults: dict[str, str] = {}
        self.batch_expire_after_requests: int | None = None
        self.batch_window_seconds = BATCH_WINDOW_SECONDS
        self.max_batch_lines = BATCH_MAX_LINES
        self.max_batch_file_bytes = BATCH_MAX_FILE_BYTES
        self.content_cutoff: float | None = None
        self.content_cutoff_drop = False
        self.content_pace = 0.0  # seconds before each STREAM_CHUNK of a file's content: a slow download
        self.batch_requests: list[dict] = []
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

    @property
    def batch_pace(self) -> dict:
        """Seconds per batch stage: validating, per_request (drawing included), finalizing, cancelling."""
        return dict(self._batch_pace)

    @batch_pace.setter
    def batch_pace(self, pace: dict) -> None:
        self._batch_pace = self._checked_pace(pace)

    @staticmethod
    def _checked_pace(pace: dict) -> dict:
        unknown = set(pace) - set(BATCH_PACE)
        if unknown:
            raise ValueError(f"batch_pace takes {', '.join(BATCH_PACE)}, not {', '.join(sorted(unknown))}")
        if any(not isinstance(v, (int, float)) or v < 0 for v in pace.values()):
            raise ValueError("batch_pace values are seconds, 0 or more")
        return {**BATCH_PACE, **{k: float(v) for k, v in pace.items()}}

    def reset(self) -> None:
        """Clear faults and the rate window; latency, limits, marker, models, batch knobs as constructed."""
        with self._lock:
            self._queue.clear()
            self._rates = {}
            self._window.clear()
            self.latency = self._defaults["latency"]
            self.images_per_minute = self._defaults["images_per_minute"]
            self.moderation_marker = self._defaults["moderation_marker"]
            self.hang_seconds = self._defaults["hang_seconds"]
            self.models = list(self._defaults["models"])
            self._batch_pace = dict(self._defaults["batch_pace"])
            self.batch_line_faults = {}
            self.batch_expire_after_requests = None
            self.batch_window_seconds = BATCH_WINDOW_SECONDS
            self.max_batch_lines = BATCH_MAX_LINES
            self.max_batch_file_bytes = BATCH_MAX_FILE_BYTES
            self.content_cutoff = None
            self.content_cutoff_drop = False
            self.content_pace = 0.0

    def stop(self) -> None:
        """Stop serving (see ServedStandIn.stop), let the batch threads end and delete the files' folder."""
        super().stop()
        with self._lock:
            threads = [b.thread for b in self._batches.values() if b.thread is not None]
        for thread in threads:
            thread.join(timeout=5)
        self._remove_files()

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
        body = _json_body(raw)
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
            self._moderate(order, request_id, limit_headers)
        kind = fault[0] if fault else None
        text = json.dumps(self._image_payload(order, kind), indent=2).encode("utf-8")
        if kind == "malformed":
            text = text[: len(text) // 2]
        # The latency is the whole time the API takes, drawing included (as openai-processing-ms would show).
        if kind != "hang" and self._sleep(max(0.0, self.latency - (time.monotonic() - started))):
            return None
        return _Reply(200, text, headers=limit_headers, model=order.model, size=order.size)

    def _moderate(self, order: _Order, request_id: str, headers: dict | None = None) -> None:
        """Refuse a prompt that carries the moderation marker, as the safety system does."""
        marker = self.moderation_marker
        if marker and marker.lower() in order.prompt.lower():
            raise ApiError(400, "Your request was rejected by the safety system. If you believe this is an error, "
                                f"contact us at help.openai.com and include the request ID {request_id}. "
                                "safety_violations=[violence].", type_="image_generation_user_error",
                           code="moderation_blocked", headers=headers)

    def _image_payload(self, order: _Order, kind: str | None = None) -> dict:
        """The images response for a validated order (``kind``: an injected broken-200 fault, or None)."""
        created = int(self._now())
        if kind == "empty":
            return {"created": created, "data": []}
        if kind == "bad_base64":
            images = ["iVBORw0KGgo%%%not-base64%%%"] * order.n
        else:
            data = render_image(order.prompt, order.width, order.height, order.output_format,
                                transparent=order.background == "transparent", compression=order.compression)
            images = [base64.b64encode(data).decode("ascii")] * order.n
        return {"created": created, "background": order.background, "data": [{"b64_json": b} for b in images],
                "output_format": order.output_format, "quality": order.quality, "size": order.size,
                "usage": usage_for(order.model, order.width, order.height, order.quality, order.prompt,
                                   order.complexity, n=order.n)}

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

    # ----- Files API -----------------------------------------------------------------------------

    def _reply(self, payload: dict, status: int = 200) -> _Reply:
        return _Reply(status, json.dumps(payload, indent=2).encode("utf-8"))

    def _upload(self, headers, rfile) -> _Reply:
        """Answer POST /v1/files: stream the multipart body, the file part straight to disk."""
        self._authenticate(headers.get("Authorization") or "")
        ctype = headers.get("Content-Type") or ""
        boundary = None
        params = _content_params("content-type", ctype)
        if params.get_content_type() == "multipart/form-data":
            boundary = params.get_param("boundary")
        if not isinstance(boundary, str) or not boundary:
            raise ApiError(400, f"Invalid Content-Type header ({ctype or 'none'}), expected multipart/form-data.")
        if (headers.get("Transfer-Encoding") or "").lower() == "chunked":
            body = _ChunkedBody(rfile)
        else:
            try:
                length = int(headers.get("Content-Length") or "")
            except ValueError:
                raise ApiError(411, "A request with a body needs a Content-Length or chunked transfer "
                                    "encoding.") from None
            if length > UPLOAD_MAX_BYTES + 1024 * 1024:
                raise ApiError(413, "Request body too large.")
            body = _LengthBody(rfile, length)
        file_id = _new_id("file-")
        sinks: list[_UploadSink] = []
        extra: list[str] = []

        def sink_for(name: str, filename: str):
            if name != "file" or sinks:
                extra.append(name)
                return _NullSink()  # an unknown or a second file field: refused below, its bytes dropped
            sinks.append(_UploadSink(os.path.join(self.files_dir, file_id), filename, UPLOAD_MAX_BYTES))
            return sinks[0]

        try:
            fields = parse_multipart(body.read, boundary.encode("latin-1"), sink_for)
        except _MultipartError as exc:
            for sink in sinks:
                sink.close()
                os.unlink(sink.path)
            raise ApiError(400, f"Could not parse the multipart form: {exc}.") from None
        for sink in sinks:
            sink.close()
        try:
            created = self._store_upload(fields, extra, sinks[0] if sinks else None, file_id)
        except ApiError:
            for sink in sinks:
                os.unlink(sink.path)
            raise
        return self._reply(created.public())

    def _store_upload(self, fields: dict, extra: list, sink: _UploadSink | None, file_id: str) -> _File:
        """Check an upload's form as the Files API does and keep the file."""
        known = ("purpose", "expires_after[anchor]", "expires_after[seconds]")
        for name in [*extra, *fields]:
            if name not in known and name != "file":
                raise ApiError(400, f"Unknown parameter: '{name}'.", param=name, code="unknown_parameter")
        if extra:
            raise ApiError(400, "Send one file, in the 'file' field.", param="file", code="invalid_value")
        if "purpose" not in fields:
            raise ApiError(400, "Missing required parameter: 'purpose'.", param="purpose",
                           code="missing_required_parameter")
        purpose = fields["purpose"]
        if purpose not in FILE_PURPOSES:
            raise _invalid_value("purpose", purpose, FILE_PURPOSES)
        if sink is None:
            raise ApiError(400, "Missing required parameter: 'file'.", param="file", code="missing_required_parameter")
        if purpose == "batch" and not sink.filename.lower().endswith(".jsonl"):
            raise ApiError(400, "Invalid file format for Batch API. Must be .jsonl")
        limit = self.max_batch_file_bytes if purpose == "batch" else UPLOAD_MAX_BYTES
        if sink.size > limit:
            raise ApiError(400, f"File is too large: {sink.size} bytes. Files for the Batch API can be at most "
                                f"{limit} bytes." if purpose == "batch" else
                                f"File is too large: {sink.size} bytes. Files can be at most {limit} bytes.",
                           param="file", code="file_too_large")
        ttl = FILE_TTL_SECONDS if purpose == "batch" else None
        if "expires_after[anchor]" in fields or "expires_after[seconds]" in fields:
            ttl = self._expiry_seconds("expires_after", {"anchor": fields.get("expires_after[anchor]"),
                                                         "seconds": fields.get("expires_after[seconds]")})
        created = int(self._now())
        record = _File(id=file_id, filename=sink.filename, purpose=purpose, bytes=sink.size, created_at=created,
                       expires_at=None if ttl is None else created + ttl, path=sink.path)
        with self._lock:
            self._files[file_id] = record
        return record

    def _expiry_seconds(self, param: str, value) -> int:
        """The seconds of an expires_after / output_expires_after object ({anchor: "created_at", seconds})."""
        if not isinstance(value, dict):
            raise _invalid_type(param, "an object", value)
        anchor, seconds = value.get("anchor"), value.get("seconds")
        for key, got in (("anchor", anchor), ("seconds", seconds)):
            if got is None:
                raise ApiError(400, f"Missing required parameter: '{param}.{key}'.", param=f"{param}.{key}",
                               code="missing_required_parameter")
        if anchor != "created_at":
            raise _invalid_value(f"{param}.anchor", anchor, ("created_at",))
        if isinstance(seconds, str) and seconds.strip().isdigit():
            seconds = int(seconds)  # a form field
        return _integer({f"{param}.seconds": seconds}, f"{param}.seconds", *OUTPUT_TTL_RANGE, None)

    def _file(self, file_id: str, param: str = "id") -> _File:
        """The file with this id, or the 404 OpenAI sends; a file past its expires_at is gone."""
        with self._lock:
            record = self._files.get(file_id)
            if record is not None and record.expires_at is not None and self._now() >= record.expires_at:
                self._forget_file(record)
                record = None
        if record is None:
            raise ApiError(404, f"No such File object: {file_id}", param=param)
        return record

    def _forget_file(self, record: _File) -> None:
        with self._lock:
            self._files.pop(record.id, None)
        try:
            os.unlink(record.path)  # a download in progress keeps its open handle
        except FileNotFoundError:
            pass

    def _file_content(self, file_id: str) -> _Reply:
        """Answer GET /v1/files/{id}/content from disk, cut off mid-line when the knob says so."""
        record = self._file(file_id)
        try:
            handle = open(record.path, "rb")  # noqa: SIM115 - _send closes it
        except FileNotFoundError:
            raise ApiError(404, f"No such File object: {file_id}", param="id") from None
        size = os.fstat(handle.fileno()).st_size
        reply = _Reply(200, b"", "application/octet-stream", stream=handle, length=size, pace=self.content_pace)
        cutoff = self.content_cutoff
        if cutoff is not None and record.purpose == "batch_output" and size > 1:
            reply.length = _cut_point(handle, size, cutoff)
            if self.content_cutoff_drop:
                reply.advertised = size
        return reply

    def _list_files(self, query: dict) -> _Reply:
        """Answer GET /v1/files: purpose, order (desc by default), after and limit (1..10000, default 10000)."""
        limit = _query_integer(query, "limit", 1, 10_000, 10_000)
        order = query.get("order", "desc")
        if order not in ("asc", "desc"):
            raise _invalid_value("order", order, ("asc", "desc"))
        with self._lock:
            records = list(self._files.values())
        now = self._now()
        records = [r for r in records if r.expires_at is None or now < r.expires_at]
        if "purpose" in query:
            records = [r for r in records if r.purpose == query["purpose"]]
        if order == "desc":
            records.reverse()
        return self._reply(_page([r.public() for r in records], query.get("after"), limit))

    # ----- Batch API -----------------------------------------------------------------------------

    def _create_batch(self, raw: bytes) -> _Reply:
        """Answer POST /v1/batches: check the request, then validate and run the batch in its own thread."""
        body = _json_body(raw)
        for key in body:
            if key not in ("input_file_id", "endpoint", "completion_window", "metadata", "output_expires_after"):
                raise ApiError(400, f"Unknown parameter: '{key}'.", param=key, code="unknown_parameter")
        for key in ("input_file_id", "endpoint", "completion_window"):
            if body.get(key) is None:
                raise ApiError(400, f"Missing required parameter: '{key}'.", param=key,
                               code="missing_required_parameter")
        for key in ("input_file_id", "endpoint", "completion_window"):
            if not isinstance(body[key], str):
                raise _invalid_type(key, "a string", body[key])
        endpoint = body["endpoint"]
        if endpoint not in BATCH_ENDPOINTS:
            raise _invalid_value("endpoint", endpoint, BATCH_ENDPOINTS)
        if endpoint not in BATCH_SERVED_ENDPOINTS:
            raise ApiError(400, f"This stand-in runs batches of {', '.join(BATCH_SERVED_ENDPOINTS)} only, not "
                                f"{endpoint}.", param="endpoint", code="unsupported_value")
        if body["completion_window"] != "24h":
            raise _invalid_value("completion_window", body["completion_window"], ("24h",))
        metadata = _checked_metadata(body.get("metadata"))
        output_ttl = FILE_TTL_SECONDS
        if body.get("output_expires_after") is not None:
            output_ttl = self._expiry_seconds("output_expires_after", body["output_expires_after"])
        source = self._file(body["input_file_id"], param="input_file_id")
        if source.purpose != "batch":
            raise ApiError(400, f"The input file must be uploaded with purpose 'batch', not '{source.purpose}'.",
                           param="input_file_id", code="invalid_value")
        try:
            handle = open(source.path, "rb")  # noqa: SIM115 - the batch's thread closes it
        except FileNotFoundError:
            raise ApiError(404, f"No such File object: {source.id}", param="input_file_id") from None
        created = int(self._now())
        batch = _Batch(id=_new_id("batch_", 32, "0123456789abcdef"), endpoint=endpoint, input_file_id=source.id,
                       completion_window="24h", metadata=metadata, output_ttl=output_ttl, created_at=created,
                       expires_at=created + int(self.batch_window_seconds), input=handle)
        with self._lock:
            self._batches[batch.id] = batch
            answer = batch.public()
            batch.thread = threading.Thread(target=self._run_batch, args=(batch,), daemon=True,
                                            name=f"fake-openai-{batch.id}")
            batch.thread.start()
        log.info("batch %s created from %s", batch.id, source.id)
        return self._reply(answer)

    def _batch(self, batch_id: str) -> _Batch:
        with self._lock:
            batch = self._batches.get(batch_id)
        if batch is None:
            raise ApiError(404, f"No batch found with id '{batch_id}'.", code="batch_not_found")
        return batch

    def _cancel_batch(self, batch_id: str) -> _Reply:
        """Answer POST /v1/batches/{id}/cancel: validating or in_progress become cancelling; twice is fine."""
        batch = self._batch(batch_id)
        with self._lock:
            if batch.status in ("validating", "in_progress"):
                batch.cancel_requested = True
                batch.status = "cancelling"
                batch.cancelling_at = int(self._now())
            elif batch.status not in ("cancelling", "cancelled"):
                raise ApiError(409, f"Cannot cancel a batch with status '{batch.status}'.")
            return self._reply(batch.public())

    def _list_batches(self, query: dict) -> _Reply:
        """Answer GET /v1/batches: newest first, after and limit (1..100, default 20)."""
        limit = _query_integer(query, "limit", 1, 100, 20)
        with self._lock:
            objects = [b.public() for b in reversed(self._batches.values())]
        return self._reply(_page(objects, query.get("after"), limit))

    def _pause(self, stage: str) -> bool:
        """Sleep for a batch stage's pace; True when the stand-in is stopping."""
        return self._sleep(self._batch_pace[stage])

    def _run_batch(self, batch: _Batch) -> None:
        """The batch's thread: validate, run each request, write the results, finish (or fail, expire, cancel)."""
        try:
            self._work_batch(batch)
        except Exception:
            log.exception("batch %s broke", batch.id)
            with self._lock:
                if batch.status not in BATCH_TERMINAL:
                    batch.status, batch.failed_at = "failed", int(self._now())
                    batch.errors = [_batch_error("server_error", "The batch failed inside the stand-in.")]
        finally:
            batch.input.close()

    def _work_batch(self, batch: _Batch) -> None:
        if self._pause("validating"):
            return
        entries, errors, model = self._validate_input(batch)
        with self._lock:
            batch.model = model
            if errors and not batch.cancel_requested:
                batch.status, batch.failed_at, batch.errors = "failed", int(self._now()), errors
                log.info("batch %s failed validation: %s", batch.id, errors[0]["code"])
                return
            if errors:
                entries = []
            batch.total = len(entries)
            if not batch.cancel_requested:
                batch.status, batch.in_progress_at = "in_progress", int(self._now())
        results = _ResultFiles(self.files_dir, batch.id)
        try:
            outcome = self._run_requests(batch, entries, results)
            if outcome is None:  # stopping
                return
            done, ending = outcome
            rest = entries[done:]
            if ending == "cancelled":
                if self._pause("cancelling"):
                    return
                for entry in rest:
                    results.write("error", self._unrun_line(entry, CANCELLED_LINE_ERROR))
            elif ending == "expired":
                for entry in rest:
                    results.write("error", self._unrun_line(entry, EXPIRED_LINE_ERROR))
            else:
                if self._pause("finalizing"):
                    return
        finally:
            written = results.close()
        with self._lock:
            now = int(self._now())
            for kind, (path, size) in written.items():
                record = _File(id=_new_id("file-"), filename=f"{batch.id}_{kind}.jsonl", purpose="batch_output",
                               bytes=size, created_at=now, expires_at=now + batch.output_ttl, path=path)
                self._files[record.id] = record
                setattr(batch, f"{kind}_file_id", record.id)
            if ending == "cancelled":
                batch.status, batch.cancelled_at = "cancelled", now
            elif ending == "expired":
                batch.status, batch.expired_at = "expired", now
            else:
                batch.status, batch.completed_at = "completed", now
        log.info("batch %s %s: %d completed, %d failed of %d", batch.id, batch.status, batch.completed, batch.failed,
                 batch.total)

    def _run_requests(self, batch: _Batch, entries: list[_Entry], results: _ResultFiles):
        """Run the requests in file order; (how many ran, None | "cancelled" | "expired"), or None when stopping."""
        done = 0
        for entry in entries:
            ending = self._ending(batch, done)
            if ending is not None:
                return done, ending
            started = time.monotonic()
            batch.input.seek(entry.offset)
            body = json.loads(batch.input.read(entry.length).decode("utf-8"))["body"]
            ok, line, usage = self._batch_line(entry.custom_id, body)
            if self._sleep(self._batch_pace["per_request"] - (time.monotonic() - started)):
                return None
            results.write("output" if ok else "error", line)
            with self._lock:
                self.batch_requests.append({"batch_id": batch.id, "custom_id": entry.custom_id, "body": body})
                if ok:
                    batch.completed += 1
                    total = batch.usage
                    total["input_tokens"] += usage["input_tokens"]
                    total["output_tokens"] += usage["output_tokens"]
                    total["total_tokens"] += usage["total_tokens"]
                else:
                    batch.failed += 1
            done += 1
        with self._lock:  # all ran: finalizing, unless a cancel came in time
            if batch.cancel_requested:
                return done, "cancelled"
            batch.status, batch.finalizing_at = "finalizing", int(self._now())
        return done, None

    def _ending(self, batch: _Batch, done: int) -> str | None:
        """Whether the batch stops before its next request: cancelled, or expired (window over, or the knob)."""
        with self._lock:
            if batch.cancel_requested:
                return "cancelled"
            early = self.batch_expire_after_requests
            if (early is not None and done >= early) or self._now() >= batch.expires_at:
                return "expired"
        return None

    def _batch_line(self, custom_id: str, body: dict) -> tuple[bool, dict, dict | None]:
        """Run one request of a batch as the synchronous endpoint would; (ok, its result line, its usage)."""
        request_id = secrets.token_hex(16)
        usage = None
        try:
            order = self._validate(body)
            fault = self.batch_line_faults.get(custom_id)
            if fault is not None:
                raise self._line_fault(fault, request_id)
            self._moderate(order, request_id)
            payload = self._image_payload(order)
            status, answer, usage = 200, payload, payload["usage"]
        except ApiError as exc:
            status, answer = exc.status, exc.body()
        line = {"id": _new_id("batch_req_", 32, "0123456789abcdef"), "custom_id": custom_id,
                "response": {"status_code": status, "request_id": request_id, "body": answer}, "error": None}
        return status == 200, line, usage

    def _line_fault(self, kind: str, request_id: str) -> ApiError:
        """The error a batch line gets from FakeOpenAI.batch_line_faults."""
        if kind == "moderation_blocked":
            return ApiError(400, "Your request was rejected by the safety system. If you believe this is an error, "
                                 f"contact us at help.openai.com and include the request ID {request_id}. "
                                 "safety_violations=[violence].", type_="image_generation_user_error",
                            code="moderation_blocked")
        if kind == "server_error":
            return ApiError(500, "The server had an error while processing your request. Sorry about that!",
                            type_="server_error")
        if kind == "unavailable":
            return ApiError(503, "That model is currently overloaded with other requests. You can retry your request, "
                                 "or contact us through our help center at help.openai.com if the error persists. "
                                 f"(Please include the request ID {request_id} in your message.)",
                            type_="server_error")
        raise ValueError(f"batch_line_faults kinds are {BATCH_LINE_FAULTS}, not {kind!r}")

    @staticmethod
    def _unrun_line(entry: _Entry, error: dict) -> dict:
        return {"id": _new_id("batch_req_", 32, "0123456789abcdef"), "custom_id": entry.custom_id, "response": None,
                "error": dict(error)}

    def _validate_input(self, batch: _Batch) -> tuple[list[_Entry], list[dict], str | None]:
        """Read the input file once, line by line: the valid lines' places, the errors, the model."""
        entries: list[_Entry] = []
        errors: list[dict] = []
        seen: set[str] = set()
        model = None
        limit = self.max_batch_lines
        offset = count = 0
        handle = batch.input
        handle.seek(0)
        for number, raw in enumerate(iter(handle.readline, b""), 1):
            start, offset = offset, offset + len(raw)
            text = raw.strip()
            if not text:
                continue
            count += 1
            if count > limit:
                errors.append(_batch_error("too_many_tasks", f"The input file has more than {limit} requests; a "
                                                             f"batch can include at most {limit}.", number))
                break
            try:
                line = json.loads(text.decode("utf-8"))
            except (UnicodeDecodeError, ValueError):
                errors.append(_batch_error("invalid_json_line", "This line is not parseable as valid JSON.", number))
                continue
            problem = _line_problem(line, batch.endpoint)
            if problem is not None:
                errors.append({**problem, "line": number})
                continue
            custom_id = line["custom_id"]
            if custom_id in seen:
                errors.append(_batch_error("duplicate_custom_id", f"The custom_id '{custom_id}' is used by more than "
                                           "one request in this file; each request needs a unique custom_id.", number,
                                           "custom_id"))
                continue
            seen.add(custom_id)
            line_model = line["body"].get("model")
            if isinstance(line_model, str):
                if model is None:
                    model = line_model
                elif line_model != model:
                    errors.append(_batch_error("model_mismatch", f"This request uses model '{line_model}', but the "
                                               f"file's requests use '{model}'. An input file can only include "
                                               "requests to a single model.", number, "body.model"))
                    continue
            entries.append(_Entry(line=number, offset=start, length=len(raw), custom_id=custom_id))
        if not entries and not errors:
            errors.append(_batch_error("empty_file", "The input file is empty. A batch needs at least one request."))
        return entries, errors, model

    def _files_and_batches(self, method: str, path: str, query: str, headers, raw: bytes) -> _Reply:
        """Route the Files and Batch API (all but the upload, which streams its body)."""
        parts = path.split("/")[2:]  # "/v1/files/x/content" -> ["files", "x", "content"]
        routes = {("files",): ("GET",), ("files", "*"): ("GET", "DELETE"), ("files", "*", "content"): ("GET",),
                  ("batches",): ("GET", "POST"), ("batches", "*"): ("GET",), ("batches", "*", "cancel"): ("POST",)}
        shape = tuple("*" if i == 1 else p for i, p in enumerate(parts))
        allowed = routes.get(shape)
        if allowed is None or (len(parts) > 1 and not parts[1]):
            return _Reply(404, b"", "text/plain", {"x-content-type-options": "nosniff"})
        if method not in allowed:
            raise ApiError(405, f"Invalid method for URL ({method} {path}).", headers={"Allow": ", ".join(allowed)})
        self._authenticate(headers.get("Authorization") or "")
        params = {k: v[-1] for k, v in parse_qs(query, keep_blank_values=True).items()}
        if shape == ("files",):
            return self._list_files(params)
        if shape == ("files", "*"):
            record = self._file(parts[1])
            if method == "DELETE":
                self._forget_file(record)
                return self._reply({"id": record.id, "object": "file", "deleted": True})
            return self._reply(record.public())
        if shape == ("files", "*", "content"):
            return self._file_content(parts[1])
        if shape == ("batches",):
            return self._create_batch(raw) if method == "POST" else self._list_batches(params)
        if shape == ("batches", "*"):
            with self._lock:
                return self._reply(self._batch(parts[1]).public())
        return self._cancel_batch(parts[1])


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

    def do_DELETE(self):
        self._dispatch("DELETE")

    def _dispatch(self, method: str):
        fake = self.server.fake
        started = time.monotonic()
        request_id = "req_" + secrets.token_hex(16)
        parts = urlsplit(self.path)
        path, query = parts.path.rstrip("/"), parts.query
        generation = path == "/v1/images/generations" and method == "POST"
        if generation:
            fake._enter()
        reply = None
        try:
            reply = self._answer(fake, method, path, query, request_id)
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

    def _answer(self, fake: FakeOpenAI, method: str, path: str, query: str, request_id: str) -> _Reply | None:
        upload = path == "/v1/files" and method == "POST"  # its body streams to disk: not read here
        raw = b""
        if not upload:
            try:
                raw = self._read_body()
            except _BodyTooLarge:
                self.close_connection = True
                return _Reply(413, json.dumps(ApiError(413, "Request body too large.").body()).encode("utf-8"))
        model, size, prompt = "-", "-", ""
        try:
            if upload:
                keep_alive = not self.close_connection
                self.close_connection = True  # until the upload is stored: its body may be left unread
                reply = fake._upload(self.headers, self.rfile)
                self.close_connection = not keep_alive
            elif path == "/v1/images/generations":
                model, size, prompt = _peek(raw)
                if method != "POST":
                    raise ApiError(405, f"Invalid method for URL ({method} {path}).", headers={"Allow": "POST"})
                reply = fake._generations(self.headers, raw, request_id)
            elif path == "/v1/models" and method == "GET":
                reply = fake._models(self.headers, None)
            elif path.startswith("/v1/models/") and method == "GET":
                reply = fake._models(self.headers, path[len("/v1/models/"):])
            elif path.startswith(("/v1/files", "/v1/batches")) and path.split("/")[2] in ("files", "batches"):
                reply = fake._files_and_batches(method, path, query, self.headers, raw)
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
        length = reply.length if reply.stream is not None else len(reply.body)
        try:
            self.send_response(reply.status)
            self.send_header("Content-Type", reply.ctype)
            self.send_header("Content-Length", str(reply.advertised if reply.advertised is not None else length))
            self.send_header("x-request-id", request_id)
            self.send_header("openai-processing-ms", str(round((time.monotonic() - started) * 1000)))
            self.send_header("openai-version", "2020-10-01")
            self.send_header("openai-organization", ORGANIZATION)
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.end_headers()
            if reply.stream is None:
                self.wfile.write(reply.body)
                return
            left = length  # a file from disk, a chunk at a time: memory stays flat however large it is
            while left > 0:
                if reply.pace:
                    time.sleep(reply.pace)
                chunk = reply.stream.read(min(PACED_CHUNK if reply.pace else STREAM_CHUNK, left))
                if not chunk:
                    break
                self.wfile.write(chunk)
                left -= len(chunk)
            if reply.advertised is not None and reply.advertised > length:
                self.close_connection = True  # the cut-off: fewer bytes than Content-Length promised
        except OSError:  # the client gave up (a read timeout) or stop() dropped the connection
            self.close_connection = True
        finally:
            if reply.stream is not None:
                reply.stream.close()


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
    parser.add_argument("--batch-pace", action="append", default=[], metavar="STAGE=SECONDS",
                        help=f"seconds a batch stage takes; STAGE one of {', '.join(BATCH_PACE)} (default 0)")
    parser.add_argument("--batch-window-seconds", type=float, default=BATCH_WINDOW_SECONDS,
                        help="seconds until an unfinished batch expires (OpenAI: 86400, the 24h window)")
    parser.add_argument("--batch-expire-after-requests", type=int, default=None,
                        help="expire every batch after this many of its requests have run")
    parser.add_argument("--max-batch-lines", type=int, default=BATCH_MAX_LINES, help="requests per batch file")
    parser.add_argument("--content-cutoff", type=float, default=None, metavar="FRACTION",
                        help="serve batch output files cut off mid-line near this fraction of their bytes")
    parser.add_argument("--files-dir", default=None, help="where to make the folder for files (default: temp)")
    return parser.parse_args(argv)


def build_from_args(args) -> FakeOpenAI:
    """A configured (not yet started) FakeOpenAI from parsed command-line arguments."""
    models = [m for m in args.models.split(",") if m] if args.models else None
    pace = {}
    for spec in args.batch_pace:
        stage, _, seconds = spec.partition("=")
        pace[stage] = float(seconds)
    fake = FakeOpenAI(api_key=args.api_key, latency=args.latency, images_per_minute=args.images_per_minute,
                      port=args.port, moderation_marker=args.moderation_marker, hang_seconds=args.hang_seconds,
                      models=models, window_seconds=args.window_seconds, batch_pace=pace, files_dir=args.files_dir)
    fake.batch_window_seconds = args.batch_window_seconds
    fake.batch_expire_after_requests = args.batch_expire_after_requests
    fake.max_batch_lines = args.max_batch_lines
    fake.content_cutoff = args.content_cutoff
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
