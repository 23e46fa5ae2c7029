"""Credit prices from recorded usage: what an image really cost upstream, and the price that keeps the margin.

The worker stores each generated image's usage (input and output tokens, `batch_items`).
`cli.py prices` groups it by model × quality × resolution × ratio (the catalogue prices each
ratio on its own, and each ratio is a different size), turns every image's tokens into USD with
the catalogue's `token_prices_usd_per_million`:

    cost = (input_tokens × text_input + output_tokens × image_output) / 1,000,000

and proposes, from the 90th percentile (nearest rank: the smallest cost at least 90 % of the
images did not exceed),

    credits = ceil(p90 × margin / credit_usd), never below 1

With margin 1.0 a credit covers `credit_usd` of upstream cost, as the catalogue's about text
says; 1.25 keeps a quarter more. A 2.6 model's `complexity` is pooled (it costs nothing extra).
Amounts are Decimal, so every figure printed is exact. No bottle here; the SQL is
`db.items_usage`.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import tempfile
from collections.abc import Iterable
from decimal import ROUND_CEILING, Decimal
from pathlib import Path

from services import catalog as model_catalog
from services.catalog import RATIOS, RESOLUTIONS, CatalogError

TOKEN_KINDS = ("text_input", "image_output")
MILLION = Decimal(1_000_000)


@dataclasses.dataclass(frozen=True)
class Combination:
    """One model × quality × resolution × ratio with its recorded costs, current price and proposed price."""

    model: str
    quality: str
    resolution: str
    ratio: str
    count: int
    median: Decimal
    p90: Decimal
    current: int | None  # None: the catalogue does not price this combination
    proposed: int

    @property
    def label(self) -> str:
        """The combination in words, e.g. gpt-image-2 low 1K 16:9."""
        return f"{self.model} {self.quality} {self.resolution} {self.ratio}"


@dataclasses.dataclass(frozen=True)
class Report:
    """What `compute` found: the combinations with usage, and per model how many priced ones had none."""

    combinations: tuple[Combination, ...]
    unused: tuple[tuple[str, int, int, bool], ...]  # (model, combinations without usage, all, retired)
    images: int
    prices: dict[str, Decimal]
    credit_usd: Decimal
    margin: Decimal
    since_days: int | None


def read_raw(path: Path) -> dict:
    """The catalogue file as JSON data, checked: a valid catalogue with token prices and credit_usd (CatalogError)."""
    path = Path(path)
    raw = model_catalog.read_json(path)
    model_catalog.parse(raw, str(path))
    token_prices(raw, f"the model catalogue {path}")
    credit_usd(raw, f"the model catalogue {path}")
    return raw


def token_prices(raw: dict, source: str = "the model catalogue") -> dict[str, Decimal]:
    """The catalogue's USD per million tokens (text_input, image_output); CatalogError when missing or wrong."""
    found = raw.get("token_prices_usd_per_million")
    if not isinstance(found, dict) or any(kind not in found for kind in TOKEN_KINDS):
        raise CatalogError(f"{source} has no \"token_prices_usd_per_million\" with {' and '.join(TOKEN_KINDS)} "
                           "(USD per million tokens, e.g. {\"image_output\": 30, \"text_input\": 5}): "
                           "add it to turn recorded usage into USD")
    return {kind: _amount(found[kind], f"{source}: token_prices_usd_per_million.{kind}") for kind in TOKEN_KINDS}


def credit_usd(raw: dict, source: str = "the model catalogue") -> Decimal:
    """The upstream USD one credit stands for (the catalogue's credit_usd); CatalogError when missing or wrong."""
    if "credit_usd" not in raw:
        raise CatalogError(f"{source} has no \"credit_usd\" (the upstream USD one credit stands for, e.g. 0.005)")
    value = _amount(raw["credit_usd"], f"{source}: credit_usd")
    if value <= 0:
        raise CatalogError(f"{source}: credit_usd must be more than 0")
    return value


def _amount(value, where: str) -> Decimal:
    """A JSON number as an exact Decimal (its decimal text, not its binary float)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise CatalogError(f"{where} must be a number, not {value!r}")
    amount = Decimal(str(value))
    if amount < 0 or not amount.is_finite():
        raise CatalogError(f"{where} must be a number of at least 0")
    return amount


def image_cost(input_tokens: int, output_tokens: int, prices: dict[str, Decimal]) -> Decimal:
    """One image's upstream cost in USD from its tokens, exactly."""
    return (input_tokens * prices["text_input"] + output_tokens * prices["image_output"]) / MILLION


def median(values: list[Decimal]) -> Decimal:
    """The median of sorted values (the mean of the middle two when their number is even)."""
    middle = len(values) // 2
    return values[middle] if len(values) % 2 else (values[middle - 1] + values[middle]) / 2


def p90(values: list[Decimal]) -> Decimal:
    """The 90th percentile of sorted values, nearest rank: the ceil(0.9 n)-th smallest."""
    return values[(9 * len(values) + 9) // 10 - 1]


def credits_for(cost: Decimal, margin: Decimal, credit: Decimal) -> int:
    """The credit price that keeps the margin: ceil(cost × margin / credit_usd), at least 1."""
    return max(1, int((cost * margin / credit).to_integral_value(rounding=ROUND_CEILING)))


def compute(raw: dict, usage: Iterable[dict], margin: float | Decimal = 1, since_days: int | None = None,
            today: datetime.date | None = None) -> Report:
    """Group the usage rows (db.items_usage) by combination and price each against the catalogue's data."""
    parsed = model_catalog.parse(raw)
    prices = token_prices(raw)
    credit = credit_usd(raw)
    margin = Decimal(str(margin))
    if margin <= 0:
        raise ValueError("the margin must be more than 0")
    costs: dict[tuple[str, str, str, str], list[Decimal]] = {}
    for row in usage:
        key = (row["model"], row["quality"], row["resolution"], row["ratio"])
        costs.setdefault(key, []).append(image_cost(int(row["input_tokens"]), int(row["output_tokens"]), prices))
    combinations = []
    unused = []
    today = today or datetime.date.today()
    for model in parsed.models:
        keys = [(model.id, q, r, ratio) for q in model.qualities for r in model.resolutions for ratio in RATIOS]
        used = [key for key in keys if key in costs]
        for key in used:
            combinations.append(_combination(key, costs.pop(key), model.price(key[2], key[3], key[1]), margin, credit))
        if len(used) < len(keys):
            unused.append((model.id, len(keys) - len(used), len(keys), model.retired(today)))
    for key in sorted(costs):  # usage of something the catalogue no longer prices
        combinations.append(_combination(key, costs[key], None, margin, credit))
    return Report(tuple(combinations), tuple(unused), sum(c.count for c in combinations), prices, credit, margin,
                  since_days)


def _combination(key: tuple[str, str, str, str], costs: list[Decimal], current: int | None, margin: Decimal,
                 credit: Decimal) -> Combination:
    """Summarise one combination's costs."""
    ordered = sorted(costs)
    worst = p90(ordered)
    return Combination(*key, count=len(ordered), median=median(ordered), p90=worst, current=current,
                       proposed=credits_for(worst, margin, credit))


def usd(amount: Decimal) -> str:
    """An amount in USD, exact, with at least 6 decimals (e.g. 0.010335, 0.0103355)."""
    text = format(amount.normalize(), "f")
    whole, _, fraction = text.partition(".")
    return f"{whole}.{fraction.ljust(6, '0')}"


def report_lines(report: Report) -> list[str]:
    """The report as the lines `cli.py prices` prints: a heading, the table, and what had no usage."""
    period = f"in the last {report.since_days} days" if report.since_days is not None else "in all recorded usage"
    if not report.combinations:
        within = f" in the last {report.since_days} days" if report.since_days is not None else ""
        return [f"no usage recorded{within} (no generated image with token counts); every price stays as it is"]
    lines = [f"{report.images} generated images {period}; USD {_plain(report.prices['text_input'])} per million "
             f"text input tokens, {_plain(report.prices['image_output'])} per million image output tokens; "
             f"a credit stands for USD {_plain(report.credit_usd)}; margin {_plain(report.margin)}; "
             f"new = ceil(p90 × margin / credit_usd)"]
    header = ("model", "quality", "res", "ratio", "images", "median USD", "p90 USD", "credits", "new", "")
    table = [header]
    for c in report.combinations:
        change = ("not in the catalogue" if c.current is None else
                  "=" if c.proposed == c.current else f"{c.proposed - c.current:+d}")
        table.append((c.model, c.quality, c.resolution, c.ratio, str(c.count), usd(c.median), usd(c.p90),
                      "-" if c.current is None else str(c.current), str(c.proposed), change))
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    numeric = {4, 5, 6, 7, 8}
    for row in table:
        cells = [cell.rjust(widths[i]) if i in numeric else cell.ljust(widths[i]) for i, cell in enumerate(row)]
        lines.append("  ".join(cells).rstrip())
    for model_id, without, total, retired in report.unused:
        state = " (retired)" if retired else ""
        if without == total:
            lines.append(f"{model_id}{state}: no usage recorded; its {total} prices stay as they are")
        else:
            lines.append(f"{model_id}{state}: no usage recorded for the other {without} of its {total} "
                         "combinations; their prices stay as they are")
    return lines


def _plain(amount: Decimal) -> str:
    """A Decimal without exponent or trailing zeros."""
    return format(amount.normalize(), "f")


def rewrite(raw: dict, report: Report) -> tuple[dict, list[tuple[Combination, int, int]]]:
    """A copy of the catalogue data with the proposed prices where there was usage; and (combination, old, new).

    Only combinations the catalogue prices change; everything else (other prices, order, text) stays.
    """
    data = json.loads(json.dumps(raw))
    entries = {entry.get("id"): entry for entry in data.get("models") or []}
    changes = []
    for c in report.combinations:
        if c.current is None or c.proposed == c.current:
            continue
        credits = entries[c.model]["credits"]
        grid = credits if set(credits) <= set(RESOLUTIONS) else {"1K": credits}  # the first format: 1K only
        grid[c.resolution][c.ratio][c.quality] = c.proposed
        changes.append((c, c.current, c.proposed))
    model_catalog.parse(data, "the recomputed catalogue")
    return data, changes


def write(path: Path, data: dict) -> None:
    """Write catalogue data as the catalogue file is written (2-space JSON, UTF-8), replacing PATH atomically."""
    path = Path(path)
    text = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
        if path.exists():
            os.chmod(temporary, path.stat().st_mode & 0o777)
        else:
            os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
