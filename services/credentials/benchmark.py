"""Issue/verify throughput of ``eddsa-rdfc-2022`` credentials, for ``make bench``."""

from __future__ import annotations

import time

from .did_key import Ed25519KeyPair
from .document_loader import CREDENTIALS_EXAMPLES_V2_URL, CREDENTIALS_V2_URL
from .issuer import Issuer, verify_credential


def _credential(i: int) -> dict:
    return {
        "@context": [CREDENTIALS_V2_URL, CREDENTIALS_EXAMPLES_V2_URL],
        "id": f"urn:uuid:00000000-0000-4000-8000-{i:012d}",
        "type": ["VerifiableCredential", "ModelCredential"],
        "validFrom": "2024-01-01T00:00:00Z",
        "credentialSubject": {"id": f"did:example:model-{i}", "accuracy": "0.93", "dataset": "gold.ohlcv_bars"},
    }


def bench(n: int = 200) -> tuple[float, float]:
    """Issue then verify ``n`` credentials with a fresh did:key; returns (issued/s, verified/s).

    Verification covers structure, proof (two RDFC-1.0 canonicalisations and Ed25519) and
    validity window; no status lists are involved.
    """
    if n < 1:
        raise ValueError("n must be positive")
    issuer = Issuer(Ed25519KeyPair.generate())
    issuer.issue(_credential(n))  # warm the context cache outside the timing
    unsigned = [_credential(i) for i in range(n)]

    start = time.perf_counter()
    signed = [issuer.issue(c, created="2024-01-01T00:00:00Z") for c in unsigned]
    issue_s = time.perf_counter() - start

    start = time.perf_counter()
    results = [verify_credential(c) for c in signed]
    verify_s = time.perf_counter() - start
    if not all(results):
        raise AssertionError(f"bench credential failed verification: {results[0].errors}")
    return n / issue_s, n / verify_s


if __name__ == "__main__":
    issued, verified = bench()
    print(f"issued {issued:.0f}/s, verified {verified:.0f}/s")
