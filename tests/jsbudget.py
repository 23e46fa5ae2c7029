"""The JavaScript a page ships, measured in a real browser and gzipped, for the tests' size budgets."""

from __future__ import annotations

import gzip
from urllib.parse import urlsplit


def _key(url: str, origin: str) -> str:
    """The URL's path if it is on the page's origin, else the whole URL (without its query)."""
    parts = urlsplit(url)
    if f"{parts.scheme}://{parts.netloc}" == origin:
        return parts.path
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


def shipped_js(page, url: str) -> dict[str, int]:
    """Load url in the page and wait for the network to go idle; {script path: gzip -9 size of its body}."""
    responses = []

    def collect(response):
        if response.request.resource_type == "script":
            responses.append(response)

    page.on("response", collect)
    try:
        # "load" waits for module scripts and their static imports (they run before it fires). Not "networkidle":
        # the batch page polls every 2 s and fetches images, so on a loaded machine it may never be idle for long.
        page.goto(url, wait_until="load")
    finally:
        page.remove_listener("response", collect)
    parts = urlsplit(page.url)
    origin = f"{parts.scheme}://{parts.netloc}"
    sizes = {}
    for response in responses:
        if 300 <= response.status < 400:  # a redirect: its target is counted as a response of its own
            continue
        try:
            body = response.body()
        except Exception:  # the page navigated on (the batch page reloads itself when its batch ends): fetch again
            body = page.request.get(response.url).body()
        sizes[_key(response.url, origin)] = len(gzip.compress(body, compresslevel=9, mtime=0))
    return sizes


def own_and_total(sizes: dict[str, int]) -> tuple[int, int]:
    """(bytes of our own scripts under /js/, bytes of every script: ours and /vendor/ and anything else)."""
    own = sum(size for path, size in sizes.items() if path.startswith("/js/"))
    return own, sum(sizes.values())
