import hashlib


def credential_hashes(n: int, tag: str) -> list[str]:
    """``n`` distinct hex SHA-256 digests standing in for credential hashes."""
    return [hashlib.sha256(f"credential {tag} {i}".encode()).hexdigest() for i in range(n)]
