"""Work-arounds for bugs of the Python the services run on (services/common/compat.py)."""

import subprocess
import sys

import pytest

from services.common import compat
from tests.conftest import ROOT

# Two threads build ASTs from different recursion depths, and each garbage collection lets the other thread run (as
# a finaliser that waits does): what the models service's warm-up thread and a request thread do when both load a
# model (numpy's ast.literal_eval per array), or the warm-up thread and Hypothesis in a test. Prints the first
# SystemError, or nothing.
RACE = r"""
import ast, gc, inspect, sys, threading, time
import argparse
if sys.argv[1] == "serialized":
    from services.common.compat import serialize_ast_parsing
    assert serialize_ast_parsing()
source = inspect.getsource(argparse)
errors = []
# each collection lets the other thread run (a finaliser that waits does the same): collections start while an AST
# is being built, and the other thread builds one meanwhile
gc.callbacks.append(lambda phase, info: time.sleep(0.0001) if phase == "start" else None)

def at_depth(n, parse):
    return parse() if n == 0 else at_depth(n - 1, parse)

def work(depth):
    for _ in range(20):
        try:
            at_depth(depth, lambda: ast.parse(source))
        except SystemError as exc:
            errors.append(str(exc))
            return

threads = [threading.Thread(target=work, args=(depth,)) for depth in (5, 80)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(errors[0] if errors else "")
"""


def _race(mode: str) -> str:
    out = subprocess.run([sys.executable, "-c", RACE, mode], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.strip()


@pytest.mark.skipif(not compat.has_ast_depth_race(), reason="this Python has the fix (gh-106905)")
def test_threads_building_asts_at_once_no_longer_raise_on_a_python_with_the_race():
    assert "AST constructor recursion depth mismatch" in _race("plain")  # the bug, reproduced
    assert _race("serialized") == ""


def test_serializing_is_in_place_only_where_the_race_is_and_once():
    import ast

    original = ast.parse
    try:
        assert compat.serialize_ast_parsing() is compat.has_ast_depth_race()
        wrapped = ast.parse
        assert compat.serialize_ast_parsing() is compat.has_ast_depth_race() and ast.parse is wrapped
        assert ast.literal_eval("{'descr': '<f8', 'shape': (3,)}") == {"descr": "<f8", "shape": (3,)}
    finally:
        ast.parse = original


def test_the_models_service_serializes_ast_parsing(tmp_path):
    import ast

    from services.common.app import ServiceContext
    from services.models.api import create_models_app

    original = ast.parse
    try:
        create_models_app(ServiceContext("models", audit_path=str(tmp_path / "audit.jsonl")), scorer=None)
        assert getattr(ast.parse, "serialized_by_platformq", False) is compat.has_ast_depth_race()
    finally:
        ast.parse = original
