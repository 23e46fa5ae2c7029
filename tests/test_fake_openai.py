"""The OpenAI Images API stand-in (tools/fake_openai.py) over real HTTP with plain requests."""

from __future__ import annotations

import base64
import binascii
import io
import logging
import re
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tools.fake_openai import (  # noqa: E402
    FAULT_KINDS,
    MODELS,
    FakeOpenAI,
    build_from_args,
    go_duration,
    image_tokens,
    mask_key,
    parse_args,
    usage_cost,
    usage_for,
    valid_size,
)

KEY = "sk-test-fake-openai"
GENERATIONS = "/v1/images/generations"
REQUEST_ID = re.compile(r"^req_[0-9a-f]{32}$")
PIL_FORMATS = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}
FIXED = ["1024x1024", "1536x1024", "1024x1536", "auto"]
SIZES = {"gpt-image-2": ["1024x1024", "1536x864", "864x1536", "auto"], "gpt-image-1.5": FIXED,
         "gpt-image-1-mini": FIXED, "gpt-image-1": FIXED}
MATRIX = [(model, size, fmt) for model, sizes in SIZES.items() for size in sizes for fmt in ("png", "jpeg", "webp")]


class Clock:
    def __init__(self):
        self.now = 1_780_000_000.0

    def __call__(self):
        return self.now


def call(fake, body=None, *, method="POST", path=GENERATIONS, key=KEY, timeout=10):
    """One request on its own session (closed, so no socket outlives it); the response's body is already read."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    with requests.Session() as session:
        response = session.request(method, fake.base_url + path, json=body, headers=headers, timeout=timeout)
        response.close()
    return response


def gen(fake, prompt="a red fox in the snow", timeout=10, **fields):
    return call(fake, {"model": "gpt-image-2", "prompt": prompt, **fields}, timeout=timeout)


def error_of(response) -> dict:
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
    return body["error"]


def decoded(response) -> Image.Image:
    data = base64.b64decode(response.json()["data"][0]["b64_json"], validate=True)
    return Image.open(io.BytesIO(data))


@pytest.fixture
def fake():
    server = FakeOpenAI(api_key=KEY).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def matrix():
    """Every (model, size, format) of MATRIX asked for once, four at a time, from one stand-in."""
    server = FakeOpenAI(api_key=KEY).start()

    def ask(case):
        model, size, fmt = case
        return case, call(server, {"model": model, "prompt": f"a lighthouse at dusk, {model} {size}", "size": size,
                                   "quality": "low", "output_format": fmt, "n": 1, "user": "u-1"})

    try:
        with ThreadPoolExecutor(max_workers=4) as pool:
            yield dict(pool.map(ask, MATRIX))
    finally:
        server.stop()


# --- authentication ------------------------------------------------------------------------------

def test_a_request_without_a_key_is_refused_as_openai_does(fake):
    response = call(fake, {"model": "gpt-image-2", "prompt": "x"}, key=None)
    assert response.status_code == 401
    error = error_of(response)
    assert error["message"].startswith("You didn't provide an API key.")
    assert (error["type"], error["param"], error["code"]) == ("invalid_request_error", None, None)
    assert fake.requests == []


def test_a_wrong_key_is_refused_and_shown_masked(fake):
    wrong = "sk-proj-abcdefghijklmnopqrstuvwxyz0123"
    response = call(fake, {"model": "gpt-image-2", "prompt": "x"}, key=wrong)
    assert response.status_code == 401
    error = error_of(response)
    assert error["code"] == "invalid_api_key" and error["type"] == "invalid_request_error"
    assert error["message"] == (f"Incorrect API key provided: sk-proj-{'*' * 26}0123. You can find your API key at "
                                "https://platform.openai.com/account/api-keys.")
    assert wrong not in response.text
    assert call(fake, method="GET", path="/v1/models", key=wrong).status_code == 401


def test_mask_key_and_go_duration():
    assert mask_key("sk-test-fake-openai") == "sk-test-*******enai"
    assert mask_key("ai") == "ai"
    assert [go_duration(s) for s in (0.012, 0.2, 1, 1.5, 59.25, 360, 90.5)] == [
        "12ms", "200ms", "1s", "1.5s", "59.25s", "6m0s", "1m30.5s"]


# --- the images ------------------------------------------------------------------------------------

@pytest.mark.parametrize("model, size, fmt", MATRIX)
def test_each_model_size_and_format_gives_that_image(matrix, model, size, fmt):
    response = matrix[(model, size, fmt)]
    assert response.status_code == 200, response.text
    body = response.json()
    expected = "1024x1024" if size == "auto" else size
    assert set(body) == {"created", "background", "data", "output_format", "quality", "size", "usage"}
    assert (body["size"], body["output_format"], body["quality"], body["background"]) == (expected, fmt, "low",
                                                                                        "opaque")
    assert len(body["data"]) == 1 and set(body["data"][0]) == {"b64_json"}
    usage = body["usage"]
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"] > 0
    assert set(usage["input_tokens_details"]) == {"image_tokens", "text_tokens"}
    image = decoded(response)
    assert f"{image.width}x{image.height}" == expected
    assert image.format == PIL_FORMATS[fmt]
    assert response.headers["Content-Type"] == "application/json"


def test_defaults_quality_auto_transparency_and_n(fake):
    body = call(fake, {"model": "gpt-image-1.5", "prompt": "a kite"}).json()
    assert (body["size"], body["output_format"], body["quality"], body["background"]) == ("1024x1024", "png", "high",
                                                                                        "opaque")
    response = call(fake, {"model": "gpt-image-1.5", "prompt": "a kite", "background": "transparent",
                           "output_format": "png", "output_compression": 50, "n": 2, "size": None})
    assert response.status_code == 200, response.text
    assert response.json()["background"] == "transparent" and len(response.json()["data"]) == 2
    assert decoded(response).mode == "RGBA"


def test_a_long_prompt_renders_at_the_requested_size():
    # (How fast rendering is belongs in bench/, not in a timed test: shared machines make those flake.)
    from tools.fake_openai import render_image

    data = render_image("a lighthouse at dusk " * 20, 1536, 1024, "png")
    assert Image.open(io.BytesIO(data)).size == (1536, 1024)


# --- sizes -------------------------------------------------------------------------------------------

def test_gpt_image_2_takes_flexible_sizes_and_refuses_bad_ones(fake):
    for size in ("1536x864", "864x1536", "2048x1152", "3840x2160"):
        assert valid_size("gpt-image-2", size), size
    bad = {"1000x1000": "Invalid size '1000x1000'. Width and height must both be divisible by 16.",
           "4000x1024": "Invalid size '4000x1024'. The longest edge must be at most 3840 pixels.",
           "bogus": "Invalid size 'bogus'. Expected WIDTHxHEIGHT, for example '1824x1024'.",
           "3072x960": "Invalid size '3072x960'. The ratio of the longest edge to the shortest must be at most 3:1.",
           "768x768": "Invalid size '768x768'. The total number of pixels must be between 655360 and 8294400."}
    for size, message in bad.items():
        response = gen(fake, size=size)
        assert response.status_code == 400, size
        error = error_of(response)
        assert error == {"message": message, "type": "image_generation_user_error", "param": "size",
                         "code": "invalid_value"}


def test_gpt_image_1_5_refuses_a_size_it_lacks_with_the_real_message(fake):
    response = call(fake, {"model": "gpt-image-1.5", "prompt": "x", "size": "1536x864"})
    assert response.status_code == 400
    assert error_of(response) == {
        "message": "Invalid value: '1536x864'. Supported values are: '1024x1024', '1024x1536', '1536x1024', and "
                   "'auto'.",
        "type": "invalid_request_error", "param": "size", "code": "invalid_value"}
    assert not valid_size("gpt-image-1-mini", "1536x864") and valid_size("gpt-image-1-mini", "1536x1024")


# --- validation ------------------------------------------------------------------------------------

@pytest.mark.parametrize("fields, param, code, message", [
    ({"model": "gpt-image-9"}, "model", "invalid_value", "The model 'gpt-image-9' does not exist."),
    ({"model": None}, "model", "invalid_type", "Invalid type for 'model': expected a string, but got null instead."),
    ({"quality": "standard"}, "quality", "invalid_value",
     "Invalid value: 'standard'. Supported values are: 'low', 'medium', 'high', and 'auto'."),
    ({"quality": 1}, "quality", "invalid_type",
     "Invalid type for 'quality': expected one of 'low', 'medium', 'high', or 'auto', but got an integer instead."),
    ({"output_format": "gif"}, "output_format", "invalid_value",
     "Invalid value: 'gif'. Supported values are: 'png', 'webp', and 'jpeg'."),
    ({"moderation": "off"}, "moderation", "invalid_value", "Invalid value: 'off'. Supported values are: 'auto' and "
                                                           "'low'."),
    ({"response_format": "b64_json"}, "response_format", "unknown_parameter", "Unknown parameter: 'response_format'."),
    ({"prompt": ""}, "prompt", "empty_string",
     "Invalid 'prompt': empty string. Expected a string with minimum length 1, but got an empty string instead."),
    ({"prompt": "p" * 32001}, "prompt", "string_above_max_length",
     "Invalid 'prompt': string too long. Expected a string with maximum length 32000, but got a string with length "
     "32001 instead."),
    ({"n": 0}, "n", "integer_below_min_value",
     "Invalid 'n': integer below minimum value. Expected a value >= 1, but got 0 instead."),
    ({"n": 1.5}, "n", "invalid_type", "Invalid type for 'n': expected an integer, but got a decimal number instead."),
    ({"output_compression": 101}, "output_compression", "integer_above_max_value",
     "Invalid 'output_compression': integer above maximum value. Expected a value <= 100, but got 101 instead."),
])
def test_bad_fields_get_400_with_the_param(fake, fields, param, code, message):
    response = call(fake, {"model": "gpt-image-2", "prompt": "x", **fields})
    assert response.status_code == 400
    error = error_of(response)
    assert (error["param"], error["code"], error["message"]) == (param, code, message)
    assert error["type"] == ("image_generation_user_error" if param == "model" and code == "invalid_value"
                             else "invalid_request_error")
    assert fake.count_by_status == {400: 1} and len(fake.requests) == 1


def test_other_refusals(fake):
    missing = call(fake, {"model": "gpt-image-2"})
    assert error_of(missing)["code"] == "missing_required_parameter" and error_of(missing)["param"] == "prompt"
    transparent = gen(fake, background="transparent")
    assert error_of(transparent) == {"message": "Transparent background is not supported for this model.",
                                     "type": "image_generation_user_error", "param": "background",
                                     "code": "invalid_value"}
    assert gen(fake, stream=True).status_code == 400
    with requests.Session() as session:
        garbled = session.post(fake.base_url + GENERATIONS, data=b"{not json", timeout=5,
                               headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"})
    assert garbled.status_code == 400
    assert error_of(garbled)["message"].startswith("We could not parse the JSON body of your request.")
    assert call(fake, {"model": "gpt-image-2", "prompt": "p" * 32000, "quality": "low"}).status_code == 200


def test_the_moderation_marker_is_refused_by_the_safety_system(fake):
    response = gen(fake, prompt="a forbidden castle")  # the marker matches in any case
    assert response.status_code == 400
    error = error_of(response)
    assert (error["type"], error["param"], error["code"]) == ("image_generation_user_error", None,
                                                              "moderation_blocked")
    assert error["message"].startswith("Your request was rejected by the safety system.")
    assert response.headers["x-request-id"] in error["message"]
    fake.moderation_marker = "DRAGON"
    assert gen(fake, prompt="a forbidden castle").status_code == 200
    assert gen(fake, prompt="a dragon").status_code == 400


# --- injected faults -------------------------------------------------------------------------------

def test_fail_next_rate_limit_carries_retry_headers(fake):
    fake.fail_next("rate_limit", count=1, retry_after_ms=200)
    response = gen(fake)
    assert response.status_code == 429
    error = error_of(response)
    assert (error["type"], error["code"]) == ("requests", "rate_limit_exceeded")
    assert error["message"].startswith("Rate limit reached for gpt-image-2 in organization")
    assert response.headers["retry-after"] == "1" and response.headers["retry-after-ms"] == "200"
    assert response.headers["x-ratelimit-remaining-requests"] == "0"
    assert response.headers["x-ratelimit-reset-requests"] == "200ms"
    assert gen(fake).status_code == 200


@pytest.mark.parametrize("kind, status, code", [
    ("insufficient_quota", 429, "insufficient_quota"), ("server_error", 500, None), ("unavailable", 503, None)])
def test_fail_next_error_kinds(fake, kind, status, code):
    fake.fail_next(kind, count=2)
    for _ in range(2):
        response = gen(fake)
        assert response.status_code == status
        error = error_of(response)
        assert error["code"] == code
        assert error["type"] == ("insufficient_quota" if kind == "insufficient_quota" else "server_error")
        assert "retry-after" not in response.headers
    assert gen(fake).status_code == 200
    assert fake.count_by_status == {status: 2, 200: 1}


def test_fail_next_bad_gateway_is_an_html_page(fake):
    fake.fail_next("bad_gateway")
    response = gen(fake)
    assert response.status_code == 502
    assert response.headers["Content-Type"] == "text/html" and "502 Bad Gateway" in response.text
    with pytest.raises(ValueError):
        response.json()


def test_fail_next_broken_200s(fake):
    fake.fail_next("malformed")
    fake.fail_next("empty")
    fake.fail_next("bad_base64")
    malformed = gen(fake)
    assert malformed.status_code == 200
    with pytest.raises(ValueError):
        malformed.json()
    empty = gen(fake)
    assert empty.status_code == 200 and empty.json()["data"] == [] and "created" in empty.json()
    bad = gen(fake)
    assert bad.status_code == 200
    with pytest.raises(binascii.Error):
        base64.b64decode(bad.json()["data"][0]["b64_json"], validate=True)
    assert gen(fake).status_code == 200


def test_fail_next_hang_outlasts_a_client_timeout(fake):
    fake.hang_seconds = 0.3
    fake.fail_next("hang")
    started = time.monotonic()
    with pytest.raises(requests.ReadTimeout):
        gen(fake, timeout=0.1)
    deadline = time.monotonic() + 2
    while fake.in_flight:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert time.monotonic() - started >= 0.3
    assert gen(fake).status_code == 200


def test_fail_next_refuses_unknown_kinds(fake):
    with pytest.raises(ValueError):
        fake.fail_next("explode")
    with pytest.raises(ValueError):
        fake.fail_next("server_error", retry_after_ms=5)
    assert set(FAULT_KINDS) == {"rate_limit", "insufficient_quota", "server_error", "unavailable", "bad_gateway",
                                "hang", "malformed", "empty", "bad_base64"}


def test_fault_rates_are_random_but_seeded_and_can_be_turned_off(fake):
    fake.fault_rates({"server_error": 0.5}, seed=7)
    first = [gen(fake, output_format="jpeg").status_code for _ in range(8)]
    fake.fault_rates({"server_error": 0.5}, seed=7)
    second = [gen(fake, output_format="jpeg").status_code for _ in range(8)]
    assert first == second and set(first) == {200, 500}
    fake.fault_rates({})
    assert gen(fake).status_code == 200
    with pytest.raises(ValueError):
        fake.fault_rates({"server_error": 0.7, "rate_limit": 0.7})


def test_reset_clears_faults_and_restores_the_settings(fake):
    fake.fail_next("server_error", count=3)
    fake.fault_rates({"unavailable": 1.0})
    fake.latency, fake.images_per_minute, fake.models = 5.0, 1, ["gpt-image-1"]
    fake.reset()
    assert (fake.latency, fake.images_per_minute, fake.models) == (0.0, None, list(MODELS))
    assert gen(fake).status_code == 200


# --- the rate limit ----------------------------------------------------------------------------------

def test_images_per_minute_is_enforced_and_recovers_after_the_window():
    clock = Clock()
    with FakeOpenAI(api_key=KEY, images_per_minute=2, clock=clock) as fake:
        first = gen(fake, quality="low")
        assert first.status_code == 200
        assert (first.headers["x-ratelimit-limit-requests"], first.headers["x-ratelimit-remaining-requests"]) == (
            "2", "1")
        assert first.headers["x-ratelimit-limit-images"] == "2"
        clock.now += 10
        second = gen(fake, quality="low")
        assert second.headers["x-ratelimit-remaining-images"] == "0"
        assert second.headers["x-ratelimit-reset-requests"] == "50s"  # when the first image leaves the window
        clock.now += 5
        refused = gen(fake)
        assert refused.status_code == 429
        error = error_of(refused)
        assert (error["type"], error["code"]) == ("requests", "rate_limit_exceeded")
        assert "on images per min (IPM): Limit 2, Used 2, Requested 1. Please try again in 45s." in error["message"]
        assert refused.headers["retry-after"] == "45" and refused.headers["retry-after-ms"] == "45000"
        assert refused.headers["x-ratelimit-remaining-requests"] == "0"
        clock.now += 45
        assert gen(fake, quality="low").status_code == 200
        assert gen(fake).status_code == 429  # the second image is still in the window
        clock.now += 61
        assert gen(fake, quality="low").status_code == 200
        assert fake.count_by_status == {200: 4, 429: 2}


def test_a_quantized_limit_refuses_a_burst_within_its_shorter_window():
    clock = Clock()
    with FakeOpenAI(api_key=KEY, images_per_minute=120, clock=clock, window_seconds=1) as fake:  # 2 a second
        assert [gen(fake, quality="low").status_code for _ in range(3)] == [200, 200, 429]
        clock.now += 1.01
        assert gen(fake, quality="low").status_code == 200
    with pytest.raises(ValueError):
        FakeOpenAI(window_seconds=0)


def test_no_rate_limit_headers_without_a_limit(fake):
    response = gen(fake, quality="low")
    assert not [h for h in response.headers if h.lower().startswith("x-ratelimit-")]


# --- latency and concurrency ---------------------------------------------------------------------

def test_latency_is_observed(fake):
    fake.latency = 0.2
    started = time.monotonic()
    response = gen(fake, quality="low")
    assert response.status_code == 200
    assert time.monotonic() - started >= 0.2
    assert int(response.headers["openai-processing-ms"]) >= 200


def test_max_in_flight_counts_concurrent_generations(fake):
    fake.latency = 0.2
    statuses = []

    def one():
        statuses.append(gen(fake, quality="low").status_code)

    threads = [threading.Thread(target=one) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(5)
    assert statuses == [200, 200, 200]
    assert fake.max_in_flight == 3 and fake.in_flight == 0
    assert len(fake.requests) == 3 and fake.requests[0]["model"] == "gpt-image-2"


def test_stop_returns_promptly_while_a_request_hangs():
    fake = FakeOpenAI(api_key=KEY).start()
    fake.fail_next("hang")  # 30 s by default
    outcome = []

    def client():
        try:
            outcome.append(gen(fake, timeout=10).status_code)
        except requests.RequestException as exc:
            outcome.append(type(exc).__name__)

    thread = threading.Thread(target=client)
    thread.start()
    deadline = time.monotonic() + 2
    while fake.in_flight == 0:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    started = time.monotonic()
    fake.stop()
    assert time.monotonic() - started < 2
    thread.join(5)
    assert outcome == ["ConnectionError"]


# --- models, headers, paths ----------------------------------------------------------------------

def test_models_lists_the_configured_models(fake):
    response = call(fake, method="GET", path="/v1/models")
    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "list"
    assert [m["id"] for m in body["data"]] == list(MODELS)
    assert all(set(m) == {"id", "object", "created", "owned_by"} and m["object"] == "model" for m in body["data"])
    fake.models = ["gpt-image-2", "gpt-image-1-mini"]
    assert [m["id"] for m in call(fake, method="GET", path="/v1/models").json()["data"]] == fake.models
    assert call(fake, method="GET", path="/v1/models/gpt-image-2").json()["id"] == "gpt-image-2"
    missing = call(fake, method="GET", path="/v1/models/gpt-image-1.5")
    assert missing.status_code == 404 and error_of(missing)["code"] == "model_not_found"
    refused = call(fake, {"model": "gpt-image-1.5", "prompt": "x"})
    assert error_of(refused)["message"] == "The model 'gpt-image-1.5' does not exist."


def test_every_response_carries_a_request_id(fake):
    fake.fail_next("bad_gateway")
    responses = [gen(fake), gen(fake), gen(fake, size="7x7"), call(fake, key="sk-nope"),
                 call(fake, method="GET", path="/v1/models"), call(fake, path="/v1/images/variations"),
                 call(fake, method="GET", path=GENERATIONS)]
    assert [r.status_code for r in responses] == [502, 200, 400, 401, 200, 404, 405]
    ids = [r.headers["x-request-id"] for r in responses]
    assert all(REQUEST_ID.match(i) for i in ids) and len(set(ids)) == len(ids)
    assert all(int(r.headers["openai-processing-ms"]) >= 0 for r in responses)
    assert responses[5].content == b""


def test_the_log_has_no_key_and_only_the_start_of_the_prompt(fake, caplog):
    caplog.set_level(logging.INFO, logger="tools.fake_openai")
    gen(fake, prompt="a lighthouse at dusk over the sea with SECRET-TAIL at the end", quality="low")
    call(fake, {"model": "gpt-image-2", "prompt": "x"}, key="sk-proj-should-not-be-logged-1234")
    text = caplog.text
    assert "POST /v1/images/generations -> 200 model=gpt-image-2 size=1024x1024" in text
    assert "a lighthouse at dusk over the " in text and "SECRET-TAIL" not in text
    assert KEY not in text and "should-not-be-logged" not in text


def test_the_command_line_builds_a_configured_stand_in():
    fake = build_from_args(parse_args(["--port", "0", "--latency", "0.5", "--images-per-minute", "30",
                                       "--fault", "server_error=0.25", "--seed", "3", "--models", "gpt-image-2",
                                       "--window-seconds", "2"]))
    try:
        assert (fake.latency, fake.images_per_minute, fake.models) == (0.5, 30, ["gpt-image-2"])
        assert fake.window_seconds == 2
        assert fake._rates == {"server_error": 0.25}
    finally:
        fake.stop()


# --- GPT Image 2.5 and 2.6 -------------------------------------------------------------------------

FLARE_25, SUNBURST_25 = "gpt-image-2.5-flare", "gpt-image-2.5-sunburst"
FLARE_26, SUNBURST_26 = "gpt-image-2.6-flare", "gpt-image-2.6-sunburst"
NEW_MODELS = [FLARE_25, SUNBURST_25, "gpt-image-2.5-flare-2026-09-08", "gpt-image-2.5-sunburst-2026-09-08", FLARE_26,
              SUNBURST_26]
FLEXIBLE_MODELS = ["gpt-image-2", "gpt-image-2-2026-04-21", *NEW_MODELS]
WITHOUT_COMPLEXITY = [m for m in MODELS if m not in (FLARE_26, SUNBURST_26)]
LADDER = ["low", "medium", "high", "xhigh", "max"]
EDGE_SIZES = ["1024x640", "640x1024", "3840x2160", "2160x3840", "2880x2880", "3840x1280", "1280x3840", "auto"]
BAD_SIZES = {
    "3856x2160": "Invalid size '3856x2160'. The longest edge must be at most 3840 pixels.",
    "1360x1020": "Invalid size '1360x1020'. Width and height must both be divisible by 16.",  # 1020 = 17 x 60
    "3088x1024": "Invalid size '3088x1024'. The ratio of the longest edge to the shortest must be at most 3:1.",
    "1008x640": "Invalid size '1008x640'. The total number of pixels must be between 655360 and 8294400.",
    "3840x2176": "Invalid size '3840x2176'. The total number of pixels must be between 655360 and 8294400.",
    "4k": "Invalid size '4k'. Expected WIDTHxHEIGHT, for example '1824x1024'.",
}


def test_the_edge_sizes_are_what_the_rules_say():
    assert 1024 * 640 == 655_360 and 3840 * 2160 == 2880 * 2880 == 8_294_400
    assert 1008 * 640 < 655_360 and 3840 * 2176 > 8_294_400 and 3088 / 1024 > 3 and 1020 % 17 == 0 != 1020 % 16


@pytest.mark.parametrize("model", FLEXIBLE_MODELS)
def test_every_flexible_model_takes_the_edge_sizes_and_refuses_each_broken_rule(model):
    assert all(valid_size(model, size) for size in EDGE_SIZES)
    assert not any(valid_size(model, size) for size in BAD_SIZES)


@pytest.mark.parametrize("model", [FLARE_25, SUNBURST_26])
def test_a_broken_size_rule_gets_openais_size_error(fake, model):
    for size, message in BAD_SIZES.items():
        response = call(fake, {"model": model, "prompt": "x", "size": size})
        assert response.status_code == 400, size
        assert error_of(response) == {"message": message, "type": "image_generation_user_error", "param": "size",
                                      "code": "invalid_value"}
    assert fake.count_by_status == {400: len(BAD_SIZES)}


@pytest.mark.parametrize("model", NEW_MODELS)
@pytest.mark.parametrize("quality", ["xhigh", "max"])
def test_the_new_models_take_xhigh_and_max(fake, model, quality):
    response = call(fake, {"model": model, "prompt": "a kite", "quality": quality, "size": "1024x640"})
    assert response.status_code == 200, response.text
    assert response.json()["quality"] == quality
    assert decoded(response).size == (1024, 640)


@pytest.mark.parametrize("model", ["gpt-image-2", "gpt-image-2-2026-04-21", "gpt-image-1.5", "gpt-image-1-mini",
                                   "gpt-image-1"])
@pytest.mark.parametrize("quality", ["xhigh", "max"])
def test_older_models_refuse_xhigh_and_max(fake, model, quality):
    response = call(fake, {"model": model, "prompt": "a kite", "quality": quality})
    assert response.status_code == 400
    assert error_of(response) == {
        "message": f"Invalid value: '{quality}'. Supported values are: 'low', 'medium', 'high', and 'auto'.",
        "type": "invalid_request_error", "param": "quality", "code": "invalid_value"}


def test_a_quality_no_model_takes_lists_the_models_own_ladder(fake):
    response = call(fake, {"model": FLARE_26, "prompt": "x", "quality": "ultra"})
    assert error_of(response) == {
        "message": "Invalid value: 'ultra'. Supported values are: 'low', 'medium', 'high', 'xhigh', 'max', and "
                   "'auto'.", "type": "invalid_request_error", "param": "quality", "code": "invalid_value"}


@pytest.mark.parametrize("model", [FLARE_26, SUNBURST_26])
def test_the_2_6_models_take_complexity(fake, model):
    for complexity in ("low", "medium", "high", None):
        body = {"model": model, "prompt": "a poster", "quality": "low"}
        if complexity is not None:
            body["complexity"] = complexity
        response = call(fake, body)
        assert response.status_code == 200, response.text
    bad = call(fake, {"model": model, "prompt": "x", "complexity": "extreme"})
    assert error_of(bad) == {"message": "Invalid value: 'extreme'. Supported values are: 'low', 'medium', and 'high'.",
                             "type": "invalid_request_error", "param": "complexity", "code": "invalid_value"}
    wrong_type = call(fake, {"model": model, "prompt": "x", "complexity": 2})
    assert error_of(wrong_type) == {
        "message": "Invalid type for 'complexity': expected one of 'low', 'medium', or 'high', but got an integer "
                   "instead.", "type": "invalid_request_error", "param": "complexity", "code": "invalid_type"}


@pytest.mark.parametrize("model", WITHOUT_COMPLEXITY)
def test_complexity_is_an_unknown_parameter_for_every_other_model(fake, model):
    response = call(fake, {"model": model, "prompt": "x", "complexity": "high"})
    assert response.status_code == 400
    assert error_of(response) == {"message": "Unknown parameter: 'complexity'.", "type": "invalid_request_error",
                                  "param": "complexity", "code": "unknown_parameter"}


def test_requests_show_quality_and_complexity_as_sent(fake):
    sent = [{"model": FLARE_26, "prompt": "a", "quality": "max", "complexity": "low"},
            {"model": SUNBURST_26, "prompt": "b", "quality": "low"},
            {"model": SUNBURST_25, "prompt": "c", "quality": "xhigh"},
            {"model": "gpt-image-2", "prompt": "d"}]
    assert [call(fake, body).status_code for body in sent] == [200, 200, 200, 200]
    assert fake.requests == sent
    assert [r.get("complexity") for r in fake.requests if r["model"].startswith("gpt-image-2.6")] == ["low", None]
    assert not [r for r in fake.requests if not r["model"].startswith("gpt-image-2.6") and "complexity" in r]
    assert [r.get("quality") for r in fake.requests] == ["max", "low", "xhigh", None]


def test_the_new_models_take_transparent_backgrounds(fake):
    for model in (FLARE_25, SUNBURST_26):
        response = call(fake, {"model": model, "prompt": "a sticker", "background": "transparent", "quality": "low"})
        assert response.status_code == 200, response.text
        assert response.json()["background"] == "transparent" and decoded(response).mode == "RGBA"


@pytest.mark.parametrize("model", NEW_MODELS)
def test_usage_is_in_every_answer_and_matches_usage_for(fake, model):
    response = call(fake, {"model": model, "prompt": "a harbour at night with lanterns", "size": "2048x1152",
                           "quality": "medium", "n": 2})
    assert response.status_code == 200, response.text
    usage = response.json()["usage"]
    complexity = "high" if MODELS[model]["complexities"] else None
    assert usage == usage_for(model, 2048, 1152, "medium", "a harbour at night with lanterns", complexity, n=2)
    assert set(usage) == {"input_tokens", "input_tokens_details", "output_tokens", "output_tokens_details",
                          "total_tokens"}
    assert set(usage["input_tokens_details"]) == {"text_tokens", "image_tokens"}
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]


def test_usage_grows_with_pixels_and_quality_and_not_with_complexity():
    prompt = "p" * 41
    for sizes in (((1024, 1024), (2048, 2048), (2880, 2880)), ((1536, 864), (2048, 1152), (3840, 2160))):
        by_size = [usage_for(FLARE_26, w, h, "high", prompt)["output_tokens"] for w, h in sizes]
        assert by_size == sorted(set(by_size)) and by_size[0] > 0  # at one ratio, more pixels cost more
    by_quality = [usage_for(SUNBURST_25, 1024, 1024, q, prompt)["output_tokens"] for q in LADDER]
    assert by_quality == sorted(set(by_quality))
    assert by_quality == [196, 1756, 7024, 15804, 28096]
    assert usage_for(FLARE_26, 3840, 2160, "max", prompt)["output_tokens"] == image_tokens("max", 3840, 2160)
    # OpenAI's calculator for gpt-image-2 (community.openai.com/t/1379464): 1024x1024 7,024, 1536x1024 5,488,
    # 3584x2048 12,329 tokens at high quality.
    assert [image_tokens("high", w, h) for w, h in ((1024, 1024), (1536, 1024), (3584, 2048))] == [7024, 5488, 12329]
    assert {usage_for(FLARE_26, 1024, 1024, "low", prompt, c)["output_tokens"] for c in ("low", "medium", "high")} \
        == {196}
    assert usage_for(FLARE_26, 1024, 1024, "auto", prompt) == usage_for(FLARE_26, 1024, 1024, "high", prompt)
    assert usage_for(FLARE_26, 1024, 1024, "low", prompt)["input_tokens_details"] == {"text_tokens": 11,
                                                                                      "image_tokens": 0}
    assert usage_for(FLARE_26, 1024, 1024, "low", prompt, n=3)["output_tokens"] == 3 * image_tokens("low", 1024, 1024)
    assert usage_cost(usage_for(FLARE_26, 1024, 1024, "high", "p" * 400)) == pytest.approx(
        (100 * 5 + 7024 * 30) / 1_000_000)


def test_usage_for_refuses_what_the_api_refuses():
    with pytest.raises(ValueError):
        usage_for("gpt-image-2", 1024, 1024, "xhigh", "x")
    with pytest.raises(ValueError):
        usage_for(FLARE_25, 1024, 1024, "high", "x", complexity="low")
    with pytest.raises(ValueError):
        usage_for(FLARE_26, 1024, 1024, "high", "x", complexity="extreme")
    with pytest.raises(ValueError):
        usage_for("dall-e-3", 1024, 1024, "high", "x")


@pytest.mark.parametrize("size", ["3840x2160", "2160x3840", "2880x2880", "1024x640"])
@pytest.mark.parametrize("fmt", ["png", "jpeg", "webp"])
def test_big_images_decode_at_exactly_their_size(fake, size, fmt):
    response = call(fake, {"model": FLARE_26, "prompt": f"a city skyline {size}", "size": size, "quality": "max",
                           "output_format": fmt}, timeout=20)
    assert response.status_code == 200, response.text
    assert response.json()["size"] == size
    image = decoded(response)
    assert f"{image.width}x{image.height}" == size and image.format == PIL_FORMATS[fmt]
    image.load()  # the whole image decodes, not just its header


def test_models_list_the_new_ids_and_keep_the_old_ones(fake):
    body = call(fake, method="GET", path="/v1/models").json()
    assert body["object"] == "list"
    ids = [m["id"] for m in body["data"]]
    assert set(NEW_MODELS) | {"gpt-image-2", "gpt-image-2-2026-04-21", "gpt-image-1.5", "gpt-image-1-mini",
                              "gpt-image-1"} == set(ids)
    assert all(set(m) == {"id", "object", "created", "owned_by"} and m["object"] == "model" for m in body["data"])
    one = call(fake, method="GET", path=f"/v1/models/{SUNBURST_26}").json()
    assert one == {"id": SUNBURST_26, "object": "model", "created": MODELS[SUNBURST_26]["created"],
                   "owned_by": "system"}
