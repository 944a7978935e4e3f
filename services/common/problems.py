"""RFC 9457 problem details: the one error format of every service."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

PROBLEM_JSON = "application/problem+json"
TYPE_BASE = "https://platformq.dev/problems/"
# The mark ServiceContext.require leaves on its dependency: (the context, the permission it checks).
REQUIRES = "platformq_requires"


class Problem(Exception):
    """Raise anywhere in a request to answer with a problem document."""

    def __init__(self, status: int, title: str, detail: str | None = None, type_: str | None = None,
                 headers: dict | None = None, **extensions):
        super().__init__(detail or title)
        self.status = status
        self.title = title
        self.detail = detail
        self.type = TYPE_BASE + (type_ or title.lower().replace(" ", "-"))
        self.headers = headers or {}
        self.extensions = extensions


def problem_response(request: Request, status: int, title: str, detail: str | None = None,
                     type_: str | None = None, headers: dict | None = None, **extensions) -> JSONResponse:
    body = {
        "type": type_ if (type_ or "").startswith("http") else TYPE_BASE + (type_ or title.lower().replace(" ", "-")),
        "title": title,
        "status": status,
        "instance": request.url.path,
    }
    if detail:
        body["detail"] = detail
    correlation = getattr(request.state, "correlation_id", None)
    if correlation:
        body["correlation_id"] = correlation
        # A 500 is sent by Starlette's outermost error middleware, past the one that stamps X-Request-ID
        # on every other answer: carry the id here so that the failures, of all answers, can be correlated.
        headers = {**(headers or {}), "X-Request-ID": correlation}
    body.update(extensions)
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


_TITLES = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
           406: "Not Acceptable", 409: "Conflict", 413: "Payload Too Large", 415: "Unsupported Media Type",
           422: "Unprocessable Content", 429: "Too Many Requests"}


def _requirements(dependant) -> list[tuple]:
    """The (context, permission) marks of ``ServiceContext.require`` among the dependencies, at any depth."""
    found, stack = [], list(dependant.dependencies)
    while stack:
        dependency = stack.pop()
        mark = getattr(dependency.call, REQUIRES, None)
        if mark is not None:
            found.append(mark)
        stack.extend(dependency.dependencies)
    return found


async def _refused_first(request: Request):
    """The 401/403/429 problem for a request to an endpoint that needs a permission and whose caller does not
    pass (``None`` when it does, or when the endpoint needs none).

    FastAPI reads and parses a JSON body before it runs the dependencies: a malformed body fails before the
    auth dependency has run. Its errors are for callers allowed to send it; and the audit record of a caller
    who is gets the caller's tenant. A request whose dependency ran is not authenticated (nor rate-limited) twice.
    """
    dependant = getattr(request.scope.get("route"), "dependant", None)
    requirements = _requirements(dependant) if dependant is not None else []
    if not requirements:
        return None
    ctx = requirements[0][0]
    try:
        await ctx.authorize(request, [permission for _, permission in requirements])
    except Problem as exc:
        return _from_problem(request, exc)
    return None


def _from_problem(request: Request, exc: Problem) -> JSONResponse:
    return problem_response(request, exc.status, exc.title, exc.detail, exc.type, exc.headers, **exc.extensions)


def install_problem_handlers(app: FastAPI) -> None:
    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem):
        return _from_problem(request, exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        refused = await _refused_first(request)
        if refused is not None:
            return refused
        errors = [{"location": ".".join(str(p) for p in e.get("loc", ())), "message": e.get("msg", "")}
                  for e in exc.errors()]
        return problem_response(request, 422, "Unprocessable Content", "the request does not match the schema",
                                "validation-error", errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        if exc.status_code == 400:  # a body FastAPI could not parse at all (JSON nested too deep): the same
            refused = await _refused_first(request)
            if refused is not None:
                return refused
        title = _TITLES.get(exc.status_code, "Error")
        detail = exc.detail if isinstance(exc.detail, str) and exc.detail != title else None
        return problem_response(request, exc.status_code, title, detail, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):  # never leak internals
        request.app.state.logger.exception("unhandled error", extra={"path": request.url.path})
        return problem_response(request, 500, "Internal Server Error", "an unexpected error occurred")
