"""Benchmark of the batch ZIP in Chromium: the site's zipBatch() (client-zip) against JSZip 3.10.1, same run.

    .venv/bin/python bench/zip_browser.py [--images 100] [--megabytes 1.5] [--runs 5] [--no-deflate] [--quick]
    .venv/bin/python bench/zip_browser.py --resolution 4K [--ratio 1:1] --images 50 [--runs 5] [--no-deflate]

JSZip is for this bench only, never shipped: fetch it once into .cache/ (gitignored) with

    mkdir -p .cache && cd .cache && npm pack jszip@3.10.1 && tar xzf jszip-3.10.1.tgz && mv package jszip-3.10.1

What runs: Python makes the images once (random-noise PNGs of about --megabytes each:
incompressible, like real photos; or, with --resolution, photo-like PNGs of the catalogue's default
model's exact size at that resolution and --ratio, as bench/generation.py's photo_like makes them: a
4K one is about 12 MB, what a real 4K PNG weighs) and serves them from a small HTTP server on
127.0.0.1 together with a bench page, its module script (served from this file; no inline script,
the site's strict CSP on the page; the body carries a data-library-key as the site's batch page
does, which store.js keys every row by), the site's own public/js/ and public/vendor/ files, and
JSZip from .cache/. In Chromium (a persistent profile in a temporary folder, so IndexedDB lives on
disk as in a real browser), the page fetches the images and stores them with the site's own
public/js/store.js (database `images-in-bulk`, a `batches` record and one `images` record per image,
the shape batch.js stores), then builds the ZIP from IndexedDB, several times, alternating the
order:

* client-zip: public/js/zip.js's zipBatch(), exactly what "Download ZIP" runs (getBatch + imagesOf
  from IndexedDB, each blob read, manifest.csv, client-zip's downloadZip(...).blob());
* JSZip STORE: the same records into `new JSZip()` (each image as its Blob, the same manifest.csv),
  then generateAsync({type: 'blob', compression: 'STORE'}), for a fair comparison;
* JSZip DEFLATE (extra row, --no-deflate to skip): the same with compression 'DEFLATE'.

Each run's time is measured in the page (performance.now(), from reading IndexedDB to the finished
Blob); the archive is checked (its end record counts every image plus manifest.csv). Throughput =
image megabytes (10^6 bytes) / seconds, the median of the runs. Memory is sampled from Python
through the DevTools protocol every ~20 ms during each run (Performance.getMetrics' JSHeapUsedSize,
and Runtime.getHeapUsage's ArrayBuffer backing store), after a forced garbage collection before
each run; the peaks are the largest over the runs. Goals: client-zip >= 1.3 x JSZip STORE's
throughput in the same run, and peak JS heap <= 1.2 x the archive size.
"""

from __future__ import annotations

import argparse
import datetime
import io
import json
import random
import statistics
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from common import CHROMIUM, CHROMIUM_ARGS, machine_line

ROOT = Path(__file__).resolve().parent.parent
PUBLIC = ROOT / "public"
JSZIP = ROOT / ".cache" / "jszip-3.10.1" / "dist" / "jszip.min.js"
# The site's policy (services/security.py), with nothing added for the bench.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; connect-src 'self'; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
BATCH_ID = 1

PAGE_HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>ZIP bench</title>
<script src="/jszip/jszip.min.js"></script>
<script type="module" src="/bench/zip-bench.js"></script>
</head><body data-library-key="bench-library-key"><p id="ready">ZIP bench</p></body></html>
"""

# The page's module: stores the images the way the site does, then zips them one of three ways.
BENCH_JS = """
import {putBatch, putImage, imagesOf, getBatch, deleteBatch} from '/js/store.js';
import {zipBatch, manifestCsv} from '/js/zip.js';

const BATCH = %(batch)d;

async function load(count, width, height) {
  await deleteBatch(BATCH);
  const created = Math.floor(Date.now() / 1000), items = [];
  let bytes = 0;
  for (let i = 0; i < count; i++) {
    const blob = await (await fetch(`/images/${i}.png`)).blob();
    const name = `image-${String(i + 1).padStart(3, '0')}.png`;
    await putImage({batchId: BATCH, itemId: i + 1, position: i, name, type: blob.type, bytes: blob.size,
      width, height, blob});
    items.push({id: i + 1, position: i, name, prompt: `bench image ${i}`, finalPrompt: `bench image ${i}`,
      status: 'done', error: null});
    bytes += blob.size;
  }
  await putBatch({id: BATCH, createdAt: created, date: new Date(created * 1000).toISOString().slice(0, 10),
    model: 'gpt-image-2', ratio: '1:1', quality: 'low', format: 'png', width, height, count, items});
  return bytes;
}

async function withJSZip(batch, images, compression) {
  const zip = new JSZip(), date = new Date(batch.createdAt * 1000), names = [];
  for (const image of [...images].sort((a, b) => a.position - b.position)) {
    zip.file(image.name, image.blob, {date, binary: true});
    names.push(image.name);
  }
  zip.file('manifest.csv', manifestCsv(batch, names), {date});
  return zip.generateAsync({type: 'blob', compression, mimeType: 'application/zip'});
}

// Entries counted in the archive's end-of-central-directory record (no comment: the last 22 bytes).
async function entries(blob) {
  const view = new DataView(await blob.slice(blob.size - 22).arrayBuffer());
  return view.getUint32(0, true) === 0x06054b50 ? view.getUint16(10, true) : -1;
}

async function run(method) {
  const started = performance.now();
  const [batch, images] = await Promise.all([getBatch(BATCH), imagesOf(BATCH)]);
  const blob = method === 'client-zip' ? (await zipBatch(batch, images)).blob
    : await withJSZip(batch, images, method === 'jszip-deflate' ? 'DEFLATE' : 'STORE');
  const ms = performance.now() - started;
  return {ms, size: blob.size, entries: await entries(blob), images: images.length};
}

function start(method) {
  run(method).then(result => console.debug('bench-done ' + JSON.stringify(result)),
    error => console.debug('bench-fail ' + (error && error.stack || error)));
}

window.bench = {load, start};
document.getElementById('ready').dataset.ready = '1';
"""




def noise_png(seed: int, megabytes: float) -> tuple[bytes, int, int]:
    """A PNG of random RGB noise of about `megabytes` (10^6 bytes): it does not compress, like a photo."""
    from PIL import Image

    side = int((megabytes * 1e6 / 3) ** 0.5)
    pixels = random.Random(seed).randbytes(side * side * 3)
    out = io.BytesIO()
    Image.frombytes("RGB", (side, side), pixels).save(out, "PNG", compress_level=1)
    return out.getvalue(), side, side


def photo_size(resolution: str, ratio: str) -> tuple[int, int, str]:
    """(width, height, model id): the catalogue's default model's exact size at this resolution and ratio."""
    sys.path.insert(0, str(ROOT))
    from services import catalog

    model = catalog.load().default(datetime.date.today())
    width, height = model.size(resolution, ratio).output
    return width, height, model.id


class BenchServer:
    """The bench page, its module, the site's public/js and public/vendor, JSZip and the images, on 127.0.0.1."""

    def __init__(self, images: list[bytes]):
        files = {"/bench/zip.html": (PAGE_HTML.encode(), "text/html; charset=utf-8"),
                 "/bench/zip-bench.js": ((BENCH_JS % {"batch": BATCH_ID}).encode(), "text/javascript"),
                 "/jszip/jszip.min.js": (JSZIP.read_bytes(), "text/javascript"),
                 "/favicon.ico": (b"", "image/x-icon")}
        for folder in ("js", "vendor"):
            for path in (PUBLIC / folder).glob("*.js"):
                files[f"/{folder}/{path.name}"] = (path.read_bytes(), "text/javascript")
        for n, data in enumerate(images):
            files[f"/images/{n}.png"] = (data, "image/png")

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - the http.server API
                found = files.get(self.path.split("?", 1)[0])
                if found is None:
                    self.send_error(404)
                    return
                body, kind = found
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                if kind.startswith("text/html"):
                    self.send_header("Content-Security-Policy", CSP)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format, *args):  # noqa: A002 - quiet
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        """Stop serving."""
        self.server.shutdown()
        self.server.server_close()


def zip_once(page, cdp, method: str, every: float) -> dict:
    """Build the ZIP once with `method`, sampling the memory every `every` seconds; returns the page's figures."""
    outcome = {}

    def listen(message):
        text = message.text
        if text.startswith("bench-done "):
            outcome["result"] = json.loads(text[len("bench-done "):])
        elif text.startswith("bench-fail "):
            outcome["error"] = text

    cdp.send("HeapProfiler.collectGarbage")
    peak_heap, peak_buffers, peak_both, samples = 0, 0, 0, 0
    page.on("console", listen)
    try:
        page.evaluate("(method) => window.bench.start(method)", method)
        while not outcome:
            metrics = {m["name"]: m["value"] for m in cdp.send("Performance.getMetrics")["metrics"]}
            usage = cdp.send("Runtime.getHeapUsage")
            peak_heap = max(peak_heap, metrics.get("JSHeapUsedSize", 0))
            peak_buffers = max(peak_buffers, usage.get("backingStorageSize", 0))
            peak_both = max(peak_both, metrics.get("JSHeapUsedSize", 0) + usage.get("backingStorageSize", 0))
            samples += 1
            time.sleep(every)
    finally:
        page.remove_listener("console", listen)
    if "error" in outcome:
        raise SystemExit(f"{method}: {outcome['error']}")
    result = outcome["result"]
    result.update({"peak_heap": peak_heap, "peak_buffers": peak_buffers, "peak_both": peak_both,
                   "samples": samples})
    if result["entries"] != result["images"] + 1:
        raise SystemExit(f"{method}: the archive holds {result['entries']} entries, not {result['images'] + 1}")
    return result


def main(argv: list[str] | None = None) -> int:
    """Run the ZIP bench and print Markdown tables for bench/RESULTS.md."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=100, help="images in the batch (default 100)")
    parser.add_argument("--megabytes", type=float, default=1.5, help="size of each image in MB (default 1.5)")
    parser.add_argument("--runs", type=int, default=5, help="measured runs per method (default 5), after a warm-up")
    parser.add_argument("--sample-ms", type=float, default=20, help="memory sampling interval (default 20 ms)")
    parser.add_argument("--no-deflate", action="store_true", help="skip the JSZip DEFLATE row")
    parser.add_argument("--resolution", choices=("1K", "2K", "4K"), default=None,
                        help="photo-like PNGs of the default model's size at this resolution instead of noise PNGs "
                             "of --megabytes")
    parser.add_argument("--ratio", choices=("1:1", "9:16", "16:9"), default="1:1",
                        help="the ratio of the --resolution images (default 1:1)")
    parser.add_argument("--quick", action="store_true", help="10 images and 2 runs, to try the script")
    args = parser.parse_args(argv)
    if args.quick:
        args.images, args.runs = 10, 2
    if not JSZIP.is_file():
        raise SystemExit(f"{JSZIP} is missing: see the module docstring (npm pack jszip@3.10.1 into .cache/)")
    methods = ["client-zip", "jszip-store"] + ([] if args.no_deflate else ["jszip-deflate"])
    command = " ".join([".venv/bin/python", "bench/zip_browser.py", *(argv if argv is not None else sys.argv[1:])])
    print(f"# ZIP-in-the-browser bench, {datetime.datetime.now():%Y-%m-%d %H:%M}\n")
    print(f"- machine: {machine_line()}")
    print(f"- command: `{command}`")

    started = time.monotonic()
    images = []
    if args.resolution:
        width, height, model_id = photo_size(args.resolution, args.ratio)
        from generation import photo_like

        images = [photo_like(width, height, "png", seed=n) for n in range(args.images)]
        kind = f"photo-like PNGs ({model_id} at {args.resolution} {args.ratio})"
    else:
        for n in range(args.images):
            data, width, height = noise_png(n, args.megabytes)
            images.append(data)
        kind = "random-noise PNGs"
    image_bytes = sum(len(d) for d in images)
    print(f"- input: {args.images} {kind} of {width}x{height}, {image_bytes / 1e6:.1f} MB in all, "
          f"{image_bytes / len(images) / 1e6:.1f} MB each (made in {time.monotonic() - started:.1f} s)")

    from playwright.sync_api import sync_playwright

    server = BenchServer(images)
    results: dict[str, list[dict]] = {m: [] for m in methods}
    try:
        with sync_playwright() as playwright, tempfile.TemporaryDirectory(prefix="iib-zip-") as profile:
            context = playwright.chromium.launch_persistent_context(profile, executable_path=CHROMIUM,
                                                                    args=CHROMIUM_ARGS, headless=True)
            try:
                page = context.pages[0] if context.pages else context.new_page()
                problems = []
                page.on("console", lambda m: m.type == "error" and problems.append(m.text))
                page.on("pageerror", lambda e: problems.append(str(e)))
                page.goto(server.base_url + "/bench/zip.html")
                page.wait_for_selector("#ready[data-ready='1']", state="attached", timeout=30_000)
                if problems:
                    raise SystemExit(f"the bench page failed: {problems}")
                loading = time.monotonic()
                stored = page.evaluate("([n, w, h]) => window.bench.load(n, w, h)", [args.images, width, height])
                print(f"- stored in IndexedDB (on disk, a persistent profile) in {time.monotonic() - loading:.1f} s: "
                      f"{stored / 1e6:.1f} MB; Chromium {context.browser.version if context.browser else '?'}, "
                      "headless")
                cdp = context.new_cdp_session(page)
                cdp.send("Performance.enable")
                for method in methods:  # a warm-up run each (JIT, the files' first read), not counted
                    zip_once(page, cdp, method, args.sample_ms / 1000)
                for run in range(args.runs):
                    for method in methods[run % len(methods):] + methods[:run % len(methods)]:
                        results[method].append(zip_once(page, cdp, method, args.sample_ms / 1000))
                if problems:
                    raise SystemExit(f"the bench page reported errors: {problems}")
            finally:
                context.close()
    finally:
        server.stop()

    print(f"- {args.runs} measured runs per method after one warm-up each, the methods' order rotated each "
          f"run; memory sampled every ~{args.sample_ms:.0f} ms over CDP after a forced GC\n")
    print("| method | median s | **MB/s (median)** | MB/s min–max | archive MB | peak JS heap MB | peak heap ÷ "
          "archive | peak ArrayBuffers MB | peak (heap + ArrayBuffers) ÷ archive | samples/run |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    speed = {}
    for method in methods:
        runs = results[method]
        rates = [image_bytes / 1e6 / (r["ms"] / 1000) for r in runs]
        speed[method] = statistics.median(rates)
        size = runs[0]["size"]
        heap = max(r["peak_heap"] for r in runs)
        buffers = max(r["peak_buffers"] for r in runs)
        both = max(r["peak_both"] for r in runs)
        label = {"client-zip": "client-zip 2.5.1 (site's zipBatch)", "jszip-store": "JSZip 3.10.1 STORE",
                 "jszip-deflate": "JSZip 3.10.1 DEFLATE (extra)"}[method]
        print(f"| {label} | {statistics.median(r['ms'] for r in runs) / 1000:.2f} | **{speed[method]:.1f}** | "
              f"{min(rates):.1f}–{max(rates):.1f} | {size / 1e6:.1f} | {heap / 1e6:.1f} | {heap / size:.2f} | "
              f"{buffers / 1e6:.1f} | {both / size:.2f} | "
              f"{statistics.median(r['samples'] for r in runs):.0f} |")
    ratio = speed["client-zip"] / speed["jszip-store"]
    # Paired: each run's client-zip time against JSZip STORE's in the same round (load from other jobs cancels out).
    paired = sorted(j["ms"] / c["ms"] for c, j in zip(results["client-zip"], results["jszip-store"], strict=True))
    size = results["client-zip"][0]["size"]
    heap = max(r["peak_heap"] for r in results["client-zip"])
    print()
    print("| figure | baseline | value | goal |")
    print("|---|---|---|---|")
    print(f"| client-zip throughput ÷ JSZip STORE's (same run) | JSZip STORE {speed['jszip-store']:.1f} MB/s | "
          f"**{ratio:.2f}×** | ≥ 1.3× {'✓' if ratio >= 1.3 else '✗'} |")
    print(f"| the same, paired per round (median, min–max of {len(paired)}) | each round's JSZip STORE | "
          f"**{statistics.median(paired):.2f}×** ({paired[0]:.2f}–{paired[-1]:.2f}) | "
          f"≥ 1.3× {'✓' if statistics.median(paired) >= 1.3 else '✗'} |")
    print(f"| client-zip peak JS heap ÷ archive size | archive {size / 1e6:.1f} MB | **{heap / size:.2f}** "
          f"({heap / 1e6:.1f} MB) | ≤ 1.2 {'✓' if heap / size <= 1.2 else '✗'} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
