"""The reliability soaks, longer than CI runs them: more items, several seeds, more webhook customers.

    .venv/bin/python bench/soak.py [--items 1000] [--seeds 3] [--storm-groups 5] [--engines sqlite,mariadb]

What: the suite's own soak tests (tests/test_reliability_soak.py), run by pytest with a larger size
set through the environment, so the longer variant checks exactly what CI checks:

* fault soak - ITEMS items for two subscribers (mixed models, ratios and formats) against the OpenAI
  stand-in answering ~30 % of calls with 429, 500, 503, malformed bodies or hangs, and 5 % of the
  prompts refused by moderation; real `cli.py worker` processes, one SIGKILLed at 25 % of the items
  settled, all of them at 60 %, cron's cleanup in between. Every item must end done or failed with
  its credits back, nothing generated twice per charge (except a call a kill caught), the ledger
  exact, no stray file. Run once per seed (the seed draws the faults).
* webhook storm - 10 × GROUPS customers living three rounds of subscription events (pay, renew,
  fail, cancel, resume), every event delivered 1-5 times, shuffled, six at a time, with late copies of
  earlier rounds: each round must end in the state one clean in-order delivery leaves.

Prints each run's one-line summary (attempts, faults met, kills, outcome counts, seconds) and a
verdict line; exits 1 when any run fails. MariaDB runs need the server the tests use (root on
127.0.0.1:3306, or TEST_MARIADB_URL).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from common import machine_line

ROOT = Path(__file__).resolve().parents[1]
TESTS = "tests/test_reliability_soak.py"
SUMMARY = re.compile(r"^(fault soak|webhook storm) \[.*$", re.MULTILINE)


def run(test: str, engine: str, env: dict) -> tuple[bool, list[str], float]:
    """Run one soak test on one engine; return (passed, its summary lines, seconds)."""
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "pytest", TESTS, "-s", "-q", "-p", "no:cacheprovider",
                             "-k", f"{test} and {engine}"], cwd=ROOT, env=env, capture_output=True, text=True)
    seconds = time.monotonic() - started
    summaries = [match.group(0) for match in SUMMARY.finditer(result.stdout)]
    passed = result.returncode == 0 and bool(summaries)
    if not passed:
        tail = (result.stdout + result.stderr).strip().splitlines()[-40:]
        print("\n".join("    " + line for line in tail))
    return passed, summaries, seconds


def main() -> int:
    """Run the longer soaks and print their figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=1000, help="items in the fault soak (a multiple of 20)")
    parser.add_argument("--seeds", type=int, default=3, help="fault soak runs, each with its own seed (default 3)")
    parser.add_argument("--storm-groups", type=int, default=5, help="webhook storm customers ÷ 10 (default 5)")
    parser.add_argument("--engines", default="sqlite,mariadb", help="comma-separated: sqlite, mariadb")
    parser.add_argument("--quick", action="store_true", help="200 items, 1 seed, 1 storm group: CI's own size")
    args = parser.parse_args()
    if args.quick:
        args.items, args.seeds, args.storm_groups = 200, 1, 1
    if args.items < 20 or args.items % 20:
        parser.error("--items must be a positive multiple of 20")
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    if not set(engines) <= {"sqlite", "mariadb"}:
        parser.error("--engines takes sqlite and/or mariadb")

    print("# Reliability soaks, longer variants\n")
    print(f"Date and machine: {machine_line()}  ")
    print(f"Command: `.venv/bin/python bench/soak.py {' '.join(sys.argv[1:])}`".rstrip() + "  ")
    print(f"Fault soak: {args.items} items × {args.seeds} seeds; webhook storm: {10 * args.storm_groups} "
          f"customers; engines: {', '.join(engines)}.\n")
    base = {**os.environ, "IIB_SOAK_ITEMS": str(args.items), "IIB_STORM_GROUPS": str(args.storm_groups)}
    failures, runs = 0, 0
    for engine in engines:
        for n in range(args.seeds):
            env = {**base, "IIB_SOAK_SEED": str(20261 + 7919 * n)}
            ok, lines, seconds = run("two_hundred_items", engine, env)
            runs, failures = runs + 1, failures + (not ok)
            print(f"- {'PASS' if ok else 'FAIL'} ({seconds:.0f} s) " + ("; ".join(lines) or f"fault soak [{engine}]"))
        ok, lines, seconds = run("storm", engine, base)
        runs, failures = runs + 1, failures + (not ok)
        print(f"- {'PASS' if ok else 'FAIL'} ({seconds:.0f} s) " + ("; ".join(lines) or f"webhook storm [{engine}]"))
    print(f"\n{runs - failures} of {runs} runs passed.")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
