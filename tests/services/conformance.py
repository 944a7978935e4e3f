"""Schemathesis over every operation of an app's own OpenAPI schema, inside a test (for apps built on a fixture)."""


def check_every_operation(app, headers: dict, max_examples: int = 25) -> set[str]:
    """Generated requests to each operation: no 500s, and statuses, content types and bodies as the schema says.
    Returns the paths checked."""
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    checks = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
    operations = [result.ok() for result in schema.get_all_operations()]
    for operation in operations:
        @given(operation.as_strategy())
        @settings(max_examples=max_examples, deadline=None, suppress_health_check=list(HealthCheck))
        def check(case):
            case.call_and_validate(headers=headers, checks=checks)

        check()
    return {operation.path for operation in operations}
