"""Bitstring Status List v1.0 (W3C): revocation and suspension of credentials.

A status list is a bitstring of at least 131072 bits (16 KiB), index 0 being the
left-most (most significant) bit of the first byte. It is published inside a
``BitstringStatusListCredential`` as ``encodedList`` = multibase base64url (prefix
'u', no padding) of the GZIP-compressed bitstring. A credential points at one bit
per purpose with a ``BitstringStatusListEntry`` in ``credentialStatus``.

``StatusList`` is the bitstring; ``StatusRegistry`` is an in-memory issuer-side
registry (allocation, revoke/suspend/unsuspend, signed status list credentials);
``check_status`` is the verifier-side validation algorithm (spec section 3.2).
Persistence and HTTP serving belong to the callers.
"""

from __future__ import annotations

import gzip
import secrets
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime

from .data_integrity import add_proof
from .did_key import Ed25519KeyPair
from .document_loader import CREDENTIALS_V2_URL
from .errors import CredentialError, StatusListError
from .multibase import multibase_base64url_decode, multibase_base64url_encode
from .timestamps import format_timestamp, utc_now

MIN_BITSTRING_LENGTH = 131072  # bits: 16 KiB, the spec's herd-privacy minimum
REVOCATION = "revocation"
SUSPENSION = "suspension"
SUPPORTED_PURPOSES = (REVOCATION, SUSPENSION)
ENTRY_TYPE = "BitstringStatusListEntry"
LIST_TYPE = "BitstringStatusList"
LIST_CREDENTIAL_TYPE = "BitstringStatusListCredential"
# Upper bound on a decompressed list we accept from a status list credential (guards gzip bombs).
MAX_BITSTRING_BYTES = 16 * 1024 * 1024


def _check_purpose(purpose: str) -> str:
    if purpose not in SUPPORTED_PURPOSES:
        raise StatusListError(f"statusPurpose {purpose!r} is not supported (use one of {SUPPORTED_PURPOSES})")
    return purpose


class StatusList:
    """A bitstring of ``length`` one-bit statuses for one purpose."""

    __slots__ = ("purpose", "length", "_bits")

    def __init__(self, purpose: str, length: int = MIN_BITSTRING_LENGTH, *, bits: bytes | None = None):
        self.purpose = _check_purpose(purpose)
        if length < MIN_BITSTRING_LENGTH or length % 8:
            raise StatusListError(f"a status list has a multiple of 8 bits, at least {MIN_BITSTRING_LENGTH}")
        self.length = length
        if bits is None:
            self._bits = bytearray(length // 8)
        elif len(bits) != length // 8:
            raise StatusListError(f"bitstring has {len(bits) * 8} bits, expected {length}")
        else:
            self._bits = bytearray(bits)

    def _position(self, index: int) -> tuple[int, int]:
        if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < self.length:
            raise StatusListError(f"status list index {index!r} is outside 0..{self.length - 1}")
        return index >> 3, 0x80 >> (index & 7)

    def get(self, index: int) -> bool:
        byte, mask = self._position(index)
        return bool(self._bits[byte] & mask)

    def set(self, index: int) -> None:
        byte, mask = self._position(index)
        self._bits[byte] |= mask

    def clear(self, index: int) -> None:
        byte, mask = self._position(index)
        self._bits[byte] &= ~mask & 0xFF

    def to_bytes(self) -> bytes:
        return bytes(self._bits)

    def encode(self) -> str:
        """``encodedList``: 'u' + base64url(gzip(bitstring)); gzip mtime 0 keeps it deterministic."""
        return multibase_base64url_encode(gzip.compress(bytes(self._bits), mtime=0))

    @classmethod
    def decode(cls, encoded_list: str, purpose: str) -> "StatusList":
        """Expand an ``encodedList``; raises ``StatusListError`` if malformed or shorter than 16 KiB."""
        try:
            compressed = multibase_base64url_decode(encoded_list)
        except CredentialError as exc:
            raise StatusListError(f"encodedList: {exc}") from None
        inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)  # gzip container only
        try:
            bits = inflater.decompress(compressed, MAX_BITSTRING_BYTES + 1)
        except zlib.error as exc:
            raise StatusListError(f"encodedList is not GZIP data: {exc}") from None
        if len(bits) > MAX_BITSTRING_BYTES or inflater.unconsumed_tail:
            raise StatusListError("encodedList expands beyond the accepted maximum size")
        if not inflater.eof:
            raise StatusListError("encodedList holds truncated GZIP data")
        if len(bits) * 8 < MIN_BITSTRING_LENGTH:
            raise StatusListError(
                f"STATUS_LIST_LENGTH_ERROR: list has {len(bits) * 8} bits, fewer than {MIN_BITSTRING_LENGTH}"
            )
        return cls(purpose, len(bits) * 8, bits=bits)


def status_entry(status_list_credential: str, index: int, purpose: str) -> dict:
    """A ``BitstringStatusListEntry`` (``statusListIndex`` is a decimal string, per spec)."""
    return {
        "id": f"{status_list_credential}#{index}",
        "type": ENTRY_TYPE,
        "statusPurpose": _check_purpose(purpose),
        "statusListIndex": str(index),
        "statusListCredential": status_list_credential,
    }


def status_list_credential(
    credential_id: str,
    issuer: str,
    status_list: StatusList,
    *,
    valid_from: str | datetime | None = None,
    valid_until: str | datetime | None = None,
) -> dict:
    """An unsigned ``BitstringStatusListCredential`` publishing ``status_list``."""
    def stamp(value):
        return format_timestamp(value) if isinstance(value, datetime) else value

    credential = {
        "@context": [CREDENTIALS_V2_URL],
        "id": credential_id,
        "type": ["VerifiableCredential", LIST_CREDENTIAL_TYPE],
        "issuer": issuer,
        "validFrom": stamp(valid_from) if valid_from is not None else format_timestamp(utc_now()),
        "credentialSubject": {
            "id": f"{credential_id}#list",
            "type": LIST_TYPE,
            "statusPurpose": status_list.purpose,
            "encodedList": status_list.encode(),
        },
    }
    if valid_until is not None:
        credential["validUntil"] = stamp(valid_until)
    return credential


@dataclass(frozen=True)
class StatusCheck:
    """The status one ``credentialStatus`` entry points at: ``is_set`` True = revoked / suspended."""

    purpose: str
    index: int
    status_list_credential: str
    is_set: bool


StatusListFetcher = Callable[[str], Mapping]
# verifies a fetched status list credential; returns its problems ([] when it verifies)
StatusCredentialVerifier = Callable[[Mapping], list[str]]


def status_entries(credential: Mapping) -> list[Mapping]:
    status = credential.get("credentialStatus")
    if status is None:
        return []
    return list(status) if isinstance(status, list) else [status]


MAX_INDEX_DIGITS = 10  # far beyond any list (a 16 MiB list has 134217728 bits); int() of 4300+ digits raises


def _parse_index(value) -> int:
    if not isinstance(value, str) or not value.isascii() or not value.isdigit():
        raise StatusListError(f"statusListIndex must be a string of decimal digits, got {repr(value)[:60]}")
    if len(value) > MAX_INDEX_DIGITS:
        raise StatusListError(f"statusListIndex has {len(value)} digits; at most {MAX_INDEX_DIGITS} digits "
                              "are accepted")
    return int(value)


def check_status(
    entry: Mapping,
    fetch: StatusListFetcher,
    verify_status_credential: StatusCredentialVerifier,
    *,
    expected_issuer: str | None = None,
) -> StatusCheck:
    """Validate one ``BitstringStatusListEntry`` (spec 3.2); raises ``StatusListError`` on any problem."""
    if not isinstance(entry, Mapping) or entry.get("type") != ENTRY_TYPE:
        raise StatusListError(f"credentialStatus entry type must be {ENTRY_TYPE!r}")
    purpose = _check_purpose(entry.get("statusPurpose"))
    index = _parse_index(entry.get("statusListIndex"))
    if entry.get("statusSize", 1) != 1:
        raise StatusListError("only statusSize 1 is supported")
    url = entry.get("statusListCredential")
    if not isinstance(url, str):
        raise StatusListError("credentialStatus entry has no statusListCredential URL")
    try:
        list_credential = fetch(url)
    except CredentialError:
        raise
    except Exception as exc:  # the fetcher is the caller's I/O: any failure means "status unknown"
        raise StatusListError(f"status list credential {url} could not be retrieved: {exc}") from exc
    if not isinstance(list_credential, Mapping):
        raise StatusListError(f"status list credential {url} is not a JSON object")
    if list_credential.get("id") not in (None, url):
        raise StatusListError(f"status list credential id {list_credential.get('id')!r} is not {url!r}")
    types = list_credential.get("type") or ()
    if LIST_CREDENTIAL_TYPE not in types:
        raise StatusListError(f"{url} is not a {LIST_CREDENTIAL_TYPE}")
    problems = verify_status_credential(list_credential)
    if problems:
        raise StatusListError(f"STATUS_VERIFICATION_ERROR: status list credential {url}: " + "; ".join(problems))
    if expected_issuer is not None:
        issuer = list_credential.get("issuer")
        issuer_id = issuer.get("id") if isinstance(issuer, Mapping) else issuer
        if issuer_id != expected_issuer:
            raise StatusListError(f"status list {url} was issued by {issuer_id!r}, not by {expected_issuer!r}")
    subject = list_credential.get("credentialSubject")
    if not isinstance(subject, Mapping) or subject.get("type") != LIST_TYPE:
        raise StatusListError(f"{url} has no {LIST_TYPE} subject")
    list_purposes = subject.get("statusPurpose")
    list_purposes = list_purposes if isinstance(list_purposes, list) else [list_purposes]
    if purpose not in list_purposes:
        raise StatusListError(f"STATUS_VERIFICATION_ERROR: {url} is a {list_purposes} list, entry wants {purpose!r}")
    status_list = StatusList.decode(subject.get("encodedList"), purpose)
    if index >= status_list.length:
        raise StatusListError(f"RANGE_ERROR: statusListIndex {index} is beyond the list's {status_list.length} bits")
    return StatusCheck(purpose, index, url, status_list.get(index))


class StatusRegistry:
    """Issuer-side status lists, one per purpose, sharing one index per credential.

    Lists are published at ``{base_url}/{purpose}``. Indexes are drawn at random
    among the unused ones (the spec's herd privacy); pass ``rng`` (anything with
    ``randrange``) for reproducible allocation in tests. ``clock`` dates the signed
    status list credentials (``validFrom`` and proof ``created``).
    """

    def __init__(
        self,
        base_url: str,
        key_pair: Ed25519KeyPair,
        *,
        issuer: str | None = None,
        purposes: tuple[str, ...] = SUPPORTED_PURPOSES,
        length: int = MIN_BITSTRING_LENGTH,
        rng=None,
        clock: Callable[[], datetime] = utc_now,
    ):
        self.base_url = base_url.rstrip("/")
        self.key_pair = key_pair
        self.issuer = issuer or key_pair.did
        self.lists = {purpose: StatusList(purpose, length) for purpose in map(_check_purpose, purposes)}
        self.length = length
        self._allocated: set[int] = set()
        self._rng = rng or secrets.SystemRandom()
        self._clock = clock

    def list_url(self, purpose: str) -> str:
        return f"{self.base_url}/{_check_purpose(purpose)}"

    @property
    def allocated(self) -> frozenset[int]:
        return frozenset(self._allocated)

    def allocate(self) -> int:
        """A fresh, never-used index."""
        if len(self._allocated) >= self.length:
            raise StatusListError("status list is full")
        while True:
            index = self._rng.randrange(self.length)
            if index not in self._allocated:
                self._allocated.add(index)
                return index

    def adopt(self, index: int) -> None:
        """Mark ``index`` as held (a credential issued earlier, restored from the issuer's store)."""
        if not 0 <= index < self.length:
            raise StatusListError(f"index {index} is outside the status list (length {self.length})")
        self._allocated.add(index)

    def release(self, index: int) -> None:
        """Give back an index no issued credential carries (its issuance failed after allocation)."""
        if any(status_list.get(index) for status_list in self.lists.values()):
            # A set bit means a credential with this index was revoked or suspended: reusing it would
            # hand that status to the next credential.
            raise StatusListError(f"index {index} has a status set and cannot be released")
        self._allocated.discard(index)

    def entries(self, index: int) -> list[dict]:
        """``credentialStatus`` entries (one per purpose) for an allocated index."""
        if index not in self._allocated:
            raise StatusListError(f"index {index} was not allocated by this registry")
        return [status_entry(self.list_url(purpose), index, purpose) for purpose in self.lists]

    def allocate_entries(self) -> list[dict]:
        return self.entries(self.allocate())

    def _index_of(self, credential_or_index: Mapping | int, purpose: str) -> int:
        if isinstance(credential_or_index, int):
            index = credential_or_index
        else:
            url = self.list_url(purpose)
            found = [e for e in status_entries(credential_or_index) if e.get("statusListCredential") == url]
            if not found:
                raise StatusListError(f"credential has no {purpose} entry in {url}")
            index = _parse_index(found[0].get("statusListIndex"))
        if index not in self._allocated:
            raise StatusListError(f"index {index} was not allocated by this registry")
        return index

    def _list(self, purpose: str) -> StatusList:
        if purpose not in self.lists:
            raise StatusListError(f"this registry keeps no {purpose} list")
        return self.lists[purpose]

    def revoke(self, credential_or_index: Mapping | int) -> None:
        """Revocation is permanent: there is no un-revoke."""
        self._list(REVOCATION).set(self._index_of(credential_or_index, REVOCATION))

    def suspend(self, credential_or_index: Mapping | int) -> None:
        self._list(SUSPENSION).set(self._index_of(credential_or_index, SUSPENSION))

    def unsuspend(self, credential_or_index: Mapping | int) -> None:
        self._list(SUSPENSION).clear(self._index_of(credential_or_index, SUSPENSION))

    def is_set(self, credential_or_index: Mapping | int, purpose: str) -> bool:
        return self._list(purpose).get(self._index_of(credential_or_index, purpose))

    def status_list_credential(
        self, purpose: str, *, valid_from: str | datetime | None = None, valid_until: str | datetime | None = None,
        url: str | None = None,
    ) -> dict:
        """The current list for ``purpose`` as a signed ``BitstringStatusListCredential``; ``url`` (its id) is
        another address the list is published at (where earlier credentials point), default ``list_url``."""
        now = self._clock()
        unsigned = status_list_credential(
            url or self.list_url(purpose),
            self.issuer,
            self._list(purpose),
            valid_from=valid_from if valid_from is not None else now,
            valid_until=valid_until,
        )
        return add_proof(unsigned, self.key_pair, created=now)

    def fetch(self, url: str) -> dict:
        """A ``StatusListFetcher`` serving this registry's current lists (for in-process verification)."""
        for purpose in self.lists:
            if url == self.list_url(purpose):
                return self.status_list_credential(purpose)
        raise StatusListError(f"unknown status list {url}")
