"""Benchmark of our OpenAI client against the official openai-python, on the same stand-in and requests.

    .venv/bin/pip install -r bench/requirements.txt     # the official client, pinned (bench only)
    .venv/bin/python bench/client_compare.py [--requests 200] [--runs 3] [--latency 0.2] [--quick]

What: one image generation as the worker makes it, three ways, against the OpenAI stand-in
(`tools/fake_openai.py` in its own process, a fixed `--latency`, `--api-key`):

* ours     - `services.openai_images.generate(...)` (requests, a kept-alive Session per thread);
* official - `OpenAI(base_url=..., api_key=...).images.generate(model=..., prompt=..., size=...,
             quality=..., output_format=..., n=1, user=...)`, then the base64 decode of
             `data[0].b64_json` (openai-python at the version bench/requirements.txt pins);
* baseline - the least a client can do, measured in the same run: `http.client` on one kept-alive
             connection, POST the same JSON, `json.loads`, `base64.b64decode(validate=True)`.

How: `--requests` requests per client, one after another (keep-alive for all three: each
client object is made once per run and warmed with one untimed request), the same prompts and
the same (model, size, format) rotation for each; the clients take turns by blocks, in a
rotated order each run. The overhead of a request is its time minus the stand-in's latency
(the latency covers the stand-in's own drawing and encoding; what is left is the HTTP round
trip, the JSON, the base64 and the client's own code). The table shows, per client, the
median over the runs of each run's median and p95 overhead, and the overhead above the
baseline. The connections each client opened are counted from /proc/net/tcp (1 = keep-alive
works). The cold start, as a worker process started by cron pays it, is measured in fresh
interpreters (`--cold-runs` each): the import, the client's construction, and the first
request's overhead.

Goal: our client adds no more than the official one (median overhead ours ≤ official).
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

from common import machine_line, stop_process  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

API_KEY = "sk-bench-client-compare"
CASES = [("gpt-image-2", "1024x1024", "jpeg"), ("gpt-image-2", "1536x864", "png"), ("gpt-image-2", "864x1536", "jpeg"),
         ("gpt-image-1-mini", "1536x1024", "jpeg")]
USER = "5f0c2b1e9d7a4c3b8e6f1a2d3c4b5a69"
CLIENTS = ("baseline", "ours", "official")




def official_or_exit():
    """The official client's class, or a clear message on how to install it."""
    try:
        import openai
    except ImportError:
        raise SystemExit("the official client is missing: .venv/bin/pip install -r bench/requirements.txt") from None
    return openai


# ----- the three clients -------------------------------------------------------------------------------------

class Baseline:
    """http.client on one kept-alive connection: POST, json.loads, b64decode."""

    def __init__(self, base_url: str):
        parts = urlsplit(base_url)
        self.path = parts.path.rstrip("/") + "/images/generations"
        self.connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)

    def generate(self, model: str, prompt: str, size: str, image_format: str) -> bytes:
        """One image's bytes."""
        body = json.dumps({"model": model, "prompt": prompt, "n": 1, "size": size, "quality": "low",
                           "output_format": image_format, "user": USER})
        self.connection.request("POST", self.path, body=body, headers={
            "Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"})
        response = self.connection.getresponse()
        payload = json.loads(response.read())
        if response.status != 200:
            raise SystemExit(f"the stand-in answered {response.status}: {payload}")
        return base64.b64decode(payload["data"][0]["b64_json"], validate=True)


class Ours:
    """services.openai_images.generate, as the worker calls it."""

    def __init__(self, base_url: str):
        from services import openai_images

        self.module = openai_images
        self.base_url = base_url

    def generate(self, model: str, prompt: str, size: str, image_format: str) -> bytes:
        """One image's bytes."""
        return self.module.generate(self.base_url, API_KEY, model=model, prompt=prompt, size=size, quality="low",
                                    output_format=image_format, user=USER, read_timeout=60).data


class Official:
    """openai-python's client: images.generate, then the base64 decode."""

    def __init__(self, base_url: str):
        self.client = official_or_exit().OpenAI(base_url=base_url, api_key=API_KEY)

    def generate(self, model: str, prompt: str, size: str, image_format: str) -> bytes:
        """One image's bytes."""
        result = self.client.images.generate(model=model, prompt=prompt, size=size, quality="low",
                                             output_format=image_format, n=1, user=USER)
        return base64.b64decode(result.data[0].b64_json)


MAKERS = {"baseline": Baseline, "ours": Ours, "official": Official}
IMPORTS = {"baseline": "import http.client, json, base64", "ours": "from services import openai_images",
           "official": "from openai import OpenAI"}


# ----- the stand-in and the connections it sees --------------------------------------------------------------

class StandIn:
    """The OpenAI stand-in in its own process: a fixed latency, no rate limit."""

    def __init__(self, latency: float, log_file: Path):
        with open(log_file, "w", encoding="utf-8") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tools.fake_openai", "--port", "0", "--latency", str(latency),
                 "--api-key", API_KEY], cwd=ROOT, stdout=subprocess.PIPE, stderr=log, text=True)
        self.base_url = self.process.stdout.readline().strip()
        if not self.base_url.startswith("http://127.0.0.1:"):
            self.stop()
            raise SystemExit(f"the OpenAI stand-in did not start; see {log_file}")
        self.port = urlsplit(self.base_url).port

    def stop(self) -> None:
        """Stop the stand-in's process."""
        stop_process(self.process)


def client_ports(port: int) -> set[int]:
    """The client-side ports of every TCP connection to `port` the kernel still knows (open or TIME_WAIT)."""
    ports = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote = int(fields[1].split(":")[1], 16), int(fields[2].split(":")[1], 16)
        if remote == port:
            ports.add(local)
        elif local == port and remote:
            ports.add(remote)
    return ports


# ----- measurements ------------------------------------------------------------------------------------------

def timed_block(client, prompts: list[str], latency: float) -> list[float]:
    """The overhead (ms) of each request of a block: its time minus the stand-in's latency."""
    overheads = []
    for i, prompt in enumerate(prompts):
        model, size, image_format = CASES[i % len(CASES)]
        started = time.perf_counter()
        data = client.generate(model, prompt, size, image_format)
        overheads.append((time.perf_counter() - started - latency) * 1000)
        if not data:
            raise SystemExit("an empty image")
    return overheads


def percentile(values: list[float], fraction: float) -> float:
    """The value below which `fraction` of the values lie (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(round(fraction * len(ordered))) - 1))]


def cold(name: str, base_url: str, latency: float) -> dict:
    """In this (fresh) interpreter: import, construct, first and second request; seconds as ms."""
    started = time.perf_counter()
    if name == "official":
        official_or_exit()  # `import openai` (with a clear message when it is missing); OpenAI is an attribute
    else:
        exec(IMPORTS[name])  # one of the fixed import lines above
    imported = time.perf_counter()
    client = MAKERS[name](base_url)
    made = time.perf_counter()
    model, size, image_format = CASES[0]
    client.generate(model, "cold start", size, image_format)
    first = time.perf_counter()
    client.generate(model, "cold start 2", size, image_format)
    second = time.perf_counter()
    return {"import": (imported - started) * 1000, "construct": (made - imported) * 1000,
            "first": (first - made - latency) * 1000, "second": (second - first - latency) * 1000}


def cold_runs(name: str, base_url: str, latency: float, runs: int) -> dict:
    """Medians of `runs` cold starts, each in a fresh interpreter."""
    found = []
    for _ in range(runs):
        output = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--cold", name, "--base-url", base_url,
                                 "--latency", str(latency)], cwd=ROOT, capture_output=True, text=True, timeout=120)
        if output.returncode != 0:
            raise SystemExit(f"the cold start of {name} failed: {output.stderr[-2000:]}")
        found.append(json.loads(output.stdout.strip().splitlines()[-1]))
    return {key: statistics.median(f[key] for f in found) for key in found[0]}


def main(argv: list[str] | None = None) -> int:
    """Run the comparison and print the Markdown tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200, help="timed requests per client and run (default 200)")
    parser.add_argument("--runs", type=int, default=3, help="runs (the median of the runs is shown; default 3)")
    parser.add_argument("--latency", type=float, default=0.2, help="seconds per image at the stand-in (default 0.2)")
    parser.add_argument("--cold-runs", type=int, default=7, help="fresh interpreters per client for the cold start")
    parser.add_argument("--quick", action="store_true", help="20 requests, 2 runs, 2 cold starts: to try the script")
    parser.add_argument("--cold", choices=CLIENTS, help=argparse.SUPPRESS)
    parser.add_argument("--base-url", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.cold:
        print(json.dumps(cold(args.cold, args.base_url, args.latency)))
        return 0
    openai = official_or_exit()
    if args.quick:
        args.requests, args.runs, args.cold_runs = 20, 2, 2
    command = ".venv/bin/python bench/client_compare.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    print("# Our OpenAI client against openai-python\n")
    print(f"Date and machine: {machine_line()}.  ")
    print(f"Command: `{command.strip()}`  ")
    print(f"openai-python {openai.__version__}; stand-in latency {args.latency:g} s; {args.requests} sequential "
          f"requests per client and run, {args.runs} runs; sizes {', '.join(f'{m} {s} {f}' for m, s, f in CASES)} "
          "in turn. Baseline (same run): http.client + json + base64 on one kept-alive connection.  ")
    print("Goal: our client's median overhead ≤ the official client's.\n")

    import tempfile

    with tempfile.TemporaryDirectory(prefix="iib-bench-clients-") as temp:
        stand_in = StandIn(args.latency, Path(temp) / "stand-in.log")
        try:
            per_run: dict[str, list[tuple[float, float]]] = {name: [] for name in CLIENTS}
            connections: dict[str, list[int]] = {name: [] for name in CLIENTS}
            for run in range(args.runs):
                order = CLIENTS[run % 3:] + CLIENTS[:run % 3]
                prompts = [f"a lighthouse in a storm, oil painting, run {run} image {i}" for i in range(args.requests)]
                for name in order:
                    before = client_ports(stand_in.port)
                    client = MAKERS[name](stand_in.base_url)
                    client.generate(CASES[0][0], "warm-up", CASES[0][1], CASES[0][2])
                    overheads = timed_block(client, prompts, args.latency)
                    connections[name].append(len(client_ports(stand_in.port) - before))
                    per_run[name].append((statistics.median(overheads), percentile(overheads, 0.95)))
                    print(f"<!-- run {run + 1} {name}: median {per_run[name][-1][0]:.2f} ms, "
                          f"p95 {per_run[name][-1][1]:.2f} ms -->", flush=True)
                    del client
            colds = {name: cold_runs(name, stand_in.base_url, args.latency, args.cold_runs) for name in CLIENTS}
        finally:
            stand_in.stop()

    base_median = statistics.median(m for m, _ in per_run["baseline"])
    print("| client | median overhead ms | p95 overhead ms | median above baseline ms | new connections per "
          "run, warm-up included (0: the last run's kept-alive one reused) |")
    print("|---|---|---|---|---|")
    medians = {}
    for name in CLIENTS:
        median = medians[name] = statistics.median(m for m, _ in per_run[name])
        p95 = statistics.median(p for _, p in per_run[name])
        print(f"| {name} | **{median:.2f}** | {p95:.2f} | {median - base_median:+.2f} | "
              f"{', '.join(str(c) for c in connections[name])} |")
    print(f"\nCold start in a fresh interpreter (median of {args.cold_runs}), ms:\n")
    print("| client | import | construct the client | first request's overhead | second request's overhead |")
    print("|---|---|---|---|---|")
    for name in CLIENTS:
        c = colds[name]
        print(f"| {name} (`{IMPORTS[name]}`) | {c['import']:.1f} | {c['construct']:.1f} | {c['first']:.1f} | "
              f"{c['second']:.1f} |")
    ok = medians["ours"] <= medians["official"]
    print(f"\nGoal (ours ≤ official, median overhead): {medians['ours']:.2f} ms against {medians['official']:.2f} ms: "
          f"{'met' if ok else '**missed**'}.")
    print(f"Load average at the end: {' '.join(f'{v:.2f}' for v in os.getloadavg())}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
