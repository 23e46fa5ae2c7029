"""The model catalogue: the shipped file is valid, and a broken one is refused with the place of the problem."""

import datetime
import json

import pytest

from services import catalog


def test_the_shipped_catalogue():
    models = catalog.load()
    assert [m.id for m in models.models] == ["gpt-image-2", "gpt-image-1.5", "gpt-image-1-mini"]
    two = models.get("gpt-image-2")
    assert two.sizes["16:9"].request == two.sizes["16:9"].output == (1536, 864)
    mini = models.get("gpt-image-1-mini")
    assert mini.sizes["9:16"].request == (1024, 1536) and mini.sizes["9:16"].output == (864, 1536)
    assert mini.retires == datetime.date(2026, 12, 1) and mini.retired(datetime.date(2026, 12, 1))
    assert min(m.price(r, q) for m in models.models for r in catalog.RATIOS for q in m.qualities) == 1
    for model in models.models:
        for size in model.sizes.values():
            w, h = size.output
            assert w % 16 == 0 and h % 16 == 0


def write(tmp_path, data):
    path = tmp_path / "models.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def shipped():
    return json.loads(catalog.DEFAULT_FILE.read_text(encoding="utf-8"))


def test_a_wrong_ratio_output_is_refused(tmp_path):
    data = shipped()
    data["models"][0]["sizes"]["16:9"]["output"] = "1536x860"
    with pytest.raises(catalog.CatalogError, match="gpt-image-2: 16:9 output 1536x860 is not exactly 16:9"):
        catalog.load(write(tmp_path, data))


def test_missing_fields_and_bad_json_are_refused(tmp_path):
    data = shipped()
    del data["models"][1]["credits"]
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
