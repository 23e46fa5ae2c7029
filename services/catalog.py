"""The model catalogue: which image models the site offers, their sizes, qualities, formats and prices.

It is data (catalog/models.json, or the file MODEL_CATALOG names), read and checked once when
the app or the worker starts. Each model has a size per resolution (1K, 2K, 4K) and ratio, and
a credit price per resolution, ratio and quality; a 2.6 model also takes a `complexity`. A
model past its retirement date disappears from the form, and queued items that use it fail
with a clear reason. An entry in the first format (sizes and credits per ratio only) is read as
resolution 1K: the retired models keep that form.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
from pathlib import Path

APP_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_FILE = APP_ROOT / "catalog" / "models.json"
RATIOS = ("1:1", "9:16", "16:9")
RESOLUTIONS = ("1K", "2K", "4K")
FORMATS = ("png", "jpeg")


class CatalogError(Exception):
    """The catalogue file is missing, malformed or inconsistent; the message says where."""


@dataclasses.dataclass(frozen=True)
class Size:
    """What to ask the API for, and the exact size the image must have in the end."""

    request: tuple[int, int]
    output: tuple[int, int]

    @property
    def request_text(self) -> str:
        """The size as the API writes it, e.g. 1536x1024."""
        return f"{self.request[0]}x{self.request[1]}"


@dataclasses.dataclass(frozen=True)
class Model:
    """One image model of the catalogue."""

    id: str
    label: str
    sizes: dict[str, dict[str, Size]]  # resolution -> ratio -> Size
    qualities: tuple[str, ...]
    default_quality: str
    formats: tuple[str, ...]
    credits: dict[str, dict[str, dict[str, int]]]  # resolution -> ratio -> quality -> credits
    max_prompt_chars: int
    retires: datetime.date | None
    description: dict[str, str] = dataclasses.field(default_factory=dict)
    complexities: tuple[str, ...] = ()
    default_complexity: str | None = None

    @property
    def resolutions(self) -> tuple[str, ...]:
        """The resolutions this model offers, smallest first."""
        return tuple(r for r in RESOLUTIONS if r in self.sizes)

    def size(self, resolution: str, ratio: str) -> Size:
        """The size to ask for and to deliver at this resolution and ratio."""
        return self.sizes[resolution][ratio]

    def offers(self, resolution: str, ratio: str, quality: str) -> bool:
        """True when this resolution, ratio and quality are on the model's price list."""
        return quality in self.credits.get(resolution, {}).get(ratio, {})

    def price(self, resolution: str, ratio: str, quality: str) -> int:
        """Credits for one image at this resolution, ratio and quality."""
        return self.credits[resolution][ratio][quality]

    def describe(self, language: str) -> str:
        """The model's short description in a language (English when that one is missing)."""
        return self.description.get(language) or self.description.get("en", "")

    def retired(self, today: datetime.date) -> bool:
        """True on and after the retirement date."""
        return self.retires is not None and today >= self.retires


@dataclasses.dataclass(frozen=True)
class Catalog:
    """All models, in the order the form shows them, and the one the form starts with."""

    models: tuple[Model, ...]
    default_model: str | None = None

    def get(self, model_id: str) -> Model | None:
        """The model with this id, retired or not, or None."""
        return next((m for m in self.models if m.id == model_id), None)

    def available(self, today: datetime.date) -> tuple[Model, ...]:
        """The models that are not retired today."""
        return tuple(m for m in self.models if not m.retired(today))

    def price_facts(self, today: datetime.date) -> dict:
        """What the public pages quote: the cheapest image on offer, and the default model's dearest 4K one."""
        offers = [(m.price(r, ratio, q), m, r, q) for m in self.available(today) for r in m.resolutions
                  for ratio in RATIOS for q in m.qualities]
        if not offers:
            return {"cheapest": 1, "cheapest_model": "", "cheapest_quality": "", "cheapest_resolution": "1K",
                    "top": 1, "top_resolution": "1K"}
        price, model, resolution, quality = min(offers, key=lambda offer: offer[0])
        default = self.default(today)
        top_resolution = default.resolutions[-1]
        top = max(default.price(top_resolution, ratio, "high" if "high" in default.qualities else default.qualities[-1])
                  for ratio in RATIOS)
        return {"cheapest": price, "cheapest_model": model.label, "cheapest_quality": quality,
                "cheapest_resolution": resolution, "top": top, "top_resolution": top_resolution,
                "top_model": default.label}

    def default(self, today: datetime.date) -> Model:
        """The model the form starts with: the catalogue's default if it is available, else the first available."""
        available = self.available(today)
        chosen = self.get(self.default_model or "")
        if chosen is not None and chosen in available:
            return chosen
        return available[0] if available else self.models[0]


def _size(text: str, where: str) -> tuple[int, int]:
    """Parse "WxH" into (W, H)."""
    try:
        width, height = (int(part) for part in text.lower().split("x"))
    except (ValueError, AttributeError):
        raise CatalogError(f"{where}: {text!r} is not a size like 1024x1024") from None
    if width <= 0 or height <= 0:
        raise CatalogError(f"{where}: {text!r} is not a size like 1024x1024")
    return width, height


def _sizes(raw: dict, where: str) -> dict[str, dict[str, Size]]:
    """Sizes per resolution and ratio; the first format (per ratio only) is resolution 1K."""
    grid = raw if set(raw) <= set(RESOLUTIONS) else {"1K": raw}
    sizes: dict[str, dict[str, Size]] = {}
    for resolution, by_ratio in grid.items():
        sizes[resolution] = {}
        for ratio in RATIOS:
            entry = by_ratio[ratio]
            if isinstance(entry, str):
                request = output = _size(entry, where)
            else:
                request, output = _size(entry["request"], where), _size(entry["output"], where)
            if output[0] > request[0] or output[1] > request[1]:
                raise CatalogError(f"{where}: {resolution} {ratio} output is larger than the request")
            w, h = (int(p) for p in ratio.split(":"))
            if output[0] * h != output[1] * w:
                raise CatalogError(f"{where}: {resolution} {ratio} output {output[0]}x{output[1]} is not exactly "
                                   f"{ratio}")
            sizes[resolution][ratio] = Size(request, output)
    return sizes


def _model(raw: dict, index: int) -> Model:
    """Check and build one model entry."""
    where = f"models[{index}]"
    try:
        model_id, label = str(raw["id"]), str(raw["label"])
        where = f"model {model_id}"
        sizes = _sizes(raw["sizes"], where)
        qualities = tuple(raw["qualities"])
        formats = tuple(raw["formats"])
        if not qualities or raw["default_quality"] not in qualities:
            raise CatalogError(f"{where}: default_quality must be one of its qualities")
        if not formats or any(f not in FORMATS for f in formats):
            raise CatalogError(f"{where}: formats must be among {', '.join(FORMATS)}")
        prices = raw["credits"] if set(raw["credits"]) <= set(RESOLUTIONS) else {"1K": raw["credits"]}
        credits = {resolution: {ratio: {q: int(prices[resolution][ratio][q]) for q in qualities} for ratio in RATIOS}
                   for resolution in sizes}
        if any(price < 1 for by_ratio in credits.values() for by_quality in by_ratio.values()
               for price in by_quality.values()):
            raise CatalogError(f"{where}: every price must be at least 1 credit")
        complexities = tuple(raw.get("complexities") or ())
        default_complexity = raw.get("default_complexity") if complexities else None
        if complexities and default_complexity not in complexities:
            raise CatalogError(f"{where}: default_complexity must be one of its complexities")
        description = {str(k): str(v) for k, v in (raw.get("description") or {}).items()}
        retires = datetime.date.fromisoformat(raw["retires"]) if raw.get("retires") else None
        return Model(id=model_id, label=label, sizes=sizes, qualities=qualities,
                     default_quality=raw["default_quality"], formats=formats, credits=credits,
                     max_prompt_chars=int(raw["max_prompt_chars"]), retires=retires, description=description,
                     complexities=complexities, default_complexity=default_complexity)
    except KeyError as exc:
        raise CatalogError(f"{where}: {exc.args[0]!r} is missing") from None
    except (TypeError, ValueError, AttributeError) as exc:
        raise CatalogError(f"{where}: {exc}") from None


def read_json(path: Path) -> dict:
    """The catalogue file's JSON data, unchecked; CatalogError when it cannot be read or is not JSON."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise CatalogError(f"cannot read the model catalogue {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise CatalogError(f"the model catalogue {path} is not valid JSON: {exc}") from None


def load(path: Path | None = None) -> Catalog:
    """Read and check the catalogue file; raise CatalogError with the place of the first problem."""
    path = Path(path or DEFAULT_FILE)
    return parse(read_json(path), str(path))


def parse(raw: dict, source: str = "(data)") -> Catalog:
    """Check and build a catalogue from its JSON data; `source` names it in the error messages."""
    if not isinstance(raw, dict):
        raise CatalogError(f"the model catalogue {source} is not a JSON object")
    models = tuple(_model(entry, i) for i, entry in enumerate(raw.get("models") or []))
    if not models:
        raise CatalogError(f"the model catalogue {source} lists no models")
    if len({m.id for m in models}) != len(models):
        raise CatalogError(f"the model catalogue {source} lists a model twice")
    default = raw.get("default_model")
    if default is not None and not any(m.id == default for m in models):
        raise CatalogError(f"the model catalogue {source}: default_model {default!r} is not one of its models")
    return Catalog(models, default)
