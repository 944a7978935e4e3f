"""A dbt model's code version covers the project macros it calls, directly or through another macro."""

import copy

from platformq_assets.lake.transform import DbtManifest
from resources.dbt import ensure_manifest
from tests.conftest import ROOT


def test_a_changed_macro_changes_the_versions_of_the_models_that_call_it():
    raw = DbtManifest.load(ensure_manifest(ROOT / "dbt")).raw
    before = DbtManifest(raw)
    edited = copy.deepcopy(raw)
    # pii_salt is called by tokenise (not by a model itself), which only silver.accounts calls
    edited["macros"]["macro.platformq.pii_salt"]["macro_sql"] += "\n{# changed #}"
    after = DbtManifest(edited)
    changed = {uid for uid in before.models if before.code_version(uid) != after.code_version(uid)}
    assert changed == {"model.platformq.accounts"}
    assert all(len(before.code_version(uid)) == 16 for uid in before.models)


def test_models_add_new_columns_on_trino_and_tests_read_the_run_partition():
    """On Trino (incremental models) a new column is appended, not silently dropped; every data test reads the
    run's partition through the project's get_where_subquery (a bad day fails its own build only)."""
    manifest = DbtManifest.load(ensure_manifest(ROOT / "dbt"))
    assert {n["config"]["on_schema_change"] for n in manifest.models.values()} == {"append_new_columns"}
    assert "macro.platformq.default__get_where_subquery" in manifest.raw["macros"]
