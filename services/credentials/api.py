"""Credentials API: W3C VC API-shaped endpoints over the pure core in :mod:`services.credentials`.

* ``POST /credentials/issue`` (``credentials:write``): each tenant issues under its own
  ``did:key`` (derived from the service's key, see ``tenant_key_pair``) with an ``eddsa-rdfc-2022``
  proof, and every credential gets a ``BitstringStatusListEntry`` for revocation and one for
  suspension (same index) in the tenant's own status lists.
  A credential without an ``id`` gets ``urn:uuid:<random>``: the id is the handle for
  status changes. The issuing tenant is recorded per credential id.
* ``POST /credentials/verify`` (``credentials:read``): structure, proof, issuer binding,
  validity window and status. A credential that fails any check is ``verified: false``
  with the reasons (200); only a body that is not ``{"verifiableCredential": {...}}``
  is a 422. Status lists are resolved in process and only this service's lists are
  resolvable: a credential pointing elsewhere fails closed (nothing is fetched).
* ``POST /credentials/status`` (``credentials:write``): ``{"credentialId": "...",
  "credentialStatus": [{"type": "BitstringStatusListEntry", "status": "revoked" |
  "suspended" | "active"}]}``. ``active`` lifts a suspension; revocation is permanent
  (``active`` on a revoked credential is a 409). Entries apply in order and the request
  is all-or-nothing. Only the tenant that issued a credential may change its status:
  for any other tenant the id is unknown (404). Ids are per tenant, so two tenants may
  issue credentials with the same id; each changes only its own.
* ``GET /status-lists/{issuer_key}/{purpose}`` (``credentials:read``, any tenant: verifiers read it):
  the signed ``BitstringStatusListCredential`` of the issuer whose public Multikey is ``issuer_key``
  (the URL its status entries carry); ``GET /status-lists/{purpose}`` is the caller's own tenant's.
  A list is re-signed only when it changed.

Every domain ``CredentialError`` (a ``ValueError``) while issuing is a 422 problem
carrying the core's message. A credential is checked (structure and canonicalisation)
before a status index is allocated, and an index whose signing fails anyway is released,
so rejected requests do not use up the status list. Documents whose canonicalisation could take exponential time (see
``document_problem``) are refused with a 422 by both issue and verify.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import threading
import uuid
from collections import Counter
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Path
from pydantic import BaseModel, ConfigDict, Field

from services.common.app import ServiceContext, create_service_app
from services.common.auth import Principal
from services.common.problems import Problem
from services.common.text import is_unicode
from services.credentials.did_key import Ed25519KeyPair
from services.credentials.errors import CredentialError, StatusListError
from services.credentials.issuer import Issuer, issuer_id, validate_credential, verify_credential
from services.credentials.rdfc import canonicalize
from services.credentials.status_list import (
    REVOCATION,
    SUSPENSION,
    StatusList,
    StatusRegistry,
    status_entries,
    status_entry,
)
from services.credentials.store import CredentialStore, IndexTaken
from services.credentials.timestamps import parse_timestamp

ENTRY_TYPE = "BitstringStatusListEntry"
# the longest credential id: what /credentials/status accepts, so every credential issued can be revoked
MAX_CREDENTIAL_ID_LENGTH = 2048
Purpose = Literal["revocation", "suspension"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class IssueOptions(Strict):
    created: str | None = Field(default=None, max_length=64, examples=["2025-06-01T12:00:00Z"],
                                description="proof 'created' (xsd:dateTimeStamp); default now")


class IssueIn(Strict):
    credential: dict[str, Any] = Field(description="an unsigned VC Data Model 2.0 credential; 'issuer' is filled "
                                                   "in (and must be this service's DID if given); "
                                                   "'credentialStatus' is assigned by the service")
    options: IssueOptions = Field(default_factory=IssueOptions)


class IssueOut(BaseModel):
    verifiableCredential: dict[str, Any]


class VerifyOptions(Strict):
    """Reserved (the VC API request shape); no options are supported yet."""


class VerifyIn(Strict):
    verifiableCredential: dict[str, Any]
    options: VerifyOptions = Field(default_factory=VerifyOptions)


class StatusCheckOut(BaseModel):
    statusPurpose: str
    statusListIndex: int
    statusListCredential: str
    set: bool = Field(description="true: the credential is revoked / suspended")


class VerifyOut(BaseModel):
    verified: bool
    checks: list[str] = Field(description="what was checked")
    warnings: list[str]
    errors: list[str] = Field(description="why verification failed (empty when verified)")
    revoked: bool
    suspended: bool
    status: list[StatusCheckOut]
    issuer: str | None = None
    verificationMethod: str | None = None


class StatusEntryIn(Strict):
    type: Literal["BitstringStatusListEntry"]
    status: Literal["revoked", "suspended", "active"]


class UpdateStatusIn(Strict):
    credentialId: str = Field(min_length=1, max_length=MAX_CREDENTIAL_ID_LENGTH)
    credentialStatus: list[StatusEntryIn] = Field(min_length=1, max_length=2)


class UpdateStatusOut(BaseModel):
    credentialId: str
    status: Literal["revoked", "suspended", "active"]
    revoked: bool
    suspended: bool


def _invalid(detail: str, kind: str = "invalid-credential", **extensions) -> Problem:
    return Problem(422, "Unprocessable Content", detail, kind, **extensions)


# RDFC-1.0 canonicalisation (pyld's URDNA2015) is exponential on "poison graphs": blank
# nodes it cannot tell apart make it try every permutation of them. pyld has no work
# limit, so a tiny credential (8 blank nodes naming each other, 16 identical nested
# objects, a 500-item @list of one value) would hold a worker for minutes or end in a
# RecursionError. Until the canonicaliser gets a call budget, the API refuses the shapes
# that need one before anything is canonicalised: no blank node identifiers (so blank
# nodes form a tree), no inline @context objects (so no term can be made an @id alias or
# a list container), bounded depth, size and @list length, and at most a handful of
# objects with the same shape (nested objects count as one placeholder, so identical
# siblings anywhere in the tree are counted together, as the canonicaliser sees them).
MAX_DEPTH = 16
MAX_VALUES = 2_000
MAX_LIST_ITEMS = 32
MAX_IDENTICAL_OBJECTS = 6


def _shape(value):
    if isinstance(value, dict):
        return "_:z"
    if isinstance(value, list):
        return [_shape(item) for item in value]
    return value


def document_problem(document: dict) -> str | None:
    """Why ``document`` is refused before canonicalisation (``None``: it may be processed)."""
    stack, values, list_items, objects = [(document, 1)], 0, 0, []
    while stack:
        value, depth = stack.pop()
        values += 1
        if values > MAX_VALUES:
            return f"the document has more than {MAX_VALUES} JSON values"
        if depth > MAX_DEPTH:
            return f"the document is nested deeper than {MAX_DEPTH} levels"
        if isinstance(value, str) and value.startswith("_:"):
            return f"blank node identifiers are not accepted ({value[:40]!r})"
        if isinstance(value, list):
            stack.extend((item, depth + 1) for item in value)
        elif isinstance(value, dict):
            objects.append(value)
            for key, item in value.items():
                if key.startswith("_:"):
                    return f"blank node identifiers are not accepted ({key[:40]!r})"
                if key == "@context" and not (isinstance(item, str) or (
                        isinstance(item, list) and all(isinstance(c, str) for c in item))):
                    return "inline @context objects are not accepted: use published context URLs"
                if key == "@list":
                    list_items += len(item) if isinstance(item, list) else 1
                stack.append((item, depth + 1))
    if list_items > MAX_LIST_ITEMS:
        return f"the document has more than {MAX_LIST_ITEMS} @list items"
    shapes = Counter(json.dumps({k: _shape(v) for k, v in obj.items()}, sort_keys=True) for obj in objects)
    if shapes and max(shapes.values()) > MAX_IDENTICAL_OBJECTS:
        return (f"the document has more than {MAX_IDENTICAL_OBJECTS} objects of one shape "
                "(canonicalising it could take exponential time)")
    return None


def _store_unavailable(exc: Exception) -> Problem:
    return Problem(503, "Service Unavailable", f"the issuer's status store is unavailable ({type(exc).__name__}); "
                   "nothing was changed, try again", "status-store-unavailable")


def _unknown_credential(credential_id: str) -> Problem:
    return Problem(404, "Not Found", f"unknown credential {credential_id!r}", "unknown-credential")


def _check_document(document: dict) -> None:
    problem = document_problem(document)
    if problem is not None:
        raise Problem(422, "Unprocessable Content", problem, "unsupported-document")


NOT_UNICODE = "the credential holds text that is not valid Unicode (a lone surrogate)"

# an index another process took meanwhile is skipped (and the taken ones are read from the store);
# five collisions in a row mean a fault
ISSUE_ATTEMPTS = 5


def tenant_key_pair(master: Ed25519KeyPair, tenant: str) -> Ed25519KeyPair:
    """The tenant's own issuer key, derived from the service's key (HKDF-SHA256): every tenant issues under its
    own did:key, and keeping the service's one key keeps every tenant's identifier stable."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    seed = HKDF(algorithm=hashes.SHA256(), length=32, salt=b"platformq/credentials/tenant-issuer/v1",
                info=tenant.encode()).derive(master.private_key.private_bytes_raw())
    return Ed25519KeyPair.from_secret_bytes(seed)


@dataclasses.dataclass
class TenantIssuer:
    """One tenant's issuer: its did:key, its status lists (signed with its key) and the issuer that signs."""

    tenant: str
    key_pair: Ed25519KeyPair
    registry: StatusRegistry
    issuer: Issuer
    # (list URL, purpose) -> (bits, signed VC)
    signed_lists: dict[tuple[str, str], tuple[bytes, dict]] = dataclasses.field(default_factory=dict)


# The address every credential's status-list URLs began with before the public address could be configured
# (no port, no public host): credentials issued under it still resolve.
LEGACY_BASE_URL = "http://127.0.0.1"


def create_credentials_app(ctx: ServiceContext, issuer_key_pair: Ed25519KeyPair | None = None,
                           base_url: str = LEGACY_BASE_URL, store: CredentialStore | None = None,
                           also_resolve: tuple[str, ...] = (LEGACY_BASE_URL,)) -> FastAPI:
    """The credentials app. Each tenant issues under its own did:key, derived from ``issuer_key_pair`` (the
    service's key), with its own status lists. ``store`` keeps each credential's status index and status across
    restarts and is the source of truth for every process sharing it: a status change starts from the stored
    status and the lists are rebuilt from it before they are served (without one, they live as long as the app:
    tests and throw-away issuers only). ``base_url`` is the public address verifiers reach the service at: the
    status-list URLs issued credentials carry begin with it; lists under the ``also_resolve`` addresses (where
    earlier credentials point) are still resolved when verifying."""
    app = create_service_app(ctx, "platformQ credentials",
                             "W3C Verifiable Credentials: issue, verify, revoke and suspend (VC API shaped).")
    master = issuer_key_pair or Ed25519KeyPair.generate()
    lists_base = base_url.rstrip("/") + "/status-lists"
    resolvable = [lists_base] + [b.rstrip("/") + "/status-lists" for b in also_resolve
                                 if b.rstrip("/") + "/status-lists" != lists_base]
    tenants: dict[str, TenantIssuer] = {}
    by_key: dict[str, TenantIssuer] = {}  # the issuer's public Multikey (its status lists' path) -> issuer
    issued: dict[str, dict[str, int]] = {}  # tenant -> credential id -> status list index
    lock = threading.RLock()

    def issuer_for(tenant: str) -> TenantIssuer:
        with lock:
            found = tenants.get(tenant)
            if found is None:
                pair = tenant_key_pair(master, tenant)
                registry = StatusRegistry(f"{lists_base}/{pair.public_key_multibase}", pair)
                found = tenants[tenant] = by_key[pair.public_key_multibase] = TenantIssuer(
                    tenant, pair, registry, Issuer(pair, status_registry=registry))
            return found

    def issuer_with_key(key: str) -> TenantIssuer | None:
        found = by_key.get(key)
        if found is None and store is not None:  # a tenant whose first credential another process issued
            try:
                known = store.tenants()
            except Exception as exc:
                raise _store_unavailable(exc) from None
            for tenant in known:
                issuer_for(tenant)
            found = by_key.get(key)
        return found

    for row in store.load() if store is not None else ():  # what earlier processes issued, revoked, suspended
        registry = issuer_for(row.tenant).registry
        registry.adopt(row.index)
        issued.setdefault(row.tenant, {})[row.credential_id] = row.index
        if row.revoked:
            registry.revoke(row.index)
        if row.suspended:
            registry.suspend(row.index)
    app.state.issuer_for = issuer_for
    app.state.issued = issued
    reader = ctx.require("credentials:read")
    writer = ctx.require("credentials:write")

    def refresh(own: TenantIssuer, purpose: str) -> None:
        """Rebuild the list from the store: it holds every process's changes, this process's memory only its own."""
        try:
            held = store.indexes_set(own.tenant, purpose)
        except Exception as exc:  # fail closed: a list that may miss a revocation is not served
            raise _store_unavailable(exc) from None
        fresh = StatusList(purpose, own.registry.length)
        for index in held:
            own.registry.adopt(index)
            fresh.set(index)
        own.registry.lists[purpose] = fresh

    def list_credential(own: TenantIssuer, purpose: str, url: str | None = None) -> dict:
        """The signed list; ``url`` (its id) is one of the addresses earlier credentials point at, default now's."""
        url = url or own.registry.list_url(purpose)
        with lock:
            if store is not None:
                refresh(own, purpose)
            bits = own.registry.lists[purpose].to_bytes()
            cached = own.signed_lists.get((url, purpose))
            if cached is None or cached[0] != bits:
                cached = own.signed_lists[(url, purpose)] = (
                    bits, own.registry.status_list_credential(purpose, url=url))
            return copy.deepcopy(cached[1])

    def fetch(url: str) -> dict:
        for base in resolvable:
            if url.startswith(base + "/"):
                key, _, purpose = url.removeprefix(base + "/").partition("/")
                own = issuer_with_key(key)
                if own is not None and purpose in own.registry.lists and url == f"{base}/{key}/{purpose}":
                    return list_credential(own, purpose, url)
        raise StatusListError(f"status list {url} is not published by this service (nothing is fetched)")

    @app.post("/credentials/issue", status_code=201, response_model=IssueOut, tags=["credentials"])
    def issue(body: IssueIn, principal: Principal = Depends(writer)):
        _check_document(body.credential)
        if not is_unicode(body.credential):
            raise _invalid(NOT_UNICODE)
        own = issuer_for(principal.tenant)
        issuer, registry = own.issuer, own.registry
        unsigned = copy.deepcopy(body.credential)
        unsigned.setdefault("issuer", issuer.id)
        if "credentialStatus" in unsigned:
            raise _invalid("credentialStatus is assigned by the issuer's status registry")
        if "proof" in unsigned:
            raise _invalid("the credential already carries a proof; send it unsigned (the issuer signs it)")
        if issuer_id(unsigned) != issuer.id:
            raise _invalid(f"issuer {issuer_id(unsigned)!r} is not this issuer ({issuer.id})")
        unsigned.setdefault("id", f"urn:uuid:{uuid.uuid4()}")
        if isinstance(unsigned["id"], str) and len(unsigned["id"]) > MAX_CREDENTIAL_ID_LENGTH:
            raise _invalid(f"id has {len(unsigned['id'])} characters; at most {MAX_CREDENTIAL_ID_LENGTH} are "
                           "accepted (the status endpoint could not name it to revoke it)")
        if body.options.created is not None:
            try:
                parse_timestamp(body.options.created, "options.created")
            except CredentialError as exc:
                raise _invalid(str(exc), "invalid-option") from None
        # Check everything that can reject the credential before a status index is spent on it.
        preview = {**unsigned, "credentialStatus": [status_entry(registry.list_url(p), 0, p) for p in registry.lists]}
        # the limits verify applies hold for the credential as it is handed out (its id, issuer, status entries
        # and proof included): a credential just under them unsigned was issued, and then every verify refused it
        _check_document({**preview, "proof": {"type": "DataIntegrityProof", "cryptosuite": "eddsa-rdfc-2022",
                                              "created": "", "verificationMethod": "", "proofPurpose": "",
                                              "proofValue": ""}})
        try:
            validate_credential(preview)
            canonicalize(preview)
        except CredentialError as exc:
            raise _invalid(str(exc), problems=list(getattr(exc, "problems", ()))) from None
        credential_id = unsigned["id"]
        with lock:
            own = issued.setdefault(principal.tenant, {})
            if credential_id in own:
                raise Problem(409, "Conflict", f"this tenant already issued a credential with id {credential_id!r}",
                              "credential-exists")
            for _ in range(ISSUE_ATTEMPTS):
                try:
                    signed = issuer.issue(unsigned, created=body.options.created)
                except CredentialError as exc:
                    raise _invalid(str(exc)) from None
                index = int(status_entries(signed)[0]["statusListIndex"])
                try:
                    if store is not None:  # durable before it is handed out
                        store.add(principal.tenant, credential_id, index)
                    break
                except IndexTaken:  # another process holds it: keep it marked as held, sign with another
                    try:  # and learn every index the other processes took, so the next draw is a free one
                        for held in store.indexes(principal.tenant):
                            registry.adopt(held)
                    except Exception as exc:
                        raise _store_unavailable(exc) from None
                    continue
                except KeyError:  # another process issued this id for the tenant meanwhile
                    registry.release(index)
                    raise Problem(409, "Conflict", f"this tenant already issued a credential with id "
                                  f"{credential_id!r}", "credential-exists") from None
                except Exception as exc:
                    # The record may have committed with only its answer lost: read it back. Recorded under this
                    # index, the credential is issued and handed out (a retry would answer credential-exists for
                    # a credential nobody received); absent, nothing was changed.
                    try:
                        found = store.get(principal.tenant, credential_id)
                    except Exception:
                        # 500, not 503: a 503 of the service says nothing was changed, and clients resend on it
                        raise Problem(500, "Internal Server Error", f"the issuer's status store did not confirm "
                                      f"the record ({type(exc).__name__}) and cannot be read back: the credential "
                                      "may have been recorded (if issuing it again answers credential-exists, it "
                                      "was: revoke that id and issue under a new one)",
                                      "status-store-unconfirmed") from None
                    if found is not None and found.index == index:
                        break
                    registry.release(index)
                    raise _store_unavailable(exc) from None
            else:
                raise Problem(503, "Service Unavailable", "no free status-list index could be recorded; try again",
                              "status-store-conflict")
            own[credential_id] = index
        return IssueOut(verifiableCredential=signed)

    @app.post("/credentials/verify", response_model=VerifyOut, tags=["credentials"])
    def verify(body: VerifyIn, principal: Principal = Depends(reader)):
        credential = body.verifiableCredential
        _check_document(credential)
        if not is_unicode(credential):  # like any other malformed credential: not verified, and why
            return VerifyOut(verified=False, checks=["structure"], warnings=[], errors=[NOT_UNICODE], revoked=False,
                             suspended=False, status=[])
        outage: list[Problem] = []

        def fetch_or_note_outage(url: str) -> dict:
            try:
                return fetch(url)
            except Problem as problem:  # our own store is down: no verdict, a 503 (resent), not "not verified"
                outage.append(problem)
                raise

        result = verify_credential(credential, fetch_status_list=fetch_or_note_outage)
        if outage:
            raise outage[0]
        method = result.proof.verification_method if result.proof is not None else None
        checks = ["structure", "proof", "issuer", "validity"] + (["status"] if status_entries(credential) else [])
        return VerifyOut(
            verified=result.verified, checks=checks, warnings=[], errors=list(result.errors),
            revoked=result.revoked, suspended=result.suspended,
            status=[StatusCheckOut(statusPurpose=c.purpose, statusListIndex=c.index,
                                   statusListCredential=c.status_list_credential, set=c.is_set)
                    for c in result.status],
            issuer=issuer_id(credential), verificationMethod=method.id if method is not None else None)

    @app.post("/credentials/status", response_model=UpdateStatusOut, tags=["credentials"])
    def update_status(body: UpdateStatusIn, principal: Principal = Depends(writer)):
        registry = issuer_for(principal.tenant).registry
        with lock:
            if store is not None:  # start from the stored status: another process may have issued or changed it
                if not is_unicode(body.credentialId):
                    raise _unknown_credential(body.credentialId)  # never issued: issue refuses such text
                try:
                    stored = store.get(principal.tenant, body.credentialId)
                except Exception as exc:
                    raise _store_unavailable(exc) from None
                if stored is None:
                    raise _unknown_credential(body.credentialId)
                index, revoked, suspended = stored.index, stored.revoked, stored.suspended
                registry.adopt(index)
                issued.setdefault(principal.tenant, {})[body.credentialId] = index
            else:
                index = issued.get(principal.tenant, {}).get(body.credentialId)
                if index is None:
                    raise _unknown_credential(body.credentialId)
                revoked, suspended = registry.is_set(index, REVOCATION), registry.is_set(index, SUSPENSION)
            for entry in body.credentialStatus:  # all-or-nothing: work out the end state, then apply it
                if entry.status == "revoked":
                    revoked = True
                elif entry.status == "suspended":
                    suspended = True
                elif revoked:
                    raise Problem(409, "Conflict", "the credential is revoked: revocation is permanent",
                                  "credential-revoked")
                else:
                    suspended = False
            if store is not None:  # durable first: a change the store did not take is not made
                try:
                    store.set_status(principal.tenant, body.credentialId, revoked, suspended)
                except Exception as exc:
                    raise _store_unavailable(exc) from None
            if revoked:
                registry.revoke(index)
            if suspended:
                registry.suspend(index)
            else:
                registry.unsuspend(index)
        return UpdateStatusOut(credentialId=body.credentialId, revoked=revoked, suspended=suspended,
                               status="revoked" if revoked else "suspended" if suspended else "active")

    @app.get("/status-lists/{purpose}", response_model=dict[str, Any], tags=["status lists"])
    def own_status_list(purpose: Purpose, principal: Principal = Depends(reader)):
        """The caller's tenant's signed BitstringStatusListCredential for ``purpose`` (its ``id`` is the URL the
        tenant's credentials carry)."""
        return list_credential(issuer_for(principal.tenant), purpose)

    @app.get("/status-lists/{issuer_key}/{purpose}", response_model=dict[str, Any], tags=["status lists"])
    def status_list(issuer_key: Annotated[str, Path(pattern=r"^z[1-9A-HJ-NP-Za-km-z]{1,64}$")], purpose: Purpose,
                    principal: Principal = Depends(reader)):
        """The signed BitstringStatusListCredential ``purpose`` of the issuer whose public Multikey is
        ``issuer_key``: the URL its credentials' status entries carry, readable by any verifier."""
        own = issuer_with_key(issuer_key)
        if own is None:
            raise Problem(404, "Not Found", "no status list is published under this issuer key", "unknown-status-list")
        return list_credential(own, purpose)

    return app


__all__ = ["create_credentials_app"]
