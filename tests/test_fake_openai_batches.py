"""The OpenAI stand-in's Files and Batch APIs (tools/fake_openai.py) over real HTTP with plain requests."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tools.fake_openai import (  # noqa: E402
    BATCH_PACE,
    FakeOpenAI,
    build_from_args,
    parse_args,
    usage_cost,
    usage_for,
)

KEY = "sk-test-fake-openai"
IMAGES = "/v1/images/generations"
THIRTY_DAYS = 30 * 24 * 3600
EXPIRED = {"code": "batch_expired",  # OpenAI's Batch guide, "Batch expiration"
           "message": "This request could not be executed before the completion window expired."}
FILE_ID = re.compile(r"^file-[A-Za-z0-9]{22}$")
BATCH_ID = re.compile(r"^batch_[0-9a-f]{32}$")
LINE_ID = re.compile(r"^batch_req_[0-9a-f]{32}$")
BATCH_FIELDS = ["id", "object", "endpoint", "model", "errors", "input_file_id", "completion_window", "status",
                "output_file_id", "error_file_id", "created_at", "in_progress_at", "expires_at", "finalizing_at",
                "completed_at", "failed_at", "expired_at", "cancelling_at", "cancelled_at", "request_counts", "usage",
                "metadata"]
FILE_FIELDS = ["id", "object", "bytes", "created_at", "expires_at", "filename", "purpose", "status", "status_details"]


class Clock:
    def __init__(self):
        self.now = 1_780_000_000.0

    def __call__(self):
        return self.now


def api(fake, method, path, *, key=KEY, headers=None, **kwargs):
    """One request on its own session, its body read."""
    headers = {**({"Authorization": f"Bearer {key}"} if key else {}), **(headers or {})}
    with requests.Session() as session:
        response = session.request(method, fake.base_url + path, headers=headers, timeout=20, **kwargs)
        response.close()
    return response


def line(custom_id, prompt="a red fox in the snow", *, url=IMAGES, **body):
    return {"custom_id": custom_id, "method": "POST", "url": url,
            "body": {"model": "gpt-image-2", "prompt": prompt, "quality": "low", **body}}


def jsonl(lines) -> bytes:
    return "".join(json.dumps(item) + "\n" for item in lines).encode("utf-8")


def upload(fake, content, filename="batch.jsonl", purpose="batch", **fields):
    """Upload bytes (or lines) with the Files API; the response."""
    data = content if isinstance(content, bytes) else jsonl(content)
    return api(fake, "POST", "/v1/files", files={"file": (filename, data)}, data={"purpose": purpose, **fields})


def start_batch(fake, content, **extra):
    """Upload a file and create a batch from it; the batch object (status validating)."""
    uploaded = upload(fake, content)
    assert uploaded.status_code == 200, uploaded.text
    created = api(fake, "POST", "/v1/batches", json={"input_file_id": uploaded.json()["id"], "endpoint": IMAGES,
                                                     "completion_window": "24h", **extra})
    assert created.status_code == 200, created.text
    return created.json()


def batch_of(fake, batch_id):
    response = api(fake, "GET", f"/v1/batches/{batch_id}")
    assert response.status_code == 200, response.text
    return response.json()


def wait_for(fake, batch_id, *statuses, timeout=20, until=None):
    """Poll the batch until its status is one of these (or until(batch) holds); every batch object seen."""
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        seen.append(batch_of(fake, batch_id))
        if seen[-1]["status"] in statuses or (until is not None and until(seen[-1])):
            return seen
        time.sleep(0.01)
    raise AssertionError(f"batch {batch_id} still {seen[-1]['status']} after {timeout}s")


def lines_of(fake, file_id):
    response = api(fake, "GET", f"/v1/files/{file_id}/content")
    assert response.status_code == 200, response.text
    return [json.loads(text) for text in response.text.splitlines()]


def error_of(response) -> dict:
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
    return body["error"]


def image_of(result) -> Image.Image:
    data = base64.b64decode(result["response"]["body"]["data"][0]["b64_json"], validate=True)
    return Image.open(io.BytesIO(data))


@pytest.fixture
def fake():
    server = FakeOpenAI(api_key=KEY).start()
    yield server
    server.stop()


# --- the whole way -------------------------------------------------------------------------------

SIZES = ["1024x1024", "1536x864", "864x1536", "1024x640", "1280x720"]


def test_five_lines_run_to_completed_with_each_image_at_its_size(fake):
    fake.batch_pace = {"validating": 0.05, "per_request": 0.08, "finalizing": 0.05}
    lines = [line(f"item-{i}", f"lighthouse number {i}", size=size) for i, size in enumerate(SIZES)]
    created = start_batch(fake, lines, metadata={"subscriber_batch": "42"})
    assert list(created) == BATCH_FIELDS and BATCH_ID.match(created["id"])
    assert created["status"] == "validating" and created["request_counts"] == {"total": 0, "completed": 0, "failed": 0}
    assert created["expires_at"] == created["created_at"] + 86400 and created["in_progress_at"] is None
    assert (created["endpoint"], created["completion_window"]) == (IMAGES, "24h")

    seen = wait_for(fake, created["id"], "completed")
    batch = seen[-1]
    statuses = [b["status"] for b in seen]
    assert statuses[0] in ("validating", "in_progress") and "in_progress" in statuses
    assert statuses.index("in_progress") < len(statuses) - 1
    done = [b["request_counts"]["completed"] for b in seen if b["status"] == "in_progress"]
    assert done == sorted(done) and len(set(done)) > 1  # the counts move as the requests complete
    assert all(b["request_counts"]["total"] == 5 for b in seen if b["status"] != "validating")

    assert batch["request_counts"] == {"total": 5, "completed": 5, "failed": 0}
    assert batch["created_at"] <= batch["in_progress_at"] <= batch["finalizing_at"] <= batch["completed_at"]
    assert batch["failed_at"] is batch["expired_at"] is batch["cancelling_at"] is batch["cancelled_at"] is None
    assert batch["errors"] is None and batch["error_file_id"] is None
    assert batch["model"] == "gpt-image-2" and batch["metadata"] == {"subscriber_batch": "42"}

    results = lines_of(fake, batch["output_file_id"])
    assert [r["custom_id"] for r in results] == [f"item-{i}" for i in range(5)]
    for result, size in zip(results, SIZES, strict=True):
        assert list(result) == ["id", "custom_id", "response", "error"] and result["error"] is None
        assert LINE_ID.match(result["id"]) and re.fullmatch(r"[0-9a-f]{32}", result["response"]["request_id"])
        assert result["response"]["status_code"] == 200
        body = result["response"]["body"]
        assert set(body) == {"created", "background", "data", "output_format", "quality", "size", "usage"}
        assert (body["size"], body["quality"], body["output_format"]) == (size, "low", "png")
        width, height = map(int, size.split("x"))
        image = image_of(result)
        assert (image.format, image.size) == ("PNG", (width, height))
        prompt = next(x["body"]["prompt"] for x in lines if x["custom_id"] == result["custom_id"])
        assert body["usage"] == usage_for("gpt-image-2", width, height, "low", prompt)

    usages = [r["response"]["body"]["usage"] for r in results]
    assert batch["usage"] == {"input_tokens": sum(u["input_tokens"] for u in usages),
                              "input_tokens_details": {"cached_tokens": 0},
                              "output_tokens": sum(u["output_tokens"] for u in usages),
                              "output_tokens_details": {"reasoning_tokens": 0},
                              "total_tokens": sum(u["total_tokens"] for u in usages)}
    assert usage_cost(usages[0], batch=True) == pytest.approx(usage_cost(usages[0]) / 2)

    meta = api(fake, "GET", f"/v1/files/{batch['output_file_id']}").json()
    assert list(meta) == FILE_FIELDS and FILE_ID.match(meta["id"])
    assert meta["purpose"] == "batch_output" and meta["filename"] == f"{batch['id']}_output.jsonl"
    assert meta["bytes"] == len(api(fake, "GET", f"/v1/files/{meta['id']}/content").content)
    assert meta["expires_at"] == meta["created_at"] + THIRTY_DAYS and meta["status"] == "processed"
    assert fake.requests == [] and [r["custom_id"] for r in fake.batch_requests] == [f"item-{i}" for i in range(5)]


def test_the_batch_list_pages_newest_first(fake):
    ids = [start_batch(fake, [line("a")])["id"] for _ in range(3)]
    first = api(fake, "GET", "/v1/batches", params={"limit": 2}).json()
    assert [b["id"] for b in first["data"]] == ids[::-1][:2]
    assert (first["object"], first["first_id"], first["last_id"], first["has_more"]) == ("list", ids[2], ids[1], True)
    rest = api(fake, "GET", "/v1/batches", params={"limit": 2, "after": first["last_id"]}).json()
    assert [b["id"] for b in rest["data"]] == [ids[0]] and rest["has_more"] is False
    assert len(api(fake, "GET", "/v1/batches").json()["data"]) == 3  # default limit 20
    too_many = api(fake, "GET", "/v1/batches", params={"limit": 101})
    assert too_many.status_code == 400 and error_of(too_many)["code"] == "integer_above_max_value"


# --- files ---------------------------------------------------------------------------------------

def test_an_upload_is_kept_on_disk_and_described_as_the_files_api_does(fake):
    data = jsonl([line("a"), line("b")])
    response = upload(fake, data, filename="prompts.jsonl")
    assert response.status_code == 200, response.text
    meta = response.json()
    assert list(meta) == FILE_FIELDS and FILE_ID.match(meta["id"])
    assert (meta["object"], meta["bytes"], meta["filename"], meta["purpose"]) == ("file", len(data), "prompts.jsonl",
                                                                                 "batch")
    assert (meta["status"], meta["status_details"]) == ("processed", None)
    assert meta["expires_at"] == meta["created_at"] + THIRTY_DAYS
    assert Path(fake.files_dir, meta["id"]).read_bytes() == data
    assert api(fake, "GET", f"/v1/files/{meta['id']}").json() == meta
    assert api(fake, "GET", f"/v1/files/{meta['id']}/content").content == data
    assert [f["id"] for f in api(fake, "GET", "/v1/files", params={"purpose": "batch"}).json()["data"]] == [meta["id"]]

    deleted = api(fake, "DELETE", f"/v1/files/{meta['id']}")
    assert deleted.json() == {"id": meta["id"], "object": "file", "deleted": True}
    assert not Path(fake.files_dir, meta["id"]).exists()
    for method, path in (("GET", ""), ("GET", "/content"), ("DELETE", "")):
        gone = api(fake, method, f"/v1/files/{meta['id']}{path}")
        assert gone.status_code == 404
        assert error_of(gone) == {"message": f"No such File object: {meta['id']}", "type": "invalid_request_error",
                                  "param": "id", "code": None}


def test_an_upload_sent_chunked_is_read_as_it_comes(fake):
    boundary = "x-boundary-1234"
    data = jsonl([line(f"c{i}", "p" * 2000) for i in range(300)])  # ~650 KB, more than one read

    def body():
        yield f"--{boundary}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n".encode()
        yield (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.jsonl\"\r\n"
               "Content-Type: application/octet-stream\r\n\r\n").encode()
        for start in range(0, len(data), 70_000):
            yield data[start:start + 70_000]
        yield f"\r\n--{boundary}--\r\n".encode()

    response = api(fake, "POST", "/v1/files", data=body(),
                   headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert response.status_code == 200, response.text
    assert response.json()["bytes"] == len(data)
    assert Path(fake.files_dir, response.json()["id"]).read_bytes() == data


def test_uploads_the_files_api_refuses(fake):
    text = upload(fake, b"not jsonl", filename="notes.txt")
    assert text.status_code == 400
    assert error_of(text) == {"message": "Invalid file format for Batch API. Must be .jsonl",
                              "type": "invalid_request_error", "param": None, "code": None}
    no_purpose = api(fake, "POST", "/v1/files", files={"file": ("a.jsonl", b"{}\n")})
    assert no_purpose.status_code == 400 and error_of(no_purpose)["code"] == "missing_required_parameter"
    bad_purpose = upload(fake, b"{}\n", purpose="batch_output")
    assert bad_purpose.status_code == 400 and error_of(bad_purpose)["param"] == "purpose"
    no_file = api(fake, "POST", "/v1/files", files={"purpose": (None, "batch")})
    assert no_file.status_code == 400 and error_of(no_file)["param"] == "file"
    fake.max_batch_file_bytes = 100
    big = upload(fake, b"x" * 101)
    assert big.status_code == 400 and error_of(big)["code"] == "file_too_large"
    short = upload(fake, b"x" * 100, purpose="batch", **{"expires_after[anchor]": "created_at",
                                                         "expires_after[seconds]": "3600"})
    assert short.status_code == 200 and short.json()["expires_at"] == short.json()["created_at"] + 3600
    not_multipart = api(fake, "POST", "/v1/files", json={"purpose": "batch"})
    assert not_multipart.status_code == 400
    assert os.listdir(fake.files_dir) == [short.json()["id"]]  # nothing refused stays on disk


def test_a_file_past_its_expiry_is_gone():
    clock = Clock()
    with FakeOpenAI(api_key=KEY, clock=clock) as fake:
        batch = start_batch(fake, [line("a")], output_expires_after={"anchor": "created_at", "seconds": 3600})
        output_id = wait_for(fake, batch["id"], "completed")[-1]["output_file_id"]
        meta = api(fake, "GET", f"/v1/files/{output_id}").json()
        assert meta["expires_at"] == meta["created_at"] + 3600
        clock.now += 3600
        assert api(fake, "GET", f"/v1/files/{output_id}/content").status_code == 404
        assert api(fake, "GET", f"/v1/files/{batch['input_file_id']}").status_code == 200  # 30 days for inputs


# --- validation ----------------------------------------------------------------------------------

TWO = [line("a"), line("b")]
INVALID_FILES = {
    "mixed endpoints": (jsonl([line("a"), line("b", url="/v1/chat/completions")]), "url_mismatch", 2, "url"),
    "duplicate custom_id": (jsonl([line("a"), line("b"), line("a")]), "duplicate_custom_id", 3, "custom_id"),
    "not JSONL": (b"prompt one\nprompt two\n", "invalid_json_line", 1, None),
    "a byte-order mark": (b"\xef\xbb\xbf" + jsonl(TWO), "invalid_json_line", 1, None),
    "two models": (jsonl([line("a"), line("b", model="gpt-image-1.5")]), "model_mismatch", 2, "body.model"),
    "no custom_id": (jsonl([{k: v for k, v in line("a").items() if k != "custom_id"}]), "missing_required_parameter",
                     1, "custom_id"),
    "a GET": (jsonl([{**line("a"), "method": "GET"}]), "invalid_value", 1, "method"),
    "an empty file": (b"\n", "empty_file", None, None),
}


@pytest.mark.parametrize("content, code, line_number, param", INVALID_FILES.values(), ids=list(INVALID_FILES))
def test_an_invalid_input_file_fails_the_batch_with_its_errors(fake, content, code, line_number, param):
    batch = start_batch(fake, content)
    failed = wait_for(fake, batch["id"], "failed", "completed")[-1]
    assert failed["status"] == "failed", failed
    assert failed["errors"]["object"] == "list"
    first = failed["errors"]["data"][0]
    assert list(first) == ["code", "message", "param", "line"]
    assert (first["code"], first["line"], first["param"]) == (code, line_number, param)
    if code == "invalid_json_line":
        assert first["message"] == "This line is not parseable as valid JSON."
    assert failed["request_counts"] == {"total": 0, "completed": 0, "failed": 0}
    assert failed["failed_at"] >= failed["created_at"] and failed["in_progress_at"] is None
    assert failed["output_file_id"] is failed["error_file_id"] is None and fake.batch_requests == []


def test_not_jsonl_lists_an_error_for_each_line(fake):
    failed = wait_for(fake, start_batch(fake, b"one\n\n" + jsonl([line("ok")]) + b"[1, 2\n")["id"], "failed")[-1]
    assert [(e["code"], e["line"]) for e in failed["errors"]["data"]] == [("invalid_json_line", 1),
                                                                          ("invalid_json_line", 4)]


def test_more_lines_than_the_limit_fail_the_batch(fake):
    fake.max_batch_lines = 3
    failed = wait_for(fake, start_batch(fake, [line(f"c{i}") for i in range(4)])["id"], "failed")[-1]
    assert [(e["code"], e["line"]) for e in failed["errors"]["data"]] == [("too_many_tasks", 4)]
    assert "at most 3" in failed["errors"]["data"][0]["message"]
    fine = wait_for(fake, start_batch(fake, [line(f"c{i}") for i in range(3)])["id"], "completed", "failed")[-1]
    assert fine["status"] == "completed"


def test_creating_a_batch_checks_the_request_first(fake):
    file_id = upload(fake, [line("a")]).json()["id"]
    other = upload(fake, b"hello", filename="notes.txt", purpose="user_data").json()["id"]
    good = {"input_file_id": file_id, "endpoint": IMAGES, "completion_window": "24h"}
    cases = [
        ({**good, "input_file_id": "file-nope"}, 404, "input_file_id", None),
        ({**good, "completion_window": "1h"}, 400, "completion_window", "invalid_value"),
        ({**good, "endpoint": "/v1/bogus"}, 400, "endpoint", "invalid_value"),
        ({**good, "endpoint": "/v1/chat/completions"}, 400, "endpoint", "unsupported_value"),
        ({**good, "input_file_id": other}, 400, "input_file_id", "invalid_value"),
        ({**good, "metadata": {f"k{i}": "v" for i in range(17)}}, 400, "metadata", "object_above_max_properties"),
        ({**good, "metadata": {"k": "v" * 513}}, 400, "metadata.k", "string_above_max_length"),
        ({**good, "output_expires_after": {"anchor": "created_at", "seconds": 60}}, 400,
         "output_expires_after.seconds", "integer_below_min_value"),
        ({**good, "output_expires_after": {"anchor": "completed_at", "seconds": 3600}}, 400,
         "output_expires_after.anchor", "invalid_value"),
        ({k: v for k, v in good.items() if k != "endpoint"}, 400, "endpoint", "missing_required_parameter"),
        ({**good, "priority": "high"}, 400, "priority", "unknown_parameter"),
    ]
    for body, status, param, code in cases:
        response = api(fake, "POST", "/v1/batches", json=body)
        assert response.status_code == status, (body, response.text)
        assert (error_of(response)["param"], error_of(response)["code"]) == (param, code), body
    assert error_of(api(fake, "POST", "/v1/batches", json={**good, "input_file_id": "file-nope"}))["message"] == (
        "No such File object: file-nope")
    broken = api(fake, "POST", "/v1/batches", data=b"{not json", headers={"Content-Type": "application/json"})
    assert broken.status_code == 400 and "could not parse the JSON body" in error_of(broken)["message"]
    assert api(fake, "GET", "/v1/batches").json()["data"] == []


# --- line errors ---------------------------------------------------------------------------------

def test_a_failing_line_goes_to_the_error_file_with_the_body_the_sync_endpoint_gives(fake):
    fake.batch_line_faults = {"broken": "server_error", "busy": "unavailable"}
    lines = [line("good-1"), line("bad-size", size="1000x1000"), line("blocked", "a FORBIDDEN prompt"),
             line("broken"), line("busy"), line("unknown-key", style="vivid"), line("good-2")]
    batch = wait_for(fake, start_batch(fake, lines)["id"], "completed")[-1]
    assert batch["request_counts"] == {"total": 7, "completed": 2, "failed": 5}
    assert [r["custom_id"] for r in lines_of(fake, batch["output_file_id"])] == ["good-1", "good-2"]
    errors = {r["custom_id"]: r for r in lines_of(fake, batch["error_file_id"])}
    assert list(errors) == ["bad-size", "blocked", "broken", "busy", "unknown-key"]
    assert all(r["error"] is None and LINE_ID.match(r["id"]) for r in errors.values())
    statuses = {cid: r["response"]["status_code"] for cid, r in errors.items()}
    assert statuses == {"bad-size": 400, "blocked": 400, "broken": 500, "busy": 503, "unknown-key": 400}
    for custom_id in ("bad-size", "unknown-key"):
        body = next(x["body"] for x in lines if x["custom_id"] == custom_id)
        sync = api(fake, "POST", IMAGES, json=body)
        assert errors[custom_id]["response"]["body"] == sync.json()  # the very 400 the sync endpoint gives
    blocked = errors["blocked"]["response"]
    assert blocked["body"]["error"]["code"] == "moderation_blocked"
    assert blocked["request_id"] in blocked["body"]["error"]["message"]
    assert errors["broken"]["response"]["body"]["error"]["type"] == "server_error"
    assert batch["usage"]["output_tokens"] == 2 * usage_for("gpt-image-2", 1024, 1024, "low", "x")["output_tokens"]


# --- expiry, cancel ------------------------------------------------------------------------------

def test_an_early_expiry_leaves_half_the_results_and_the_rest_as_batch_expired(fake):
    fake.batch_expire_after_requests = 3
    lines = [line(f"item-{i}") for i in range(6)]
    batch = wait_for(fake, start_batch(fake, lines)["id"], "expired", "completed")[-1]
    assert batch["status"] == "expired" and batch["expired_at"] >= batch["in_progress_at"]
    assert batch["completed_at"] is batch["finalizing_at"] is None
    assert batch["request_counts"] == {"total": 6, "completed": 3, "failed": 0}
    assert [r["custom_id"] for r in lines_of(fake, batch["output_file_id"])] == ["item-0", "item-1", "item-2"]
    expired = lines_of(fake, batch["error_file_id"])
    assert [r["custom_id"] for r in expired] == ["item-3", "item-4", "item-5"]
    for result in expired:
        assert list(result) == ["id", "custom_id", "response", "error"] and LINE_ID.match(result["id"])
        assert result["response"] is None and result["error"] == EXPIRED


def test_a_batch_expires_when_its_24_hours_are_over():
    clock = Clock()
    with FakeOpenAI(api_key=KEY, clock=clock, batch_pace={"per_request": 0.05}) as fake:
        batch = start_batch(fake, [line(f"item-{i}") for i in range(8)])
        wait_for(fake, batch["id"], until=lambda b: b["request_counts"]["completed"] >= 2)
        clock.now += 86400
        done = wait_for(fake, batch["id"], "expired", "completed")[-1]
    assert done["status"] == "expired" and done["expired_at"] == done["expires_at"]
    assert 2 <= done["request_counts"]["completed"] < 8


def test_cancel_mid_way_keeps_the_results_and_lists_the_rest_as_cancelled(fake):
    fake.batch_pace = {"per_request": 0.08, "cancelling": 0.1}
    lines = [line(f"item-{i}") for i in range(10)]
    batch = start_batch(fake, lines)
    wait_for(fake, batch["id"], until=lambda b: b["request_counts"]["completed"] >= 2)
    cancelling = api(fake, "POST", f"/v1/batches/{batch['id']}/cancel")
    assert cancelling.status_code == 200 and cancelling.json()["status"] == "cancelling"
    assert cancelling.json()["cancelling_at"] is not None and cancelling.json()["cancelled_at"] is None
    assert api(fake, "POST", f"/v1/batches/{batch['id']}/cancel").json()["status"] == "cancelling"
    seen = wait_for(fake, batch["id"], "cancelled", "completed")
    done = seen[-1]
    assert done["status"] == "cancelled" and done["cancelled_at"] >= done["cancelling_at"]
    assert done["completed_at"] is None and done["output_file_id"] and done["error_file_id"]
    ran = [r["custom_id"] for r in lines_of(fake, done["output_file_id"])]
    cancelled = lines_of(fake, done["error_file_id"])
    assert 2 <= len(ran) < 10 and ran == [f"item-{i}" for i in range(len(ran))]
    assert [r["custom_id"] for r in cancelled] == [f"item-{i}" for i in range(len(ran), 10)]
    assert all(r["response"] is None and r["error"]["code"] == "batch_cancelled" for r in cancelled)
    assert done["request_counts"] == {"total": 10, "completed": len(ran), "failed": 0}
    again = api(fake, "POST", f"/v1/batches/{batch['id']}/cancel")
    assert again.status_code == 200 and again.json()["status"] == "cancelled"


def test_a_finished_batch_cannot_be_cancelled(fake):
    batch = wait_for(fake, start_batch(fake, [line("a")])["id"], "completed")[-1]
    refused = api(fake, "POST", f"/v1/batches/{batch['id']}/cancel")
    assert refused.status_code == 409
    assert error_of(refused) == {"message": "Cannot cancel a batch with status 'completed'.",
                                 "type": "invalid_request_error", "param": None, "code": None}


def test_a_batch_cancelled_while_validating_runs_nothing(fake):
    fake.batch_pace = {"validating": 0.2}
    batch = start_batch(fake, [line("a"), line("b")])
    assert api(fake, "POST", f"/v1/batches/{batch['id']}/cancel").json()["status"] == "cancelling"
    done = wait_for(fake, batch["id"], "cancelled", "completed")[-1]
    assert done["status"] == "cancelled" and done["in_progress_at"] is None and done["output_file_id"] is None
    assert [r["error"]["code"] for r in lines_of(fake, done["error_file_id"])] == ["batch_cancelled"] * 2
    assert fake.batch_requests == []


# --- the content endpoint ------------------------------------------------------------------------

def test_a_cut_off_output_file_ends_mid_line(fake):
    batch = wait_for(fake, start_batch(fake, [line(f"item-{i}") for i in range(6)])["id"], "completed")[-1]
    whole = api(fake, "GET", f"/v1/files/{batch['output_file_id']}/content").content
    fake.content_cutoff = 0.5
    cut = api(fake, "GET", f"/v1/files/{batch['output_file_id']}/content")
    assert cut.status_code == 200 and int(cut.headers["Content-Length"]) == len(cut.content)
    assert 0 < len(cut.content) < len(whole) and whole.startswith(cut.content)
    *complete, partial = cut.content.split(b"\n")
    assert [json.loads(text)["custom_id"] for text in complete] == [f"item-{i}" for i in range(len(complete))]
    assert partial and not cut.content.endswith(b"\n")
    with pytest.raises(ValueError):
        json.loads(partial)
    input_id = batch["input_file_id"]  # only output files are cut
    assert api(fake, "GET", f"/v1/files/{input_id}/content").content == jsonl([line(f"item-{i}") for i in range(6)])

    fake.content_cutoff_drop = True  # now the Content-Length is the whole file's and the connection drops
    with pytest.raises((requests.exceptions.ChunkedEncodingError, requests.exceptions.ConnectionError)):
        api(fake, "GET", f"/v1/files/{batch['output_file_id']}/content")
    fake.reset()
    assert api(fake, "GET", f"/v1/files/{batch['output_file_id']}/content").content == whole


def _status_kb(pid: int, field: str) -> int:
    for text in Path(f"/proc/{pid}/status").read_text().splitlines():
        if text.startswith(field + ":"):
            return int(text.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc to read the memory")
def test_a_large_output_streams_from_disk_without_the_stand_in_growing():
    """50 lines of ten 2048x2048 PNGs (~70 MB of JSONL), downloaded from the stand-in run by its command line."""
    process = subprocess.Popen([sys.executable, str(ROOT / "tools" / "fake_openai.py"), "--port", "0",
                                "--api-key", KEY], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                               text=True)
    try:
        base = process.stdout.readline().strip()
        assert base.endswith("/v1"), base

        class Remote:
            base_url = base[: -len("/v1")]

        lines = [line(f"big-{i:02d}", f"a harbour at dawn, picture {i}", size="2048x2048", n=10) for i in range(50)]
        batch = start_batch(Remote, lines)
        done = wait_for(Remote, batch["id"], "completed", "failed", timeout=120)[-1]
        assert done["request_counts"] == {"total": 50, "completed": 50, "failed": 0}
        size = api(Remote, "GET", f"/v1/files/{done['output_file_id']}").json()["bytes"]
        assert size > 50_000_000

        before = _status_kb(process.pid, "VmRSS")
        Path(f"/proc/{process.pid}/clear_refs").write_text("5")  # VmHWM from now on: the peak during the download
        received = 0
        ids = []
        with requests.get(f"{Remote.base_url}/v1/files/{done['output_file_id']}/content", stream=True, timeout=60,
                          headers={"Authorization": f"Bearer {KEY}"}) as response:
            assert response.status_code == 200 and int(response.headers["Content-Length"]) == size
            for text in response.iter_lines(chunk_size=1024 * 1024):
                received += len(text) + 1
                result = json.loads(text)
                ids.append(result["custom_id"])
                assert len(result["response"]["body"]["data"]) == 10
        peak = _status_kb(process.pid, "VmHWM")
        print(f"stand-in RSS {before} KB before, peak {peak} KB while streaming {size} bytes")
        assert received == size and ids == [f"big-{i:02d}" for i in range(50)]
        assert peak - before < 8 * 1024, f"the stand-in grew by {peak - before} KB streaming {size} bytes"
    finally:
        process.terminate()
        process.wait(timeout=10)
        process.stdout.close()


# --- authentication, unknown ids, methods --------------------------------------------------------

@pytest.mark.parametrize("method, path", [("GET", "/v1/files"), ("POST", "/v1/files"), ("GET", "/v1/files/file-x"),
                                          ("DELETE", "/v1/files/file-x"), ("GET", "/v1/files/file-x/content"),
                                          ("GET", "/v1/batches"), ("POST", "/v1/batches"),
                                          ("GET", "/v1/batches/batch_x"), ("POST", "/v1/batches/batch_x/cancel")])
def test_every_new_endpoint_wants_the_key(fake, method, path):
    response = api(fake, method, path, key=None)
    assert response.status_code == 401 and error_of(response)["message"].startswith("You didn't provide an API key.")
    wrong = api(fake, method, path, key="sk-wrong-key-0000000000")
    assert wrong.status_code == 401 and error_of(wrong)["code"] == "invalid_api_key"


def test_unknown_batches_and_wrong_methods(fake):
    for method, path in (("GET", "/v1/batches/batch_nope"), ("POST", "/v1/batches/batch_nope/cancel")):
        response = api(fake, method, path)
        assert response.status_code == 404
        assert error_of(response) == {"message": "No batch found with id 'batch_nope'.",
                                      "type": "invalid_request_error", "param": None, "code": "batch_not_found"}
    wrong = api(fake, "DELETE", "/v1/batches/batch_nope")
    assert wrong.status_code == 405 and wrong.headers["Allow"] == "GET"
    assert api(fake, "GET", "/v1/batches/batch_nope/results").status_code == 404
    assert api(fake, "GET", "/v1/filesystem").status_code == 404


# --- knobs, command line, stop -------------------------------------------------------------------

def test_the_pace_knob_refuses_unknown_stages(fake):
    assert fake.batch_pace == BATCH_PACE
    with pytest.raises(ValueError):
        fake.batch_pace = {"queued": 1}
    with pytest.raises(ValueError):
        FakeOpenAI(batch_pace={"per_request": -1})


def test_the_command_line_sets_the_batch_knobs():
    fake = build_from_args(parse_args(["--port", "0", "--batch-pace", "validating=0.5", "--batch-pace",
                                       "per_request=0.25", "--batch-window-seconds", "60",
                                       "--batch-expire-after-requests", "4", "--max-batch-lines", "9",
                                       "--content-cutoff", "0.3"]))
    try:
        assert fake.batch_pace == {**BATCH_PACE, "validating": 0.5, "per_request": 0.25}
        assert (fake.batch_window_seconds, fake.batch_expire_after_requests) == (60, 4)
        assert (fake.max_batch_lines, fake.content_cutoff) == (9, 0.3)
    finally:
        fake.stop()
    assert not Path(fake.files_dir).exists()


def test_stop_ends_a_running_batch_and_removes_the_files():
    fake = FakeOpenAI(api_key=KEY, batch_pace={"per_request": 5}).start()
    batch = start_batch(fake, [line("a"), line("b")])
    wait_for(fake, batch["id"], "in_progress")
    folder = fake.files_dir
    started = time.monotonic()
    fake.stop()
    assert time.monotonic() - started < 3
    assert not Path(folder).exists()
    assert not [t for t in threading.enumerate() if t.name == f"fake-openai-{batch['id']}"]
