"""Turning what the API returned into the file the subscriber gets: exact size, PNG or JPEG, no metadata.

An image that already has the exact size and format keeps its bytes untouched. Otherwise it
is scaled (only when it is smaller than the target on one side) and centre-cropped to the
exact size, converted to RGB and re-encoded: PNG at compression level 1 (Pillow's default
level 6 costs about four times as long for files a few percent smaller), JPEG at quality 90.
Nothing of the original's metadata is copied.
"""

from __future__ import annotations

import dataclasses
import io

from PIL import Image, UnidentifiedImageError

PIL_FORMATS = {"png": "PNG", "jpeg": "JPEG"}
Image.MAX_IMAGE_PIXELS = 40_000_000  # far above any size we ask for; refuses decompression bombs


class ImageError(Exception):
    """The bytes are not an image we can read."""


@dataclasses.dataclass(frozen=True)
class Finished:
    """The final file: bytes, size and format."""

    data: bytes
    width: int
    height: int
    image_format: str


def finish(data: bytes, size: tuple[int, int], image_format: str) -> Finished:
    """Give the image the exact size and format, re-encoding only when needed."""
    try:
        image = Image.open(io.BytesIO(data))
        keep = image.size == size and image.format == PIL_FORMATS[image_format]
        if keep:
            _check_whole(image)
        else:
            image.load()
    except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError, ValueError) as exc:
        raise ImageError(f"the image cannot be read: {type(exc).__name__}") from None
    width, height = size
    if keep:
        return Finished(data, width, height, image_format)
    image = _cover_and_crop(image, size)
    if image.mode != "RGB":
        image = _to_rgb(image)
    buffer = io.BytesIO()
    if image_format == "png":
        image.save(buffer, "PNG", compress_level=1)
    else:
        image.save(buffer, "JPEG", quality=90, subsampling="4:2:0")
    return Finished(buffer.getvalue(), width, height, image_format)


def _check_whole(image: Image.Image) -> None:
    """Raise unless an image kept as it came is whole, without paying for a full decode.

    PNG: every chunk's CRC up to IEND (a cut or damaged file fails). JPEG: decoded at 1/8 scale, which
    still reads all of its entropy-coded data (a cut file fails), in about a tenth of the time.
    """
    if image.format == "PNG":
        image.verify()
    else:
        image.draft("RGB", (max(1, image.width // 8), max(1, image.height // 8)))
        image.load()


def _cover_and_crop(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Scale up only if a side is too short, then cut the centre to exactly `size`."""
    width, height = size
    scale = max(width / image.width, height / image.height)
    if scale > 1:
        image = image.resize((max(width, round(image.width * scale)), max(height, round(image.height * scale))),
                             Image.Resampling.LANCZOS)
    left = (image.width - width) // 2
    top = (image.height - height) // 2
    if (left, top, image.width, image.height) == (0, 0, width, height):
        return image
    return image.crop((left, top, left + width, top + height))


def _to_rgb(image: Image.Image) -> Image.Image:
    """RGB on a white background (a transparent pixel would otherwise turn black in a JPEG)."""
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")
