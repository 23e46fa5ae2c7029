"""Benchmark of the worker's memory over a long run: does its resident size stay flat image after image?

    .venv/bin/python bench/worker_memory.py [--items 500] [--runs 3] [--latency 0.05] [--resolution 1K|2K|4K]
                                            [--images stand-in|photo] [--models A,B] [--quick]

What: a real `cli.py worker` process (as cron starts it) works `--items` images against the
OpenAI stand-in (`tools/fake_openai.py` in its own process, `--latency` seconds per image, no
images-per-minute limit), on a fresh MariaDB database per run. The items are spread over one
batch of one subscriber per model x ratio x format, so the worker alternates between them as it
serves the batches in turn. At 1K (the default) the models are gpt-image-2, whose bytes are
kept, and gpt-image-1.5 and gpt-image-1-mini, whose 9:16 and 16:9 images are cropped and
re-encoded (18 batches); at 2K and 4K every model of the catalogue that offers the resolution
(today gpt-image-2, 2.5 Flare/Sunburst, 2.6 Flare/Sunburst: 30 batches), or --models. It runs
with the default WORKER_SLOTS (4, so 6 threads) and logs at INFO to a file, as in production.

Images: the stand-in's own (`--images stand-in`, the default: flat colour and text, which
compress to a few hundred KB even at 4K) or `--images photo`: the stand-in in a bench-only
wrapper (this file with --as-stand-in) that answers with photo-like pictures of the exact size
and format asked for (bench/generation.py's photo_like, made once per size and format before it
starts), so each answer is as big as a real one: a 4K PNG about 12 MB (16 MB of base64 JSON),
a 4K JPEG about 1.3 MB.

How: every `--every` seconds (0.2) the bench reads the worker's resident set size (psutil when
it is installed, else VmRSS in /proc/<pid>/status; VmHWM gives the true peak between samples)
and counts the finished items in the database. It reports, per run, the RSS after the first
image (imports loaded, every code path warm but one image's buffers), after the first
`--warm` images (warm: every combination seen, the allocator's pools grown), the peak, at the
end (the last sample before the last item was done: once it is, the worker's threads exit and
the allocator hands their arenas back, which is shutdown, not the run; that last sample is
shown too), and the drift end / warm. The table shows each run and
the median over the runs; a second table shows the RSS at each tenth of the run.

A single sample catches whatever answers are in flight at that instant: with 4K images (a 16 MB
answer, its decoded bytes and the finished file per busy slot) the RSS swings by tens of MiB
between samples. A third table therefore compares windows of images instead of single samples:
the samples taken while the `--window` images after warm were being finished against those of
the last `--window` images (median, min and max of each window; end / warm by medians and by
minima: the minimum is what stays resident with no answer in flight, which a leak would raise).

Baseline (same run): the RSS after the first image.

Goal: flat within ±5 % (end / warm between 0.95 and 1.05).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from common import machine_line, stop_process  # noqa: E402

from bench.generation import Store  # noqa: E402
from services import batches, catalog, credits, db  # noqa: E402
from services.config import SETTING_NAMES  # noqa: E402

try:
    import psutil
except ImportError:  # not in the app's requirements: /proc does the same on Linux
    psutil = None

GOAL_DRIFT = 0.05
MODELS = ("gpt-image-2", "gpt-image-1.5", "gpt-image-1-mini")
RATIOS = ("1:1", "9:16", "16:9")
FORMATS = ("png", "jpeg")




def memory_kb(pid: int) -> tuple[int, int] | None:
    """(RSS, peak RSS) of a process in KiB, or None once it has exited."""
    if psutil is not None:
        try:
            info = psutil.Process(pid).memory_info()
        except psutil.Error:
            return None
        peak = getattr(info, "peak_wset", None)  # Windows only; on Linux VmHWM below
        rss = info.rss // 1024
    else:
        rss = peak = None
    try:
        fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                      if ":" in line)
    except OSError:
        return None if rss is None else (rss, rss)
    if fields.get("State", "").strip()[:1] in ("Z", "X") or "VmRSS" not in fields:  # exiting or exited
        return None
    rss = rss if rss is not None else int(fields["VmRSS"].split()[0])
    peak = peak if peak is not None else int(fields.get("VmHWM", fields["VmRSS"]).split()[0])
    return rss, peak


class StandIn:
    """The OpenAI stand-in in its own process: a fixed latency, no rate limit; photo-like images when given sizes."""

    def __init__(self, latency: float, log_file: Path, photo_sizes: list[str] | None = None):
        options = ["--port", "0", "--latency", str(latency), "--api-key", "sk-bench"]
        if photo_sizes:
            command = [sys.executable, str(Path(__file__).resolve()), "--as-stand-in", *options,
                       "--photo-sizes", ",".join(photo_sizes)]
        else:
            command = [sys.executable, "-m", "tools.fake_openai", *options]
        with open(log_file, "w", encoding="utf-8") as log:
            self.process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=log, text=True)
        self.base_url = self.process.stdout.readline().strip()
        if not self.base_url.startswith("http://127.0.0.1:"):
            self.stop()
            raise SystemExit(f"the OpenAI stand-in did not start; see {log_file}")

    def stop(self) -> None:
        """Stop the stand-in's process."""
        stop_process(self.process)


def serve_stand_in(argv: list[str]) -> int:
    """Run tools/fake_openai.py answering with photo-like images (--photo-sizes WxH,...: made before it starts)."""
    import tools.fake_openai as fake_openai
    from bench.generation import photo_like

    sizes = []
    if "--photo-sizes" in argv:
        at = argv.index("--photo-sizes")
        sizes = [tuple(int(n) for n in text.split("x")) for text in argv[at + 1].split(",") if text]
        argv = argv[:at] + argv[at + 2:]
    made = {(w, h, f): photo_like(w, h, f) for w, h in sizes for f in FORMATS}

    def render(prompt: str, width: int, height: int, output_format: str = "png", transparent: bool = False,
               compression: int | None = None) -> bytes:
        key = (width, height, "png" if output_format == "png" else "jpeg")
        if key not in made:
            made[key] = photo_like(*key)
        return made[key]

    fake_openai.render_image = render
    return fake_openai.main(argv)


def queue_items(conn: db.Connection, models: catalog.Catalog, items: int, model_ids: tuple[str, ...] = MODELS,
                resolution: str = "1K") -> int:
    """One subscriber and one batch per model x ratio x format, `items` items in all; returns the item count."""
    now = int(time.time())
    user_id = db.user_insert(conn, "Bench", "bench@example.com", now)
    db.subscription_upsert(conn, user_id, {
        "id": "sub_bench", "customer": "cus_bench", "status": "active", "price_id": "price",
        "current_period_start": now - 60, "current_period_end": now + 86400, "cancel_at_period_end": False,
        "cancel_at": None, "ended_at": None}, now)
    credits.grant_period(conn, user_id, items * 100, "in_bench", now)
    combos = [(m, r, f) for m in model_ids for r in RATIOS for f in FORMATS]
    queued = 0
    for index, (model, ratio, image_format) in enumerate(combos):
        count = items // len(combos) + (1 if index < items % len(combos) else 0)
        if not count:
            continue
        prompts = [f"memory bench {model} {ratio} {image_format} image {i}" for i in range(count)]
        checked = batches.review(models, datetime.date.today(), prompts=prompts, names=[], style="", model_id=model,
                                 ratio=ratio, quality="low", resolution=resolution,
                                 image_format=image_format, separator=", ", max_prompts=count,
                                 credits_left=credits.balance(conn, user_id))
        if not checked.ok:
            raise SystemExit(f"the bench batch was refused: {checked.errors}")
        batches.create(conn, models, user_id, checked, "", now, max_open=len(combos))
        queued += count
    return queued


def run_once(directory: Path, items: int, latency: float, every: float, warm: int, catalog_file: Path,
             models: catalog.Catalog, model_ids: tuple[str, ...] = MODELS, resolution: str = "1K",
             photo: bool = False, window: int = 0) -> dict:
    """One worker over `items` images; returns the RSS figures (KiB) and the samples."""
    sizes = sorted({models.get(m).size(resolution, r).request_text for m in model_ids for r in RATIOS})
    stand_in = StandIn(latency, directory / "stand-in.log", sizes if photo else None)
    store = Store("mariadb", directory)
    try:
        conn = store.database.connect()
        total = queue_items(conn, models, items, model_ids, resolution)
        env = {k: v for k, v in os.environ.items() if k not in SETTING_NAMES}
        env.update({"APP_MODE": "test", "DATABASE_URL": store.url, "VAR_DIR": str(directory / store.name),
                    "OPENAI_API_KEY": "sk-bench", "OPENAI_BASE_URL": stand_in.base_url,
                    "MODEL_CATALOG": str(catalog_file), "IMAGES_PER_MINUTE": "60000", "LOG_LEVEL": "INFO"})
        samples: list[tuple[float, int, int]] = []  # (seconds, items finished, RSS KiB)
        peak_hwm = 0
        started = time.monotonic()
        with open(directory / "worker.log", "a", encoding="utf-8") as log:
            worker = subprocess.Popen([sys.executable, "cli.py", "worker", "--max-seconds", str(int(items * 2 + 120))],
                                      cwd=ROOT, env=env, stdout=log, stderr=log)
        try:
            finished = 0
            while True:
                memory = memory_kb(worker.pid)
                if memory is None:
                    break
                row = conn.one("SELECT SUM(status = 'done') AS done, SUM(status = 'failed') AS failed "
                               "FROM batch_items")
                finished = int(row["done"] or 0) + int(row["failed"] or 0)
                samples.append((time.monotonic() - started, finished, memory[0]))
                peak_hwm = max(peak_hwm, memory[1])
                if finished >= total:
                    break
                if worker.poll() is not None:
                    break
                time.sleep(every)
            done = conn.scalar("SELECT COUNT(*) AS n FROM batch_items WHERE status = 'done'")
        finally:
            stop_process(worker, timeout=30)
        conn.close()
    finally:
        stand_in.stop()
        store.drop()
    if done != total:
        raise SystemExit(f"only {done} of {total} items were done; see {directory / 'worker.log'}")

    def rss_at(count: int) -> int:
        # the last sample when the worker left before a sample saw the count (it exits as soon as it is idle)
        return next((rss for _, finished, rss in samples if finished >= count), samples[-1][2])

    warm_rss = rss_at(warm)
    # The end: the last sample while the worker still had items to finish. Once the last item is done its
    # threads exit and glibc gives their arenas back, so a sample taken then shows the shutdown, not the run.
    working = [sample for sample in samples if sample[1] < total] or samples
    end_rss = working[-1][2]

    def rss_between(low: int, high: int) -> list[int]:
        # the samples taken while the images low+1 .. high were being finished
        return [rss for _, finished, rss in working if low <= finished < high] or [rss_at(low)]

    span = window or max(10, total // 10)
    warm_window = rss_between(warm, warm + span)
    end_window = rss_between(total - span, total)
    return {"items": total, "seconds": samples[-1][0], "first": rss_at(1), "warm": warm_rss,
            "window": span, "warm_window": warm_window, "end_window": end_window,
            "peak": max(rss for _, _, rss in samples), "hwm": peak_hwm, "end": end_rss, "exit": samples[-1][2],
            "drift": end_rss / warm_rss - 1, "samples": samples,
            "tenths": [rss_at(max(1, round(total * k / 10))) for k in range(1, 10)] + [end_rss]}


def main(argv: list[str] | None = None) -> int:
    """Run the worker `runs` times and print the Markdown tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=500, help="images per run (default 500)")
    parser.add_argument("--runs", type=int, default=3, help="runs (the median is shown; default 3)")
    parser.add_argument("--latency", type=float, default=0.05, help="seconds per image at the stand-in")
    parser.add_argument("--warm", type=int, default=50, help="images after which the worker counts as warm")
    parser.add_argument("--every", type=float, default=0.2, help="seconds between RSS samples")
    parser.add_argument("--window", type=int, default=0,
                        help="images per window in the windows table (default: a tenth of the images, at least 10)")
    parser.add_argument("--resolution", choices=catalog.RESOLUTIONS, default="1K",
                        help="the batches' resolution (default 1K)")
    parser.add_argument("--models", default="",
                        help="comma-separated model ids (default: at 1K " + ", ".join(MODELS) + "; at 2K and 4K "
                             "every model that offers the resolution)")
    parser.add_argument("--images", choices=("stand-in", "photo"), default="stand-in",
                        help="the stand-in's own images (default) or photo-like ones as big as real ones")
    parser.add_argument("--quick", action="store_true", help="60 images, warm at 20, 2 runs: to try the script")
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--as-stand-in"]:
        return serve_stand_in(argv[1:])
    args = parser.parse_args(argv)
    if args.quick:
        args.items, args.warm, args.runs = 60, 20, 2
    command = ".venv/bin/python bench/worker_memory.py " + shlex.join(argv)
    data = json.loads(catalog.DEFAULT_FILE.read_text(encoding="utf-8"))
    for entry in data["models"]:  # the bench uses the cropped models even after their retirement day
        entry["retires"] = None
    models = catalog.parse(data, "the bench's catalogue")
    if args.models:
        model_ids = tuple(m for m in args.models.split(",") if m)
    elif args.resolution == "1K":
        model_ids = MODELS
    else:
        model_ids = tuple(m.id for m in models.models if args.resolution in m.resolutions)
    unknown = [m for m in model_ids if models.get(m) is None or args.resolution not in models.get(m).resolutions]
    if unknown or not model_ids:
        raise SystemExit(f"no such model at {args.resolution}: {', '.join(unknown) or '(none given)'}")
    combos = len(model_ids) * len(RATIOS) * len(FORMATS)
    pictures = "photo-like images as big as real ones" if args.images == "photo" else "the stand-in's own images"
    print("# Worker memory over a long run\n")
    print(f"Date and machine: {machine_line()}.  ")
    print(f"Command: `{command.strip()}`  ")
    print(f"{args.items} images per run over {combos} batches ({len(model_ids)} models x 3 ratios x 2 formats: "
          f"{', '.join(model_ids)}; {args.resolution}, quality low), "
          f"{pictures}, "
          f"stand-in latency {args.latency:g} s, no IPM limit, WORKER_SLOTS 4, MariaDB (a fresh database per run); "
          f"RSS read every {args.every:g} s ({'psutil' if psutil else '/proc/<pid>/status'}). Baseline (same run): "
          f"the RSS after the first image. Warm: after {args.warm} images.  ")
    print(f"Goal: end / warm within ±{GOAL_DRIFT:.0%}.\n")
    results = []
    with tempfile.TemporaryDirectory(prefix="iib-bench-memory-") as temp:
        catalog_file = Path(temp) / "models.json"
        catalog_file.write_text(json.dumps(data), encoding="utf-8")
        for run in range(args.runs):
            run_dir = Path(temp) / f"run{run + 1}"
            run_dir.mkdir()
            result = run_once(run_dir, args.items, args.latency, args.every, args.warm, catalog_file, models,
                              model_ids, args.resolution, args.images == "photo", args.window)
            results.append(result)
            print(f"<!-- run {run + 1}: {result['items']} images in {result['seconds']:.1f} s, "
                  f"{len(result['samples'])} samples -->", flush=True)

    def mib(kib: float) -> str:
        return f"{kib / 1024:.1f}"

    print("| run | images | seconds | after 1st image (baseline) MiB | warm MiB | peak MiB (sampled / VmHWM) | "
          "end MiB | end ÷ warm | end ÷ baseline | last sample (all done, exiting) MiB | goal |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for n, r in enumerate(results, 1):
        ok = abs(r["drift"]) <= GOAL_DRIFT
        print(f"| {n} | {r['items']} | {r['seconds']:.1f} | {mib(r['first'])} | {mib(r['warm'])} | "
              f"{mib(r['peak'])} / {mib(r['hwm'])} | {mib(r['end'])} | {1 + r['drift']:.3f} | "
              f"{r['end'] / r['first']:.2f} | {mib(r['exit'])} | {'met' if ok else '**missed**'} |")
    med = {key: statistics.median(r[key] for r in results) for key in ("seconds", "first", "warm", "peak", "hwm",
                                                                       "end", "drift", "exit")}
    ok = abs(med["drift"]) <= GOAL_DRIFT
    print(f"| **median** | {results[0]['items']} | {med['seconds']:.1f} | {mib(med['first'])} | {mib(med['warm'])} | "
          f"{mib(med['peak'])} / {mib(med['hwm'])} | {mib(med['end'])} | **{1 + med['drift']:.3f}** | "
          f"{statistics.median(r['end'] / r['first'] for r in results):.2f} | {mib(med['exit'])} | "
          f"{'met' if ok else '**missed**'} |")
    print("\nRSS (MiB) when each tenth of the images was finished:\n")
    print("| run | " + " | ".join(f"{k * 10}%" for k in range(1, 11)) + " |")
    print("|---|" + "---|" * 10)
    for n, r in enumerate(results, 1):
        print(f"| {n} | " + " | ".join(mib(v) for v in r["tenths"]) + " |")
    print(f"\nWindows of {results[0]['window']} images: the samples taken after warm (images {args.warm + 1}–"
          f"{args.warm + results[0]['window']}) against those of the last {results[0]['window']} images, MiB:\n")
    print("| run | warm window: median (min–max), samples | end window: median (min–max), samples | "
          "end ÷ warm (medians) | end ÷ warm (minima) | goal on the minima |")
    print("|---|---|---|---|---|---|")
    by_median, by_minimum = [], []
    for n, r in enumerate(results, 1):
        warm_w, end_w = r["warm_window"], r["end_window"]
        by_median.append(statistics.median(end_w) / statistics.median(warm_w))
        by_minimum.append(min(end_w) / min(warm_w))
        ok = abs(by_minimum[-1] - 1) <= GOAL_DRIFT
        print(f"| {n} | {mib(statistics.median(warm_w))} ({mib(min(warm_w))}–{mib(max(warm_w))}), {len(warm_w)} | "
              f"{mib(statistics.median(end_w))} ({mib(min(end_w))}–{mib(max(end_w))}), {len(end_w)} | "
              f"{by_median[-1]:.3f} | {by_minimum[-1]:.3f} | {'met' if ok else '**missed**'} |")
    ok = abs(statistics.median(by_minimum) - 1) <= GOAL_DRIFT
    print(f"| **median** | | | {statistics.median(by_median):.3f} | **{statistics.median(by_minimum):.3f}** | "
          f"{'met' if ok else '**missed**'} |")
    print(f"\nLoad average at the end: {' '.join(f'{v:.2f}' for v in os.getloadavg())}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
