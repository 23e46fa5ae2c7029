"""The site's health for uptime checks: the database, the schema, the worker's heartbeat, the catalogue.

No secret and no internal detail goes into the answer: only "ok"/"error" per part, the schema
version, and how many seconds ago a worker last said it was alive.
"""

from __future__ import annotations

import datetime
import logging

from services import db
from services.catalog import Catalog

log = logging.getLogger(__name__)


def expected_schema_version(engine: str) -> int:
    """The schema version this code expects."""
    return db.schema_file_version(engine)


def check(database: db.Database, catalog: Catalog, now: int) -> tuple[bool, dict]:
    """(healthy, report): the database reachable at the expected schema, the catalogue with a model on offer."""
    report: dict = {"status": "ok", "database": "ok", "schema_version": None, "worker_heartbeat_age": None,
                    "catalog": "ok"}
    healthy = True
    try:
        conn = database.connect()
        try:
            version = db.schema_version(conn)
            beat = db.worker_state_get(conn, "heartbeat")
        finally:
            conn.close()
        report["schema_version"] = version
        if version != expected_schema_version(database.engine):
            report["database"] = "schema out of date: run cli.py initdb"
            healthy = False
        if beat:
            report["worker_heartbeat_age"] = max(0, now - int(beat))
    except db.DatabaseUnavailable as exc:
        log.error("healthz: database unavailable: %s", exc)
        report["database"] = "unreachable"
        healthy = False
    if not catalog.available(datetime.date.fromtimestamp(now)):
        report["catalog"] = "no model on offer: every catalogue model is retired"
        healthy = False
    if not healthy:
        report["status"] = "error"
    return healthy, report
