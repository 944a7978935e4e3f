import json
from pathlib import Path

import pyld
import pytest
from pyld import jsonld

from services.credentials import (
    BUNDLED_CONTEXTS,
    CREDENTIALS_EXAMPLES_V2_URL,
    CREDENTIALS_V2_URL,
    BundledContextLoader,
    ContextNotAllowedError,
    install_document_loader,
)
from services.credentials.document_loader import CONTEXTS_DIR, DID_V1_URL


def test_serves_only_bundled_contexts():
    loader = BundledContextLoader()
    assert loader.urls == {CREDENTIALS_V2_URL, CREDENTIALS_EXAMPLES_V2_URL, DID_V1_URL}
    remote = loader(CREDENTIALS_EXAMPLES_V2_URL, {})
    assert remote["document"] == {"@context": {"@vocab": "https://www.w3.org/ns/credentials/examples#"}}
    remote["document"]["@context"]["@vocab"] = "mutated"
    assert loader(CREDENTIALS_EXAMPLES_V2_URL, {})["document"]["@context"]["@vocab"].startswith("https://")
    for url in ("https://www.w3.org/ns/credentials/v2/", "http://www.w3.org/ns/credentials/v2", "https://x.example/"):
        with pytest.raises(ContextNotAllowedError):
            loader(url, {})


def test_extra_contexts_are_in_memory_only():
    loader = BundledContextLoader(extra={"https://platformq.example/ctx/v1": {"@context": {"q": "urn:q:"}}})
    assert loader("https://platformq.example/ctx/v1", {})["document"] == {"@context": {"q": "urn:q:"}}


def test_bundled_copies_match_pyld_frozen_contexts():
    frozen = Path(pyld.__file__).parent / "documentloader" / "frozen" / "bundled"
    for url, name in BUNDLED_CONTEXTS.items():
        if url == CREDENTIALS_EXAMPLES_V2_URL:
            continue  # not shipped by pyld; written from the VC specification
        ours = json.loads((CONTEXTS_DIR / name).read_text())
        assert ours == json.loads((frozen / name).read_text()), url


def test_install_makes_pyld_fail_closed():
    previous = jsonld.get_document_loader()
    try:
        install_document_loader()
        doc = {"@context": "https://unknown.example/ctx", "@id": "urn:a", "urn:p": "v"}
        with pytest.raises(jsonld.JsonLdError) as info:
            jsonld.expand(doc)
        cause = info.value
        while cause is not None and not isinstance(cause, ContextNotAllowedError):
            cause = cause.__cause__
        assert isinstance(cause, ContextNotAllowedError)
    finally:
        jsonld.set_document_loader(previous)


def test_package_imports_no_dagster_or_http_framework():
    import subprocess
    import sys

    code = (
        "import sys, services.credentials; "
        "print(sorted(m for m in ('dagster', 'fastapi', 'starlette', 'httpx') if m in sys.modules))"
    )
    root = Path(__file__).resolve().parents[3]
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_a_relative_or_unknown_context_anywhere_fails_closed_before_pyld():
    """pyld answers a relative context URL with a plain ValueError (base is None): the canonicaliser refuses every
    context that is not the loader's, at the top or nested, as ContextNotAllowedError (review item 1)."""
    from services.credentials.rdfc import canonicalize

    subject = {"id": "did:example:1"}
    for doc in (
        {"@context": [CREDENTIALS_V2_URL, "x"], "type": ["VerifiableCredential"], "credentialSubject": subject},
        {"@context": "relative", "type": ["VerifiableCredential"]},
        {"@context": [CREDENTIALS_V2_URL], "type": ["VerifiableCredential"],
         "credentialSubject": {**subject, "n": {"@context": "x"}}},
        {"@context": [CREDENTIALS_V2_URL], "type": ["VerifiableCredential"],
         "credentialSubject": [subject, {"id": "did:example:2", "@context": ["https://other.example/ctx"]}]},
    ):
        with pytest.raises(ContextNotAllowedError):
            canonicalize(doc)
