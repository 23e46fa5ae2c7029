"""Benchmark of the generation engine: batch wall time against its floor, and per-image processing time.

    .venv/bin/python bench/generation.py [--items 100] [--latency 1] [--resolution 1K|2K|4K] [--only LABEL]
                                         [--database mariadb|sqlite] [--no-images] [--quick]

Part 1 runs real `cli.py worker` processes (as cron and the kick start them in production)
against the OpenAI stand-in in its own process, with a fixed latency L per image and an
images-per-minute limit enforced by the stand-in with 429s. For N items and W slots the
floor is max(N*L/W, N*60/IPM): no scheduler can beat it. The wall time runs from the worker's
launch (Python start-up included) to the last item done; the figure printed is the ratio
wall / floor. Scenarios: one subscriber with one batch, and four subscribers with one batch
each at once (4N items, with the finish time of each subscriber's batch to show fairness),
each once latency-bound and once IPM-bound; and one where the worker's IPM setting is twice
what the upstream allows, to show how it slows down after 429s. The batches use the catalogue's
default model at --resolution (1K unless told), 1:1 JPEG at its lowest quality; the stand-in
sends per-minute x-ratelimit-* headers, which the worker's pace follows. Each row gives the
429s the stand-in answered, and the same per 400 images.

Part 2 times `services.imaging.finish` for every model x resolution x ratio x format (the
resolutions up to --resolution) on an image as the upstream returns it (a photo-like picture of
the requested size and format), against a baseline measured in the same run: a naive finish
that always decodes, crops and re-encodes, at Pillow's default PNG compression level (6)
instead of our level 1, and without keeping the upstream's bytes when they already fit.
"""

from __future__ import annotations

import argparse
import datetime
import io
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from common import machine_line  # noqa: E402
from PIL import Image  # noqa: E402

from services import batches, catalog, credits, db, imaging  # noqa: E402
from services.config import SETTING_NAMES  # noqa: E402

MARIADB_ADMIN = os.environ.get("TEST_MARIADB_URL", "mysql://root@127.0.0.1:3306/")
CATALOG = catalog.load()


# ----- part 1: batch wall time ----------------------------------------------------------------------

class StandIn:
    """The OpenAI stand-in in its own process (so its image drawing does not share the worker's GIL).

    Its limit is quantized to a 1-second window (IPM/60 a second), as OpenAI may enforce it: with a
    60-second window a 100-item batch could burst past the IPM floor in its first minute.
    """

    def __init__(self, latency: float, images_per_minute: int, log_file: Path):
        self.log_file = log_file
        with open(log_file, "w", encoding="utf-8") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tools.fake_openai", "--port", "0", "--latency", str(latency),
                 "--images-per-minute", str(images_per_minute), "--window-seconds", "1", "--api-key", "sk-bench"],
                cwd=ROOT, stdout=subprocess.PIPE, stderr=log, text=True)
        self.base_url = self.process.stdout.readline().strip()
        if not self.base_url.startswith("http://127.0.0.1:"):
            self.stop()
            raise SystemExit("the OpenAI stand-in did not start")

    def stop(self) -> None:
        """Stop the stand-in's process."""
        self.process.terminate()
        self.process.wait(timeout=10)
        self.process.stdout.close()

    def answers(self, status: int) -> int:
        """How many generations the stand-in answered with this status (from its log)."""
        return self.log_file.read_text(encoding="utf-8").count(f"/v1/images/generations -> {status} ")


class Store:
    """A fresh database for one scenario: a MariaDB database with a unique name, or a SQLite file."""

    def __init__(self, engine: str, directory: Path):
        self.engine = engine
        self.name = f"iib_bench_{uuid.uuid4().hex[:10]}"
        if engine == "mariadb":
            self._admin(f"CREATE DATABASE `{self.name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
            self.url = MARIADB_ADMIN.rstrip("/") + "/" + self.name
        else:
            self.url = f"sqlite:///{directory / (self.name + '.db')}"
        self.database = db.Database(self.url)
        db.initdb(self.database)

    def _admin(self, statement: str) -> None:
        from urllib.parse import urlsplit

        import pymysql

        parts = urlsplit(MARIADB_ADMIN)
        connection = pymysql.connect(host=parts.hostname, port=parts.port or 3306, user=parts.username or "root",
                                     password=parts.password or "")
        try:
            with connection.cursor() as cursor:
                cursor.execute(statement)
        finally:
            connection.close()

    def drop(self) -> None:
        """Drop the MariaDB database (the SQLite file goes with the temporary directory)."""
        if self.engine == "mariadb":
            self._admin(f"DROP DATABASE IF EXISTS `{self.name}`")


def add_subscriber(conn: db.Connection, n: int, balance: int) -> int:
    """A user with an active subscription and `balance` credits."""
    now = int(time.time())
    user_id = db.user_insert(conn, f"Bench {n}", f"bench{n}@example.com", now)
    db.subscription_upsert(conn, user_id, {
        "id": f"sub_bench_{user_id}", "customer": f"cus_bench_{user_id}", "status": "active", "price_id": "price",
        "current_period_start": now - 60, "current_period_end": now + 86400, "cancel_at_period_end": False,
        "cancel_at": None, "ended_at": None}, now)
    credits.grant_period(conn, user_id, balance, f"in_bench_{user_id}", now)
    return user_id


def bench_model() -> catalog.Model:
    """The model the bench batches use: the catalogue's default today (the one the form starts with)."""
    return CATALOG.default(datetime.date.today())


def add_batch(conn: db.Connection, user_id: int, items: int, resolution: str = "1K") -> int:
    """A reviewed and stored batch of `items` prompts: the default model, 1:1 JPEG, lowest quality (bytes kept)."""
    model = bench_model()
    checked = batches.review(CATALOG, datetime.date.today(), prompts=[f"bench image {i} of user {user_id}"
                                                                       for i in range(items)],
                             names=[], style="", model_id=model.id, ratio="1:1", quality=model.qualities[0],
                             image_format="jpeg", separator=", ", max_prompts=items,
                             credits_left=credits.balance(conn, user_id), resolution=resolution)
    if not checked.ok:
        raise SystemExit(f"the bench batch was refused: {checked.errors}")
    return batches.create(conn, CATALOG, user_id, checked, "", int(time.time()))[0]


def run_scenario(engine: str, directory: Path, *, subscribers: int, items: int, latency: float, slots: int,
                 upstream_ipm: int, worker_ipm: int, resolution: str = "1K", keep_logs: Path | None = None,
                 label: str = "") -> dict:
    """Queue the batches, launch one worker process with `slots` slots, time until every item is done.

    With `keep_logs`, the stand-in's log and the worker's claim times of the last 120 s (upstream_calls) are
    copied there, named after `label`, to study where the 429s come from.
    """
    stand_in = StandIn(latency, upstream_ipm, directory / "stand-in.log")
    store = Store(engine, directory)
    try:
        conn = store.database.connect()
        batch_ids = []
        for n in range(subscribers):
            model = bench_model()
            user_id = add_subscriber(conn, n, balance=items * model.price(resolution, "1:1", model.qualities[0]))
            batch_ids.append(add_batch(conn, user_id, items, resolution))
        env = {k: v for k, v in os.environ.items() if k not in SETTING_NAMES}
        env.update({"APP_MODE": "test", "DATABASE_URL": store.url, "VAR_DIR": str(directory / store.name),
                    "OPENAI_API_KEY": "sk-bench", "OPENAI_BASE_URL": stand_in.base_url,
                    "WORKER_SLOTS": str(slots), "IMAGES_PER_MINUTE": str(worker_ipm), "LOG_LEVEL": "WARNING"})
        total = subscribers * items
        started = time.monotonic()
        worker = subprocess.Popen([sys.executable, "cli.py", "worker", "--max-seconds", str(int(total * 2 + 120))],
                                  cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        finished: dict[int, float] = {}
        while len(finished) < len(batch_ids):
            for batch_id in batch_ids:
                if batch_id not in finished and db.batch_get(conn, batch_id)["status"] != "active":
                    finished[batch_id] = time.monotonic() - started
            if worker.poll() is not None and len(finished) < len(batch_ids):
                raise SystemExit(f"the worker stopped early: {worker.stderr.read()[-2000:]}")
            time.sleep(0.02)
        wall = time.monotonic() - started
        worker.terminate()
        worker.wait(timeout=30)
        done = conn.scalar("SELECT COUNT(*) AS n FROM batch_items WHERE status = 'done'")
        if keep_logs is not None:
            slug = "".join(c if c.isalnum() else "-" for c in label.lower()).strip("-")
            keep_logs.mkdir(parents=True, exist_ok=True)
            starts = conn.all("SELECT started_ms FROM upstream_calls ORDER BY started_ms")
            (keep_logs / f"{slug}.claims.txt").write_text("".join(f"{row['started_ms']}\n" for row in starts))
            (keep_logs / f"{slug}.worker-stderr.txt").write_text(worker.stderr.read())
        conn.close()
    finally:
        stand_in.stop()
        store.drop()
    if keep_logs is not None:
        shutil.copy(stand_in.log_file, keep_logs / f"{slug}.stand-in.log")
    refusals = stand_in.answers(429)
    floor = max(total * latency / slots, total * 60 / upstream_ipm)
    return {"items": total, "done": done, "wall": wall, "floor": floor, "ratio": wall / floor,
            "batch_finish": sorted(finished.values()), "refusals": refusals}


def part_one(engine: str, items: int, latency: float, slots: int, only: str = "", resolution: str = "1K",
             keep_logs: Path | None = None) -> list[str]:
    """The wall-time scenarios; returns the Markdown table rows."""
    latency_ipm = int(round(60 * slots / latency * 2))  # twice what the slots can use: latency is the bound
    ipm_bound = int(round(60 * slots / latency / 2))  # half of what the slots could do: IPM is the bound
    scenarios = [
        ("1 subscriber, latency-bound", 1, latency_ipm, latency_ipm),
        ("1 subscriber, IPM-bound", 1, ipm_bound, ipm_bound),
        ("4 subscribers, latency-bound", 4, latency_ipm, latency_ipm),
        ("4 subscribers, IPM-bound", 4, ipm_bound, ipm_bound),
        ("1 subscriber, worker set to 2x the upstream's IPM", 1, ipm_bound, ipm_bound * 2),
    ]
    rows = []
    with tempfile.TemporaryDirectory(prefix="iib-bench-") as temp:
        for label, subscribers, upstream_ipm, worker_ipm in scenarios:
            if only not in label:
                continue
            result = run_scenario(engine, Path(temp), subscribers=subscribers, items=items, latency=latency,
                                  slots=slots, upstream_ipm=upstream_ipm, worker_ipm=worker_ipm,
                                  resolution=resolution, keep_logs=keep_logs, label=label)
            finishes = ", ".join(f"{t:.1f}" for t in result["batch_finish"])
            per_400 = result["refusals"] * 400 / result["items"]
            row = (f"| {label} | {result['items']} | {upstream_ipm} / {worker_ipm} | {result['floor']:.1f} | "
                   f"{result['wall']:.1f} | **{result['ratio']:.3f}** | {finishes} | {result['refusals']} | "
                   f"{per_400:.1f} |")
            print(row, flush=True)
            if result["done"] != result["items"]:
                raise SystemExit(f"only {result['done']} of {result['items']} items were done")
            rows.append(row)
    return rows


# ----- part 2: per-image processing --------------------------------------------------------------

def photo_like(width: int, height: int, image_format: str, seed: int = 7) -> bytes:
    """A stand-in for a generated picture that compresses like one: smooth colour fields plus fine grain.

    The stand-in's own images (flat colour and text) compress far better than real ones, which
    would make the PNG timings look better than they are.
    """
    import random

    rng = random.Random(seed)
    small = Image.new("RGB", (12, 8))
    small.putdata([(rng.randrange(256), rng.randrange(256), rng.randrange(256)) for _ in range(12 * 8)])
    image = small.resize((width, height), Image.Resampling.BICUBIC)
    grain = Image.effect_noise((width, height), 24).convert("RGB")
    image = Image.blend(image, grain, 0.12)
    out = io.BytesIO()
    image.save(out, "PNG" if image_format == "png" else "JPEG", **({"compress_level": 1} if image_format == "png"
                                                                    else {"quality": 90}))
    return out.getvalue()


def _baseline_finish(data: bytes, size: tuple[int, int], image_format: str) -> bytes:
    """The baseline: always decode, crop and re-encode, with Pillow's default PNG compress_level (6)."""
    image = Image.open(io.BytesIO(data))
    image = imaging._cover_and_crop(image, size).convert("RGB")
    out = io.BytesIO()
    image.save(out, "PNG" if image_format == "png" else "JPEG", **({} if image_format == "png" else {"quality": 90}))
    return out.getvalue()


def _median_ms(repeats: int, function, *args) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function(*args)
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def part_two(repeats: int, up_to: str = "1K") -> list[str]:
    """Time imaging.finish per model x resolution (up to `up_to`) x ratio x format; returns the Markdown rows."""
    rows = []
    resolutions = catalog.RESOLUTIONS[:catalog.RESOLUTIONS.index(up_to) + 1]
    for model in CATALOG.models:
        for resolution in (r for r in model.resolutions if r in resolutions):
            for ratio in catalog.RATIOS:
                size = model.size(resolution, ratio)
                for image_format in ("png", "jpeg"):
                    returned = photo_like(*size.request, image_format)
                    ours = _median_ms(repeats, imaging.finish, returned, size.output, image_format)
                    base = _median_ms(repeats, _baseline_finish, returned, size.output, image_format)
                    kept = " (bytes kept)" if size.request == size.output else ""
                    row = (f"| {model.id} | {resolution} | {ratio} | {image_format} | {size.request_text} → "
                           f"{size.output[0]}x{size.output[1]}{kept} | {ours:.1f} | {base:.1f} | {ours / base:.2f} |")
                    print(row, flush=True)
                    rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    """Run both parts and print Markdown tables for bench/RESULTS.md."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=100, help="items per batch (default 100)")
    parser.add_argument("--latency", type=float, default=1.0, help="seconds per image at the stand-in")
    parser.add_argument("--slots", type=int, default=4, help="WORKER_SLOTS (W)")
    parser.add_argument("--database", choices=("mariadb", "sqlite"), default="mariadb")
    parser.add_argument("--repeats", type=int, default=7, help="runs per image timing (the median is shown)")
    parser.add_argument("--quick", action="store_true", help="20 items and 3 repeats, to try the script")
    parser.add_argument("--only", default="", help="run only the wall-time scenarios whose label contains this")
    parser.add_argument("--no-images", action="store_true", help="skip part 2 (per-image processing)")
    parser.add_argument("--keep-logs", type=Path, default=None, metavar="DIR",
                        help="keep each scenario's stand-in log, claim times and worker stderr in DIR")
    parser.add_argument("--resolution", choices=catalog.RESOLUTIONS, default="1K",
                        help="the batches' resolution (default 1K); part 2 times every resolution up to this one")
    args = parser.parse_args(argv)
    if args.quick:
        args.items, args.repeats = 20, 3
    model = bench_model()
    command = ".venv/bin/python bench/generation.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    print(f"# generation bench, {datetime.datetime.now():%Y-%m-%d %H:%M}, {platform.platform()}, "
          f"{os.cpu_count()} CPUs, Python {platform.python_version()}, {args.database}\n")
    print(f"- machine: {machine_line()}")
    print(f"- command: `{command}`")
    print(f"- batches: {model.id} (the catalogue's default), {args.resolution} 1:1 JPEG, quality {model.qualities[0]}")
    print(f"\n## Batch wall time (N={args.items} per batch, L={args.latency} s, W={args.slots})\n")
    print("| scenario | items | IPM upstream / worker | floor s | wall s | wall/floor | batches done at s "
          "| 429s | 429s per 400 images |")
    print("|---|---|---|---|---|---|---|---|---|")
    part_one(args.database, args.items, args.latency, args.slots, args.only, args.resolution, args.keep_logs)
    print(f"\nLoad average after part 1: {' '.join(f'{v:.2f}' for v in os.getloadavg())}.")
    if args.no_images:
        return 0
    print(f"\n## Processing per image (median of {args.repeats}, ms)\n")
    print("| model | resolution | ratio | format | returned → file | ours ms | baseline ms (PNG level 6) "
          "| ours/baseline |")
    print("|---|---|---|---|---|---|---|---|")
    part_two(args.repeats, args.resolution)
    return 0


if __name__ == "__main__":
    sys.exit(main())
