"""The model catalogue: which image models the site offers, their sizes per ratio, qualities, formats and prices.

It is data (catalog/models.json, or the file MODEL_CATALOG names), read and checked once when
the app or the worker starts. A model past its retirement date disappears from the form, and
queued items that use it fail with a clear reason.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
from pathlib import Path

APP_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_FILE = APP_ROOT / "catalog" / "models.json"
RATIOS = ("1:1", "9:16", "16:9")
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
    sizes: dict[str, Size]
    qualities: tuple[str, ...]
    default_quality: str
    formats: tuple[str, ...]
    credits: dict[str, dict[str, int]]
    max_prompt_chars: int
    retires: datetime.date | None

    def price(self, ratio: str, quality: str) -> int:
        """Credits for one image at this ratio and quality."""
        return self.credits[ratio][quality]

    def retired(self, today: datetime.date) -> bool:
        """True on and after the retirement date."""
        return self.retires is not None and today >= self.retires


@dataclasses.dataclass(frozen=True)
class Catalog:
    """All models, in the order the form shows them."""

    models: tuple[Model, ...]

    def get(self, model_id: str) -> Model | None:
        """The model with this id, retired or not, or None."""
        return next((m for m in self.models if m.id == model_id), None)

    def available(self, today: datetime.date) -> tuple[Model, ...]:
        """The models that are not retired today."""
        return tuple(m for m in self.models if not m.retired(today))


def _size(text: str, where: str) -> tuple[int, int]:
    """Parse "WxH" into (W, H)."""
    try:
        width, height = (int(part) for part in text.lower().split("x"))
    except (ValueError, AttributeError):
        raise CatalogError(f"{where}: {text!r} is not a size like 1024x1024") from None
    if width <= 0 or height <= 0:
        raise CatalogError(f"{where}: {text!r} is not a size like 1024x1024")
    return width, height


def _model(raw: dict, index: int) -> Model:
    """Check and build one model entry."""
    where = f"models[{index}]"
    try:
        model_id, label = str(raw["id"]), str(raw["label"])
        where = f"model {model_id}"
        sizes = {}
        for ratio in RATIOS:
            entry = raw["sizes"][ratio]
            request, output = _size(entry["request"], where), _size(entry["output"], where)
            if output[0] > request[0] or output[1] > request[1]:
                raise CatalogError(f"{where}: {ratio} output {entry['output']} is larger than the request")
            w, h = (int(p) for p in ratio.split(":"))
            if output[0] * h != output[1] * w:
                raise CatalogError(f"{where}: {ratio} output {entry['output']} is not exactly {ratio}")
            sizes[ratio] = Size(request, output)
        qualities = tuple(raw["qualities"])
        formats = tuple(raw["formats"])
        if not qualities or raw["default_quality"] not in qualities:
            raise CatalogError(f"{where}: default_quality must be one of its qualities")
        if not formats or any(f not in FORMATS for f in formats):
            raise CatalogError(f"{where}: formats must be among {', '.join(FORMATS)}")
        credits = {ratio: {q: int(raw["credits"][ratio][q]) for q in qualities} for ratio in RATIOS}
        if any(price < 1 for prices in credits.values() for price in prices.values()):
            raise CatalogError(f"{where}: every price must be at least 1 credit")
        retires = datetime.date.fromisoformat(raw["retires"]) if raw.get("retires") else None
        return Model(id=model_id, label=label, sizes=sizes, qualities=qualities,
                     default_quality=raw["default_quality"], formats=formats, credits=credits,
                     max_prompt_chars=int(raw["max_prompt_chars"]), retires=retires)
    except KeyError as exc:
        raise CatalogError(f"{where}: {exc.args[0]!r} is missing") from None
    except (TypeError, ValueError) as exc:
        raise CatalogError(f"{where}: {exc}") from None


def load(path: Path | None = None) -> Catalog:
    """Read and check the catalogue file; raise CatalogError with the place of the first problem."""
    path = Path(path or DEFAULT_FILE)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise CatalogError(f"cannot read the model catalogue {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise CatalogError(f"the model catalogue {path} is not valid JSON: {exc}") from None
    return parse(raw, str(path))


def parse(raw: dict, source: str = "(data)") -> Catalog:
    """Check and build a catalogue from its JSON data; `source` names it in the error messages."""
    if not isinstance(raw, dict):
        raise CatalogError(f"the model catalogue {source} is not a JSON object")
    models = tuple(_model(entry, i) for i, entry in enumerate(raw.get("models") or []))
    if not models:
        raise CatalogError(f"the model catalogue {source} lists no models")
    if len({m.id for m in models}) != len(models):
        raise CatalogError(f"the model catalogue {source} lists a model twice")
    return Catalog(models)
