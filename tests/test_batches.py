"""Reading prompts and names (text, TXT and CSV uploads) and the review that comes before anything is charged."""

import datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services import batches
from services.catalog import load

CATALOG = load()
TODAY = datetime.date(2026, 11, 23)


def review(prompts, names=(), **changes):
    options = {"style": "watercolor", "model_id": "gpt-image-2", "ratio": "16:9", "quality": "low",
               "image_format": "jpeg", "separator": ", ", "max_prompts": 200, "credits_left": 300}
    options.update(changes)
    return batches.review(CATALOG, TODAY, prompts=list(prompts), names=list(names), **options)


def codes(problems):
    return [p.code for p in problems]


def test_prompt_lines_handle_crlf_bom_and_blank_lines():
    text = "\ufeffa red car\r\n\r\n  a lighthouse  \rthird\n\n"
    assert batches.prompt_lines(text) == ["a red car", "a lighthouse", "third"]


def test_name_lines_keep_inner_gaps_and_drop_trailing_ones():
    assert batches.name_lines("one\n\nthree\n\n\n") == ["one", None, "three"]
    assert batches.name_lines("") == []


@given(st.lists(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=60), max_size=30))
def test_prompt_lines_never_keep_an_empty_or_untrimmed_line(lines):
    for separator in ("\n", "\r\n"):
        for prompt in batches.prompt_lines(separator.join(lines)):
            assert prompt and prompt == prompt.strip() and "\n" not in prompt and "\r" not in prompt


def test_txt_upload():
    prompts, names = batches.read_upload("prompts.TXT", "\ufeffuno\r\ndos\n".encode(), 1000)
    assert prompts == ["uno", "dos"] and names == []


@pytest.mark.parametrize("delimiter", [",", ";"])
def test_csv_upload_with_prompt_and_name_columns(delimiter):
    text = f'Prompt{delimiter}Name\n"a car, red"{delimiter}car\nboat{delimiter}\n{delimiter}skip\n'
    prompts, names = batches.read_upload("list.csv", ("\ufeff" + text).encode(), 10_000)
    assert prompts == ["a car, red", "boat"] and names == ["car", None]


def test_csv_upload_refusals():
    with pytest.raises(batches.BatchError, match="upload_no_prompt_column"):
        batches.read_upload("x.csv", b"text,name\na,b\n", 1000)
    with pytest.raises(batches.BatchError, match="upload_too_large"):
        batches.read_upload("x.csv", b"prompt\n" + b"a\n" * 600, 1000)
    with pytest.raises(batches.BatchError, match="upload_encoding"):
        batches.read_upload("x.txt", "ñ".encode("latin-1"), 1000)
    with pytest.raises(batches.BatchError, match="upload_type"):
        batches.read_upload("x.xlsx", b"prompt", 1000)


def test_a_good_review():
    checked = review(["a red car", "a boat"], ["car", "car"])
    assert checked.ok
    assert [i.final_prompt for i in checked.items] == ["a red car, watercolor", "a boat, watercolor"]
    assert [i.file_name for i in checked.items] == ["car.jpg", "car-2.jpg"]
    assert checked.credits_per_item == 2 and checked.credits_needed == 4
    assert codes(checked.warnings) == ["name_renamed"]


def test_review_warnings():
    checked = review(["a", "b", "c"], ["x/y", "ok"])
    assert codes(checked.warnings) == ["name_cleaned", "names_count"]
    assert checked.warnings[1].values == {"names": 2, "prompts": 3}


def test_review_errors_each_have_a_code():
    assert codes(review([]).errors) == ["no_prompts"]
    assert codes(review(["p"] * 201, credits_left=1000).errors) == ["too_many_prompts"]
    assert codes(review(["p"], model_id="dall-e-3").errors) == ["unknown_model"]
    assert codes(review(["p"], ratio="4:3").errors) == ["unknown_ratio"]
    assert codes(review(["p"], image_format="webp").errors) == ["unknown_format"]
    assert codes(review(["p"], quality="ultra").errors) == ["unknown_quality"]
    too_long = review(["x" * 32000])
    assert codes(too_long.errors) == ["prompt_too_long"] and too_long.errors[0].line == 1
    short = review(["p"] * 10, quality="high", credits_left=100)
    assert codes(short.errors) == ["not_enough_credits"] and short.errors[0].values == {"needed": 320, "left": 100}


def test_a_retired_model_is_refused_from_its_retirement_date():
    assert review(["p"], model_id="gpt-image-1.5").ok
    later = batches.review(CATALOG, datetime.date(2026, 12, 1), prompts=["p"], names=[], style="",
                           model_id="gpt-image-1.5", ratio="1:1", quality="low", image_format="png", separator=", ",
                           max_prompts=200, credits_left=10)
    assert codes(later.errors) == ["model_retired"]
    assert "gpt-image-1.5" not in [m.id for m in CATALOG.available(datetime.date(2026, 12, 1))]


def test_an_empty_style_leaves_the_prompt_alone():
    assert review(["just this"], style="  ").items[0].final_prompt == "just this"
