"""The model catalogue: the shipped file is valid, and a broken one is refused with the place of the problem."""

import datetime
import json

import pytest

from services import catalog

CURRENT = ["gpt-image-2", "gpt-image-2.5-flare", "gpt-image-2.5-sunburst", "gpt-image-2.6-flare",
           "gpt-image-2.6-sunburst"]
EXACT = {"1K": {"1:1": (1024, 1024), "9:16": (864, 1536), "16:9": (1536, 864)},
         "2K": {"1:1": (2048, 2048), "9:16": (1152, 2048), "16:9": (2048, 1152)},
         "4K": {"1:1": (2880, 2880), "9:16": (2160, 3840), "16:9": (3840, 2160)}}


def test_the_shipped_catalogue():
    models = catalog.load()
    assert [m.id for m in models.models] == [*CURRENT, "gpt-image-1.5", "gpt-image-1-mini"]
    assert models.default(datetime.date(2026, 12, 2)).id == "gpt-image-2"
    facts = models.price_facts(datetime.date(2026, 12, 2))  # what the landing and plan pages quote
    assert (facts["cheapest"], facts["cheapest_model"], facts["cheapest_resolution"]) == (2, "GPT Image 2", "1K")
    assert (facts["top"], facts["top_resolution"]) == (100, "4K")
    for model_id in CURRENT:  # every resolution at its exact size, asked for as is: no crop
        model = models.get(model_id)
        assert model.resolutions == catalog.RESOLUTIONS and model.retires is None
        assert {r: {ratio: s.output for ratio, s in by.items()} for r, by in model.sizes.items()} == EXACT
        assert all(s.request == s.output for by in model.sizes.values() for s in by.values())
        for by_ratio in model.sizes.values():  # OpenAI's rules for these models' sizes
            for size in by_ratio.values():
                w, h = size.output
                assert w % 16 == 0 and h % 16 == 0 and max(w, h) <= 3840 and 655_360 <= w * h <= 8_294_400
        assert model.describe("es") and model.describe("en") and model.describe("fr") == model.describe("en")
        assert model.qualities == (("low", "medium", "high") if model_id == "gpt-image-2"
                                   else ("low", "medium", "high", "xhigh", "max"))
        assert model.complexities == (("low", "medium", "high") if "2.6" in model_id else ())
        for ratio in catalog.RATIOS:  # dearer with resolution and quality
            for quality in model.qualities:
                prices = [model.price(r, ratio, quality) for r in catalog.RESOLUTIONS]
                assert prices == sorted(prices) and prices[0] < prices[-1]
            assert [model.price("4K", ratio, q) for q in model.qualities] == sorted(
                model.price("4K", ratio, q) for q in model.qualities)
    mini = models.get("gpt-image-1-mini")
    assert mini.resolutions == ("1K",)
    assert mini.size("1K", "9:16").request == (1024, 1536) and mini.size("1K", "9:16").output == (864, 1536)
    assert mini.retires == datetime.date(2026, 12, 1) and mini.retired(datetime.date(2026, 12, 1))
    assert min(m.price("1K", r, q) for m in models.models for r in catalog.RATIOS for q in m.qualities) == 1


def write(tmp_path, data):
    path = tmp_path / "models.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def shipped():
    return json.loads(catalog.DEFAULT_FILE.read_text(encoding="utf-8"))


def test_a_wrong_ratio_output_is_refused(tmp_path):
    data = shipped()
    data["models"][0]["sizes"]["2K"]["16:9"] = "2048x1150"
    with pytest.raises(catalog.CatalogError, match="gpt-image-2: 2K 16:9 output 2048x1150 is not exactly 16:9"):
        catalog.load(write(tmp_path, data))


def test_missing_fields_and_bad_json_are_refused(tmp_path):
    data = shipped()
    del data["models"][5]["credits"]
    with pytest.raises(catalog.CatalogError, match="model gpt-image-1.5: 'credits' is missing"):
        catalog.load(write(tmp_path, data))
    (tmp_path / "bad.json").write_text("{", encoding="utf-8")
    with pytest.raises(catalog.CatalogError, match="not valid JSON"):
        catalog.load(tmp_path / "bad.json")
    with pytest.raises(catalog.CatalogError, match="cannot read"):
        catalog.load(tmp_path / "absent.json")


def test_a_broken_catalogue_stops_the_app_with_a_clear_message(tmp_path):
    from app import create_app
    from services.config import ConfigError

    with pytest.raises(ConfigError, match="not valid JSON"):
        (tmp_path / "bad.json").write_text("[", encoding="utf-8")
        create_app({"APP_MODE": "test", "MODEL_CATALOG": str(tmp_path / "bad.json")})
