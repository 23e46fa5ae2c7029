"""Every form and JSON input fuzzed with hypothesis, in-process on SQLite and MariaDB: never a 500, never a traceback.

Each target sends random requests (anonymous, a visitor with a session, a signed-in user
without a plan, a subscriber; with a valid, missing or wrong CSRF token) through the
werkzeug client to a test-mode app whose outside services are the stand-ins, and checks
every answer: a status below 500, no traceback text in the body, a JSON error body
`{"error": {"code", "message"}}` for /api/ paths from 400 on, and redirects that stay on
the site or go to the configured provider or Stripe.

A 500 found and not fixed yet is listed in KNOWN_500 with its minimal reproduction: the
fuzz targets skip inputs that fail with exactly that logged exception (so they keep
guarding everything else), and `test_known_500` runs the reproduction as a strict xfail.
Once the app is fixed, set the entry's `open` to False: the reproduction then becomes a
plain regression test and the fuzz stops tolerating that exception.

IIB_FUZZ_STRICT=1 tolerates none of them (to see what hypothesis finds on its own);
IIB_FUZZ_SCALE multiplies every target's number of examples (e.g. 10 for a long run).
"""

from __future__ import annotations

import dataclasses
import datetime
import gc
import io
import json
import logging
import os
import random
import re
import tempfile
import time
from collections.abc import Callable
from urllib.parse import parse_qs, quote, urlencode, urlsplit

import bottle
import pytest
from hypothesis import HealthCheck, given, reject, settings
from hypothesis import strategies as st
from werkzeug.datastructures import MultiDict
from werkzeug.test import EnvironBuilder

from app import create_app
from routes import web
from services import batches, billing, db, sessions, worker
from tests.conftest import (
    REQUIRED,
    UNRETIRED_CATALOG_DATA,
    BufferedClient,
    idp_settings,
    make_subscriber,
    openai_settings,
    register_clients,
)
from tools.demo import stripe_settings
from tools.fake_stripe import signature_header

# Two of bottle's files are closed by the garbage collector rather than by bottle, which warns (ResourceWarning):
# - a large body or multipart part spooled into a NamedTemporaryFile, when a failed request's traceback holds it in a
#   reference cycle (the collector may finalize the file before its closer);
# - the file bottle.static_file opened before it answers 416 to an unsatisfiable Range header (GET /robots.txt or
#   /api/batches/<id>/items/<item>/image with "Range: bytes=99999999-").
# Neither stays open for long, so those two warnings are ignored here, and `site` collects the garbage before it ends
# so that no other test meets them.
pytestmark = [
    pytest.mark.filterwarnings(
        f"ignore:unclosed file <_io.BufferedRandom name='{re.escape(tempfile.gettempdir())}/:ResourceWarning"),
    pytest.mark.filterwarnings("ignore:unclosed file <_io.BufferedReader name=:ResourceWarning"),
]

STRICT = os.environ.get("IIB_FUZZ_STRICT", "") not in ("", "0")
SCALE = float(os.environ.get("IIB_FUZZ_SCALE", "1"))


def fuzz(examples: int):
    """The settings of a fuzz target: its number of examples (times IIB_FUZZ_SCALE), no deadline.

    In CI the examples are the same on every run (derandomize): a landing is never stopped by a 500 in code it did
    not touch; locally each run explores new ones.
    """
    return settings(max_examples=max(1, int(examples * SCALE)), deadline=None, print_blob=True, derandomize=REQUIRED,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                           HealthCheck.data_too_large, HealthCheck.large_base_example,
                                           HealthCheck.filter_too_much])


# --- the site under test ---------------------------------------------------------------------------

class ErrorLog(logging.Handler):
    """Keeps the text of every ERROR line the web layer logs (a 500's exception and traceback)."""

    def __init__(self):
        super().__init__(logging.ERROR)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        trace = logging.Formatter().formatException(record.exc_info) if record.exc_info else ""
        self.lines.append(record.getMessage() + "\n" + trace)


@dataclasses.dataclass
class Site:
    """The app and what the fuzz targets need around it: users, batches, items, stand-ins."""

    app: web.App
    conn: db.Connection
    subscriber: int
    no_plan: int
    batch_ids: list[int]
    item_ids: list[int]
    errors: ErrorLog
    allowed_hosts: set[str]
    fake_stripe: object

    def visitor(self, who: str) -> tuple[BufferedClient, str | None]:
        """A fresh client: anonymous, a visitor with a session, a user without a plan or a subscriber; its token."""
        client = BufferedClient(self.app)
        if who == "anonymous":
            return client, None
        user_id = {"visitor": None, "no_plan": self.no_plan, "subscriber": self.subscriber}[who]
        session = sessions.create(self.conn, self.app.settings, web.now(), user_id=user_id)
        client.set_cookie(sessions.cookie_name(self.app.settings), session.token)
        return client, session.csrf_token


def make_batch(app, conn, user_id, prompts, test_run=False) -> int:
    """A batch stored as POST /api/batches would store it."""
    checked = batches.review(app.catalog, datetime.date.today(), prompts=prompts, names=[], style="",
                             model_id="gpt-image-1-mini", ratio="1:1", quality="low", image_format="png",
                             separator=", ", max_prompts=200, credits_left=300)
    assert checked.ok, checked.errors
    return batches.create(conn, app.catalog, user_id, checked, "", int(time.time()), test_run)[0]


@pytest.fixture
def site(make_app, database, conn, fake_openai, fake_stripe, idp):
    """A test-mode app with every stand-in, a subscriber with batches in every state, and a user without a plan."""
    app = make_app(**idp_settings(idp), **stripe_settings(fake_stripe), **openai_settings(fake_openai),
                   AUTH_STARTS_PER_IP="1000000")
    register_clients(idp, app.settings.public_base_url)
    stripe_client = billing.make_client(app.settings)
    app.billing["price_id"] = billing.setup_price(stripe_client, app.settings)
    subscriber = make_subscriber(conn)
    customer = stripe_client.v1.customers.create(params={"email": "ana@example.com"})
    db.user_set_stripe_customer(conn, subscriber, customer.id)
    no_plan = db.user_insert(conn, "Ben", "ben@example.com", int(time.time()))
    # One batch worked to the end (two images done, one refused by moderation), then one test run waiting
    # (3 queued, 1 held) and someone else's batch.
    done = make_batch(app, conn, subscriber, ["a red fox", "FORBIDDEN cat", "a boat"])
    worker.run(app.settings, app.database, app.catalog, threads=2)
    waiting = make_batch(app, conn, subscriber, ["one", "two", "three", "four"], test_run=True)
    other = make_batch(app, conn, no_plan, ["not yours"])
    items = [item["id"] for batch_id in (done, waiting, other) for item in db.batch_items_of(conn, batch_id)]
    assert sorted(item["status"] for item in db.batch_items_of(conn, done)) == ["done", "done", "failed"]
    errors = ErrorLog()
    logger = logging.getLogger("routes.web")
    logger.addHandler(errors)
    allowed = {urlsplit(url).netloc for url in (app.settings.public_base_url, fake_stripe.base_url,
                                                idp_settings(idp)["GOOGLE_AUTHORIZE_URL"],
                                                idp_settings(idp)["MICROSOFT_AUTHORIZE_URL"])}
    yield Site(app, conn, subscriber, no_plan, [done, waiting, other], items, errors, allowed, fake_stripe)
    logger.removeHandler(errors)
    gc.collect()


# --- the known 500s --------------------------------------------------------------------------------

WEBHOOK_SECRET = "whsec_fuzz_known"


@dataclasses.dataclass(frozen=True)
class Known500:
    """A 500 the fuzz found: the exception the app logs, and the smallest request that gets it."""

    exception: str  # the exception's type as the traceback's last line names it ("" for any)
    fragment: str  # a piece of its message ("" for any)
    reproduce: Callable[[BufferedClient, str], object]  # (a subscriber's client, its CSRF token) -> the response
    where: str = ""  # a function the traceback passes through (when the exception alone says too little)
    engines: tuple[str, ...] = ("sqlite", "mysql")  # where it answers 500 (elsewhere the reproduction must pass)
    database: bool = False  # the SQL layer is involved: the reproduction runs on both engines (else on SQLite only)
    open: bool = False  # True while the app still answers 500 (a strict xfail); False once fixed (a regression test)


def _upload(client, token, name: str, content: bytes):
    return client.post("/generate/review", data={"csrf_token": token, "prompts_file": (io.BytesIO(content), name)},
                       content_type="multipart/form-data")


def _signed(client, payload: bytes):
    signature = signature_header(payload, WEBHOOK_SECRET, int(time.time()))
    return client.post("/stripe/webhook", data=payload, headers={"Stripe-Signature": signature})


KNOWN_500 = {
    # GET /api/batches/9223372036854775808 (any id past 2**63-1, on any /batches/<id> route): SQLite only.
    "sqlite_huge_id": Known500(
        "OverflowError", "too large to convert to SQLite INTEGER",
        lambda client, token: client.get("/api/batches/9223372036854775808"), engines=("sqlite",),
        database=True),
    # POST /api/batches {"request_token": "\ud800"}: a lone surrogate in any JSON string that reaches the database
    # (the token is looked up first; prompts, names and style are stored when the batch is valid).
    "json_lone_surrogate": Known500(
        "UnicodeEncodeError", "surrogates not allowed",
        lambda client, token: client.post("/api/batches", data=b'{"request_token": "\\ud800"}',
                                          content_type="application/json", headers={"X-CSRF-Token": token}),
        database=True),
    # POST /api/batches with a JSON body nested ~1000 deep ("[" * 2000): json.loads raises RecursionError.
    "json_deep_nesting": Known500(
        "RecursionError", "maximum recursion depth",
        lambda client, token: client.post("/api/batches", data=b"[" * 2000, content_type="application/json",
                                          headers={"X-CSRF-Token": token})),
    # A CSV upload with a bare CR inside a line (b"prompt\na\rb\n"): csv.Error.
    "csv_bare_cr": Known500(
        "_csv.Error", "new-line character seen in unquoted field",
        lambda client, token: _upload(client, token, "p.csv", b"prompt\na\rb\n")),
    # A CSV upload with a field longer than 131072 characters (the csv module's field limit): csv.Error.
    "csv_field_limit": Known500(
        "_csv.Error", "field larger than field limit",
        lambda client, token: _upload(client, token, "p.csv", b"prompt\n" + b"a" * 131_073)),
    # Any multipart POST whose part header holds a control character (file name "\x00.txt"): bottle's parser raises
    # ValueError from request.forms, which the CSRF check reads first, so every form route answers 500.
    "multipart_control_char": Known500(
        "ValueError", "Header value must not contain control characters",
        lambda client, token: _upload(client, token, "\x00.txt", b"a")),
    # Any multipart POST with a part that has no file name and is not UTF-8 (a field "x" with the byte 0x80):
    # bottle decodes it in request.forms, which the CSRF check reads first, so every form route answers 500.
    "multipart_non_utf8_field": Known500(
        "UnicodeDecodeError", "", lambda client, token: client.post(
            "/generate/review", data={"csrf_token": token, "x": (io.BytesIO(b"\x80"), "")},
            content_type="multipart/form-data"), where="POST"),
    # POST /stripe/webhook with "Stripe-Signature: t=1,v1=é" in UTF-8 (no secret needed): hmac.compare_digest refuses
    # a non-ASCII str and stripe-python lets the TypeError out. (A WSGI header value is its raw bytes as latin-1.)
    "webhook_non_ascii_signature": Known500(
        "TypeError", "comparing strings with non-ASCII characters",
        lambda client, token: client.post("/stripe/webhook", data=b"{}", headers={
            "Stripe-Signature": "t=1,v1=é".encode().decode("latin-1")})),
    # Any request with a header value that is not UTF-8 (the byte 0x80) in a header the app reads: bottle's
    # request.headers decodes it and raises. GET / with "Accept-Language: \x80" is enough (lang() reads it on
    # every page); X-CSRF-Token and Sec-Fetch-Site on every POST, Accept on /api/ errors, Stripe-Signature too.
    "non_utf8_header": Known500(
        "UnicodeDecodeError", "", lambda client, token: client.get("/", headers={"Accept-Language": "\x80"}),
        where="__getitem__"),
    # Signed with the webhook secret (so only Stripe, or someone who holds the secret): a payload that is not a
    # well-formed event: not a JSON object (b"[]": AttributeError), an object without "id", "type" or "data" (b"{}":
    # KeyError), a "type" that is not a string ({"id": "evt_1", "type": null, "data": {"object": {}}}: AttributeError).
    "webhook_signed_malformed": Known500("", "", lambda client, token: _signed(client, b"[]"), where="handle_webhook"),
    # POST /batches (Generate) with a form the review refuses for its model: the review page is shown again and
    # looks up the model's sizes, so no model (an empty form with the CSRF token is enough) or an unknown one
    # is AttributeError, and a known model with an unknown ratio ("4:3") is KeyError.
    "start_unknown_model": Known500(
        "AttributeError", "'NoneType' object has no attribute 'sizes'",
        lambda client, token: client.post("/batches", data={"csrf_token": token}), where="show_review"),
    "start_unknown_ratio": Known500(
        "KeyError", "", lambda client, token: client.post("/batches", data={
            "csrf_token": token, "prompts": "a", "model": "gpt-image-2", "ratio": "4:3", "format": "png",
            "quality": "low"}), where="show_review"),
}


def signature_of(lines: list[str], engine: str) -> str | None:
    """The known 500 (open, on this engine) whose exception the logged lines show, or None."""
    for name, known in KNOWN_500.items():
        if not known.open or engine not in known.engines:
            continue
        for text in lines:
            last = [line for line in text.splitlines() if line.strip() and line.startswith(known.exception)]
            if last and (not known.exception or last[-1].startswith(f"{known.exception}:")) \
                    and known.fragment in last[-1] and f", in {known.where}" in text:
                return name
    return None


def known_500(site: Site) -> str | None:
    """The open known 500 the last request hit, judged by what the app logged; None in IIB_FUZZ_STRICT mode."""
    return None if STRICT else signature_of(site.errors.lines, site.app.database.engine)


@pytest.mark.parametrize("engine, name", [
    *(pytest.param("sqlite", name, id=f"sqlite-{name}") for name in KNOWN_500),
    *(pytest.param("mariadb", name, id=f"mariadb-{name}", marks=pytest.mark.mariadb)
      for name, known in KNOWN_500.items() if known.database)])
def test_known_500(request, tmp_path, engine, name):
    """Each known 500's smallest reproduction: a strict xfail while it is open (on the engines it fails on)."""
    known = KNOWN_500[name]
    url = request.getfixturevalue(f"{engine}_url")
    database = db.Database(url)
    db.initdb(database)
    if known.open and database.engine in known.engines:
        request.applymarker(pytest.mark.xfail(strict=True, raises=AssertionError,
                                              reason=f"known 500 {name}: see KNOWN_500"))
    catalog_file = tmp_path / "models.json"
    catalog_file.write_text(json.dumps(UNRETIRED_CATALOG_DATA), encoding="utf-8")
    app = create_app({"APP_MODE": "test", "DATABASE_URL": url, "VAR_DIR": str(tmp_path / "var"),
                      "MODEL_CATALOG": str(catalog_file), "STRIPE_SECRET_KEY": "sk_test_fuzz_known",
                      "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET})
    conn = database.connect()
    try:
        session = sessions.create(conn, app.settings, web.now(), user_id=make_subscriber(conn))
    finally:
        conn.close()
    client = BufferedClient(app)
    client.set_cookie(sessions.cookie_name(app.settings), session.token)
    errors = ErrorLog()
    logging.getLogger("routes.web").addHandler(errors)
    try:
        response = known.reproduce(client, session.csrf_token)
    finally:
        logging.getLogger("routes.web").removeHandler(errors)
        gc.collect()
    if response.status_code == 500 and signature_of(errors.lines, database.engine) != name:
        pytest.fail(f"{name}'s reproduction answers 500 for another reason:\n{''.join(errors.lines)[-2000:]}")
    assert response.status_code < 500, f"{name}: {response.status_code} {response.get_data(as_text=True)[:200]}"


# --- checking an answer ------------------------------------------------------------------------------

def check(site: Site, response, signed_webhook: bool = False) -> None:
    """No 500, no traceback, JSON errors under /api/, safe redirects; an answer spoilt by a known 500 is skipped."""
    try:
        check_answer(site, response, signed_webhook)
    except AssertionError:
        if known_500(site):
            reject()
        raise
    finally:
        release(response.request.environ)


def check_answer(site: Site, response, signed_webhook: bool) -> None:
    status = response.status_code
    environ = response.request.environ
    body = response.get_data()
    # A signed event naming a subscription Stripe does not know: the app asks Stripe to send it again later.
    stripe_retry = signed_webhook and status == 503 and json.loads(body)["error"]["code"] == "unavailable"
    assert status < 500 or stripe_retry, f"{environ['REQUEST_METHOD']} {environ['PATH_INFO']} answered {status}: " \
                                         f"{body[:300]!r}\n{''.join(site.errors.lines)[-3000:]}"
    assert b"Traceback (most recent call last)" not in body and b'File "/' not in body
    path = "/" + environ.get("PATH_INFO", "").lstrip("/")
    if path.startswith("/api/") and status >= 400 and environ["REQUEST_METHOD"] != "HEAD":
        assert response.mimetype == "application/json", (status, response.headers, body[:300])
        error = json.loads(body)["error"]
        assert isinstance(error["code"], str) and error["code"]
        assert isinstance(error["message"], str) and error["message"]
    location = response.headers.get("Location")
    if location is not None:
        parts = urlsplit(location)
        assert parts.scheme in ("http", "https") and parts.netloc in site.allowed_hosts, location
        assert "\r" not in location and "\n" not in location


def release(environ: dict) -> None:
    """Close the temporary files bottle spooled a large body or upload into.

    A server drops the environ after each request and CPython closes them then; here the test client keeps it
    (response.request), and a ResourceWarning at some later garbage collection would fail an unrelated test.
    """
    body = environ.get("bottle.request.body")
    if body is not None:
        body.close()
    for key in ("bottle.request.post", "bottle.request.files"):
        found = environ.get(key)
        for _name, value in found.allitems() if found is not None else ():
            if isinstance(value, bottle.FileUpload):
                value.file.close()


def send(site: Site, client, method: str, path: str, signed_webhook: bool = False, **kwargs):
    """Send one request and check its answer."""
    builder = EnvironBuilder(path, method=method, **kwargs)
    try:
        request = builder.get_request()
    finally:
        builder.close()
    stream = request.environ["wsgi.input"]  # bottle replaces it with its own copy: keep it to close it
    site.errors.lines.clear()
    try:
        response = client.response_wrapper(*client.run_wsgi_app(request.environ, buffered=True), request=request)
    finally:
        stream.close()
    check(site, response, signed_webhook)
    return response


# --- strategies ------------------------------------------------------------------------------------

SPECIALS = ["\x00", "\x01", "\x1b[31m", "\x7f", "\u202e", "\u200f", "\u200b", "\ufeff", "\r", "\r\n", "\n\n", "\t",
            "🦊", "👩‍👩‍👧", "\U0010ffff", "שלום", "مرحبا", "\u0301", "ǅ", "İ", "ß", "%", "%00", "%ff", "&", "=",
            ";", ",", '"', "'", "\\", "/", "../", "<script>", "{{ 7*7 }}", "%(x)s", "%s", "{}", "NaN", "-1",
            "9" * 30, " ", "CON", "nul.txt", "a" * 300]
TEXT = st.text(st.characters(codec="utf-8"), max_size=80)  # what a form can carry: no lone surrogates
PIECE = st.one_of(TEXT, st.sampled_from(SPECIALS))
HUGE = st.builds(lambda piece, count: piece * count, st.sampled_from(["a", "é", "🦊", "a b ", "\x00", "x\n"]),
                 st.integers(1, 150_000))
FIELD_TEXT = st.one_of(PIECE, st.lists(PIECE, max_size=12).map("".join),
                       st.lists(PIECE, max_size=40).map("\n".join), HUGE)
HEADER_TEXT = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=60)

MODELS = st.one_of(st.sampled_from(["gpt-image-2", "gpt-image-1.5", "gpt-image-1-mini", "dall-e-3", ""]), TEXT)
RATIOS = st.one_of(st.sampled_from(["1:1", "9:16", "16:9", "4:3", ""]), TEXT)
FORMATS = st.one_of(st.sampled_from(["png", "jpeg", "jpg", "webp", ""]), TEXT)
QUALITIES = st.one_of(st.sampled_from(["low", "medium", "high", "auto", ""]), TEXT)
PROMPTS = st.one_of(st.lists(st.sampled_from(["a red fox", "a boat at dawn", "🦊 fox", "نص"]), max_size=5)
                    .map("\n".join), FIELD_TEXT)
WHO = st.sampled_from(["anonymous", "visitor", "no_plan", "subscriber", "subscriber", "subscriber"])
CSRF = st.sampled_from(["valid", "valid", "valid", "header", "missing", "wrong"])


def random_bytes(seed: int, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


@st.composite
def csv_text(draw) -> str:
    """A CSV-ish file: a header with or without a prompt column, rows of random cells, any delimiter and newline."""
    delimiter = draw(st.sampled_from([",", ";", "\t", "|"]))
    newline = draw(st.sampled_from(["\n", "\r\n", "\r"]))
    header = draw(st.lists(st.sampled_from(["prompt", "name", "Prompt", " PROMPT ", "\ufeffprompt", "nombre", ""]),
                           max_size=4))
    rows = draw(st.lists(st.lists(st.one_of(PIECE, PIECE.map(lambda s: '"' + s.replace('"', '""') + '"')),
                                  max_size=4), max_size=20))
    return newline.join(delimiter.join(row) for row in [header, *rows])


UPLOAD_CONTENT = st.one_of(
    csv_text().flatmap(lambda text: st.sampled_from([text.encode("utf-8"), text.encode("utf-8-sig"),
                                                      text.encode("utf-16"), text.encode("latin-1", "replace")])),
    FIELD_TEXT.map(lambda text: text.encode("utf-8")),
    st.binary(max_size=2000),
    st.builds(random_bytes, st.integers(0, 2**32), st.integers(0, 1_250_000)),
    st.builds(lambda line, count: line * count, st.sampled_from([b"a prompt\n", b"prompt,name\n", b"\xff\xfe"]),
              st.integers(0, 140_000)),
)
UPLOAD_NAME = st.one_of(
    st.sampled_from(["prompts.txt", "list.csv", "LIST.CSV", "x.txt.exe", "image.png", ".csv", "a b.csv",
                     "../../etc/passwd.txt", "C:\\fakepath\\list.csv", "ñandú.txt", "🦊.csv", "x" * 300 + ".txt"]),
    st.tuples(st.text(st.characters(codec="utf-8", min_codepoint=0x20, exclude_characters='"\\'), max_size=40),
              st.sampled_from([".txt", ".csv", ""])).map("".join),
)


@st.composite
def form_fields(draw) -> list[tuple[str, str]]:
    """The compose/review form's fields with random values, some left out, plus random extra ones."""
    fields = []
    for name, strategy in (("prompts", PROMPTS), ("names", FIELD_TEXT), ("style", FIELD_TEXT), ("model", MODELS),
                           ("quality", QUALITIES), ("format", FORMATS), ("ratio", RATIOS),
                           ("request_token", st.one_of(TEXT, st.sampled_from(["tok-1", "tok-2", "a" * 100]))),
                           ("test_run", st.sampled_from(["1", "0", "", "yes"]))):
        if draw(st.integers(0, 9)) > 0:
            fields.append((name, draw(strategy)))
    fields += draw(st.lists(st.tuples(st.sampled_from(["prompts", "model", "csrf_token", "extra", ""]), TEXT),
                            max_size=3))
    return fields


def with_token(fields, token, mode):
    """The fields (a MultiDict) and headers for a CSRF mode: valid in the form or header, missing, wrong."""
    data = MultiDict(fields)
    headers = {}
    if mode in ("valid", "header") and token:
        if mode == "header":
            headers["X-CSRF-Token"] = token
        else:
            data.add("csrf_token", token)
    elif mode == "wrong":
        data.add("csrf_token", "not-the-token")
    return data, headers


# --- the targets -------------------------------------------------------------------------------------

@fuzz(100)
@given(path=st.sampled_from(["/generate/review", "/batches", "/generate", "/api/batches"]), who=WHO, csrf=CSRF,
       fields=form_fields(), multipart=st.booleans(),
       upload=st.one_of(st.none(), st.tuples(UPLOAD_NAME, UPLOAD_CONTENT)))
def test_forms_never_fail(site, path, who, csrf, fields, multipart, upload):
    """POST /generate/review, /batches, /generate and /api/batches as forms: urlencoded or multipart, with uploads."""
    client, token = site.visitor(who)
    data, headers = with_token(fields, token, csrf)
    if upload is not None:
        name, content = upload
        data.add("prompts_file", (io.BytesIO(content), name))
        multipart = True
    send(site, client, "POST", path, data=data, headers=headers,
         content_type="multipart/form-data" if multipart else None)


JSON_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.integers(-2**80, 2**80),
                         st.floats(allow_nan=True, allow_infinity=True), TEXT,
                         st.text(st.characters(exclude_categories=()), max_size=20))
JSON_VALUES = st.recursive(JSON_SCALARS, lambda inner: st.lists(inner, max_size=5)
                           | st.dictionaries(TEXT, inner, max_size=5), max_leaves=25)


@st.composite
def batch_json(draw):
    """A JSON object shaped like the API's body, each field a valid value, a random string or any JSON value."""
    body = {}
    for name, good in (("prompts", PROMPTS), ("names", FIELD_TEXT), ("style", FIELD_TEXT), ("model", MODELS),
                       ("quality", QUALITIES), ("format", FORMATS), ("ratio", RATIOS),
                       ("request_token", TEXT), ("test_run", st.sampled_from(["1", "0", 1, True]))):
        choice = draw(st.integers(0, 5))
        if choice == 0:
            continue
        body[name] = draw(JSON_VALUES) if choice == 1 else draw(good)
    body.update(draw(st.dictionaries(TEXT, JSON_VALUES, max_size=3)))
    return body


def encode_json(value, ascii_only: bool) -> bytes:
    return json.dumps(value, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


JSON_BODIES = st.one_of(
    st.tuples(batch_json(), st.booleans()).map(lambda pair: encode_json(*pair)),
    st.tuples(JSON_VALUES, st.booleans()).map(lambda pair: encode_json(*pair)),
    st.binary(max_size=300),
    st.sampled_from([b"", b"{", b'{"prompts": "a"', b"\xef\xbb\xbf{}", b'"\xff"', b"{}\x00", b"null", b"[]",
                     b'{"prompts": "a", "prompts": 5}', b"1e99999", b"9" * 5000, b"[" * 500 + b"]" * 500]),
    st.builds(lambda depth: b"[" * depth + b"]" * depth, st.integers(0, 3000)),
    st.builds(lambda count: b'{"prompts": "' + b"a" * count + b'"}', st.integers(0, 300_000)),
)
JSON_TYPES = st.sampled_from(["application/json", "application/json", "application/json; charset=utf-8",
                              "application/json-rpc", "application/jsonx", "APPLICATION/JSON", "text/plain", "",
                              "application/x-www-form-urlencoded", "multipart/form-data; boundary=xyz",
                              "multipart/form-data"])


@fuzz(100)
@given(path=st.sampled_from(["/api/batches", "/api/batches", "/api/batches", "/generate/review", "/batches"]),
       who=WHO, csrf=st.sampled_from(["header", "header", "missing", "wrong"]), body=JSON_BODIES,
       content_type=JSON_TYPES)
def test_json_never_fails(site, path, who, csrf, body, content_type):
    """POST /api/batches (and the form routes) with random JSON: wrong types, nesting, non-objects, bad UTF-8, huge."""
    client, token = site.visitor(who)
    headers = {"X-CSRF-Token": token if csrf == "header" and token else "wrong"} if csrf != "missing" else {}
    if content_type:
        headers["Content-Type"] = content_type
    send(site, client, "POST", path, data=body, headers=headers)


ID_TEXT = st.one_of(st.integers(-5, 5).map(str), st.integers(-10**25, 10**25).map(str),
                    st.sampled_from(["0001", "-0", "+1", "1e3", "0x10", "1.0", " 1", "١", "", "%00", "..", "1/2"]),
                    TEXT)
ACTIONS = ["", "", "/retry", "/cancel", "/stop", "/resume", "/continue", "/items/{item}/image", "/items/{item}/ack",
           "/items/{item}/retry", "/items/{item}", "/items", "/{text}", "/items/{item}/image/{text}"]
METHODS = st.sampled_from(["GET", "GET", "POST", "POST", "POST", "HEAD", "PUT", "DELETE", "PATCH", "OPTIONS"])


@st.composite
def batch_paths(draw, site_ids) -> str:
    batch_ids, item_ids = site_ids
    batch = draw(st.one_of(st.sampled_from(batch_ids).map(str), ID_TEXT))
    item = draw(st.one_of(st.sampled_from(item_ids).map(str), ID_TEXT))
    action = draw(st.sampled_from(ACTIONS))
    prefix = draw(st.sampled_from(["/api/batches", "/batches"]))
    return prefix + "/" + quote(batch, safe="") + action.format(item=quote(item, safe=""),
                                                                text=quote(draw(TEXT), safe=""))


@fuzz(150)
@given(data=st.data(), method=METHODS, who=WHO, csrf=CSRF, body=st.one_of(st.none(), form_fields(), JSON_BODIES))
def test_batch_routes_never_fail(site, data, method, who, csrf, body):
    """GET/POST /api/batches/<id>/... and /batches/<id>/... (ack, retry, cancel, stop, resume, continue, image)."""
    path = data.draw(batch_paths((site.batch_ids, site.item_ids)), label="path")
    client, token = site.visitor(who)
    if isinstance(body, bytes):
        headers = {"Content-Type": "application/json"}
        if csrf in ("valid", "header") and token:
            headers["X-CSRF-Token"] = token
        send(site, client, method, path, data=body, headers=headers)
    else:
        fields, headers = with_token(body or [], token, csrf)
        send(site, client, method, path, data=fields, headers=headers)


NEXT_VALUES = st.one_of(TEXT, st.sampled_from([
    "/", "/account", "//evil.example", "/\\evil.example", "\\\\evil.example", "http://evil.example/",
    "https:evil.example", "javascript:alert(1)", "/%2f%2fevil.example", "/\x00", "/\r\nSet-Cookie: x=1",
    "/\t/evil.example", " /x", "/batches/1?x=1#y", "/" + "a" * 5000, "/ñ", "/🦊", "%2F%2Fevil.example"]))
RAW_QUERIES = st.sampled_from(["next=%ff%fe", "next=%", "next=%zz", "next", "next=&next=//evil.example", "=&&=",
                               "next=%0d%0aLocation:%20http://evil.example", "next=" + "%41" * 3000, "x=\x00"])


@fuzz(60)
@given(kind=st.sampled_from(["lang", "login"]), code=st.one_of(st.sampled_from(["es", "en", "fr", "ES", ""]), TEXT),
       next_value=NEXT_VALUES, raw=st.one_of(st.none(), RAW_QUERIES), who=WHO)
def test_language_and_login_never_fail(site, kind, code, next_value, raw, who):
    """/lang/<code>?next=... and /login?next=...: never a 500, never a redirect off the site."""
    client, _token = site.visitor(who)
    path = f"/lang/{quote(code, safe='')}" if kind == "lang" else "/login"
    query = raw if raw is not None else urlencode({"next": next_value})
    send(site, client, "GET", f"{path}?{query}")


@fuzz(50)
@given(provider=st.one_of(st.sampled_from(["google", "microsoft", "microsoft", "github", "Google", "x" * 40]),
                          st.text("abcdefghijklmnopqrstuvwxyz", max_size=12)),
       real_state=st.sampled_from(["real", "real", "random", "none"]), who=WHO,
       params=st.dictionaries(st.sampled_from(["state", "code", "error", "error_description", "next", "link",
                                               "iss", "session_state"]), st.one_of(TEXT, HEADER_TEXT), max_size=5))
def test_sign_in_never_fails(site, provider, real_state, who, params):
    """/auth/<provider>/start and /callback with random query parameters (state, code, error), after a real start."""
    client, _token = site.visitor(who)
    start_query = urlencode({key: value for key, value in params.items() if key in ("next", "link")})
    started = send(site, client, "GET", f"/auth/{provider}/start?{start_query}")
    query = {key: value for key, value in params.items() if key not in ("next", "link")}
    if real_state == "real" and started.status_code == 302:
        query["state"] = parse_qs(urlsplit(started.headers["Location"]).query)["state"][0]
    elif real_state == "none":
        query.pop("state", None)
    send(site, client, "GET", f"/auth/{provider}/callback?{urlencode(query)}")


SIGNATURES = st.one_of(
    st.none(), HEADER_TEXT,
    st.builds(lambda t, v1, extra: f"t={t},v1={v1}{extra}", st.one_of(st.integers().map(str), HEADER_TEXT),
              st.one_of(st.text("0123456789abcdef", min_size=64, max_size=64), HEADER_TEXT),
              st.sampled_from(["", ",v0=abc", ",v1=", ",t=1", ",,"])),
)


STRIPE_IDS = st.one_of(st.sampled_from(["sub_123", "cus_123", "in_123", "cs_123", "", None]), TEXT, JSON_SCALARS)
EVENT_TYPES = st.one_of(st.sampled_from(list(billing.HANDLED_EVENTS) + ["customer.created", "invoice.upcoming"]),
                        TEXT)


@st.composite
def stripe_events(draw):
    """Event-shaped JSON: ids and types random, data.object with random references."""
    obj = draw(st.fixed_dictionaries({}, optional={
        "id": STRIPE_IDS, "subscription": STRIPE_IDS, "customer": STRIPE_IDS, "client_reference_id": STRIPE_IDS,
        "status": st.one_of(st.sampled_from(["paid", "open", "complete"]), JSON_SCALARS),
        "billing_reason": st.one_of(st.sampled_from(["subscription_create", "subscription_cycle"]), JSON_SCALARS),
        "parent": st.one_of(JSON_VALUES, st.fixed_dictionaries(
            {"subscription_details": st.fixed_dictionaries({"subscription": STRIPE_IDS})})),
    }))
    event = {"id": draw(st.one_of(st.text("abcdef0123456789", min_size=1, max_size=20).map("evt_".__add__), TEXT)),
             "object": "event", "type": draw(EVENT_TYPES), "data": {"object": obj}}
    return event


@fuzz(70)
@given(data=st.data(), signed=st.booleans())
def test_stripe_webhook_never_fails(site, data, signed):
    """POST /stripe/webhook: random bodies and Stripe-Signature headers (no secret: a 400), and random payloads signed
    with the secret (200, or a JSON 503 when the event names something Stripe must be asked about again later)."""
    if signed:
        event = data.draw(st.one_of(stripe_events(), stripe_events(), stripe_events(), JSON_VALUES), label="event")
        body = json.dumps(event).encode("utf-8", "surrogatepass")
        headers = {"Stripe-Signature": site.fake_stripe.sign(body), "Content-Type": "application/json"}
    else:
        body = data.draw(st.one_of(JSON_BODIES, st.binary(max_size=500)), label="body")
        signature = data.draw(SIGNATURES, label="signature")
        content_type = data.draw(st.sampled_from(["application/json", "text/plain", ""]), label="content_type")
        headers = {"Content-Type": content_type} if content_type else {}
        if signature is not None:
            headers["Stripe-Signature"] = signature
    send(site, BufferedClient(site.app), "POST", "/stripe/webhook", signed_webhook=signed, data=body, headers=headers)


@fuzz(40)
@given(path=st.sampled_from(["/billing/checkout", "/billing/portal", "/logout", "/billing/checkout"]), who=WHO,
       csrf=CSRF, fields=st.lists(st.tuples(st.sampled_from(["csrf_token", "price", "plan", "next", ""]), TEXT),
                                  max_size=3),
       fetch_site=st.sampled_from([None, None, "same-origin", "none", "cross-site", "same-site", "CROSS-SITE", "x"]))
def test_billing_posts_never_fail(site, path, who, csrf, fields, fetch_site):
    """POST /billing/checkout, /billing/portal and /logout: any user, token and Sec-Fetch-Site."""
    client, token = site.visitor(who)
    data, headers = with_token(fields, token, csrf)
    if fetch_site is not None:
        headers["Sec-Fetch-Site"] = fetch_site
    send(site, client, "POST", path, data=data, headers=headers)


ROUTES = ["/", "/terms", "/privacy", "/healthz", "/login", "/logout", "/account", "/pricing", "/billing/success",
          "/billing/checkout", "/billing/portal", "/stripe/webhook", "/generate", "/generate/template.csv",
          "/generate/review", "/batches", "/library", "/api/batches", "/api/", "/api", "/lang/en", "/auth/google/start",
          "/auth/microsoft/callback", "/css/site.css", "/js/batch.js", "/js/../../app.py", "/css/%2e%2e/%2e%2e/app.py",
          "/vendor/client-zip.js", "/img/favicon.svg", "/robots.txt", "/favicon.ico", "/.env", "/var/app.db",
          "//healthz", "/healthz/", "/account/", "/%00", "/.htaccess", "/passenger_wsgi.py"]


@st.composite
def any_path(draw) -> str:
    base = draw(st.one_of(st.sampled_from(ROUTES), st.lists(TEXT.map(lambda s: quote(s, safe="")), max_size=4)
                          .map(lambda parts: "/" + "/".join(parts))))
    suffix = draw(st.sampled_from(["", "", "/", "/x", "?", "?" + draw(TEXT.map(lambda s: quote(s, safe="=&"))),
                                   "?session_id=cs_" + draw(st.text("abc123", max_size=10)), "?checkout=cancelled",
                                   "?welcome=1", "#x"]))
    return base + suffix


@fuzz(150)
@given(method=st.one_of(METHODS, st.sampled_from(["PROPFIND", "TRACE", "CONNECT", "get", "X"])), path=any_path(),
       who=WHO, headers=st.dictionaries(
           st.sampled_from(["Accept", "Accept-Language", "Content-Type", "Sec-Fetch-Site", "X-CSRF-Token",
                            "Range", "If-Modified-Since", "If-None-Match", "Origin", "X-Forwarded-For",
                            "X-Forwarded-Proto", "Content-Length"]),
           st.one_of(HEADER_TEXT, st.sampled_from(["application/json", "text/html", "*/*", "es-ES,en;q=0.5",
                                                   "bytes=0-10", "bytes=99999999-", "application/json, text/html",
                                                   "0", "-1", "999999999999"]))),
       cookies=st.dictionaries(st.sampled_from(["lang", "iib_session", "x"]), HEADER_TEXT.filter(
           lambda s: ";" not in s), max_size=2),
       host=st.sampled_from([None, None, "evil.example", "127.0.0.1:1", "localhost:8000", "a" * 300, "[::1]", "x:y"]),
       body=st.one_of(st.none(), st.binary(max_size=300)))
def test_any_request_never_fails(site, method, path, who, headers, cookies, host, body):
    """Random paths and methods (the known pages too, /healthz among them) with random headers, cookies and bodies."""
    client, _token = site.visitor(who)
    for name, value in cookies.items():
        client.set_cookie(name, value)
    if host is not None:
        headers["Host"] = host
    send(site, client, method, path, headers=headers, data=body)
