"""File names: never a path separator, never empty, always unique (case-insensitively), safe on Windows."""

import string

from hypothesis import given, settings
from hypothesis import strategies as st

from services.names import MAX_STEM, assign, clean_stem, slug

FORBIDDEN = set('<>:"/\\|?*')
RESERVED = {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(10)), *(f"LPT{i}" for i in range(10))}
names_strategy = st.lists(st.one_of(st.none(), st.text(max_size=150)), max_size=40)
prompts_strategy = st.lists(st.text(min_size=1, max_size=200), min_size=1, max_size=40)


def assert_safe(file_name: str):
    stem = file_name.rsplit(".", 1)[0]
    assert stem and stem == stem.strip() and not stem.endswith(".")
    assert not FORBIDDEN & set(file_name)
    assert not any(ord(ch) < 32 or 0x7F <= ord(ch) < 0xA0 for ch in file_name)
    assert stem.split(".")[0].upper() not in RESERVED
    assert not file_name.startswith(".")
    assert len(stem) <= MAX_STEM + 8  # the cap, plus a -NNN suffix for duplicates


@settings(max_examples=300, deadline=None)
@given(names=names_strategy, prompts=prompts_strategy, image_format=st.sampled_from(["png", "jpeg"]))
def test_names_are_safe_non_empty_and_unique(names, prompts, image_format):
    result = assign(names, prompts, image_format)
    assert len(result) == len(prompts)
    extension = ".png" if image_format == "png" else ".jpg"
    for named in result:
        assert named.file_name.endswith(extension)
        assert_safe(named.file_name)
    lowered = [n.file_name.casefold() for n in result]
    assert len(set(lowered)) == len(lowered)


@given(st.text(max_size=300))
def test_clean_stem_never_leaves_a_separator_or_control_character(text):
    cleaned = clean_stem(text)
    assert "/" not in cleaned and "\\" not in cleaned and ".." not in cleaned[:2]
    assert not any(ord(ch) < 32 for ch in cleaned)
    assert len(cleaned) <= MAX_STEM + 1


def test_examples():
    result = assign(["red car", "../../etc/passwd", "Red Car", "CON", "  ", "cat 🐱.png", "a:b*c?"],
                    ["p1", "p2", "p3", "p4", "a lighthouse at dawn", "p6", "p7"], "jpeg")
    assert [n.file_name for n in result] == ["red car.jpg", "etcpasswd.jpg", "Red Car-2.jpg", "_CON.jpg",
                                             "005-a-lighthouse-at-dawn.jpg", "cat 🐱.jpg", "abc.jpg"]
    assert result[1].cleaned and result[2].renamed and result[4].generated


def test_default_names_carry_the_line_number_and_a_slug():
    result = assign([], ["Un coche rojo, de los años 50!", "🎨🎨"], "png")
    assert [n.file_name for n in result] == ["001-un-coche-rojo-de-los-anos-50.png", "002-image.png"]
    wide = assign([], ["x"] * 1200, "png")
    assert wide[0].file_name == "0001-x.png" and wide[-1].file_name == "1200-x.png"


def test_generated_names_do_not_collide_with_typed_ones():
    result = assign(["001-a", None], ["q", "a"], "png")
    assert {n.file_name for n in result} == {"001-a.png", "002-a.png"}
    clash = assign([None, "001-a"], ["a", "b"], "png")
    assert [n.file_name for n in clash] == ["001-a.png", "001-a-2.png"]


def test_slug_is_ascii_and_bounded():
    assert slug("Ñandú en la Pampa — atardecer") == "nandu-en-la-pampa-atardecer"
    assert len(slug("word " * 50)) <= 40
    assert set(slug("Größe & Maß 123")) <= set(string.ascii_lowercase + string.digits + "-")
