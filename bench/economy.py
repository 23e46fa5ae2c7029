"""Benchmark of economy batches: their output files (streamed, read back, collected) and their prices against "now".

    .venv/bin/python bench/economy.py [--images 40,500] [--rounds 3] [--resolution 2K] [--ratio 1:1]
                                      [--format png] [--only files|prices] [--quick]

Part 1, the output file. The OpenAI stand-in (`tools/fake_openai.py` in its own process, through
this file's --as-stand-in wrapper) answers every request with a photo-like picture of the exact
size and format asked for (bench/generation.py's photo_like, three variants made before it
starts; a 2K 1:1 PNG is about 6.1 MB, a line of the output file about 8.2 MB of base64 JSON), so
the output file is as big as a real one: 500 such images make about 4.1 GB. For each size in
--images (default 40 and 500; --quick: 10 and 40), on a fresh SQLite database and VAR_DIR:

1. one economy batch of that many images (the catalogue's default model, --resolution, --ratio,
   --format, quality low) is queued and a real `cli.py worker` process (as cron starts it) sends it:
   economy.tick writes the JSONL input, uploads it and starts the job on the stand-in's Batch API;
   the bench waits (GET /v1/batches/{id}) until the stand-in has written the output file;
2. throughput, --rounds rounds in alternating order, each way in a fresh process that downloads
   the same output file to disk (measured in MB = 10^6 bytes per second, with that process's own
   peak RSS from getrusage, above its RSS before the download):
   - ours: `openai_batches.download` (streamed to disk in 1 MB pieces, whole or nothing) and then
     `openai_batches.results` over the file, line by line (each line parsed, as collect reads it);
   - baseline: a plain download, urllib streamed to disk with shutil.copyfileobj in 1 MB pieces
     (no check, no parsing: the least a client can do to get the file onto disk);
   - read whole (files up to --read-whole-limit, 1 GB): urllib's read() of the whole body, then
     written to disk, as a client that does not stream would do it: for its memory;
3. the job is collected through the real path: the job row is made due for its next poll (its
   polled_at set back, the fake time of the tests' settle()) and a second `cli.py worker` process
   runs economy.tick: poll, download of the output file, every line read, base64-decoded, checked
   by imaging.finish (a PNG of the exact size keeps its bytes), stored under VAR_DIR/results and
   settled in SQLite. The bench samples its VmRSS from /proc every 50 ms (and whether the
   download is over: output.jsonl renamed from .part) and reaps it with os.wait4, whose
   ru_maxrss is the process's true peak.

Baseline for the memory (same run): the peak RSS of the first worker process, which only sent
the job. Goal: the collecting worker's peak RSS differs by less than 50 MB (10^6 bytes) between
the smallest and the largest file.

Part 2, prices: credits per image for every row of the catalogue the site offers today (every
available model x resolution x ratio x quality, catalog.load() as the app and `cli.py worker` load
it, MODEL_CATALOG when set): "now" is the catalogue's price, "economy" is
batches.economy_price(now) (half, rounded up); saving = 1 - economy / now.

The stand-in binds 127.0.0.1 on a free port and stops when the bench does (or when the bench's
process is gone); every file goes under a temporary directory that is removed at the end.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import resource
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import requests  # noqa: E402
from common import machine_line, stop_process  # noqa: E402

from bench.generation import Store, photo_like  # noqa: E402
from services import batches, catalog, credits, db, openai_batches  # noqa: E402
from services.config import SETTING_NAMES  # noqa: E402

GOAL_RSS_BYTES = 50 * 10**6
MB = 10**6
MiB = 1024 * 1024
VARIANTS = 3  # photo-like pictures per size and format, picked by the prompt's hash
SAMPLE_EVERY = 0.05
API_KEY = "sk-bench-economy"


# ----- helpers that run in child processes ---------------------------------------------------------

def serve_stand_in(argv: list[str]) -> int:
    """Run tools/fake_openai.py answering with photo-like images (--photo WxH,...); stops when its parent is gone."""
    import tools.fake_openai as fake_openai

    sizes: list[tuple[int, int]] = []
    if "--photo" in argv:
        at = argv.index("--photo")
        sizes = [tuple(int(n) for n in text.split("x")) for text in argv[at + 1].split(",") if text]
        argv = argv[:at] + argv[at + 2:]
    made: dict[tuple[int, int, str], list[bytes]] = {}

    def variants(width: int, height: int, image_format: str) -> list[bytes]:
        key = (width, height, image_format)
        if key not in made:
            made[key] = [photo_like(width, height, image_format, seed=7 + n) for n in range(VARIANTS)]
        return made[key]

    for width, height in sizes:
        for image_format in ("png", "jpeg"):
            variants(width, height, image_format)

    def render(prompt: str, width: int, height: int, output_format: str = "png", transparent: bool = False,
               compression: int | None = None) -> bytes:
        pictures = variants(width, height, "png" if output_format == "png" else "jpeg")
        return pictures[hashlib.sha256(prompt.encode("utf-8")).digest()[0] % len(pictures)]

    parent = os.getppid()

    def watch_parent() -> None:  # the bench was killed without stopping us: stop by ourselves
        while os.getppid() == parent:
            time.sleep(1)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch_parent, daemon=True, name="watch-parent").start()
    fake_openai.render_image = render
    return fake_openai.main(argv)


def vm_kib(pid: int | str = "self") -> dict[str, int]:
    """VmRSS and VmHWM of a process in KiB from /proc (empty once it has exited)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return {}
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    return {name: int(fields[name].split()[0]) for name in ("VmRSS", "VmHWM") if name in fields}


def read_once(method: str, base_url: str, api_key: str, file_id: str, destination: str) -> int:
    """One download of a file in this (fresh) process by `method`; prints its times and peak RSS as JSON."""
    path = Path(destination)
    start_rss = vm_kib()["VmRSS"]
    answer: dict = {"method": method}
    started = time.perf_counter()
    if method == "ours":
        answer["bytes"] = openai_batches.download(base_url, api_key, file_id, path)
        answer["download_s"] = time.perf_counter() - started
        lines = ok = 0
        for result in openai_batches.results(path):
            lines += 1
            ok += result.ok
        answer.update(results_s=time.perf_counter() - started - answer["download_s"], lines=lines, ok=ok)
    else:
        request = urllib.request.Request(f"{base_url}/files/{file_id}/content",
                                         headers={"Authorization": f"Bearer {api_key}"})
        with urllib.request.urlopen(request, timeout=300) as response, path.open("wb") as handle:
            if method == "plain":
                shutil.copyfileobj(response, handle, openai_batches.CHUNK)
            else:  # "whole": the body read into memory at once, then written
                handle.write(response.read())
        answer["bytes"] = path.stat().st_size
        answer["download_s"] = time.perf_counter() - started
        answer["results_s"] = 0.0
    answer["seconds"] = time.perf_counter() - started
    answer["start_rss_kib"] = start_rss
    answer["peak_rss_kib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    path.unlink(missing_ok=True)
    print(json.dumps(answer), flush=True)
    return 0


# ----- the bench ----------------------------------------------------------------------------------

class StandIn:
    """The OpenAI stand-in in its own process on 127.0.0.1 (a free port), answering with photo-like images."""

    def __init__(self, log_file: Path, files_dir: Path, sizes: list[str]):
        command = [sys.executable, str(Path(__file__).resolve()), "--as-stand-in", "--port", "0",
                   "--api-key", API_KEY, "--files-dir", str(files_dir), "--photo", ",".join(sizes)]
        with open(log_file, "w", encoding="utf-8") as log:
            self.process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=log, text=True)
        self.base_url = self.process.stdout.readline().strip()  # ends in /v1
        if not self.base_url.startswith("http://127.0.0.1:"):
            self.stop()
            raise SystemExit(f"the OpenAI stand-in did not start; see {log_file}")

    def get(self, path: str) -> dict:
        """A JSON GET on the stand-in."""
        response = requests.get(f"{self.base_url}{path}", headers={"Authorization": f"Bearer {API_KEY}"}, timeout=30)
        response.raise_for_status()
        return response.json()

    def delete_file(self, file_id: str) -> None:
        """Delete a file from the stand-in's disk."""
        requests.delete(f"{self.base_url}/files/{file_id}", headers={"Authorization": f"Bearer {API_KEY}"},
                        timeout=30).raise_for_status()

    def stop(self) -> None:
        """Stop the stand-in's process."""
        stop_process(self.process)


def queue_economy_batch(conn: db.Connection, models: catalog.Catalog, model_id: str, count: int, resolution: str,
                        ratio: str, image_format: str) -> int:
    """One subscriber and one economy batch of `count` images; returns the batch id."""
    now = int(time.time())
    user_id = db.user_insert(conn, "Bench", "bench@example.com", now)
    db.subscription_upsert(conn, user_id, {
        "id": "sub_bench", "customer": "cus_bench", "status": "active", "price_id": "price",
        "current_period_start": now - 60, "current_period_end": now + 86400, "cancel_at_period_end": False,
        "cancel_at": None, "ended_at": None}, now)
    credits.grant_period(conn, user_id, count * 1000, "in_bench", now)
    prompts = [f"economy bench, a harbour at dawn, take {i}" for i in range(count)]
    checked = batches.review(models, datetime.date.today(), prompts=prompts, names=[], style="", model_id=model_id,
                             ratio=ratio, quality="low", resolution=resolution, image_format=image_format,
                             separator=", ", max_prompts=count, credits_left=credits.balance(conn, user_id),
                             speed="economy")
    if not checked.ok:
        raise SystemExit(f"the bench batch was refused: {checked.errors}")
    return batches.create(conn, models, user_id, checked, f"bench-{count}", now)[0]


def run_worker(env: dict, log_file: Path, timeout: float, watch: Path | None = None) -> dict:
    """A real `cli.py worker` process; its wall time, peak RSS (ru_maxrss) and, with `watch`, its RSS samples.

    `watch` is the job's economy folder: each sample then says whether the output file is whole on disk yet.
    """
    with open(log_file, "a", encoding="utf-8") as log:
        started = time.monotonic()
        process = subprocess.Popen([sys.executable, "cli.py", "worker"], cwd=ROOT, env=env, stdout=log, stderr=log)
    samples: list[tuple[float, int, bool]] = []  # (seconds, VmRSS KiB, output file whole on disk)
    hwm = 0
    try:
        while True:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                process.returncode = os.waitstatus_to_exitcode(status)
                break
            if time.monotonic() - started > timeout:
                raise SystemExit(f"the worker ran past {timeout:.0f} s; see {log_file}")
            memory = vm_kib(process.pid)
            if memory and watch is not None:
                # Once whole, the file stays whole: collect removes output.jsonl, then the folder, when it is done.
                whole = bool(samples and samples[-1][2]) or (watch / "output.jsonl").exists() or not watch.exists()
                samples.append((time.monotonic() - started, memory["VmRSS"], whole))
            hwm = max(hwm, memory.get("VmHWM", 0))
            time.sleep(SAMPLE_EVERY)
    finally:
        if process.returncode is None:
            stop_process(process)
    if process.returncode != 0:
        raise SystemExit(f"the worker exited with {process.returncode}; see {log_file}")
    # ru_maxrss and VmHWM are the same high-water mark read two ways (they can differ by the kernel's per-thread
    # counter slack, a few hundred KiB): the larger is the peak.
    return {"seconds": time.monotonic() - started, "peak_kib": max(usage.ru_maxrss, hwm), "samples": samples}


def reader(method: str, stand_in: StandIn, file_id: str, destination: Path) -> dict:
    """One download by `method` in a fresh process (this file with --as-reader); its figures."""
    answer = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--as-reader", method,
                             stand_in.base_url, API_KEY, file_id, str(destination)],
                            cwd=ROOT, capture_output=True, text=True, timeout=1800)
    if answer.returncode != 0:
        raise SystemExit(f"the {method} download failed: {answer.stderr[-2000:]}")
    return json.loads(answer.stdout.strip().splitlines()[-1])


def one_size(directory: Path, stand_in: StandIn, models: catalog.Catalog, model_id: str, count: int, args) -> dict:
    """Send, measure and collect one economy batch of `count` images; its figures."""
    store = Store("sqlite", directory)
    conn = store.database.connect()
    var_dir = directory / "var"
    log_file = directory / "worker.log"
    env = {k: v for k, v in os.environ.items() if k not in SETTING_NAMES}
    env.update({"APP_MODE": "test", "DATABASE_URL": store.url, "VAR_DIR": str(var_dir), "OPENAI_API_KEY": API_KEY,
                "OPENAI_BASE_URL": stand_in.base_url, "LOG_LEVEL": "INFO"})
    if os.environ.get("MODEL_CATALOG"):
        env["MODEL_CATALOG"] = os.environ["MODEL_CATALOG"]
    try:
        batch_id = queue_economy_batch(conn, models, model_id, count, args.resolution, args.ratio, args.format)
        sender = run_worker(env, log_file, timeout=600)
        job = conn.one("SELECT id, status, openai_batch_id, total FROM upstream_batches")
        if job is None or not job["openai_batch_id"] or job["total"] != count:
            raise SystemExit(f"the worker did not send the job; see {log_file}")
        sent_at = time.monotonic()
        deadline = sent_at + 120 + count * 2
        while True:
            upstream = stand_in.get(f"/batches/{job['openai_batch_id']}")
            if upstream["status"] in openai_batches.FINAL_STATES:
                break
            if time.monotonic() > deadline:
                raise SystemExit(f"the stand-in's job is still {upstream['status']} after {deadline - sent_at:.0f} s")
            time.sleep(0.2)
        made_s = time.monotonic() - sent_at
        if upstream["status"] != "completed" or upstream["request_counts"]["completed"] != count:
            raise SystemExit(f"the stand-in's job ended {upstream['status']}: {upstream['request_counts']}")
        file_id = upstream["output_file_id"]
        size = stand_in.get(f"/files/{file_id}")["bytes"]

        rounds: list[dict[str, dict]] = []
        methods = ["plain", "ours"] + (["whole"] if size <= args.read_whole_limit * MB else [])
        for number in range(args.rounds):
            order = methods if number % 2 == 0 else methods[::-1]
            rounds.append({m: reader(m, stand_in, file_id, directory / f"download-{m}.jsonl") for m in order})
            for method, got in rounds[-1].items():
                if got["bytes"] != size or (method == "ours" and got["ok"] != count):
                    raise SystemExit(f"the {method} download got {got['bytes']} of {size} bytes: {got}")

        # Collect through the real path: the job due for its next poll (as a minute later), a worker process.
        db.upstream_update(conn, job["id"], int(time.time()), polled_at=0)
        collector = run_worker(env, log_file, timeout=300 + count * 5, watch=var_dir / "economy" / str(job["id"]))
        row = conn.one("SELECT SUM(status = 'done') AS done, COUNT(*) AS n FROM batch_items")
        status = conn.scalar("SELECT status FROM upstream_batches WHERE id = ?", (job["id"],))
        stored = sum(1 for _ in (var_dir / "results" / str(batch_id)).iterdir())
        if int(row["done"] or 0) != count or status != "collected" or stored != count:
            raise SystemExit(f"collected {row['done']} of {count} ({status}, {stored} files); see {log_file}")
        stored_bytes = sum(p.stat().st_size for p in (var_dir / "results" / str(batch_id)).iterdir())
    finally:
        conn.close()
    shutil.rmtree(var_dir / "results", ignore_errors=True)
    for name in ("output_file_id", "input_file_id"):
        if upstream.get(name):
            stand_in.delete_file(upstream[name])
    return {"images": count, "bytes": size, "made_s": made_s, "rounds": rounds, "sender": sender,
            "collector": collector, "stored_bytes": stored_bytes}


def mib(kib: float) -> str:
    """KiB as MiB with one decimal."""
    return f"{kib / 1024:.1f}"


def print_files(results: list[dict]) -> None:
    """The throughput and memory tables, and the goal's verdict."""
    print("\n## Throughput: download + results against a plain download (same file, same run)\n")
    print("MB/s = 10^6 bytes per second over the whole operation (median of the rounds, min–max); RSS: each "
          "download's own process, its peak above its RSS before it started (getrusage). "
          "Ratio = ours ÷ plain, medians (paired per round in brackets).\n")
    print("| images | file MB | way | download s | results s | **MB/s** | min–max | peak RSS − start, MiB | "
          "÷ plain |")
    print("|---|---|---|---|---|---|---|---|---|")
    labels = {"plain": "plain download (urllib, copyfileobj 1 MB, baseline)",
              "ours": "ours: `download` + `results` line by line",
              "whole": "read whole (urllib `read()`, then written)"}
    for result in results:
        size = result["bytes"]
        plain_rates = [size / r["plain"]["seconds"] / MB for r in result["rounds"]]
        for method in ("plain", "ours", "whole"):
            runs = [r[method] for r in result["rounds"] if method in r]
            if not runs:
                continue
            rates = [size / run["seconds"] / MB for run in runs]
            paired = statistics.median(rate / base for rate, base in zip(rates, plain_rates, strict=True))
            over = statistics.median(rates) / statistics.median(plain_rates)
            ratio = "1.00" if method == "plain" else f"**{over:.2f}** ({paired:.2f})"
            results_s = f"{statistics.median(run['results_s'] for run in runs):.2f}" if method == "ours" else "—"
            print(f"| {result['images']} | {size / MB:.0f} | {labels[method]} | "
                  f"{statistics.median(run['download_s'] for run in runs):.2f} | {results_s} | "
                  f"**{statistics.median(rates):.0f}** | {min(rates):.0f}–{max(rates):.0f} | "
                  f"{mib(max(run['peak_rss_kib'] - run['start_rss_kib'] for run in runs))} | {ratio} |")
        ours = [size / r["ours"]["download_s"] / MB for r in result["rounds"]]
        print(f"| {result['images']} | {size / MB:.0f} | ours, `download` alone | "
              f"{statistics.median(r['ours']['download_s'] for r in result['rounds']):.2f} | — | "
              f"{statistics.median(ours):.0f} | {min(ours):.0f}–{max(ours):.0f} | | "
              f"{statistics.median(ours) / statistics.median(plain_rates):.2f} |")

    print("\n## The collecting worker's memory (`cli.py worker`: economy.tick → poll → collect)\n")
    print("Download: from the worker's start to output.jsonl whole on disk (Python start-up, the poll and the download "
          "itself); settle: the rest (each line parsed, decoded, checked by imaging.finish, stored and settled). "
          "RSS in MiB: the process's VmRSS sampled every 50 ms, and its true peak from os.wait4's ru_maxrss (or "
          "VmHWM, the larger).\n")
    print("| images | file MB | stored MB | stand-in made it in s | worker s | download s | settle s | ms per image "
          "(settle) | RSS at the download's end (last sample) | peak while downloading (sampled) | peak while settling "
          "(sampled) | **peak (ru_maxrss / VmHWM)** | sender's peak (baseline) | peak − baseline |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for result in results:
        c = result["collector"]
        downloading = [rss for _, rss, whole in c["samples"] if not whole]
        settling = [(t, rss) for t, rss, whole in c["samples"] if whole]
        whole_at = settling[0][0] if settling else c["seconds"]
        settle_s = c["seconds"] - whole_at
        print(f"| {result['images']} | {result['bytes'] / MB:.0f} | {result['stored_bytes'] / MB:.0f} | "
              f"{result['made_s']:.1f} | {c['seconds']:.1f} | {whole_at:.1f} | {settle_s:.1f} | "
              f"{settle_s * 1000 / result['images']:.0f} | {mib(downloading[-1]) if downloading else '—'} | "
              f"{mib(max(downloading)) if downloading else '—'} | "
              f"{mib(max(rss for _, rss in settling)) if settling else '—'} | **{mib(c['peak_kib'])}** | "
              f"{mib(result['sender']['peak_kib'])} | {mib(c['peak_kib'] - result['sender']['peak_kib'])} |")
    print("\nPeak sampled RSS (MiB) in each tenth of the settle phase (a leak per line would climb from left to right):"
          "\n")
    print("| images | " + " | ".join(f"{k * 10}%" for k in range(1, 11)) + " |")
    print("|---|" + "---|" * 10)
    for result in results:
        c = result["collector"]
        settling = [(t, rss) for t, rss, whole in c["samples"] if whole]
        if not settling:
            continue
        begin, end = settling[0][0], settling[-1][0]
        span = max(end - begin, 1e-9)
        tenths = [max((rss for t, rss in settling if k <= min(9, int((t - begin) / span * 10)) <= k), default=None)
                  for k in range(10)]
        print(f"| {result['images']} | " + " | ".join(mib(v) if v else "—" for v in tenths) + " |")
    small, large = results[0], results[-1]
    difference = (large["collector"]["peak_kib"] - small["collector"]["peak_kib"]) * 1024
    verdict = "met" if abs(difference) < GOAL_RSS_BYTES else "**missed**"
    print(f"\nGoal: the collecting worker's peak RSS at {large['images']} images ({large['bytes'] / MB:.0f} MB) minus "
          f"at {small['images']} ({small['bytes'] / MB:.0f} MB): {difference / MiB:+.1f} MiB "
          f"({difference / MB:+.1f} MB) against ±{GOAL_RSS_BYTES / MB:.0f} MB: {verdict}.")


def print_prices(models: catalog.Catalog, source: str) -> None:
    """Credits per image now and in an economy batch, every row the site offers today."""
    today = datetime.date.today()
    rows = [(m.id, resolution, ratio, quality, m.price(resolution, ratio, quality))
            for m in models.available(today) for resolution in m.resolutions for ratio in catalog.RATIOS
            for quality in m.qualities if m.offers(resolution, ratio, quality)]
    print(f"\n## Credits per image, now against economy ({source}, models available on {today})\n")
    print("| model | resolution | ratio | quality | now credits | economy credits | saving % |")
    print("|---|---|---|---|---|---|---|")
    savings = []
    for model_id, resolution, ratio, quality, now in rows:
        economy = batches.economy_price(now)
        saving = 100 * (1 - economy / now) if now else 0.0
        savings.append((saving, model_id, resolution, ratio, quality, now, economy))
        print(f"| {model_id} | {resolution} | {ratio} | {quality} | {now} | {economy} | {saving:.1f} |")
    print("\nThe same, one row per resolution x quality (each cell: now → economy credits, saving): the models "
          "listed charge the same there, or the cell says they differ.\n")
    print("| resolution | quality | models | " + " | ".join(catalog.RATIOS) + " |")
    print("|---|---|---|" + "---|" * len(catalog.RATIOS))
    keys = sorted({(r[1], r[3]) for r in rows}, key=lambda k: (catalog.RESOLUTIONS.index(k[0]),
                                                                [r[3] for r in rows].index(k[1])))
    for resolution, quality in keys:
        offering = [r for r in rows if r[1] == resolution and r[3] == quality]
        names = sorted({r[0] for r in offering}, key=[m.id for m in models.models].index)
        cells = []
        for ratio in catalog.RATIOS:
            prices = {r[4] for r in offering if r[2] == ratio}
            if len(prices) == 1:
                now = prices.pop()
                economy = batches.economy_price(now)
                cells.append(f"{now} → {economy} ({100 * (1 - economy / now) if now else 0:.1f} %)")
            else:
                cells.append("differ (see above)" if prices else "—")
        print(f"| {resolution} | {quality} | {', '.join(names)} | " + " | ".join(cells) + " |")
    odd = [s for s in savings if s[5] % 2]
    lowest = min(savings)
    print(f"\n{len(rows)} rows over {len(models.available(today))} models. Saving: median "
          f"{statistics.median(s[0] for s in savings):.1f} %, lowest {lowest[0]:.1f} % ({lowest[1]} {lowest[2]} "
          f"{lowest[3]} {lowest[4]}: {lowest[5]} → {lowest[6]}), highest {max(savings)[0]:.1f} %; exactly 50 % on "
          f"{len(savings) - len(odd)} rows (even prices), below on {len(odd)} (odd prices: half a credit rounded "
          f"up). Credits now ÷ economy over the whole table: "
          f"{sum(s[5] for s in savings) / sum(s[6] for s in savings):.3f}.")


def main(argv: list[str] | None = None) -> int:
    """Run the parts asked for and print the Markdown tables."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--as-stand-in"]:
        return serve_stand_in(argv[1:])
    if argv[:1] == ["--as-reader"]:
        return read_once(*argv[1:6])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", default="40,500",
                        help="comma-separated batch sizes; the smallest and largest are compared (default 40,500)")
    parser.add_argument("--rounds", type=int, default=3, help="throughput rounds per size (default 3)")
    parser.add_argument("--resolution", choices=catalog.RESOLUTIONS, default="2K", help="default 2K")
    parser.add_argument("--ratio", choices=catalog.RATIOS, default="1:1", help="default 1:1")
    parser.add_argument("--format", choices=("png", "jpeg"), default="png", help="default png")
    parser.add_argument("--read-whole-limit", type=float, default=1000,
                        help="MB: the read-whole way only for files up to this size (default 1000)")
    parser.add_argument("--only", choices=("files", "prices"), default=None, help="one part only")
    parser.add_argument("--quick", action="store_true", help="10 and 40 images: to try the script (< 1 minute)")
    args = parser.parse_args(argv)
    if args.quick:
        args.images = "10,40"
    sizes = sorted({int(n) for n in args.images.split(",") if n.strip()})
    if not sizes or sizes[0] < 1:
        parser.error("--images takes positive counts, comma-separated")
    command = ".venv/bin/python bench/economy.py " + shlex.join(argv)
    models = catalog.load(os.environ.get("MODEL_CATALOG") or None)
    print("# Economy batches\n")
    print(f"Date and machine: {machine_line()}.  ")
    print(f"Command: `{command.strip()}`")
    if args.only != "prices":
        model = models.default(datetime.date.today())
        if args.resolution not in model.resolutions:
            parser.error(f"{model.id} does not offer {args.resolution}")
        size = model.size(args.resolution, args.ratio)
        print(f"\nOutput files of {', '.join(map(str, sizes))} images from the stand-in's Batch API: {model.id}, "
              f"{args.resolution} {args.ratio} ({size.request_text}), {args.format.upper()}, photo-like pictures "
              f"({VARIANTS} variants); SQLite; {args.rounds} throughput rounds per size. Goal: the collecting "
              f"worker's peak RSS within {GOAL_RSS_BYTES / MB:.0f} MB whatever the file's size.", flush=True)
        results = []
        with tempfile.TemporaryDirectory(prefix="iib-bench-economy-") as temp:
            files_dir = Path(temp) / "stand-in-files"
            files_dir.mkdir()
            stand_in = StandIn(Path(temp) / "stand-in.log", files_dir, [size.request_text])
            try:
                for count in sizes:
                    run_dir = Path(temp) / f"images-{count}"
                    run_dir.mkdir()
                    started = time.monotonic()
                    results.append(one_size(run_dir, stand_in, models, model.id, count, args))
                    print(f"<!-- {count} images: {results[-1]['bytes'] / MB:.0f} MB, measured in "
                          f"{time.monotonic() - started:.0f} s -->", flush=True)
            finally:
                stand_in.stop()
        print_files(results)
    if args.only != "files":
        print_prices(models, os.environ.get("MODEL_CATALOG") or "catalog/models.json")
    print(f"\nLoad average at the end: {' '.join(f'{v:.2f}' for v in os.getloadavg())}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
