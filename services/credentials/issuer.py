"""Issue and verify W3C Verifiable Credentials (VC Data Model 2.0) secured with ``eddsa-rdfc-2022``.

Pure: no clock is read unless the caller leaves ``now``/``created`` out, and status
lists are obtained through a fetcher the caller supplies (``StatusRegistry.fetch``
in process, an HTTP client elsewhere).
"""

from __future__ import annotations

import copy
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from .data_integrity import (
    ASSERTION_METHOD,
    ProofVerification,
    VerificationMethodResolver,
    add_proof,
    verify_proof,
)
from .did_key import Ed25519KeyPair, resolve_verification_method
from .document_loader import CREDENTIALS_V2_URL, DEFAULT_LOADER, BundledContextLoader
from .errors import CredentialError, InvalidCredentialError
from .rdfc import compacted_form_problems
from .status_list import (
    REVOCATION,
    SUSPENSION,
    StatusCheck,
    StatusListFetcher,
    StatusRegistry,
    check_status,
    status_entries,
)
from .timestamps import parse_timestamp, utc_now

VERIFIABLE_CREDENTIAL = "VerifiableCredential"
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+\-.]*:[^\s]+$")


def _as_list(value) -> list:
    return list(value) if isinstance(value, list) else [value]


def issuer_id(credential: Mapping) -> str | None:
    """The issuer URL, whether ``issuer`` is a string or an object with ``id``."""
    issuer = credential.get("issuer")
    if isinstance(issuer, Mapping):
        issuer = issuer.get("id")
    return issuer if isinstance(issuer, str) else None


def credential_problems(credential: Mapping) -> list[str]:
    """Every VC Data Model 2.0 rule the credential breaks (empty when it is well formed)."""
    if not isinstance(credential, Mapping):
        return ["a credential is a JSON object"]
    problems = compacted_form_problems(credential)
    contexts = _as_list(credential.get("@context"))
    if not contexts or contexts[0] != CREDENTIALS_V2_URL:
        problems.append(f"@context must start with {CREDENTIALS_V2_URL}")
    types = _as_list(credential.get("type"))
    if VERIFIABLE_CREDENTIAL not in types or not all(isinstance(t, str) for t in types):
        problems.append(f"type must include {VERIFIABLE_CREDENTIAL!r}")
    if "id" in credential and not (isinstance(credential["id"], str) and _URL.match(credential["id"])):
        problems.append("id must be a URL")
    issuer = issuer_id(credential)
    if issuer is None or not _URL.match(issuer):
        problems.append("issuer must be a URL or an object whose id is a URL")
    subjects = credential.get("credentialSubject")
    if subjects is None or subjects == []:
        problems.append("credentialSubject is required")
    elif not all(isinstance(s, Mapping) and s for s in _as_list(subjects)):
        problems.append("credentialSubject must be a non-empty object (or a list of them)")
    moments = {}
    for name in ("validFrom", "validUntil"):
        if name in credential:
            try:
                moments[name] = parse_timestamp(credential[name], name)
            except CredentialError as exc:
                problems.append(str(exc))
    if len(moments) == 2 and moments["validUntil"] < moments["validFrom"]:
        problems.append("validUntil is before validFrom")
    entries = status_entries(credential)
    for entry in entries:
        if not isinstance(entry, Mapping) or not isinstance(entry.get("type"), str):
            problems.append("each credentialStatus entry must be an object with a type")
    problems.extend(status_entry_problems(entries))
    return problems


def status_entry_problems(entries: list) -> list[str]:
    """More than one ``credentialStatus`` entry for a ``statusPurpose`` (each would be checked against its list:
    hundreds of entries cost hundreds of list verifications, and two answers for one purpose mean nothing)."""
    purposes = Counter(repr(entry.get("statusPurpose")) for entry in entries if isinstance(entry, Mapping))
    return [f"credentialStatus has {count} entries with statusPurpose {purpose[:60]}; at most one per "
            "statusPurpose is accepted" for purpose, count in sorted(purposes.items()) if count > 1]


def validate_credential(credential: Mapping) -> None:
    """Raise ``InvalidCredentialError`` listing every problem of the credential."""
    problems = credential_problems(credential)
    if problems:
        raise InvalidCredentialError(problems)


def issue_credential(
    credential: Mapping,
    key_pair: Ed25519KeyPair,
    *,
    created: str | datetime | None = None,
    proof_purpose: str = ASSERTION_METHOD,
    loader: BundledContextLoader = DEFAULT_LOADER,
) -> dict:
    """Validate ``credential`` and return a copy secured with an ``eddsa-rdfc-2022`` proof."""
    validate_credential(credential)
    return add_proof(credential, key_pair, created=created, proof_purpose=proof_purpose, loader=loader)


class Issuer:
    """Issues credentials under one key; with a ``StatusRegistry`` every credential gets status entries."""

    def __init__(
        self,
        key_pair: Ed25519KeyPair,
        *,
        issuer: str | None = None,
        status_registry: StatusRegistry | None = None,
        loader: BundledContextLoader = DEFAULT_LOADER,
    ):
        self.key_pair = key_pair
        self.id = issuer or key_pair.did
        self.status_registry = status_registry
        self.loader = loader

    def issue(self, credential: Mapping, *, created: str | datetime | None = None) -> dict:
        """Fill ``issuer`` (which, if given, must be this issuer) and status entries, then sign."""
        unsigned = copy.deepcopy(dict(credential))
        unsigned.setdefault("issuer", self.id)
        if issuer_id(unsigned) != self.id:
            raise InvalidCredentialError([f"issuer {issuer_id(unsigned)!r} is not this issuer ({self.id})"])
        if self.status_registry is not None:
            if "credentialStatus" in unsigned:
                raise InvalidCredentialError(["credentialStatus is assigned by the issuer's status registry"])
            index = self.status_registry.allocate()
            unsigned["credentialStatus"] = self.status_registry.entries(index)
            try:
                return issue_credential(unsigned, self.key_pair, created=created, loader=self.loader)
            except BaseException:
                # No credential carries the index: give it back, or every failed issue shrinks the list.
                self.status_registry.release(index)
                raise
        return issue_credential(unsigned, self.key_pair, created=created, loader=self.loader)


@dataclass(frozen=True)
class CredentialVerification:
    """Outcome of ``verify_credential``; truthy only when verified."""

    verified: bool
    errors: tuple[str, ...] = ()
    proof: ProofVerification | None = None
    status: tuple[StatusCheck, ...] = ()

    def __bool__(self) -> bool:
        return self.verified

    def _status(self, purpose: str) -> bool:
        return any(check.purpose == purpose and check.is_set for check in self.status)

    @property
    def revoked(self) -> bool:
        return self._status(REVOCATION)

    @property
    def suspended(self) -> bool:
        return self._status(SUSPENSION)


def verify_credential(
    credential: Mapping,
    *,
    now: datetime | None = None,
    fetch_status_list: StatusListFetcher | None = None,
    check_status_entries: bool = True,
    check_issuer_binding: bool = True,
    status_issuer_must_match: bool = True,
    resolver: VerificationMethodResolver = resolve_verification_method,
    loader: BundledContextLoader = DEFAULT_LOADER,
) -> CredentialVerification:
    """Verify structure, proof, issuer binding, validity window and status.

    - ``check_issuer_binding``: the proof's verification method must be controlled by the issuer
      (turn off only for issuers whose keys live outside their identifier, like the W3C example).
    - status: every ``credentialStatus`` entry is checked through ``fetch_status_list``; if there are
      entries and no fetcher, verification fails closed. A set revocation or suspension bit fails it.
    """
    pinned = now is not None
    now = now or utc_now()
    if not isinstance(credential, Mapping):
        return CredentialVerification(False, ("a credential is a JSON object",))
    errors = credential_problems(credential)

    proof = verify_proof(credential, resolver=resolver, now=now, loader=loader)
    errors.extend(f"proof: {e}" for e in proof.errors)
    issuer = issuer_id(credential)
    if proof.verified and check_issuer_binding and proof.verification_method.controller != issuer:
        errors.append(
            f"proof: verification method {proof.verification_method.id} is not controlled by the issuer {issuer!r}"
        )

    for name, late in (("validFrom", False), ("validUntil", True)):
        if name in credential:
            try:
                moment = parse_timestamp(credential[name], name)
            except CredentialError:
                continue  # already reported by credential_problems
            if late and now > moment:
                errors.append(f"credential expired: validUntil {credential[name]}")
            if not late and now < moment:
                errors.append(f"credential not yet valid: validFrom {credential[name]}")

    checks: list[StatusCheck] = []
    entries = status_entries(credential) if check_status_entries else []
    if entries and fetch_status_list is None:
        errors.append("status: the credential has credentialStatus but no status list fetcher was given")
        entries = []
    if status_entry_problems(entries):  # already reported by credential_problems: fetch nothing for them
        entries = []

    # One verification fetches and verifies each status list once, however many entries point at it.
    fetched: dict[str, tuple[Mapping | None, Exception | None]] = {}
    judged: dict[int, tuple[Mapping, list[str]]] = {}

    def fetch_once(url: str) -> Mapping:
        if url not in fetched:
            try:
                fetched[url] = (fetch_status_list(url), None)
            except Exception as exc:
                fetched[url] = (None, exc)
        list_credential, failure = fetched[url]
        if failure is not None:
            raise failure
        return list_credential

    def verify_list_credential(list_credential: Mapping) -> list[str]:
        known = judged.get(id(list_credential))
        if known is not None and known[0] is list_credential:
            return list(known[1])
        # A status list is fetched (and may be signed, validFrom = its signing time) after this
        # verification read the clock: judge it at the time it arrived unless the caller pinned "now".
        problems = list(
            verify_credential(
                list_credential,
                now=now if pinned else utc_now(),
                check_status_entries=False,
                check_issuer_binding=check_issuer_binding,
                resolver=resolver,
                loader=loader,
            ).errors
        )
        judged[id(list_credential)] = (list_credential, problems)  # the object is held: its id stays its own
        return list(problems)

    for entry in entries:
        try:
            check = check_status(
                entry,
                fetch_once,
                verify_list_credential,
                expected_issuer=issuer if status_issuer_must_match else None,
            )
        except CredentialError as exc:
            errors.append(f"status: {exc}")
            continue
        except Exception as exc:  # any other failure of one entry's check: not verified, and why (never a crash)
            errors.append(f"status: the entry could not be checked ({type(exc).__name__})")
            continue
        checks.append(check)
        if check.is_set:
            state = "revoked" if check.purpose == REVOCATION else "suspended"
            errors.append(f"status: credential is {state} ({check.status_list_credential} index {check.index})")

    return CredentialVerification(not errors, tuple(errors), proof, tuple(checks))
