"""Errors raised by the credentials domain.

Every error is a ``CredentialError`` (a ``ValueError``), so a caller that only
wants "this credential is unusable" catches one type.
"""

from __future__ import annotations


class CredentialError(ValueError):
    """Base class of every error in ``services.credentials``."""


class EncodingError(CredentialError):
    """A multibase, multicodec or base58 value is malformed."""


class DidKeyError(CredentialError):
    """A did:key identifier, verification method or Multikey value is invalid."""


class ContextNotAllowedError(CredentialError):
    """A JSON-LD ``@context`` URL is not one of the bundled contexts.

    Raised instead of fetching anything: canonicalisation never touches the network.
    """

    def __init__(self, url: str):
        self.url = url
        super().__init__(
            f"JSON-LD context {url!r} is not bundled with services.credentials; refusing to load it "
            "(contexts are never fetched over the network)"
        )


class CanonicalizationError(CredentialError):
    """The document cannot be turned into RDF without losing data, or is not valid JSON-LD."""


class ProofError(CredentialError):
    """A Data Integrity proof cannot be created from the given options."""


class InvalidCredentialError(CredentialError):
    """A credential does not satisfy the VC Data Model 2.0 rules we enforce."""

    def __init__(self, problems: list[str] | tuple[str, ...]):
        self.problems = tuple(problems)
        super().__init__("invalid credential: " + "; ".join(self.problems))


class StatusListError(CredentialError):
    """A Bitstring Status List, entry or index is invalid."""
