"""``Idempotency-Key`` for requests that move money: a client that retries after a timeout gets the first answer.

A client that sent ``POST .../deposits`` and lost the connection cannot tell whether the deposit happened; retrying
without a key deposits twice. With an ``Idempotency-Key`` header (the IETF httpapi draft's header, as Stripe and
others use it) the first successful answer is kept with the state it changed (saved in the same durable change),
and a request repeating the key within :data:`TTL_S` is answered with that answer again (header
``Idempotent-Replayed: true``) without changing anything. Keys are per tenant (at most :data:`MAX_KEYS` each, oldest forgotten first). Reusing a key for a different request
(another route, account or body) is a 422 ``idempotency-key-reused``; failed requests are not kept (they changed
nothing, so a retry runs again). Requests without the header behave as before.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections import OrderedDict

from fastapi import Header
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse

from services.common.problems import Problem

HEADER = "Idempotency-Key"
REPLAYED = "Idempotent-Replayed"
TTL_S = 24 * 3600  # how long a key is remembered (a client's retries happen within minutes; Stripe keeps 24 h)
MAX_KEYS = 5_000  # per tenant and record set (one contract): its oldest are forgotten first beyond it
_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")  # visible ASCII, as a header value carries it unchanged


def idempotency_key(key: str | None = Header(default=None, alias=HEADER, description=(
        "Optional. A unique value per operation (e.g. a UUID): a retry with the same key within 24 hours answers "
        "the first successful answer again and changes nothing."))) -> str | None:
    """FastAPI dependency: the request's ``Idempotency-Key`` (None without one), validated."""
    if key is None:
        return None
    if not _KEY.match(key):
        raise Problem(400, "Bad Request", f"{HEADER} must be 1 to 255 visible ASCII characters",
                      "invalid-idempotency-key")
    return key


def fingerprint(route: str, body) -> str:
    """What a key stands for: the route (with its path values) and the validated body."""
    payload = json.dumps([route, jsonable_encoder(body)], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()


# Kept answers: tenant -> OrderedDict(key -> (fingerprint, time, status, body)), oldest first. Plain dicts, not a class
# of this module: the state they are pickled with stays readable by a version of the service without this module.
Records = dict


def replay(records: Records, tenant: str, key: str | None, print_: str,
           now: float | None = None) -> JSONResponse | None:
    """The kept answer for this key (None when there is none, or no key); 422 when it was another request's."""
    if key is None:
        return None
    _expire(records, time.time() if now is None else now)
    kept = records.get(tenant, {}).get(key)
    if kept is None:
        return None
    kept_print, _, status, body = kept
    if kept_print != print_:
        raise Problem(422, "Unprocessable Content", f"this {HEADER} was used for a different request; use a new "
                      "key for a new operation", "idempotency-key-reused")
    return JSONResponse(body, status_code=status, headers={REPLAYED: "true"})


def remember(records: Records, tenant: str, key: str | None, print_: str, status: int, answer,
             now: float | None = None) -> None:
    if key is None:
        return
    now = time.time() if now is None else now
    mine = records.setdefault(tenant, OrderedDict())
    mine[key] = (print_, now, status, jsonable_encoder(answer))
    mine.move_to_end(key)
    _expire(records, now)


def _expire(records: Records, now: float) -> None:
    """Forget keys older than TTL_S, and each tenant's oldest beyond MAX_KEYS (a tenant sending many keys never
    pushes out another tenant's)."""
    for tenant in list(records):
        mine = records[tenant]
        while mine:
            oldest = next(iter(mine.values()))
            if now - oldest[1] <= TTL_S and len(mine) <= MAX_KEYS:
                break
            mine.popitem(last=False)
        if not mine:
            del records[tenant]
