"""A pyld document loader that serves only the JSON-LD contexts bundled in ``contexts/``.

Any other URL raises ``ContextNotAllowedError``: nothing is ever fetched. The
contexts are W3C documents: ``credentials-v2`` and ``did-v1`` are the frozen
copies that pyld 3.3 ships (``pyld/documentloader/frozen/bundled``), and the
credentials examples context is the one-line ``@vocab`` document the VC specs use.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from pathlib import Path

from cachetools import LRUCache
from pyld import jsonld
from pyld.context_resolver import ContextResolver

from .errors import ContextNotAllowedError

CONTEXTS_DIR = Path(__file__).resolve().parent / "contexts"

CREDENTIALS_V2_URL = "https://www.w3.org/ns/credentials/v2"
CREDENTIALS_EXAMPLES_V2_URL = "https://www.w3.org/ns/credentials/examples/v2"
DID_V1_URL = "https://www.w3.org/ns/did/v1"

BUNDLED_CONTEXTS: Mapping[str, str] = {
    CREDENTIALS_V2_URL: "credentials-v2.jsonld",
    CREDENTIALS_EXAMPLES_V2_URL: "credentials-examples-v2.jsonld",
    DID_V1_URL: "did-v1.jsonld",
}


class BundledContextLoader:
    """Callable pyld document loader over a fixed allowlist of context documents.

    ``extra`` adds documents (URL -> parsed JSON) for callers with contexts of their own;
    they are held in memory, never fetched.
    """

    def __init__(self, extra: Mapping[str, dict] | None = None):
        self._documents: dict[str, dict] = {
            url: json.loads((CONTEXTS_DIR / name).read_text(encoding="utf-8")) for url, name in BUNDLED_CONTEXTS.items()
        }
        for url, document in (extra or {}).items():
            self._documents[url] = copy.deepcopy(dict(document))
        self._resolved_cache = LRUCache(maxsize=64)

    @property
    def urls(self) -> frozenset[str]:
        return frozenset(self._documents)

    def __call__(self, url: str, options: dict | None = None) -> dict:
        document = self._documents.get(url)
        if document is None:
            raise ContextNotAllowedError(url)
        return {
            "contentType": "application/ld+json",
            "contextUrl": None,
            "documentUrl": url,
            # pyld may rewrite relative URLs inside a context it loads: hand out a copy.
            "document": copy.deepcopy(document),
            # 'static' lets our private resolver cache keep the processed context per URL.
            "tag": "static",
        }

    def context_resolver(self) -> ContextResolver:
        """A fresh pyld ContextResolver bound to this loader and its own cache.

        The cache is private to this loader (not pyld's process-wide one), so a context
        resolved elsewhere by a networked loader can never be served to us.
        """
        return ContextResolver(self._resolved_cache, self)


DEFAULT_LOADER = BundledContextLoader()


def install_document_loader(loader: BundledContextLoader | None = None) -> BundledContextLoader:
    """Make ``loader`` pyld's process-wide default, for code that calls pyld without a loader.

    ``services.credentials`` itself always passes its loader explicitly and does not need this.
    """
    loader = loader or DEFAULT_LOADER
    jsonld.set_document_loader(loader)
    return loader
