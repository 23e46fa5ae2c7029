"""File names for the images: safe on every system and in a ZIP, unique, and following the subscriber's list.

A typed name loses path separators, control characters, the characters Windows forbids and
trailing dots or spaces; Windows' reserved device names get a leading underscore; Unicode is
normalised (NFC) and the length capped. A missing name becomes `NNN-<slug of the prompt>`.
Names are made unique case-insensitively with -2, -3, ... and end with the format's extension.
"""

from __future__ import annotations

import dataclasses
import re
import unicodedata

MAX_STEM = 100
EXTENSIONS = {"png": ".png", "jpeg": ".jpg"}
_FORBIDDEN = re.compile(r'[<>:"/\\|?*]')
_SPACES = re.compile(r"\s+")
_TYPED_EXTENSION = re.compile(r"\.(png|jpe?g|webp|gif)$", re.IGNORECASE)
_RESERVED = {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(10)), *(f"LPT{i}" for i in range(10))}


@dataclasses.dataclass(frozen=True)
class Named:
    """One item's file name and what was done to the name the subscriber typed."""

    file_name: str
    typed: str | None
    cleaned: bool = False
    renamed: bool = False
    generated: bool = False


def clean_stem(raw: str) -> str:
    """A typed name made safe: no separators, control or forbidden characters, no reserved or dotted names."""
    text = unicodedata.normalize("NFC", raw)
    text = "".join(ch for ch in text if not unicodedata.category(ch).startswith("C"))
    text = _FORBIDDEN.sub("", text)
    text = _SPACES.sub(" ", text).strip()
    text = _TYPED_EXTENSION.sub("", text)
    text = text.lstrip(". ").rstrip(". ")
    if len(text) > MAX_STEM:
        text = text[:MAX_STEM].rstrip(". ")
    if text.split(".")[0].strip().upper() in _RESERVED:
        text = "_" + text
    return text


def slug(prompt: str, limit: int = 40) -> str:
    """A short ASCII slug of a prompt (red-vintage-car-on-a-coastal-road), or "image"."""
    ascii_text = unicodedata.normalize("NFKD", prompt).encode("ascii", "ignore").decode("ascii").lower()
    words = re.findall(r"[a-z0-9]+", ascii_text)
    text = ""
    for word in words:
        candidate = f"{text}-{word}" if text else word
        if len(candidate) > limit:
            break
        text = candidate
    return text or (words[0][:limit] if words else "image")


def assign(typed_names: list[str | None], prompts: list[str], image_format: str) -> list[Named]:
    """A unique, safe file name for every prompt, from the typed names where there are any."""
    extension = EXTENSIONS[image_format]
    width = max(3, len(str(len(prompts))))
    seen: set[str] = set()
    # The next suffix to try per stem: each (stem, suffix) candidate is tried at most once, and each one
    # that fails is a name already taken, so naming n items costs O(n) however many names repeat.
    next_suffix: dict[str, int] = {}
    result = []
    for index, prompt in enumerate(prompts):
        typed = typed_names[index] if index < len(typed_names) else None
        typed = typed if typed and typed.strip() else None
        stem = clean_stem(typed) if typed else ""
        cleaned = bool(typed) and stem != typed.strip()
        generated = not stem
        if generated:
            stem = f"{index + 1:0{width}d}-{slug(prompt)}"
        unique, key = stem, stem.casefold()
        if key in seen:
            counter = next_suffix.get(key, 1)
            while True:
                counter += 1
                unique = f"{stem}-{counter}"
                if unique.casefold() not in seen:
                    break
            next_suffix[key] = counter
        seen.add(unique.casefold())
        result.append(Named(file_name=unique + extension, typed=typed, cleaned=cleaned,
                            renamed=unique != stem, generated=generated))
    return result
