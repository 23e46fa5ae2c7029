"""OpenAI's Files and Batch APIs over plain HTTP (requests; no OpenAI library): the upstream of economy batches.

An economy batch goes to OpenAI as one JSONL file (one line per image: `custom_id`, `method`,
`url`, `body` exactly as the synchronous call sends it), uploaded with `purpose=batch`, then
a batch on `/v1/images/generations` with a 24-hour completion window; OpenAI bills it at half
the synchronous price. Its output and error files are downloaded to disk in pieces and read
back line by line: the output of 100 4K images is gigabytes of base64 and is never held in
memory whole. A download that ends short of its Content-Length is refused, never half-read.

Every failure is an ImageAPIError, classified as for the synchronous calls. The key only
travels in the Authorization header.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import requests

from services.openai_images import CONNECT_TIMEOUT, ImageAPIError, _classify

ENDPOINT = "/v1/images/generations"
MAX_LINES = 50_000  # OpenAI's limits for one batch input file
MAX_FILE_BYTES = 200 * 1024 * 1024
CHUNK = 1024 * 1024
OPEN_STATES = ("validating", "in_progress", "finalizing", "cancelling")
FINAL_STATES = ("completed", "failed", "expired", "cancelled")


@dataclasses.dataclass(frozen=True)
class InputFile:
    """A written JSONL input file: its path, how many lines, how many bytes, and the custom_ids in it."""

    path: Path
    lines: int
    bytes: int
    custom_ids: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Result:
    """One line of an output or error file: whose it is, the HTTP status its request got, and its body or error."""

    custom_id: str
    status: int | None
    body: dict | None
    error: dict | None
    request_id: str | None

    @property
    def ok(self) -> bool:
        """True when the request made an image (status 200 with a body)."""
        return self.status == 200 and isinstance(self.body, dict)


def request_line(custom_id: str, body: dict) -> dict:
    """One input line: the synchronous call's body under our id."""
    return {"custom_id": custom_id, "method": "POST", "url": ENDPOINT, "body": body}


def write_inputs(folder: Path, lines: Iterable[dict], max_lines: int = MAX_LINES,
                 max_bytes: int = MAX_FILE_BYTES) -> list[InputFile]:
    """Write the lines as JSONL files under `folder`, a new file before one would pass max_lines or max_bytes."""
    folder.mkdir(parents=True, exist_ok=True)
    files: list[InputFile] = []
    handle, path, count, size, ids = None, None, 0, 0, []

    def close() -> None:
        if handle is not None:
            handle.close()
            files.append(InputFile(path, count, size, tuple(ids)))

    try:
        for line in lines:
            data = (json.dumps(line, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")
            if len(data) > max_bytes:
                raise ValueError(f"one line of {len(data)} bytes is larger than a batch file may be")
            if handle is None or count >= max_lines or size + len(data) > max_bytes:
                close()
                path = folder / f"input-{len(files) + 1}.jsonl"
                handle, count, size, ids = path.open("wb"), 0, 0, []
            handle.write(data)
            count, size = count + 1, size + len(data)
            ids.append(str(line["custom_id"]))
    finally:
        close()
    return files


def _fail(response: requests.Response, what: str) -> ImageAPIError:
    """The ImageAPIError for a refused call, classified as the synchronous calls are."""
    try:
        error = response.json().get("error") or {}
    except (ValueError, AttributeError):
        error = {}
    error = error if isinstance(error, dict) else {}
    return ImageAPIError(_classify(response.status_code, error),
                         str(error.get("message") or f"{what} answered HTTP {response.status_code}")[:500],
                         status=response.status_code, error_type=error.get("type"), code=error.get("code"),
                         param=error.get("param"), request_id=response.headers.get("x-request-id"))


def _call(method: str, url: str, api_key: str, what: str, timeout: float = 60, **kwargs) -> dict:
    """One JSON call; its answer, or ImageAPIError."""
    try:
        response = requests.request(method, url, headers={"Authorization": f"Bearer {api_key}"},
                                    timeout=(CONNECT_TIMEOUT, timeout), **kwargs)
    except requests.Timeout:
        raise ImageAPIError("timeout", f"{what}: no answer in time") from None
    except requests.RequestException as exc:
        raise ImageAPIError("server", f"{what}: unreachable ({type(exc).__name__})") from None
    with response:
        if response.status_code != 200:
            raise _fail(response, what)
        try:
            answer = response.json()
        except ValueError:
            raise ImageAPIError("broken", f"{what}: an unreadable answer", status=200) from None
    if not isinstance(answer, dict):
        raise ImageAPIError("broken", f"{what}: an unreadable answer", status=200)
    return answer


def upload(base_url: str, api_key: str, input_file: InputFile) -> str:
    """Upload an input file (purpose=batch, streamed from disk); its file id."""
    with input_file.path.open("rb") as handle:
        answer = _call("POST", f"{base_url}/files", api_key, "the file upload", timeout=600,
                       data={"purpose": "batch"}, files={"file": (input_file.path.name, handle,
                                                                  "application/jsonl")})
    if not isinstance(answer.get("id"), str):
        raise ImageAPIError("broken", "the file upload answered without an id", status=200)
    return answer["id"]


def create(base_url: str, api_key: str, input_file_id: str, metadata: dict[str, str],
           output_expires_seconds: int = 3 * 86400) -> dict:
    """Start a batch on the images endpoint with a 24-hour window; the batch object."""
    return _call("POST", f"{base_url}/batches", api_key, "creating the batch", json={
        "input_file_id": input_file_id, "endpoint": ENDPOINT, "completion_window": "24h",
        "metadata": {k: str(v)[:512] for k, v in metadata.items()},
        "output_expires_after": {"anchor": "created_at", "seconds": output_expires_seconds}})


def retrieve(base_url: str, api_key: str, batch_id: str) -> dict:
    """The batch object as OpenAI has it now (status, request_counts, output and error file ids)."""
    return _call("GET", f"{base_url}/batches/{batch_id}", api_key, "reading the batch")


def cancel(base_url: str, api_key: str, batch_id: str) -> dict:
    """Ask OpenAI to cancel the batch (it goes through `cancelling`); the batch object."""
    return _call("POST", f"{base_url}/batches/{batch_id}/cancel", api_key, "cancelling the batch")


def download(base_url: str, api_key: str, file_id: str, destination: Path, read_timeout: float = 300) -> int:
    """Stream a file's content to `destination` in 1 MB pieces (whole or not at all); the bytes written.

    The file appears under its name only when every byte the answer promised has arrived: a
    download cut off midway leaves nothing behind but raises ImageAPIError("broken").
    """
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = destination.with_name(destination.name + ".part")
    written = 0
    try:
        response = requests.get(f"{base_url}/files/{file_id}/content", headers={"Authorization": f"Bearer {api_key}"},
                                stream=True, timeout=(CONNECT_TIMEOUT, read_timeout))
    except requests.RequestException as exc:
        raise ImageAPIError("server", f"downloading {file_id}: unreachable ({type(exc).__name__})") from None
    with response:
        if response.status_code != 200:
            raise _fail(response, f"downloading {file_id}")
        expected = response.headers.get("Content-Length")
        try:
            with partial.open("wb") as handle:
                for piece in response.iter_content(CHUNK):
                    handle.write(piece)
                    written += len(piece)
        except requests.RequestException as exc:
            partial.unlink(missing_ok=True)
            raise ImageAPIError("broken", f"downloading {file_id} was cut off after {written} bytes "
                                          f"({type(exc).__name__})", status=200) from None
    if expected is not None and expected.isdigit() and int(expected) != written:
        partial.unlink(missing_ok=True)
        raise ImageAPIError("broken", f"downloading {file_id} stopped at {written} of {expected} bytes", status=200)
    os.replace(partial, destination)
    return written


def results(path: Path) -> Iterator[Result]:
    """The lines of a downloaded output or error file, one at a time (a line that cannot be read is skipped)."""
    with path.open("rb") as handle:
        for raw in handle:
            try:
                line = json.loads(raw)
            except ValueError:
                continue
            finally:
                del raw  # a line of a 4K image is 20 MB: not kept while the next one is read
            if not isinstance(line, dict) or not isinstance(line.get("custom_id"), str):
                continue
            response = line.get("response") if isinstance(line.get("response"), dict) else {}
            body = response.get("body") if isinstance(response.get("body"), dict) else None
            status = response.get("status_code") if isinstance(response.get("status_code"), int) else None
            error = line.get("error") if isinstance(line.get("error"), dict) else None
            if error is None and body is not None and status != 200 and isinstance(body.get("error"), dict):
                error = body["error"]
            yield Result(custom_id=line["custom_id"], status=status, body=body if status == 200 else None,
                         error=error, request_id=response.get("request_id"))
