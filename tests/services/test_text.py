"""The one check every service applies to text it must hash or send back."""

import pytest
from pydantic import AfterValidator, BaseModel, ValidationError
from typing import Annotated

from services.common.text import is_unicode, unicode_text


@pytest.mark.parametrize("value, expected", [
    ("plain", True),
    ("caf\u00e9 \U0001f600", True),  # a pair written as one code point is fine
    ("\ud800", False),
    ({"a": ["ok", {"deep": "x\udfff"}]}, False),  # nested value
    ({"\udc00key": 1}, False),  # a key
    ({"a": [1, 2.5, None, True, "ok"]}, True),
])
def test_is_unicode(value, expected):
    assert is_unicode(value) is expected


def test_unicode_text_as_a_field_validator():
    class Body(BaseModel):
        text: Annotated[str, AfterValidator(unicode_text)]

    assert Body(text="ok").text == "ok"
    with pytest.raises(ValidationError, match="no lone surrogates"):
        Body(text="a\ud800b")
