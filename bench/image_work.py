"""Benchmark of the server's work for one image, from the API's answer to the bytes the browser downloads.

    .venv/bin/python bench/image_work.py [--repeats 9] [--resolution 1K,2K,4K] [--convert]
                                         [--database mariadb|sqlite] [--quick]

What: for each size the site asks for at the resolutions given (default 1K and 2K: the
catalogue's default model, gpt-image-2, at 1024x1024, 864x1536 and 1536x864; 2048x2048,
1152x2048 and 2048x1152; 4K: 2880x2880, 2160x3840 and 3840x2160; at 1K also the retired
models' 1024x1536 -> 864x1536 and 1536x1024 -> 1536x864 crops) and each format (PNG, JPEG),
the whole path of one image on our side, step by step:

1. json     - `json.loads` of the API's answer body (`{"data": [{"b64_json": ...}]}`), as
              `services.openai_images.generate` does through `response.json()`;
2. b64      - `base64.b64decode(b64_json, validate=True)`, as `generate` does;
3. finish   - `services.imaging.finish` (decode, crop when the model has no exact size,
              re-encode, or keep the bytes when they already fit);
4. store    - `services.worker._write` under a temporary results directory (temporary name,
              then rename), as the worker stores a result;
5. serve    - GET /api/batches/<id>/items/<id>/image through the real app in-process
              (werkzeug's test client, a signed-in session, a fresh database): session load,
              ownership and item queries, `bottle.static_file`, the body read whole. Two
              columns outside the total, for reference: "file read", the bare open+read of
              the same file, and "DB connect", `app.database.connect()` + close alone (the
              app opens a new database connection for every request that needs one).

With --convert, every exact size also gets the two rows where the API returned the other
format than the one the batch keeps (PNG returned, JPEG kept, and the reverse): the image is
then decoded and re-encoded (PNG at level 1, JPEG at quality 90), the costliest path. The API
answers in the format asked for, so this is the worst case, not the usual one. The "bytes kept"
column says whether finish kept the upstream's bytes as they came.

What-if rows (unless --no-what-if, and only while the app's connections to this database still
offer TLS, PyMySQL's default): the goal's cases again with one bench-only change in this
process, PyMySQL told not to try TLS (`ssl_disabled=True`), to size that fix. The app's code is
not changed.

How: the upstream image is photo-like (smooth colour fields plus grain, as
`bench/generation.py` makes it: flat colours would compress far better than real pictures;
a 4K PNG is about 12 MB, a 4K JPEG about 1.3 MB), encoded as the upstream returns it,
base64'd into a JSON body. Each step is timed with `time.perf_counter`; the table shows the
median of `--repeats` runs per step, the median of the per-run totals, and total / baseline.

Baseline (same run, same payload): the bare base64 decode of the b64_json (step 2 alone): the
least any server must do with the API's answer.

Goal: a 1536x864 JPEG (gpt-image-2's 16:9) takes at most 60 ms in total, median.
"""

from __future__ import annotations

import argparse
import base64
import datetime
import json
import os
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

try:
    from werkzeug.test import Client
except ImportError:  # pragma: no cover - the app's own requirements bring it
    raise SystemExit("werkzeug is missing: .venv/bin/pip install -r requirements-dev.txt") from None

from common import machine_line, no_tls_to_database  # noqa: E402

from bench.generation import Store, photo_like  # noqa: E402
from services import batches, catalog, credits, db, imaging, sessions, worker  # noqa: E402

GOAL_MS = 60.0

# The retired models' crops at 1K: (model, ratio, size asked for, exact size kept)
CROPS = [
    ("gpt-image-1.5 / 1-mini", "9:16", (1024, 1536), (864, 1536)),
    ("gpt-image-1.5 / 1-mini", "16:9", (1536, 1024), (1536, 864)),
]
FORMATS = ("png", "jpeg")
STEPS = ("json", "b64", "finish", "store", "serve")


def cases(resolutions: list[str], convert: bool) -> list[tuple[str, str, str, tuple, tuple, str, str]]:
    """(resolution, model, ratio, size asked for, exact size, format returned, format kept) for every row."""
    model = catalog.load().default(datetime.date.today())
    rows = []
    for resolution in resolutions:
        for ratio in catalog.RATIOS:
            size = model.size(resolution, ratio)
            pairs = [(f, f) for f in FORMATS] + ([("png", "jpeg"), ("jpeg", "png")] if convert else [])
            rows += [(resolution, model.id, ratio, size.request, size.output, returned, kept)
                     for returned, kept in pairs]
        if resolution == "1K":
            rows += [(resolution, name, ratio, request, output, f, f) for name, ratio, request, output in CROPS
                     for f in FORMATS]
    return rows


def api_body(image: bytes, image_format: str, size: tuple[int, int]) -> bytes:
    """The upstream's JSON answer carrying the image, as bytes on the wire."""
    return json.dumps({
        "created": int(time.time()), "background": "opaque", "output_format": image_format, "quality": "medium",
        "size": f"{size[0]}x{size[1]}", "data": [{"b64_json": base64.b64encode(image).decode("ascii")}],
        "usage": {"input_tokens": 12, "output_tokens": 1056, "total_tokens": 1068},
    }).encode("utf-8")


class Site:
    """The app on a fresh database, one signed-in subscriber, and one finished item per case to serve."""

    def __init__(self, engine: str, directory: Path, count: int):
        from app import create_app

        self.store = Store(engine, directory)
        catalog_file = directory / "models.json"
        data = json.loads(catalog.DEFAULT_FILE.read_text(encoding="utf-8"))
        for entry in data["models"]:
            entry["retires"] = None
        catalog_file.write_text(json.dumps(data), encoding="utf-8")
        self.app = create_app({"APP_MODE": "test", "DATABASE_URL": self.store.url, "VAR_DIR": str(directory / "var"),
                               "MODEL_CATALOG": str(catalog_file), "LOG_LEVEL": "WARNING"})
        self.results = self.app.settings.results_dir
        conn = self.store.database.connect()
        try:
            now = int(time.time())
            self.user_id = db.user_insert(conn, "Bench", "bench@example.com", now)
            db.subscription_upsert(conn, self.user_id, {
                "id": "sub_bench", "customer": "cus_bench", "status": "active", "price_id": "price",
                "current_period_start": now - 60, "current_period_end": now + 86400, "cancel_at_period_end": False,
                "cancel_at": None, "ended_at": None}, now)
            credits.grant_period(conn, self.user_id, 10_000, "in_bench", now)
            checked = batches.review(self.app.catalog, datetime.date.today(),
                                     prompts=[f"a harbour at dawn, take {i}" for i in range(count)], names=[],
                                     style="", model_id="gpt-image-2", ratio="1:1", quality="medium",
                                     image_format="jpeg", separator=", ", max_prompts=count,
                                     credits_left=credits.balance(conn, self.user_id))
            if not checked.ok:
                raise SystemExit(f"the bench batch was refused: {checked.errors}")
            self.batch_id = batches.create(conn, self.app.catalog, self.user_id, checked, "", now)[0]
            self.item_ids = [item["id"] for item in db.batch_items_of(conn, self.batch_id)]
            session = sessions.create(conn, self.app.settings, now, user_id=self.user_id)
        finally:
            conn.close()
        self.client = Client(self.app)
        self.client.set_cookie(sessions.cookie_name(self.app.settings), session.token)

    def finished_item(self, index: int, extension: str, size: tuple[int, int], length: int) -> tuple[int, str]:
        """Mark item `index` done with a result file name (as the worker would); returns (item id, relative path)."""
        item_id = self.item_ids[index]
        relative = f"{self.batch_id}/{item_id}-1.{extension}"
        conn = self.store.database.connect()
        try:
            conn.execute("UPDATE batch_items SET status = 'done', result_path = ?, result_bytes = ?, result_width = ?, "
                         "result_height = ?, finished_at = ? WHERE id = ?",
                         (relative, length, size[0], size[1], int(time.time()), item_id))
        finally:
            conn.close()
        return item_id, relative

    def get_image(self, item_id: int) -> bytes:
        """The image endpoint, in-process, the body read whole."""
        response = self.client.get(f"/api/batches/{self.batch_id}/items/{item_id}/image", buffered=True)
        if response.status_code != 200:
            raise SystemExit(f"the image endpoint answered {response.status_code}: {response.data[:200]!r}")
        return response.data

    def close(self) -> None:
        """Drop the database."""
        self.store.drop()


def run_case(site: Site, index: int, request: tuple[int, int], output: tuple[int, int], image_format: str,
             repeats: int, returned_format: str | None = None) -> dict:
    """Time the whole path `repeats` times for one case; returns the medians per step and of the totals."""
    returned_format = returned_format or image_format
    body = api_body(photo_like(*request, returned_format), returned_format, request)
    extension = "png" if image_format == "png" else "jpg"
    times: dict[str, list[float]] = {step: [] for step in (*STEPS, "total", "file read", "db connect")}
    # The item's row once per case, from an untimed first pass (which also warms Pillow and the app up).
    first = imaging.finish(base64.b64decode(json.loads(body)["data"][0]["b64_json"]), output, image_format)
    item_id, relative = site.finished_item(index, extension, output, len(first.data))
    worker._write(site.results / relative, first.data)
    site.get_image(item_id)
    for _ in range(repeats):
        marks = [time.perf_counter()]
        payload = json.loads(body)
        marks.append(time.perf_counter())
        data = base64.b64decode(payload["data"][0]["b64_json"], validate=True)
        marks.append(time.perf_counter())
        finished = imaging.finish(data, output, image_format)
        marks.append(time.perf_counter())
        worker._write(site.results / relative, finished.data)
        marks.append(time.perf_counter())
        served = site.get_image(item_id)
        marks.append(time.perf_counter())
        if served != finished.data:
            raise SystemExit("the image endpoint served other bytes than the ones stored")
        for step, start, end in zip(STEPS, marks, marks[1:], strict=False):
            times[step].append((end - start) * 1000)
        times["total"].append((marks[-1] - marks[0]) * 1000)
        started = time.perf_counter()
        with open(site.results / relative, "rb") as file:  # what bottle.static_file's body amounts to
            file.read()
        times["file read"].append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()  # what every request pays first: the app opens a connection per request
        site.app.database.connect().close()
        times["db connect"].append((time.perf_counter() - started) * 1000)
    result = {step: statistics.median(values) for step, values in times.items()}
    result["kept"] = finished.data is data
    result["file_kb"] = len(finished.data) / 1024
    result["body_kb"] = len(body) / 1024
    return result


def main(argv: list[str] | None = None) -> int:
    """Run every case and print the Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9, help="runs per case (the median is shown; default 9)")
    parser.add_argument("--resolution", default="1K,2K",
                        help="comma-separated resolutions among 1K, 2K, 4K (default 1K,2K)")
    parser.add_argument("--convert", action="store_true",
                        help="add the rows where the API returned the other format (PNG -> JPEG, JPEG -> PNG)")
    parser.add_argument("--database", choices=("mariadb", "sqlite"), default="mariadb",
                        help="where the app keeps the batch for the image endpoint (default mariadb)")
    parser.add_argument("--no-what-if", action="store_true",
                        help="skip the what-if rows (the goal's cases again with PyMySQL told not to try TLS)")
    parser.add_argument("--quick", action="store_true", help="3 repeats, to try the script")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats = 3
    resolutions = [r.strip().upper() for r in args.resolution.split(",") if r.strip()]
    if not resolutions or any(r not in catalog.RESOLUTIONS for r in resolutions):
        parser.error(f"--resolution takes {', '.join(catalog.RESOLUTIONS)}, comma-separated")
    rows = cases(resolutions, args.convert)
    command = ".venv/bin/python bench/image_work.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    print("# Per-image server work\n")
    print(f"Date and machine: {machine_line()}.  ")
    print(f"Command: `{command.strip()}`  ")
    print(f"Database for the image endpoint: {args.database} (a fresh one). Median of {args.repeats} runs, ms. "
          "Baseline (same run): the bare base64 decode of the same b64_json (column b64).  ")
    print(f"Goal: total ≤ {GOAL_MS:.0f} ms for a 1536x864 JPEG (gpt-image-2, 16:9).\n")
    print("| size | model | ratio | returned → kept | returned → file | bytes kept | answer KB | file KB | json "
          "| b64 (baseline) | finish | store | serve | total | total ÷ baseline | file read | DB connect |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")

    def line(label, model, ratio, request, output, returned, kept_format, result, mark="", note=""):
        return (f"| {label} | {model} | {ratio} | {returned} → {kept_format} | {request[0]}x{request[1]} → "
                f"{output[0]}x{output[1]}{note} | {'yes' if result['kept'] else 'no'} | {result['body_kb']:.0f} | "
                f"{result['file_kb']:.0f} | {result['json']:.2f} | {result['b64']:.2f} | {result['finish']:.2f} | "
                f"{result['store']:.2f} | {result['serve']:.2f} | **{result['total']:.1f}**{mark} | "
                f"{result['total'] / result['b64']:.1f} | {result['file read']:.2f} | {result['db connect']:.2f} |")

    def goal_case(output, returned, kept_format) -> bool:
        return output == (1536, 864) and returned == kept_format == "jpeg"

    verdicts = []
    with tempfile.TemporaryDirectory(prefix="iib-bench-image-") as temp:
        site = Site(args.database, Path(temp), len(rows))
        try:
            for index, (label, model, ratio, request, output, returned, kept_format) in enumerate(rows):
                result = run_case(site, index, request, output, kept_format, args.repeats, returned)
                total = result["total"]
                mark = ""
                if goal_case(output, returned, kept_format):
                    ok = total <= GOAL_MS
                    mark = " ✅" if ok else " ❌"
                    verdicts.append(f"{model} {ratio} JPEG {request[0]}x{request[1]} → 1536x864: "
                                    f"{total:.1f} ms against ≤ {GOAL_MS:.0f} ms: {'met' if ok else 'MISSED'}")
                print(line(label, model, ratio, request, output, returned, kept_format, result, mark), flush=True)
            # The goal's rows again with the one change the DB connect column pointed at, while the app's
            # connections still offer TLS (services/db.py turns it off for a loopback server since c3400fe).
            tls = args.database == "mariadb" and not site.app.database.params.get("ssl_disabled")
            if not tls and not args.no_what_if:
                verdicts.append("what-if (PyMySQL without TLS) not run: the app already connects to this database "
                                "without TLS")
            if tls and not args.no_what_if:
                no_tls_to_database()
                print("| **what-if: PyMySQL without TLS** (bench-only patch) |" + " |" * 16)
                for index, (label, model, ratio, request, output, returned, kept_format) in enumerate(rows):
                    if goal_case(output, returned, kept_format):
                        result = run_case(site, index, request, output, kept_format, args.repeats, returned)
                        ok = result["total"] <= GOAL_MS
                        verdicts.append(f"what-if (PyMySQL without TLS) {model} {ratio} JPEG {request[0]}x"
                                        f"{request[1]} → 1536x864: {result['total']:.1f} ms: "
                                        f"{'met' if ok else 'MISSED'}")
                        print(line(label, model, ratio, request, output, returned, kept_format, result,
                                   " ✅" if ok else " ❌", " (what-if)"), flush=True)
        finally:
            site.close()
    print("\nGoal:")
    for verdict in verdicts:
        print(f"- {verdict}")
    print(f"\nLoad average at the end: {' '.join(f'{v:.2f}' for v in os.getloadavg())}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
