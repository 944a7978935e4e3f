"""Text a service can hash and send back.

JSON escapes can carry lone surrogates ("\\ud800"): valid Python text, but it has no UTF-8 bytes, so it can be
neither hashed for a proof nor echoed in an answer. Every service checks its input with the one function here.
"""

from __future__ import annotations

import json
from typing import Any


def is_unicode(value: Any) -> bool:
    """Whether every string in ``value`` (a string, or a JSON document: keys and values, nested) is valid Unicode."""
    try:
        (value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def unicode_text(text: str) -> str:
    """A pydantic ``AfterValidator``: the text itself, or a ValueError that says why it is refused."""
    if not is_unicode(text):
        raise ValueError("text must be valid Unicode (no lone surrogates)")
    return text
