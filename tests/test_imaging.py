"""Exact ratios and formats: every model x ratio x format gives a file of the exact size and format."""

import io

import pytest
from PIL import Image

from services import imaging
from services.catalog import RATIOS, load

CATALOG = load()


def encoded(size, source_format="PNG", mode="RGB"):
    buffer = io.BytesIO()
    image = Image.new(mode, size, (200, 30, 60, 128) if mode == "RGBA" else (200, 30, 60))
    image.info["comment"] = b"metadata that must not survive"
    image.save(buffer, source_format)
    return buffer.getvalue()


@pytest.mark.parametrize("model", [m.id for m in CATALOG.models])
@pytest.mark.parametrize("ratio", RATIOS)
@pytest.mark.parametrize("image_format", ["png", "jpeg"])
@pytest.mark.parametrize("returned_as", ["PNG", "JPEG", "WEBP"])
def test_every_model_ratio_and_format_gives_the_exact_size_and_format(model, ratio, image_format, returned_as):
    size = CATALOG.get(model).size("1K", ratio)
    finished = imaging.finish(encoded(size.request, returned_as), size.output, image_format)
    opened = Image.open(io.BytesIO(finished.data))
    assert opened.size == size.output == (finished.width, finished.height)
    assert opened.format == {"png": "PNG", "jpeg": "JPEG"}[image_format]
    assert opened.mode == "RGB" or (opened.format == "PNG" and finished.data == encoded(size.request, "PNG"))


def test_an_exact_image_in_the_right_format_keeps_its_bytes():
    data = encoded((1536, 864), "PNG")
    assert imaging.finish(data, (1536, 864), "png").data is data


def test_the_crop_is_centred():
    image = Image.new("RGB", (1536, 1024), (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, 1536, 80))  # a red band the crop removes
    image.paste((0, 255, 0), (0, 944, 1536, 1024))  # and a green one
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    out = Image.open(io.BytesIO(imaging.finish(buffer.getvalue(), (1536, 864), "png").data)).convert("RGB")
    assert out.getpixel((10, 0)) == (0, 0, 255) and out.getpixel((10, 863)) == (0, 0, 255)


def test_a_smaller_image_is_scaled_up_to_cover():
    out = imaging.finish(encoded((512, 512)), (864, 1536), "jpeg")
    assert Image.open(io.BytesIO(out.data)).size == (864, 1536)


def test_transparency_becomes_white_in_a_jpeg_and_metadata_is_dropped():
    out = imaging.finish(encoded((1024, 1024), "PNG", "RGBA"), (1024, 1024), "jpeg")
    opened = Image.open(io.BytesIO(out.data))
    assert opened.mode == "RGB" and "comment" not in opened.info
    red, green, blue = opened.getpixel((5, 5))
    assert red > 200 and green > 120  # half-transparent red on white, not on black


def photo(size, source_format):
    """A noisy picture (compresses like a photo), so a cut lands inside its image data."""
    buffer = io.BytesIO()
    Image.effect_noise(size, 60).convert("RGB").save(buffer, source_format)
    return buffer.getvalue()


@pytest.mark.parametrize("image_format", ["png", "jpeg"])
def test_an_image_cut_short_or_damaged_is_refused_even_when_its_bytes_would_be_kept(image_format):
    data = photo((1536, 864), image_format.upper())
    assert imaging.finish(data, (1536, 864), image_format).data is data
    with pytest.raises(imaging.ImageError):
        imaging.finish(data[: len(data) * 2 // 3], (1536, 864), image_format)
    if image_format == "png":  # one byte flipped in the middle of the pixel data: its chunk's CRC no longer matches
        middle = len(data) // 2
        damaged = data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1:]
        with pytest.raises(imaging.ImageError):
            imaging.finish(damaged, (1536, 864), image_format)


def test_something_that_is_not_an_image_is_refused():
    with pytest.raises(imaging.ImageError):
        imaging.finish(b"<html>not an image</html>", (1024, 1024), "png")
    with pytest.raises(imaging.ImageError):
        imaging.finish(encoded((64, 64))[:40], (1024, 1024), "png")
