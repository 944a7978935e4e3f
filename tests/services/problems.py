"""Assertions shared by the service API tests."""


def is_problem(response, status):
    """The response is an RFC 9457 problem document with this status; returns its body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["status"] == status and body["title"] and body["type"].startswith("https://")
    return body
