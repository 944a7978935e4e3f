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
