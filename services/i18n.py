"""Spanish and English: message catalogs and choosing a visitor's language.

English is the source language of every string; `translations/<lang>/LC_MESSAGES/messages.po`
holds the other languages. The .po files are compiled in memory when the app starts, so
there is no compiled .mo file to forget to rebuild.
"""

from __future__ import annotations

import functools
import gettext
import io
from pathlib import Path

from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po

from services.config import LANGUAGES

APP_ROOT = Path(__file__).resolve().parent.parent
TRANSLATIONS_DIR = APP_ROOT / "translations"
SOURCE_LANGUAGE = "en"
LANGUAGE_NAMES = {"es": "Español", "en": "English"}


def load_translations(folder: Path = TRANSLATIONS_DIR) -> dict[str, gettext.NullTranslations]:
    """Compile each language's .po file into a translations object; English needs none."""
    result: dict[str, gettext.NullTranslations] = {SOURCE_LANGUAGE: gettext.NullTranslations()}
    for lang in LANGUAGES:
        if lang == SOURCE_LANGUAGE:
            continue
        po_path = folder / lang / "LC_MESSAGES" / "messages.po"
        with po_path.open("rb") as handle:
            catalog = read_po(handle, locale=lang)
        buffer = io.BytesIO()
        write_mo(buffer, catalog, use_fuzzy=False)
        buffer.seek(0)
        result[lang] = gettext.GNUTranslations(buffer)
    return result


def parse_accept_language(header: str | None) -> list[str]:
    """The primary language tags of an Accept-Language header, best first (q=0 dropped)."""
    ranked = []
    for position, part in enumerate((header or "").split(",")):
        piece = part.strip()
        if not piece:
            continue
        tag, _, params = piece.partition(";")
        quality = 1.0
        params = params.strip()
        if params.startswith("q="):
            try:
                quality = float(params[2:])
            except ValueError:
                quality = 0.0
        if quality <= 0:
            continue
        ranked.append((-quality, position, tag.strip().lower().split("-")[0]))
    return [tag for _, _, tag in sorted(ranked)]


def choose_language(chosen: str | None, accept_language: str | None, default: str) -> str:
    """The visitor's language: their remembered choice, else the browser's preference, else the default."""
    if chosen in LANGUAGES:
        return chosen
    if accept_language is not None and len(accept_language) <= 200:  # browsers send the same few headers
        return _preferred(accept_language, default)
    return _preferred.__wrapped__(accept_language, default)


@functools.lru_cache(maxsize=256)
def _preferred(accept_language: str | None, default: str) -> str:
    """The first language of an Accept-Language header the site speaks, else the default."""
    for tag in parse_accept_language(accept_language):
        if tag in LANGUAGES:
            return tag
    return default
