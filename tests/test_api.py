"""The JSON API of the batch pages, in-process on both engines: sign-in, CSRF, plan, ownership, the whole cycle."""

import io
import time

import pytest
from PIL import Image

from services import credits, db, worker
from tests.conftest import BufferedClient, make_subscriber, openai_settings, signed_in_client


@pytest.fixture
def studio(make_app, database, fake_openai):
    return make_app(**openai_settings(fake_openai))


@pytest.fixture
def ana(studio, conn):
    user = make_subscriber(conn)
    client, token = signed_in_client(studio, conn, user)
    return user, client, token


FORM = {"prompts": "a red car\r\na boat\r\n", "names": "car\ncar", "style": "watercolor", "model": "gpt-image-2",
        "format": "jpeg", "ratio": "9:16", "quality": "low"}


def create(client, token, **changes):
    return client.post("/api/batches", json={**FORM, **changes}, headers={"X-CSRF-Token": token})


def test_create_poll_fetch_and_acknowledge(studio, conn, ana):
    user, client, token = ana
    created = create(client, token, request_token="tok-1")
    assert created.status_code == 201, created.text
    body = created.json
    batch_id = body["batch"]["id"]
    assert body["batch"]["item_count"] == 2 and body["counts"] == {"queued": 2}
    assert [i["file_name"] for i in body["items"]] == ["car.jpg", "car-2.jpg"]
    again = create(client, token, request_token="tok-1")  # Start pressed twice
    assert again.status_code == 200 and again.json["batch"]["id"] == batch_id
    assert conn.scalar("SELECT COUNT(*) AS n FROM batches") == 1

    worker.run(studio.settings, studio.database, studio.catalog, threads=2)
    status = client.get(f"/api/batches/{batch_id}")
    assert status.status_code == 200 and status.headers["Cache-Control"] == "no-store"
    assert status.json["counts"] == {"done": 2} and status.json["batch"]["status"] == "done"
    item = status.json["items"][0]
    image = client.get(f"/api/batches/{batch_id}/items/{item['id']}/image")
    assert image.status_code == 200 and image.headers["Content-Type"] == "image/jpeg"
    assert image.headers["Cache-Control"] == "no-store"
    assert 'filename="car.jpg"' in image.headers["Content-Disposition"]
    assert Image.open(io.BytesIO(image.data)).size == (864, 1536)
    path = studio.settings.results_dir / db.batch_item_get(conn, item["id"])["result_path"]
    assert path.exists()
    ack = client.post(f"/api/batches/{batch_id}/items/{item['id']}/ack", headers={"X-CSRF-Token": token})
    assert ack.status_code == 200 and ack.json == {"acknowledged": True, "first": True}
    assert not path.exists()
    assert client.post(f"/api/batches/{batch_id}/items/{item['id']}/ack",
                       headers={"X-CSRF-Token": token}).json["first"] is False
    gone = client.get(f"/api/batches/{batch_id}/items/{item['id']}/image")
    assert gone.status_code == 409 and gone.json["error"]["code"] == "gone"
    assert credits.balance(conn, user) == 300 - 2 * 2


def test_review_errors_come_back_as_422_with_every_problem(studio, ana):
    _user, client, token = ana
    response = create(client, token, prompts="", model="dall-e-2")
    assert response.status_code == 422
    assert {e["code"] for e in response.json["errors"]} == {"no_prompts", "unknown_model"}
    client.set_cookie("lang", "en")
    assert create(client, token, quality="ultra").json["error"]["message"] == "Choose one of the model's qualities."
    client.set_cookie("lang", "es")
    spanish = create(client, token, prompts="x\n" * 201)
    assert spanish.json["error"]["message"] == \
        "Son 201 prompts, 1 por encima del límite: un lote admite como máximo 200."


def test_a_csv_upload_creates_the_batch(studio, ana):
    _user, client, token = ana
    data = {k: v for k, v in FORM.items() if k not in ("prompts", "names")}
    data["prompts_file"] = (io.BytesIO(b"prompt;name\nuno;primero\ndos;\n"), "list.csv")
    response = client.post("/api/batches", data=data, headers={"X-CSRF-Token": token},
                           content_type="multipart/form-data")
    assert response.status_code == 201, response.text
    assert [i["file_name"] for i in response.json["items"]] == ["primero.jpg", "002-dos.jpg"]


def test_every_call_needs_sign_in_and_posts_need_the_token(studio, ana, conn):
    _user, client, token = ana
    batch_id = create(client, token).json["batch"]["id"]
    anonymous = BufferedClient(studio)
    assert anonymous.get(f"/api/batches/{batch_id}").status_code == 401
    assert anonymous.get(f"/api/batches/{batch_id}").json["error"]["code"] == "sign_in"
    assert client.post("/api/batches", json=FORM).status_code == 403
    assert client.post(f"/api/batches/{batch_id}/cancel").status_code == 403
    assert client.post(f"/api/batches/{batch_id}/cancel", headers={"X-CSRF-Token": token,
                                                                    "Sec-Fetch-Site": "cross-site"}).status_code == 403


def test_someone_elses_batch_is_not_found(studio, ana, conn):
    _user, client, token = ana
    batch_id = create(client, token).json["batch"]["id"]
    item_id = db.batch_items_of(conn, batch_id)[0]["id"]
    ben, ben_token = signed_in_client(studio, conn, make_subscriber(conn, "Ben", "ben@example.com"))
    for response in (ben.get(f"/api/batches/{batch_id}"),
                     ben.get(f"/api/batches/{batch_id}/items/{item_id}/image"),
                     ben.post(f"/api/batches/{batch_id}/items/{item_id}/ack", headers={"X-CSRF-Token": ben_token}),
                     ben.post(f"/api/batches/{batch_id}/retry", headers={"X-CSRF-Token": ben_token}),
                     ben.post(f"/api/batches/{batch_id}/cancel", headers={"X-CSRF-Token": ben_token}),
                     ben.get(f"/api/batches/{batch_id + 1000}")):
        assert response.status_code == 404 and response.json["error"]["code"] == "not_found"
    assert [r["status"] for r in db.batch_items_of(conn, batch_id)] == ["queued", "queued"]
    other_batch = create(ben, ben_token).json["batch"]["id"]
    assert client.get(f"/api/batches/{batch_id}/items/{db.batch_items_of(conn, other_batch)[0]['id']}/image"
                      ).status_code == 404


@pytest.mark.parametrize("status", ["past_due", "canceled", None])
def test_creating_needs_a_plan_that_allows_generating(studio, conn, status):
    user = make_subscriber(conn, status=status) if status else db.user_insert(conn, "No plan", "", int(time.time()))
    client, token = signed_in_client(studio, conn, user)
    response = create(client, token)
    assert response.status_code == 403 and response.json["error"]["code"] == "no_plan"


def test_retry_failed_and_cancel(studio, ana, conn, fake_openai):
    user, client, token = ana
    batch_id = create(client, token, prompts=f"fine\n{fake_openai.moderation_marker} here\nthird").json["batch"]["id"]
    conn.execute("UPDATE batch_items SET not_before_ms = ? WHERE position = 3", (int(time.time() * 1000) + 60_000,))
    worker.run(studio.settings, studio.database, studio.catalog, threads=1, max_seconds=3)  # the third waits
    status = client.get(f"/api/batches/{batch_id}").json
    assert [i["status"] for i in status["items"]] == ["done", "failed", "queued"]
    client.set_cookie("lang", "en")
    failed = client.get(f"/api/batches/{batch_id}").json["items"][1]
    assert failed["error_code"] == "refused" and "rephrase" in failed["error"]
    assert credits.balance(conn, user) == 298
    retried = client.post(f"/api/batches/{batch_id}/retry", headers={"X-CSRF-Token": token})
    assert retried.json == {"queued": 0}  # a refused image is not retried as it was: it would be refused again
    refused_id = db.batch_items_of(conn, batch_id)[1]["id"]
    empty = client.post(f"/api/batches/{batch_id}/items/{refused_id}/edit", json={"prompt": " "},
                        headers={"X-CSRF-Token": token})
    assert empty.status_code == 400 and empty.json["error"]["code"] == "no_prompts"
    edited = client.post(f"/api/batches/{batch_id}/items/{refused_id}/edit", json={"prompt": "a kind one"},
                         headers={"X-CSRF-Token": token})
    assert edited.json == {"queued": 1}
    assert db.batch_items_of(conn, batch_id)[1]["charge"] == 2
    cancelled = client.post(f"/api/batches/{batch_id}/cancel", headers={"X-CSRF-Token": token})
    assert cancelled.json == {"cancelled": 2}
    assert [r["status"] for r in db.batch_items_of(conn, batch_id)] == ["done", "cancelled", "cancelled"]
    assert credits.balance(conn, user) == 298
    assert db.credit_ledger_sum(conn, user) == credits.balance(conn, user)


@pytest.mark.parametrize("body", [b"{not json", b"[1, 2]", b'"prompts"', b"null x", b"\xff\xfe"])
def test_a_body_that_is_not_a_json_object_is_a_json_400(studio, ana, conn, body):
    _user, client, token = ana
    response = client.post("/api/batches", data=body, content_type="application/json",
                           headers={"X-CSRF-Token": token})
    assert response.status_code == 400, response.text
    assert response.json["error"]["code"] == "bad_request"
    assert conn.scalar("SELECT COUNT(*) AS n FROM batches") == 0


def test_values_of_the_wrong_type_are_ignored_not_a_500(studio, ana):
    _user, client, token = ana
    response = create(client, token, prompts=["a", "b"], names={"x": 1}, style=7)
    assert response.status_code == 422 and response.json["error"]["code"] == "no_prompts"


def test_a_json_body_past_the_memory_limit_is_refused_with_413(studio, ana):
    _user, client, token = ana
    response = client.post("/api/batches", data=b'{"prompts": "' + b"a" * 2_100_000 + b'"}',
                           content_type="application/json", headers={"X-CSRF-Token": token})
    assert response.status_code == 413 and response.json["error"]["code"] == "too_large"


def test_the_poll_says_when_every_worker_is_paused_and_keeps_a_batch_s_own_reason(studio, ana, conn, fake_openai):
    _user, client, token = ana
    client.set_cookie("lang", "en")
    batch_id = create(client, token).json["batch"]["id"]
    polled = client.get(f"/api/batches/{batch_id}").json["batch"]
    assert (polled["pause_reason"], polled["pause_message"]) == (None, None)
    fake_openai.fail_next("insufficient_quota", count=1)
    assert worker.run(studio.settings, studio.database, studio.catalog, threads=1, max_seconds=1.5) == {"paused": 1}
    polled = client.get(f"/api/batches/{batch_id}").json["batch"]
    assert (polled["status"], polled["pause_reason"]) == ("active", "service_paused")
    assert polled["pause_message"].startswith("The image service is unavailable on our side")
    stopped = client.post(f"/api/batches/{batch_id}/stop", headers={"X-CSRF-Token": token})
    assert stopped.json == {"stopped": True}
    polled = client.get(f"/api/batches/{batch_id}").json["batch"]  # the batch's own reason, not the service's
    assert (polled["status"], polled["pause_reason"]) == ("paused", "stopped")
    assert polled["pause_message"].startswith("Stopped: the remaining images wait")
    db.worker_state_set(conn, "pause", "{}", int(time.time()))  # the operator topped up the account
    client.post(f"/api/batches/{batch_id}/resume", headers={"X-CSRF-Token": token})
    polled = client.get(f"/api/batches/{batch_id}").json["batch"]
    assert (polled["status"], polled["pause_reason"], polled["pause_message"]) == ("active", None, None)


def test_a_model_openai_refuses_is_paused_in_the_poll_and_refused_for_new_batches(studio, ana, conn, fake_openai):
    user, client, token = ana
    client.set_cookie("lang", "en")
    fake_openai.models = [m for m in fake_openai.models if m != "gpt-image-2"]
    batch_id = create(client, token).json["batch"]["id"]
    assert worker.run(studio.settings, studio.database, studio.catalog, threads=1) == {"paused": 1}
    polled = client.get(f"/api/batches/{batch_id}").json
    assert (polled["batch"]["status"], polled["batch"]["pause_reason"]) == ("paused", "model_unavailable")
    assert polled["batch"]["pause_message"].startswith("Paused: this model is unavailable right now.")
    assert polled["counts"] == {"queued": 2} and credits.balance(conn, user) == 300
    again = create(client, token)
    assert again.status_code == 422 and again.json["error"] == {  # the review says so before anything is stored
        "code": "model_unavailable", "message": "GPT Image 2 is unavailable right now: choose another model."}
    assert create(client, token, model="gpt-image-2.5-flare").status_code == 201
    page = client.get(f"/batches/{batch_id}").text  # the batch page says it too, with its Resume button
    assert "Paused: this model is unavailable right now." in page and 'id="resume-button"' in page
