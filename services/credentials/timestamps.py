"""XML Schema ``dateTimeStamp`` values as the VC and Data Integrity specs use them."""

from __future__ import annotations

import re
from datetime import datetime, timezone

from .errors import CredentialError

_DATETIME_STAMP = re.compile(
    r"(?P<date>[0-9]{4}-[0-9]{2}-[0-9]{2})T(?P<time>[0-9]{2}:[0-9]{2}:[0-9]{2})(?:\.(?P<frac>[0-9]+))?(?P<tz>Z|[+-][0-9]{2}:[0-9]{2})"
)


def format_timestamp(moment: datetime) -> str:
    """UTC, whole seconds, ``Z`` suffix: ``2023-02-24T23:36:38Z``."""
    if moment.tzinfo is None:
        raise CredentialError("timestamps must be timezone-aware")
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_timestamp(value: object, field: str = "timestamp") -> datetime:
    """Parse an ``xsd:dateTimeStamp`` (timezone required); raises ``CredentialError`` naming ``field``."""
    match = _DATETIME_STAMP.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise CredentialError(f"{field} must be an XML Schema dateTimeStamp with a timezone, got {value!r}")
    frac = (match["frac"] or "")[:6].ljust(6, "0")
    tz = "+00:00" if match["tz"] == "Z" else match["tz"]
    try:
        return datetime.fromisoformat(f"{match['date']}T{match['time']}.{frac}{tz}")
    except ValueError as exc:
        raise CredentialError(f"{field} is not a valid date and time: {value!r} ({exc})") from None


def utc_now() -> datetime:
    return datetime.now(timezone.utc)
