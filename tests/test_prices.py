"""`cli.py prices` on usage a real worker run recorded against the OpenAI stand-in, and `cli.py models-check`'s
new line and retirement warnings; on SQLite and MariaDB."""

import datetime
import json
import os
import subprocess
import sys
import time
from decimal import ROUND_CEILING, Decimal
from pathlib import Path

import pytest

from services import batches, catalog, credits, db, prices, worker
from services.config import SETTING_NAMES
from tests.conftest import ROOT, TEST_CATALOG, UNRETIRED_CATALOG_DATA, make_subscriber, openai_settings
from tools.fake_openai import MODELS, usage_for

TOKEN_PRICES = {k: Decimal(str(v)) for k, v in UNRETIRED_CATALOG_DATA["token_prices_usd_per_million"].items()}
CREDIT_USD = Decimal(str(UNRETIRED_CATALOG_DATA["credit_usd"]))

# (model, quality, resolution, ratio, complexity, prompts): prompt lengths differ, so the input tokens (and costs)
# differ within a combination. "FORBIDDEN" is refused by the stand-in's moderation: failed, no usage.
BATCHES = [
    ("gpt-image-2", "low", "1K", "16:9", "", ["a red car", "a boat on a very calm lake at dawn",
                                               "a lighthouse in a storm, waves crashing over the rocks below it"]),
    ("gpt-image-2", "medium", "2K", "1:1", "", ["cat", "a dog asleep on a sofa", "FORBIDDEN picture",
                                                "an owl on a branch under the full moon, feathers in detail",
                                                "a teapot"]),
    ("gpt-image-2.6-flare", "high", "4K", "9:16", "low", ["a tall waterfall", "a skyscraper at night with lit "
                                                                               "windows and a thin crescent moon"]),
    ("gpt-image-2.5-flare", "xhigh", "1K", "1:1", "", ["a single red apple on a white table"]),
]


@pytest.fixture
def studio(make_app, database, fake_openai):
    """An app whose generation goes to the stand-in (its catalogue: the tests' copy in tmp_path)."""
    return make_app(**openai_settings(fake_openai))


def cli_env(app, fake, **changes):
    """The environment `cli.py` runs with: the app's settings only (none of the caller's)."""
    env = {k: v for k, v in os.environ.items() if k not in SETTING_NAMES}
    env.update({"APP_MODE": "test", "DATABASE_URL": app.settings.database_url, "VAR_DIR": str(app.settings.var_dir),
                **openai_settings(fake), "MODEL_CATALOG": app.settings.model_catalog, **changes})
    return env


def run_cli(app, fake, *args, **env_changes):
    return subprocess.run([sys.executable, "cli.py", *args], cwd=ROOT, env=cli_env(app, fake, **env_changes),
                          capture_output=True, text=True, timeout=120)


def generate(app, conn):
    """Create the BATCHES and let a real worker run make them; return each batch's id with its spec."""
    user = make_subscriber(conn, balance=20000)
    made = []
    for number, (model, quality, resolution, ratio, complexity, prompts) in enumerate(BATCHES):
        checked = batches.review(TEST_CATALOG, datetime.date.today(), prompts=prompts, names=[], style="",
                                 model_id=model, ratio=ratio, quality=quality, image_format="jpeg", separator=", ",
                                 max_prompts=200, credits_left=credits.balance(conn, user), resolution=resolution,
                                 complexity=complexity)
        assert checked.ok, checked.errors
        batch_id, _ = batches.create(conn, TEST_CATALOG, user, checked, f"prices-{number}", int(time.time()),
                                     max_open=10)
        made.append((batch_id, (model, quality, resolution, ratio, complexity, prompts)))
    stats = worker.run(app.settings, app.database, app.catalog, threads=2)
    assert stats == {"done": 10, "failed": 1}, stats
    return made


def expected_costs(model, quality, resolution, ratio, complexity, prompts):
    """Each generated image's cost from the stand-in's usage formula and the catalogue's token prices."""
    width, height = TEST_CATALOG.get(model).size(resolution, ratio).request
    costs = []
    for prompt in prompts:
        if "FORBIDDEN" in prompt:
            continue
        usage = usage_for(model, width, height, quality, prompt, complexity or None)
        costs.append((usage["input_tokens"] * TOKEN_PRICES["text_input"]
                      + usage["output_tokens"] * TOKEN_PRICES["image_output"]) / 1_000_000)
    return sorted(costs)


def expected_median(costs):
    n = len(costs)
    return costs[n // 2] if n % 2 else (costs[n // 2 - 1] + costs[n // 2]) / 2


def expected_p90(costs):
    rank = -(-9 * len(costs) // 10)  # nearest rank: ceil(0.9 n)
    return costs[rank - 1]


def expected_price(costs, margin=Decimal(1)):
    return max(1, int((expected_p90(costs) * margin / CREDIT_USD).to_integral_value(rounding=ROUND_CEILING)))


def table_rows(stdout):
    """The table's data rows by (model, quality, resolution, ratio): the remaining cells."""
    rows = {}
    for line in stdout.splitlines():
        cells = line.removeprefix("prices: ").split()
        if len(cells) >= 9 and cells[0] in MODELS and cells[4].isdigit():
            rows[tuple(cells[:4])] = cells[4:]
    return rows


def test_prices_turn_the_recorded_usage_into_exact_costs_and_new_prices(studio, conn, fake_openai, tmp_path):
    made = generate(studio, conn)
    # A collected image and an expired one were generated (and paid for upstream) too: they count.
    first_items = db.batch_items_of(conn, made[0][0])
    assert db.batch_item_delivered(conn, first_items[0]["batch_id"], first_items[0]["id"], int(time.time()))
    assert db.batch_item_expire(conn, first_items[1]["batch_id"], first_items[1]["id"], int(time.time()))

    result = run_cli(studio, fake_openai, "prices")
    assert result.returncode == 0, result.stderr
    rows = table_rows(result.stdout)
    assert len(rows) == len(BATCHES)
    for _, spec in made:
        model, quality, resolution, ratio = spec[:4]
        costs = expected_costs(*spec)
        count, median, p90, current, new = rows[(model, quality, resolution, ratio)][:5]
        assert int(count) == len(costs)
        assert Decimal(median) == expected_median(costs), (spec, median)
        assert Decimal(p90) == expected_p90(costs), (spec, p90)
        assert int(current) == TEST_CATALOG.get(model).price(resolution, ratio, quality)
        assert int(new) == expected_price(costs)
    # The even count (4 done of 5: one refused) takes the mean of the middle two, which here is no single cost.
    medium = expected_costs(*made[1][1])
    assert len(medium) == 4 and expected_median(medium) not in medium
    assert "10 generated images in all recorded usage" in result.stdout
    assert "prices: gpt-image-2.6-sunburst: no usage recorded; its 45 prices stay as they are" in result.stdout
    assert "prices: gpt-image-2: no usage recorded for the other 25 of its 27 combinations" in result.stdout

    # A margin scales the p90 before rounding up.
    margin = run_cli(studio, fake_openai, "prices", "--margin", "1.5")
    assert margin.returncode == 0, margin.stderr
    for (model, quality, resolution, ratio), cells in table_rows(margin.stdout).items():
        spec = next(s for _, s in made if s[:4] == (model, quality, resolution, ratio))
        assert int(cells[4]) == expected_price(expected_costs(*spec), Decimal("1.5"))

    # --since leaves out what finished before: an image finished 40 days ago is not in the last 30 days.
    conn.execute("UPDATE batch_items SET finished_at = ? WHERE id = ?", (int(time.time()) - 40 * 86400,
                                                                          first_items[2]["id"]))
    recent = run_cli(studio, fake_openai, "prices", "--since", "30")
    assert recent.returncode == 0, recent.stderr
    assert "9 generated images in the last 30 days" in recent.stdout
    spec = made[0][1]
    low_costs = expected_costs(*spec)
    low_costs.remove(expected_costs(*spec[:5], [spec[5][2]])[0])
    cells = table_rows(recent.stdout)[("gpt-image-2", "low", "1K", "16:9")]
    assert (int(cells[0]), Decimal(cells[1]), Decimal(cells[2])) == (2, expected_median(low_costs),
                                                                       expected_p90(low_costs))


def test_prices_write_a_valid_catalogue_with_the_new_prices_and_nothing_else_changed(studio, conn, fake_openai,
                                                                                    tmp_path):
    made = generate(studio, conn)
    live = studio.settings.model_catalog
    live_before = Path(live).read_text(encoding="utf-8")
    target = tmp_path / "out" / "models.json"
    target.parent.mkdir()
    result = run_cli(studio, fake_openai, "prices", "--margin", "2", "--write", str(target))
    assert result.returncode == 0, result.stderr
    assert Path(live).read_text(encoding="utf-8") == live_before  # the live catalogue is left alone

    written = catalog.load(target)  # a valid catalogue
    expected = {}
    for _, spec in made:
        model, quality, resolution, ratio = spec[:4]
        expected[(model, quality, resolution, ratio)] = expected_price(expected_costs(*spec), Decimal(2))
    changed = 0
    for model in TEST_CATALOG.models:
        for resolution in model.resolutions:
            for ratio in catalog.RATIOS:
                for quality in model.qualities:
                    old = model.price(resolution, ratio, quality)
                    new = written.get(model.id).price(resolution, ratio, quality)
                    assert new == expected.get((model.id, quality, resolution, ratio), old)
                    if new != old:
                        changed += 1
                        assert (f"prices: {model.id} {quality} {resolution} {ratio}: {old} -> {new} credits"
                                in result.stdout)
    assert changed and f"prices: wrote {target}: {changed} price(s) changed; {live} is unchanged" in result.stdout
    # Everything but those prices is as it was (the about text, token prices, the other entries).
    data = json.loads(target.read_text(encoding="utf-8"))
    original = json.loads(live_before)
    for (model, quality, resolution, ratio), _ in expected.items():
        entry = next(e for e in original["models"] if e["id"] == model)
        entry["credits"][resolution][ratio][quality] = expected[(model, quality, resolution, ratio)]
    assert data == original
    assert target.read_text(encoding="utf-8").endswith("}\n")

    # Only an explicit PATH that is the live file replaces it (and says so).
    again = run_cli(studio, fake_openai, "prices", "--margin", "2", "--write", live)
    assert again.returncode == 0, again.stderr
    assert "this is the live catalogue: restart the app" in again.stdout
    assert catalog.load(live).get("gpt-image-2").price("2K", "1:1", "medium") == expected[
        ("gpt-image-2", "medium", "2K", "1:1")]


def test_a_retired_first_format_entry_is_rewritten_in_its_own_shape(tmp_path):
    raw = json.loads(json.dumps(UNRETIRED_CATALOG_DATA))
    usage = [{"model": "gpt-image-1.5", "quality": "high", "resolution": "1K", "ratio": "9:16",
              "input_tokens": 10, "output_tokens": 6240}] * 3
    report = prices.compute(raw, usage, 1)
    data, changes = prices.rewrite(raw, report)
    entry = next(e for e in data["models"] if e["id"] == "gpt-image-1.5")
    cost = (10 * TOKEN_PRICES["text_input"] + 6240 * TOKEN_PRICES["image_output"]) / 1_000_000
    new = int((cost / CREDIT_USD).to_integral_value(rounding=ROUND_CEILING))
    assert entry["credits"]["9:16"]["high"] == new and "1K" not in entry["credits"]
    assert [(c.label, old, now) for c, old, now in changes] == [("gpt-image-1.5 high 1K 9:16", 40, new)]
    catalog.parse(data)
    # A tiny cost never prices an image below 1 credit; usage of a combination the catalogue lacks is shown only.
    tiny = [{"model": "gpt-image-2", "quality": "low", "resolution": "1K", "ratio": "1:1", "input_tokens": 1,
             "output_tokens": 1}, {"model": "gpt-image-9", "quality": "low", "resolution": "1K", "ratio": "1:1",
                                   "input_tokens": 1, "output_tokens": 100}]
    report = prices.compute(raw, tiny, 1)
    assert [(c.model, c.current, c.proposed) for c in report.combinations] == [("gpt-image-2", 2, 1),
                                                                              ("gpt-image-9", None, 1)]
    data, changes = prices.rewrite(raw, report)
    assert [c.model for c, _, _ in changes] == ["gpt-image-2"] and catalog.parse(data).get("gpt-image-9") is None
    assert any("not in the catalogue" in line for line in prices.report_lines(report))


def test_an_empty_database_prints_no_usage_and_writes_an_unchanged_copy(studio, fake_openai, tmp_path):
    result = run_cli(studio, fake_openai, "prices")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["prices: no usage recorded (no generated image with token counts); "
                                          "every price stays as it is"]
    target = tmp_path / "copy.json"
    written = run_cli(studio, fake_openai, "prices", "--since", "7", "--write", str(target))
    assert written.returncode == 0, written.stderr
    assert "no usage recorded in the last 7 days" in written.stdout
    assert f"prices: wrote {target}: no price changed" in written.stdout
    assert json.loads(target.read_text(encoding="utf-8")) == json.loads(
        Path(studio.settings.model_catalog).read_text(encoding="utf-8"))


def test_prices_refuse_a_catalogue_without_token_prices_and_a_bad_margin(studio, fake_openai, tmp_path):
    raw = json.loads(json.dumps(UNRETIRED_CATALOG_DATA))
    del raw["token_prices_usd_per_million"]
    bare = tmp_path / "bare.json"
    bare.write_text(json.dumps(raw), encoding="utf-8")
    result = run_cli(studio, fake_openai, "prices", MODEL_CATALOG=str(bare))
    assert result.returncode == 4 and "Traceback" not in result.stderr
    assert f"prices: the model catalogue {bare} has no \"token_prices_usd_per_million\"" in result.stderr
    bad = run_cli(studio, fake_openai, "prices", "--margin", "0")
    assert bad.returncode == 2 and "--margin and --since must be more than 0" in bad.stderr
    nowhere = run_cli(studio, fake_openai, "prices", "--write", str(tmp_path / "missing" / "models.json"))
    assert nowhere.returncode == 1 and "prices: cannot write" in nowhere.stderr


# --- models-check: image models the catalogue lacks, and retirements -------------------------------------------

def test_models_check_lists_image_models_the_catalogue_lacks_without_changing_the_exit_code(studio, fake_openai):
    fake_openai.models = [*MODELS, "dall-e-3", "chatgpt-image-latest", "gpt-4o", "whisper-1"]
    result = run_cli(studio, fake_openai, "models-check")
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    new = [line for line in lines if line.endswith(": available to this key, not in the catalogue")]
    assert new == [f"models-check: {model_id}: available to this key, not in the catalogue" for model_id in
                   ["chatgpt-image-latest", "dall-e-3", "gpt-image-1", "gpt-image-2-2026-04-21",
                    "gpt-image-2.5-flare-2026-09-08", "gpt-image-2.5-sunburst-2026-09-08"]]
    assert "models-check: gpt-image-2: ok" in lines and not any("gpt-4o" in line or "whisper" in line
                                                                 for line in lines)
    fake_openai.models = ["gpt-image-1", *[m.id for m in TEST_CATALOG.models if m.id != "gpt-image-2"]]
    missing = run_cli(studio, fake_openai, "models-check")
    assert missing.returncode == 1  # a catalogue model the key lacks still fails, whatever else is listed
    assert "models-check: gpt-image-2: NOT available to this key" in missing.stdout
    assert "models-check: gpt-image-1: available to this key, not in the catalogue" in missing.stdout


def test_models_check_warns_within_thirty_days_of_a_retirement(studio, fake_openai, tmp_path):
    today = datetime.date.today()
    raw = json.loads(json.dumps(UNRETIRED_CATALOG_DATA))
    retires = {"gpt-image-2": today + datetime.timedelta(days=10), "gpt-image-2.5-flare": today + datetime.timedelta(
        days=30), "gpt-image-2.5-sunburst": today + datetime.timedelta(days=31),
        "gpt-image-1.5": today - datetime.timedelta(days=1)}
    for entry in raw["models"]:
        if entry["id"] in retires:
            entry["retires"] = retires[entry["id"]].isoformat()
    copy = tmp_path / "retiring.json"
    copy.write_text(json.dumps(raw), encoding="utf-8")
    result = run_cli(studio, fake_openai, "models-check", MODEL_CATALOG=str(copy))
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert f"models-check: gpt-image-2: retires on {retires['gpt-image-2']}, in 10 days" in lines
    assert f"models-check: gpt-image-2.5-flare: retires on {retires['gpt-image-2.5-flare']}, in 30 days" in lines
    assert "models-check: gpt-image-2.5-sunburst: ok" in lines
    assert (f"models-check: gpt-image-1.5: retired on {retires['gpt-image-1.5']} (hidden from the form)"
            in lines)
