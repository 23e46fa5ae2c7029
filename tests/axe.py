"""Accessibility checks with axe-core in the tests' Chromium (a test tool: never shipped under public/).

axe-core is pinned to one npm release: the tarball's sha512 is checked against the registry's integrity
string before anything is extracted, and the extracted axe.min.js is cached under .cache/ with its sha256
pinned too, so a partial or altered cache file is noticed and fetched again rather than used.

axe is injected with `page.evaluate(source)`: evaluation goes through the DevTools protocol, which the page's
Content-Security-Policy (script-src 'self', no inline script) does not govern, so no special context
(bypass_csp) is needed and the page under test keeps its real policy.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import tarfile
import tempfile
import urllib.error
import urllib.request

import pytest

from tests.conftest import ROOT, unavailable

AXE_VERSION = "4.14.1"
AXE_TARBALL = f"https://registry.npmjs.org/axe-core/-/axe-core-{AXE_VERSION}.tgz"
AXE_INTEGRITY = "sha512-FHfa+lmNjQZfJz1q8wKqIDwC6DExcHt/pkjNQb09a3NPjCKg2rhu5qb2S4r76ASyFNNtuFooJpZe37OgudVGtQ=="
AXE_MIN_JS_SHA256 = "29348999450cdf2849a8e70b7912fc2da85a849da39c0d0d5394f51d4a9ed95c"  # package/axe.min.js
AXE_MEMBER = "package/axe.min.js"

CACHE_DIR = ROOT / ".cache"
CACHE_FILE = CACHE_DIR / f"axe-core-{AXE_VERSION}.min.js"
DOWNLOAD_TIMEOUT = 60

_source: str | None = None


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _download() -> bytes:
    """The tarball's bytes, or unavailable() with the reason it could not be fetched."""
    request = urllib.request.Request(AXE_TARBALL, headers={"User-Agent": "images-in-bulk-tests"})
    try:
        with urllib.request.urlopen(request, timeout=DOWNLOAD_TIMEOUT) as response:
            return response.read()
    except (urllib.error.URLError, OSError) as exc:  # URLError, HTTPError, timeouts, resets
        unavailable(f"axe-core {AXE_VERSION} could not be downloaded from {AXE_TARBALL}: {exc}")


def _extract(tarball: bytes) -> bytes:
    """axe.min.js from the tarball, after checking the tarball against the pinned integrity."""
    algorithm, _, expected = AXE_INTEGRITY.partition("-")
    actual = base64.b64encode(hashlib.new(algorithm, tarball).digest()).decode("ascii")
    if actual != expected:
        pytest.fail(f"the axe-core tarball from {AXE_TARBALL} does not match its pinned integrity "
                    f"({AXE_INTEGRITY}, got {algorithm}-{actual}, {len(tarball)} bytes): not using it", pytrace=False)
    with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:gz") as archive:
        member = archive.extractfile(AXE_MEMBER)
        if member is None:
            pytest.fail(f"{AXE_MEMBER} is not a file in {AXE_TARBALL}", pytrace=False)
        data = member.read()
    if _sha256(data) != AXE_MIN_JS_SHA256:
        pytest.fail(f"{AXE_MEMBER} in the verified tarball has sha256 {_sha256(data)}, "
                    f"not the pinned {AXE_MIN_JS_SHA256}: update AXE_MIN_JS_SHA256 with the version", pytrace=False)
    return data


def _write_cache(data: bytes) -> None:
    """Write the cache file atomically (a temporary file renamed over it), so no reader sees half of it."""
    CACHE_DIR.mkdir(exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=CACHE_DIR, prefix=CACHE_FILE.name, suffix=".part")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        os.chmod(temporary, 0o644)  # mkstemp makes it private; it is public code
        os.replace(temporary, CACHE_FILE)
    except BaseException:
        os.unlink(temporary)
        raise


def axe_source() -> str:
    """The text of axe-core's axe.min.js at the pinned version: from the verified cache, else downloaded."""
    global _source
    if _source is None:
        data = CACHE_FILE.read_bytes() if CACHE_FILE.is_file() else b""
        if _sha256(data) != AXE_MIN_JS_SHA256:  # missing, partial or altered: fetch and verify again
            data = _extract(_download())
            _write_cache(data)
        _source = data.decode("utf-8")
    return _source


_RUN = """async ([impacts, most]) => {
    const results = await axe.run(document, {resultTypes: ["violations"]});
    return results.violations.filter(v => impacts.includes(v.impact)).map(v => ({
        id: v.id,
        impact: v.impact,
        help: v.help,
        helpUrl: v.helpUrl,
        count: v.nodes.length,
        nodes: v.nodes.slice(0, most).map(n => ({
            target: n.target.map(String).join(" "),
            html: n.html.length > 200 ? n.html.slice(0, 200) + "…" : n.html,
            summary: (n.failureSummary || "").slice(0, 300),
        })),
    }));
}"""


def axe_violations(page, impacts=("serious", "critical"), most_nodes: int = 3) -> list[dict]:
    """Run axe on the page as it is now; its violations whose impact is in `impacts`, a few nodes each."""
    if not page.evaluate("typeof window.axe === 'object' && typeof window.axe.run === 'function'"):
        page.evaluate(axe_source())  # DevTools-protocol evaluation: the page's CSP does not apply to it
    return page.evaluate(_RUN, [list(impacts), most_nodes])


def format_violations(violations) -> str:
    """The violations as short readable lines, for an assertion message."""
    if not violations:
        return "no violations"
    lines = []
    for v in violations:
        lines.append(f"[{v['impact']}] {v['id']}: {v['help']} ({v.get('count', len(v['nodes']))} nodes) "
                     f"{v.get('helpUrl', '')}".rstrip())
        for node in v["nodes"]:
            lines.append(f"    {node['target']}  {node['html']}")
    return "\n".join(lines)
