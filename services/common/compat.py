"""Work-arounds for bugs of the Python the services run on, each with its reason and the version that fixes it."""

import ast
import functools
import sys
import threading

_AST_LOCK = threading.RLock()


def has_ast_depth_race() -> bool:
    """CPython before 3.11.8 (and 3.12.0), gh-106905: the AST constructor counts its recursion depth in one struct
    per interpreter, not per call. A thread paused while it builds an AST (the collector ran a finaliser that let
    another thread in) and another thread building one meanwhile corrupt each other's count, and one of them
    raises ``SystemError: AST constructor recursion depth mismatch``."""
    return sys.version_info < (3, 11, 8) or (3, 12) <= sys.version_info < (3, 12, 1)


def serialize_ast_parsing() -> bool:
    """On a Python with the race, let one thread at a time build an AST through ``ast.parse`` (which
    ``ast.literal_eval`` calls too). The models service loads models on a warm-up thread and on request threads,
    and numpy reads each array's header with ``ast.literal_eval``; Hypothesis describes lambdas with ``ast.parse``.
    Code calling ``compile(..., ast.PyCF_ONLY_AST)`` itself is not covered. Returns whether it is in place."""
    if not has_ast_depth_race():
        return False
    if getattr(ast.parse, "serialized_by_platformq", False):
        return True
    original = ast.parse

    @functools.wraps(original)
    def parse(*args, **kwargs):
        with _AST_LOCK:
            return original(*args, **kwargs)

    parse.serialized_by_platformq = True
    ast.parse = parse
    return True
