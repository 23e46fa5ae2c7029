"""The Batch API client (services/openai_batches.py) against the stand-in over real HTTP, from input to results."""

import base64
import io
import json
import time

import pytest
from PIL import Image

from services import openai_batches
from services.openai_images import ImageAPIError


@pytest.fixture
def upstream(fake_openai):
    return fake_openai, f"{fake_openai.base_url}/v1", fake_openai.api_key


def body(prompt: str, size: str = "1024x1024", output_format: str = "png") -> dict:
    return {"model": "gpt-image-2", "prompt": prompt, "n": 1, "size": size, "quality": "low",
            "output_format": output_format, "user": "u1"}


def run_to_the_end(base, key, batch_id, seconds=60) -> dict:
    deadline = time.monotonic() + seconds
    while True:
        batch = openai_batches.retrieve(base, key, batch_id)
        if batch["status"] in openai_batches.FINAL_STATES or time.monotonic() > deadline:
            return batch
        time.sleep(0.05)


def test_write_inputs_splits_at_the_line_and_byte_limits(tmp_path):
    lines = [openai_batches.request_line(f"item:{n}:1", body(f"prompt {n}")) for n in range(7)]
    by_lines = openai_batches.write_inputs(tmp_path / "a", lines, max_lines=3)
    assert [f.lines for f in by_lines] == [3, 3, 1] and by_lines[2].custom_ids == ("item:6:1",)
    one = len(json.dumps(lines[0], separators=(",", ":")).encode()) + 1
    by_bytes = openai_batches.write_inputs(tmp_path / "b", lines, max_bytes=2 * one + 5)
    assert [f.lines for f in by_bytes] == [2, 2, 2, 1]
    assert all(f.bytes == f.path.stat().st_size <= 2 * one + 5 for f in by_bytes)
    read = [json.loads(line) for f in by_lines for line in f.path.read_text().splitlines()]
    assert read == lines  # each line exactly as the synchronous call's body
    with pytest.raises(ValueError):
        openai_batches.write_inputs(tmp_path / "c", lines, max_bytes=10)


def test_a_batch_runs_to_completed_and_its_images_are_read_back_line_by_line(upstream, tmp_path):
    fake, base, key = upstream
    sizes = {"item:1:1": "1024x1024", "item:2:1": "1536x864", "item:3:1": "2048x1152"}
    lines = [openai_batches.request_line(cid, body(f"a lighthouse {cid}", size)) for cid, size in sizes.items()]
    [input_file] = openai_batches.write_inputs(tmp_path, lines)
    file_id = openai_batches.upload(base, key, input_file)
    batch = openai_batches.create(base, key, file_id, {"site_batches": "7"})
    assert batch["endpoint"] == openai_batches.ENDPOINT and batch["completion_window"] == "24h"
    assert batch["metadata"] == {"site_batches": "7"}
    done = run_to_the_end(base, key, batch["id"])
    assert done["status"] == "completed" and done["request_counts"] == {"total": 3, "completed": 3, "failed": 0}
    written = openai_batches.download(base, key, done["output_file_id"], tmp_path / "out.jsonl")
    assert written == (tmp_path / "out.jsonl").stat().st_size and not (tmp_path / "out.jsonl.part").exists()
    got = {}
    for result in openai_batches.results(tmp_path / "out.jsonl"):
        assert result.ok and result.error is None and result.request_id
        image = Image.open(io.BytesIO(base64.b64decode(result.body["data"][0]["b64_json"])))
        got[result.custom_id] = f"{image.size[0]}x{image.size[1]}"
        assert result.body["usage"]["output_tokens"] > 0
    assert got == sizes


def test_a_line_that_fails_is_in_the_error_file_with_its_reason(upstream, tmp_path):
    fake, base, key = upstream
    fake.batch_line_faults = {"item:2:1": "server_error"}
    lines = [openai_batches.request_line(f"item:{n}:1", body(f"p{n}")) for n in (1, 2, 3)]
    lines.append(openai_batches.request_line("item:4:1", body("p4", size="1000x1000")))  # not a size it takes
    [input_file] = openai_batches.write_inputs(tmp_path, lines)
    batch = openai_batches.create(base, key, openai_batches.upload(base, key, input_file), {})
    done = run_to_the_end(base, key, batch["id"])
    assert done["status"] == "completed" and done["request_counts"]["failed"] == 2
    openai_batches.download(base, key, done["error_file_id"], tmp_path / "err.jsonl")
    failed = {r.custom_id: r for r in openai_batches.results(tmp_path / "err.jsonl")}
    assert set(failed) == {"item:2:1", "item:4:1"} and not any(r.ok for r in failed.values())
    assert failed["item:2:1"].status == 500 and failed["item:4:1"].status == 400
    assert failed["item:4:1"].error["param"] == "size"
    openai_batches.download(base, key, done["output_file_id"], tmp_path / "out.jsonl")
    assert {r.custom_id for r in openai_batches.results(tmp_path / "out.jsonl")} == {"item:1:1", "item:3:1"}


def test_an_expired_batch_says_which_requests_never_ran(upstream, tmp_path):
    fake, base, key = upstream
    fake.batch_expire_after_requests = 2
    lines = [openai_batches.request_line(f"item:{n}:1", body(f"p{n}")) for n in range(4)]
    [input_file] = openai_batches.write_inputs(tmp_path, lines)
    batch = openai_batches.create(base, key, openai_batches.upload(base, key, input_file), {})
    done = run_to_the_end(base, key, batch["id"])
    assert done["status"] == "expired" and done["request_counts"]["completed"] == 2
    openai_batches.download(base, key, done["error_file_id"], tmp_path / "err.jsonl")
    expired = list(openai_batches.results(tmp_path / "err.jsonl"))
    assert len(expired) == 2 and all(r.error and r.error["code"] == "batch_expired" for r in expired)


def test_a_cancelled_batch_goes_through_cancelling(upstream, tmp_path):
    fake, base, key = upstream
    fake.batch_pace = {"validating": 0.0, "per_request": 0.3, "finalizing": 0.0, "cancelling": 0.1}
    lines = [openai_batches.request_line(f"item:{n}:1", body(f"p{n}")) for n in range(20)]
    [input_file] = openai_batches.write_inputs(tmp_path, lines)
    batch = openai_batches.create(base, key, openai_batches.upload(base, key, input_file), {})
    assert openai_batches.cancel(base, key, batch["id"])["status"] in ("cancelling", "cancelled")
    done = run_to_the_end(base, key, batch["id"])
    assert done["status"] == "cancelled" and done["request_counts"]["completed"] < 20


def test_a_download_cut_off_midway_leaves_nothing_and_says_so(upstream, tmp_path):
    fake, base, key = upstream
    lines = [openai_batches.request_line(f"item:{n}:1", body(f"p{n}")) for n in range(3)]
    [input_file] = openai_batches.write_inputs(tmp_path, lines)
    batch = openai_batches.create(base, key, openai_batches.upload(base, key, input_file), {})
    done = run_to_the_end(base, key, batch["id"])
    fake.content_cutoff, fake.content_cutoff_drop = 0.5, True  # promises the whole length, then hangs up
    with pytest.raises(ImageAPIError) as caught:
        openai_batches.download(base, key, done["output_file_id"], tmp_path / "out.jsonl")
    assert caught.value.kind == "broken"
    assert not (tmp_path / "out.jsonl").exists() and not (tmp_path / "out.jsonl.part").exists()


def test_refusals_are_classified_and_never_show_the_key(upstream, tmp_path):
    fake, base, key = upstream
    with pytest.raises(ImageAPIError) as caught:
        openai_batches.retrieve(base, key, "batch_nope")
    assert caught.value.status == 404 and key not in str(caught.value)
    wrong = "sk-proj-" + "w" * 40 + "9z8y"
    with pytest.raises(ImageAPIError) as caught:
        openai_batches.retrieve(base, wrong, "batch_nope")
    assert caught.value.kind == "auth" and wrong not in str(caught.value)  # OpenAI masks all but its end
