"""RDF Dataset Canonicalization (RDFC-1.0) of JSON-LD documents, offline and in "safe mode".

pyld's ``URDNA2015`` produces the RDFC-1.0 output for these documents. Before
canonicalising we expand the document ourselves and refuse anything JSON-LD would
silently drop (an undefined term, a relative ``@id`` or ``@type``, ``@index``, ``@direction``): such data is not
covered by the RDF the signature is computed over, so it could be changed at will.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

from pyld import jsonld

from .document_loader import DEFAULT_LOADER, BundledContextLoader
from .errors import CanonicalizationError, ContextNotAllowedError, CredentialError

_TOO_LARGE = "a number is too large for RDF (larger than a double can hold)"
_ABSOLUTE_IRI = re.compile(r"^([A-Za-z][A-Za-z0-9+\-.]*|_):[^\s]*$")
MAX_EXACT_INTEGER = 2**53  # the largest integer every JSON reader and the signed form keep exactly


def _context_error(exc: BaseException) -> ContextNotAllowedError | None:
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, ContextNotAllowedError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def _check_no_relative_iris(node, path: str = "$") -> None:
    if isinstance(node, list):
        for i, item in enumerate(node):
            _check_no_relative_iris(item, f"{path}[{i}]")
        return
    if not isinstance(node, dict):
        return
    # @index (and @direction, with no rdfDirection mode) survive expansion but not the conversion to RDF:
    # unsigned data a holder could add or change after signing
    if "@index" in node:
        raise CanonicalizationError(f"@index at {path} is not part of the signed RDF data")
    if "@direction" in node:
        raise CanonicalizationError(f"@direction at {path} is not part of the signed RDF data")
    if "@value" in node:
        datatype = node.get("@type")
        if datatype is not None and datatype != "@json" and not _ABSOLUTE_IRI.match(datatype):
            raise CanonicalizationError(f"relative datatype IRI {datatype!r} at {path}")
        return
    node_id = node.get("@id")
    if node_id is not None and not _ABSOLUTE_IRI.match(node_id):
        raise CanonicalizationError(f"relative @id {node_id!r} at {path} would be dropped from the signed data")
    for type_iri in node.get("@type", ()):
        if not _ABSOLUTE_IRI.match(type_iri):
            raise CanonicalizationError(f"type {type_iri!r} at {path} is not defined by any @context")
    for key, value in node.items():
        if not key.startswith("@") or key in ("@graph", "@list", "@set", "@included", "@reverse"):
            _check_no_relative_iris(value, f"{path}.{key}")


# Keywords a compacted credential may use as keys; any other keyword, and any key that is an IRI,
# means the JSON is not in the compacted form its @context gives.
_COMPACT_KEYWORDS = frozenset({"@context", "@id", "@type", "@value", "@language", "@list", "@set"})


def compacted_form_problems(document, path: str = "$") -> list[str]:
    """Why ``document`` is not plain compacted JSON-LD (empty when it is).

    A verifier reads ``validUntil``, ``credentialStatus`` or a proof's ``expires`` by their terms,
    while the signature covers the RDF they expand to. The same RDF can be written with a full IRI
    as the key (``https://www.w3.org/2018/credentials#validUntil``), which the JSON reader would not
    see: so every key must be a term of the @context or one of a few keywords, and every number
    must be one JSON can carry (NaN and Infinity are not JSON, and the signed value would not
    survive serialisation).
    """
    problems: list[str] = []
    stack = [(document, path)]
    while stack:
        node, where = stack.pop()
        if isinstance(node, list):
            stack.extend((item, f"{where}[{i}]") for i, item in enumerate(node))
        elif isinstance(node, float) and not math.isfinite(node):
            problems.append(f"{where} is {node!r}: JSON numbers are finite")
        elif isinstance(node, float) and float(f"{node:.15e}") != node:
            # JSON-LD signs a double as 16 significant digits: a number needing 17 shares its signature with its
            # neighbours (0.1 and 0.10000000000000002 verify alike)
            problems.append(f"{where} is {node!r}, which needs more than the 16 significant digits a signature "
                            "covers: round it or send it as a string")
        elif isinstance(node, int) and not isinstance(node, bool) and abs(node) > MAX_EXACT_INTEGER:
            # past 2^53 the signed form (a double from 1e21 on, JCS in @json values) is not this exact integer, so
            # other integers verify alike; I-JSON (RFC 7493) sends such numbers as strings
            problems.append(f"{where} is an integer beyond ±2^53, which a signature does not cover exactly: send "
                            "it as a string")
        elif isinstance(node, dict):
            for key, value in node.items():
                if not isinstance(key, str) or ":" in key or (key.startswith("@") and key not in _COMPACT_KEYWORDS):
                    problems.append(f"{where} has the key {key!r}: use the term its @context defines "
                                    "(a credential must be in compacted form)")
                elif key == "@language" and "@value" not in node:
                    problems.append(f"{where} has @language outside a value object")
                elif key == "@context" and not (isinstance(value, str) or (
                        isinstance(value, list) and all(isinstance(c, str) for c in value))):
                    problems.append(f"{where}.@context must be context URLs, not inline definitions")
                elif key != "@context":
                    stack.append((value, f"{where}.{key}"))
    return sorted(problems)


def _check_contexts(document, urls: frozenset[str]) -> None:
    """Refuse every ``@context`` URL (at the top or nested at any depth) that ``urls`` does not hold, before pyld
    sees it: pyld resolves a relative one against the (absent) base and raises a plain ``ValueError``, and an
    unknown context must fail closed whatever form it takes."""
    stack = [document]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, Mapping):
            for key, value in node.items():
                if key == "@context":
                    for entry in value if isinstance(value, list) else [value]:
                        if isinstance(entry, str) and entry not in urls:
                            raise ContextNotAllowedError(entry)
                        if isinstance(entry, Mapping):
                            stack.append(entry)  # an inline context may @import or scope further URLs
                elif key == "@import" and isinstance(value, str) and value not in urls:
                    raise ContextNotAllowedError(value)
                else:
                    stack.append(value)


def expand(document: Mapping, *, loader: BundledContextLoader = DEFAULT_LOADER) -> list:
    """JSON-LD expansion with only bundled contexts; raises on data that would be dropped."""
    _check_contexts(document, loader.urls)
    dropped: list[str | None] = []
    processor = jsonld.JsonLdProcessor(on_property_dropped=dropped.append)
    try:
        expanded = processor.expand(
            dict(document),
            # base None keeps relative IRIs relative (pyld 3 would resolve them against
            # http://example.org/base/), so the check below can refuse them.
            {"base": None, "documentLoader": loader, "contextResolver": loader.context_resolver()},
        )
    except jsonld.JsonLdError as exc:
        context_error = _context_error(exc)
        if context_error is not None:
            raise ContextNotAllowedError(context_error.url) from None
        raise CanonicalizationError(f"invalid JSON-LD: {exc.args[0] if exc.args else exc}") from exc
    except OverflowError:
        raise CanonicalizationError(_TOO_LARGE) from None
    except CredentialError:
        raise
    except (ValueError, TypeError) as exc:  # pyld raises plain ones too (an invalid IRI): still invalid JSON-LD
        raise CanonicalizationError(f"invalid JSON-LD: {exc}") from None
    if dropped:
        names = ", ".join(sorted(repr(d) for d in dropped))
        raise CanonicalizationError(f"terms not defined by the @context would be dropped: {names}")
    _check_no_relative_iris(expanded)
    return expanded


def canonicalize(document: Mapping, *, loader: BundledContextLoader = DEFAULT_LOADER) -> str:
    """RDFC-1.0 canonical N-Quads of a JSON-LD document (UTF-8 text, one quad per line)."""
    expanded = expand(document, loader=loader)
    try:
        return jsonld.normalize(
            expanded,
            {
                "algorithm": "URDNA2015",
                "format": "application/n-quads",
                "documentLoader": loader,
                "contextResolver": loader.context_resolver(),
            },
        )
    except jsonld.JsonLdError as exc:
        raise CanonicalizationError(f"canonicalization failed: {exc.args[0] if exc.args else exc}") from exc
    except OverflowError:  # pyld writes every number through float()
        raise CanonicalizationError(_TOO_LARGE) from None
    except CredentialError:
        raise
    except (ValueError, TypeError) as exc:
        raise CanonicalizationError(f"canonicalization failed: {exc}") from None
