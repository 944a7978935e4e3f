"""The registry's promotion rules on a real MLflow (SQLite backend, local artifacts): a bad manual
promotion changes nothing, and the champion asset never promotes a version the gate did not pass."""

import json

import numpy as np
import pytest
from click.testing import CliRunner
from dagster import AssetKey, materialize

from resources.mlflow import MlflowResource

MODEL = "price_direction"


@pytest.fixture
def registry(settings):
    from resources.mlflow import mlflow_resource

    return mlflow_resource(settings)


def new_version(registry: MlflowResource):
    from mlflow import sklearn as mlflow_sklearn
    from sklearn.linear_model import LogisticRegression

    with registry.start_run("tests/registry"):
        info = mlflow_sklearn.log_model(LogisticRegression().fit(np.array([[0.0], [1.0]]), [0, 1]), name="model")
    return registry.register(info.model_uri, MODEL)


def aliases(registry):
    return {alias: (v.version if v is not None else None, v.tags.get("platformq.stage") if v is not None else None)
            for alias in ("champion", "previous-champion", "challenger")
            for v in [registry.version_for(MODEL, alias)]}


def test_promoting_a_missing_version_leaves_the_registry_as_it_was(registry):
    from platformq_assets.cli import main

    first = new_version(registry)
    registry.promote(MODEL, first.version, "first")
    before = aliases(registry)
    assert before["champion"] == (first.version, "production") and before["previous-champion"] == (None, None)

    with pytest.raises(ValueError, match="no version '99'"):
        registry.promote(MODEL, 99, "typo")
    assert aliases(registry) == before  # champion still production, no previous-champion pointing at itself

    typo = CliRunner().invoke(main, ["models", "promote", MODEL, "--version", "42", "--reason", "typo"])
    assert typo.exit_code != 0 and "no version '42'" in typo.output and "Traceback" not in typo.output
    assert aliases(registry) == before
    assert [e["event"] for e in registry.history(MODEL)][-1] == "promoted"


def champion_asset():
    from platformq_assets.ml.lifecycle import keys, model_assets

    [asset] = [a for a in model_assets(MODEL, AssetKey(["features", "instrument_intervals"]))
               if a.key == keys(MODEL)["champion"]]
    return asset


def test_champion_asset_promotes_only_a_gated_challenger(registry):
    first = new_version(registry)
    registry.promote(MODEL, first.version, "first")
    rejected = new_version(registry)  # its evaluation failed the gate: still stage dev, alias challenger

    alone = materialize([champion_asset()], resources={"mlflow": registry})
    assert alone.success
    assert aliases(registry)["champion"] == (first.version, "production")
    assert aliases(registry)["challenger"] == (rejected.version, "dev")
    [event] = alone.get_asset_materialization_events()
    assert event.materialization.metadata["promoted"].value is False

    registry.set_stage(MODEL, rejected.version, "staging", "passed the promotion gate")  # what evaluation does
    gated = materialize([champion_asset()], resources={"mlflow": registry})
    assert gated.success
    assert aliases(registry)["champion"] == (rejected.version, "production")
    assert aliases(registry)["previous-champion"] == (first.version, "archived")
    assert aliases(registry)["challenger"] == (None, None)


def test_a_promotion_interrupted_after_the_switch_is_finished_by_running_it_again(registry):
    # MLflow has no transaction over several calls. Here the process died right after moving the champion alias:
    # the re-run used to answer "already champion" and leave the new champion untagged and the old one production.
    first, second = new_version(registry), new_version(registry)
    registry.promote(MODEL, first.version, "first")
    client = registry.client()
    client.set_registered_model_alias(MODEL, "previous-champion", first.version)  # what promote had done
    client.set_registered_model_alias(MODEL, "champion", second.version)  # ... when it died

    outcome = registry.promote(MODEL, second.version, "second, again")
    assert outcome["promoted"] and outcome["resumed"] and outcome["previous"] == str(first.version)
    assert aliases(registry) == {"champion": (second.version, "production"),
                                 "previous-champion": (first.version, "archived"), "challenger": (None, None)}
    assert registry.promote(MODEL, second.version, "third time") == {
        "promoted": False, "champion": str(second.version), "reason": "already champion"}


def test_a_rollback_interrupted_after_the_switch_never_archives_the_champion(registry):
    # The re-run used to see champion == previous-champion and archive the version it had just given back.
    first, second = new_version(registry), new_version(registry)
    registry.promote(MODEL, first.version, "first")
    registry.promote(MODEL, second.version, "second")
    registry.client().set_registered_model_alias(MODEL, "champion", first.version)  # rollback died after this

    outcome = registry.rollback(MODEL, "bad model")
    assert outcome == {"champion": str(first.version), "replaced": str(second.version)}
    assert aliases(registry) == {"champion": (first.version, "production"), "previous-champion": (None, None),
                                 "challenger": (None, None)}
    rolled_back = registry.client().get_model_version(MODEL, second.version)
    assert rolled_back.tags["platformq.stage"] == "archived" and rolled_back.tags["platformq.rolled_back"] == "bad model"


def test_a_rollback_after_a_promotion_stopped_before_its_switch_says_there_is_nothing_to_roll_back_to(registry):
    """The promotion named the champion previous-champion, then died before the switch: a rollback "gave back"
    the champion it already was, archived nothing and printed "(vNone archived)" as if it had rolled back."""
    from platformq_assets.cli import main

    first, second = new_version(registry), new_version(registry)
    registry.promote(MODEL, first.version, "first")
    registry.client().set_registered_model_alias(MODEL, "previous-champion", first.version)  # died after this
    with pytest.raises(ValueError, match="no earlier champion to roll back to"):
        registry.rollback(MODEL, "bad")
    assert aliases(registry)["champion"] == (first.version, "production")
    assert aliases(registry)["previous-champion"] == (None, None)  # the stale alias is gone
    out = CliRunner().invoke(main, ["models", "rollback", MODEL])
    assert out.exit_code != 0 and "no previous champion" in out.output and "vNone" not in out.output
    # the promotion, run again, completes; a rollback then gives the first version back
    assert registry.promote(MODEL, second.version, "second")["previous"] == str(first.version)
    assert registry.rollback(MODEL, "bad") == {"champion": str(first.version), "replaced": str(second.version)}


def test_a_rollback_that_stopped_after_archiving_is_finished_and_recorded(registry):
    """Stopped after the archive tags, before the alias went and the history was written: run again, it finishes
    (the alias goes) and records the rollback, instead of calling it a stopped promotion."""
    first, second = new_version(registry), new_version(registry)
    registry.promote(MODEL, first.version, "first")
    registry.promote(MODEL, second.version, "second")
    client = registry.client()
    client.set_registered_model_alias(MODEL, "champion", first.version)  # the rollback's steps, up to archiving
    client.set_model_version_tag(MODEL, first.version, "platformq.stage", "production")
    client.set_model_version_tag(MODEL, second.version, "platformq.stage", "archived")
    client.set_model_version_tag(MODEL, second.version, "platformq.rolled_back", "bad")
    assert registry.rollback(MODEL, "bad") == {"champion": str(first.version), "replaced": str(second.version)}
    assert aliases(registry)["previous-champion"] == (None, None)
    last = registry.history(MODEL)[-1]
    assert (last["event"], last["version"], last["replaced"], last["resumed"]) == (
        "rollback", str(first.version), str(second.version), True)


def test_a_version_typed_with_a_leading_zero_is_the_same_version(registry):
    """MLflow finds version 2 for "02": the promotion must then clear the challenger alias on 2 (or a rollback
    leaves the rolled-back version as challenger, taking the A/B share of live traffic)."""
    first, second = new_version(registry), new_version(registry)
    registry.promote(MODEL, first.version, "first")
    registry.client().set_registered_model_alias(MODEL, "challenger", second.version)
    out = registry.promote(MODEL, f"0{second.version}", "typed with a zero")
    assert out == {"promoted": True, "champion": str(second.version), "previous": str(first.version)}
    assert aliases(registry)["challenger"] == (None, None)
    assert registry.history(MODEL)[-1]["version"] == str(second.version)
    registry.rollback(MODEL, "bad")
    assert aliases(registry) == {"champion": (first.version, "production"), "previous-champion": (None, None),
                                 "challenger": (None, None)}


def test_the_champion_asset_refuses_a_challenger_gated_against_another_champion(registry):
    """v2 passed the gate against champion v1, then v3 was promoted by hand before v2's promotion ran (a failed
    champion step, a hotfix): v2 was never compared with v3, so the asset does not promote it and says why."""
    first = new_version(registry)
    registry.promote(MODEL, first.version, "first")
    staged = new_version(registry)
    registry.set_stage(MODEL, staged.version, "staging", "passed the promotion gate", against=first.version)
    hotfix = new_version(registry)
    registry.promote(MODEL, hotfix.version, "hotfix by hand")
    registry.client().set_registered_model_alias(MODEL, "challenger", staged.version)

    refused = materialize([champion_asset()], resources={"mlflow": registry})
    assert refused.success
    [event] = refused.get_asset_materialization_events()
    assert event.materialization.metadata["promoted"].value is False
    assert (f"against champion v{first.version}; the champion is now v{hotfix.version}"
            in event.materialization.metadata["reason"].value)
    assert aliases(registry)["champion"] == (hotfix.version, "production")

    # graded against the champion it would replace: promoted
    registry.set_stage(MODEL, staged.version, "staging", "passed the promotion gate", against=hotfix.version)
    assert materialize([champion_asset()], resources={"mlflow": registry}).success
    assert aliases(registry)["champion"] == (staged.version, "production")


class OneDayLake:
    """The evaluation asset's lake: a training set of three rows (the gate never gets as far as grading them)."""

    def read(self, name, **kwargs):
        import pandas as pd
        import pyarrow as pa

        return pa.table({"event_timestamp": pd.to_datetime(["2024-02-01"] * 3, utc=True), "label_up": [0, 1, 0]})


def evaluation_asset():
    from platformq_assets.ml.lifecycle import keys, model_assets

    [asset] = [a for a in model_assets(MODEL, AssetKey(["features", "instrument_intervals"]))
               if a.key == keys(MODEL)["evaluation"]]
    return asset


def test_a_promotion_interrupted_after_the_switch_is_finished_by_the_champion_asset_and_never_demoted(registry):
    """The champion asset's promotion died after moving the champion alias: the challenger is the champion, still
    tagged staging (against the champion it replaced). The next evaluation has nothing to evaluate and leaves the
    serving champion's stage alone (it tagged it dev); the champion asset finishes the promotion (it refused:
    "gated against v1, the champion is now v2")."""
    first = new_version(registry)
    registry.promote(MODEL, first.version, "first")
    second = new_version(registry)
    registry.set_stage(MODEL, second.version, "staging", "passed the promotion gate", against=first.version)
    client = registry.client()
    client.set_registered_model_alias(MODEL, "previous-champion", first.version)  # what promote had done
    client.set_registered_model_alias(MODEL, "champion", second.version)  # ... when it died

    evaluated = materialize([evaluation_asset()], resources={"mlflow": registry, "lake": OneDayLake()},
                            raise_on_error=False)
    [gate] = evaluated.get_asset_check_evaluations()
    assert not gate.passed and "already the champion" in gate.metadata["reason"].value
    assert aliases(registry)["champion"] == (second.version, "staging")

    resumed = materialize([champion_asset()], resources={"mlflow": registry})
    assert resumed.success
    [event] = resumed.get_asset_materialization_events()
    assert event.materialization.metadata["promoted"].value is True
    assert event.materialization.metadata["resumed"].value is True
    assert aliases(registry) == {"champion": (second.version, "production"),
                                 "previous-champion": (first.version, "archived"), "challenger": (None, None)}


def test_a_staging_move_that_dies_part_way_never_leaves_a_staged_version_without_its_gates_champion(registry,
                                                                                                  monkeypatch):
    """set_stage wrote the stage before the champion the gate compared with: dying between the two left a staged
    version without ``staged_against``, which the champion asset reads as "staged before it was recorded" and
    promotes whoever is champion now."""
    from resources.mlflow import STAGED_AGAINST_TAG

    first = new_version(registry)
    registry.promote(MODEL, first.version, "first")
    candidate = new_version(registry)
    real_client = MlflowResource.client

    class Dies:
        def __init__(self, inner):
            self.inner = inner

        def __getattr__(self, name):
            return getattr(self.inner, name)

        def set_model_version_tag(self, name, version, key, value):
            if key == STAGED_AGAINST_TAG:
                raise RuntimeError("process died")
            return self.inner.set_model_version_tag(name, version, key, value)

    monkeypatch.setattr(MlflowResource, "client", lambda self: Dies(real_client(self)))
    with pytest.raises(RuntimeError):
        registry.set_stage(MODEL, candidate.version, "staging", "passed the promotion gate", against=first.version)
    monkeypatch.setattr(MlflowResource, "client", real_client)
    assert aliases(registry)["challenger"] == (candidate.version, "dev")
    assert materialize([champion_asset()], resources={"mlflow": registry}).success
    assert aliases(registry)["champion"] == (first.version, "production")


def test_a_promotion_takes_the_staging_alias_off_the_new_champion(registry):
    first = new_version(registry)
    registry.promote(MODEL, first.version, "first")
    staged = new_version(registry)
    registry.set_stage(MODEL, staged.version, "staging", "passed the promotion gate", against=first.version)
    assert registry.version_for(MODEL, "staging").version == staged.version
    assert materialize([champion_asset()], resources={"mlflow": registry}).success
    assert aliases(registry)["champion"] == (staged.version, "production")
    assert registry.version_for(MODEL, "staging") is None
    registry.client().set_registered_model_alias(MODEL, "staging", staged.version)  # a promotion that died just
    registry.client().set_registered_model_alias(MODEL, "challenger", staged.version)  # before clearing them
    assert registry.promote(MODEL, staged.version, "again")["reason"] == "already champion"
    assert registry.version_for(MODEL, "staging") is None and aliases(registry)["challenger"] == (None, None)
    hotfix = new_version(registry)  # by hand, straight from dev
    registry.promote(MODEL, hotfix.version, "hotfix")
    assert registry.version_for(MODEL, "staging") is None


def test_a_long_history_never_stops_the_registry_on_a_postgres_backend(tmp_path):
    """MLflow's SQL store keeps a registered model's tag in a varchar(5000). The history was cut at 7,500 characters:
    on Postgres (production's MLflow backend) its ~25th event failed, and from then on every registration, stage
    move, promotion and rollback failed after its registry call (the alias moved, the step failed), for good."""
    from tests.integration.servers import PG_DSN, postgres_database

    with postgres_database() as db:
        registry = MlflowResource(tracking_uri=PG_DSN.format(db=db), artifact_location=str(tmp_path / "artifacts"))
        first = new_version(registry)
        for i in range(60):  # a year of weekly trainings, gates and promotions
            registry._record(MODEL, {"event": "stage:dev", "version": str(i), "reason": "no longer passes the "
                                     "promotion gate: challenger roc_auc 0.5123 does not beat champion v3 0.5234"})
        registry.set_stage(MODEL, first.version, "dev", "x" * 6000)  # a reason longer than the whole tag
        # 500 emoji escaped by json.dumps were ~6,000 characters: one event alone overflowed the column
        registry.set_stage(MODEL, first.version, "dev", "\U0001F680" * 600)
        assert registry.history(MODEL)[-1]["reason"] == "\U0001F680" * 500
        registry.set_stage(MODEL, first.version, "dev", "x" * 6000)
        result = registry.promote(MODEL, first.version, "first")
        assert result["promoted"] and registry.version_for(MODEL, "champion").version == first.version
        events = registry.history(MODEL)
        assert events[-1]["event"] == "promoted"
        assert [e["reason"] for e in events if e["event"] == "stage:dev"][-1] == "x" * 500
        assert len(json.dumps(events, ensure_ascii=False)) <= 5000  # as stored


def test_a_rolled_back_version_promoted_again_is_rolled_back_again_after_a_stop(registry):
    """v2 was rolled back once, then promoted again by hand; a second rollback stopped right after moving champion
    back to v1. Run again, it took v2's tag from the first rollback for this rollback's and called itself finished:
    v2 stayed tagged production and v1 archived, with v1 serving."""
    first, second = new_version(registry), new_version(registry)
    registry.promote(MODEL, first.version, "first")
    registry.promote(MODEL, second.version, "second")
    registry.rollback(MODEL, "bad the first time")
    registry.promote(MODEL, second.version, "fixed after all")
    assert registry.client().get_model_version(MODEL, second.version).tags.get("platformq.rolled_back") is None
    registry.client().set_registered_model_alias(MODEL, "champion", first.version)  # the rollback died after this

    assert registry.rollback(MODEL, "bad again") == {"champion": str(first.version), "replaced": str(second.version)}
    assert aliases(registry) == {"champion": (first.version, "production"), "previous-champion": (None, None),
                                 "challenger": (None, None)}
    again = registry.client().get_model_version(MODEL, second.version)
    assert again.tags["platformq.stage"] == "archived" and again.tags["platformq.rolled_back"] == "bad again"
