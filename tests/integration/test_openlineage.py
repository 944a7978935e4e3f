"""OpenLineage events for real runs: START/COMPLETE per asset step with datasets named after the
Iceberg tables and matching the asset graph, schema facets, FAIL with the error for a failed step,
check runs with data-quality assertions; the file transport locally and HTTP to a backend."""

import json
import uuid

import pytest
from dagster import AssetKey, DagsterInstance, asset, build_sensor_context

from tests.integration.helpers import definitions, run_day

pytestmark = pytest.mark.slow
DAY = "2024-05-06"
LAKE = ["bronze/orders", "bronze/fills", "bronze/reference_prices", "bronze/accounts", "bronze/anomaly_labels",
        "silver/trades", "silver/accounts", "gold/ohlcv_bars"]
EVENT_TYPES = {"START", "RUNNING", "COMPLETE", "ABORT", "FAIL", "OTHER"}


def evaluate(defs, resource, cursor=None):
    from sensors.lineage import openlineage_events

    with build_sensor_context(instance=DagsterInstance.get(), cursor=cursor, definitions=defs,
                              resources={"openlineage": resource}) as context:
        openlineage_events(context)
        return context.cursor


def conforms(event: dict) -> None:
    """The OpenLineage 2-0-2 RunEvent rules our events must meet (the JSON Schema itself is not
    shipped in any package reachable here, so its required fields and formats are checked by hand)."""
    import datetime as dt

    assert event["eventType"] in EVENT_TYPES
    dt.datetime.fromisoformat(event["eventTime"])
    uuid.UUID(event["run"]["runId"])
    assert event["producer"].startswith("https://") and event["schemaURL"].startswith("https://openlineage.io/spec/")
    assert event["job"]["namespace"] and event["job"]["name"]
    for dataset in event.get("inputs", []) + event.get("outputs", []):
        assert dataset["namespace"] and dataset["name"]
        for facet in list(dataset.get("facets", {}).values()) + list(dataset.get("inputFacets", {}).values()):
            assert facet["_producer"] and facet["_schemaURL"].startswith("https://openlineage.io/spec/facets/")
    for facet in event["run"].get("facets", {}).values():
        assert facet["_producer"] and facet["_schemaURL"].startswith("https://openlineage.io/spec/facets/")


def test_runs_emit_lineage_that_matches_the_asset_graph(settings):
    from resources.lineage import lineage_resource

    defs = definitions(settings)
    result = run_day(defs, DAY, selection=[AssetKey.from_user_string(k) for k in LAKE])
    assert result.success
    resource = lineage_resource(settings)
    cursor = evaluate(defs, resource)
    path = settings.home / "openlineage" / "events.jsonl"
    events = [json.loads(line) for line in path.read_text().splitlines()]
    for event in events:
        conforms(event)
    steps = [e for e in events if e["job"]["facets"]["jobType"]["jobType"] == "ASSET"]
    by_job = {}
    for event in steps:
        by_job.setdefault(event["job"]["name"], []).append(event)
    trades = by_job["silver__trades"] if "silver__trades" in by_job else next(
        v for v in by_job.values() if any(o["name"] == "silver.trades" for e in v for o in e["outputs"]))
    assert [e["eventType"] for e in trades][0] == "START" and trades[-1]["eventType"] == "COMPLETE"
    assert trades[0]["run"]["runId"] == trades[-1]["run"]["runId"]
    complete = trades[-1]
    graph = defs.resolve_asset_graph()
    for output in complete["outputs"]:
        key = AssetKey(output["name"].split("."))
        expected = {".".join(p.path) for p in graph.get(key).parent_keys} - {o["name"] for o in complete["outputs"]}
        assert {i["name"] for i in complete["inputs"]} >= expected
        assert output["namespace"] == settings.effective_warehouse
    silver = next(o for o in complete["outputs"] if o["name"] == "silver.trades")
    fields = {f["name"] for f in silver["facets"]["schema"]["fields"]}
    assert {"trade_id", "price", "quantity", "buy_account_id"} <= fields
    assert complete["run"]["facets"]["parent"]["run"]["runId"] == result.run_id
    # column lineage from dbt's compiled SQL: in Dagster's metadata and in the OpenLineage facet
    dbt_models = [e for e in result.get_asset_materialization_events() if "dbt/unique_id" in e.materialization.metadata]
    assert len(dbt_models) == 3 and all("dagster/column_lineage" in e.materialization.metadata for e in dbt_models)
    bars = next(e for e in dbt_models if e.asset_key == AssetKey(["gold", "ohlcv_bars"]))
    deps = bars.materialization.metadata["dagster/column_lineage"].value.deps_by_column
    assert {(d.asset_key.to_user_string(), d.column_name) for d in deps["vwap"]} == {
        ("silver/trades", "notional"), ("silver/trades", "quantity")}
    assert set(deps) == {c.name for c in bars.materialization.metadata["dagster/column_schema"].value.columns}
    trades_lineage = silver["facets"]["columnLineage"]["fields"]
    assert {(f["name"], f["field"]) for f in trades_lineage["price"]["inputFields"]} == {("bronze.fills", "price_ticks")}
    assert {(f["name"], f["field"]) for f in trades_lineage["sell_account_id"]["inputFields"]} == {
        ("bronze.fills", "account_id")}
    assert all(f["namespace"] == settings.effective_warehouse for c in trades_lineage.values() for f in c["inputFields"])
    # every materialised asset appears as an output of a COMPLETE event
    materialised = {".".join(e.asset_key.path) for e in result.get_asset_materialization_events()}
    emitted = {o["name"] for e in steps if e["eventType"] == "COMPLETE" for o in e["outputs"]}
    assert materialised == emitted
    # checks: their own runs, the checked table as input with its assertion
    checks = [e for e in events if e["job"]["facets"]["jobType"]["jobType"] == "ASSET_CHECK"]
    assert len(checks) == len(result.get_asset_check_evaluations())
    unique = next(e for e in checks if e["job"]["name"] == "silver/trades:unique_trades_trade_id")
    [checked] = unique["inputs"]
    assert checked["name"] == "silver.trades"
    assert checked["inputFacets"]["dataQualityAssertions"]["assertions"][0]["success"] is True

    # the cursor moved: nothing is emitted twice
    evaluate(defs, resource, cursor)
    assert len(path.read_text().splitlines()) == len(events)


@asset(key=["gold", "broken_report"], deps=[AssetKey(["silver", "trades"])])
def broken_report() -> None:
    raise ValueError("upstream partition is empty")


def test_failed_step_emits_fail_with_its_error_over_http(settings):
    from dagster import Definitions, materialize

    from resources.lineage import OpenLineageResource
    from tests.services.serving import capturing_app, serve

    backend, received = capturing_app("/api/v1/lineage", reply={})

    result = materialize([broken_report], instance=DagsterInstance.get(), raise_on_error=False)
    assert not result.success
    defs = Definitions(assets=[broken_report])
    with serve(backend) as url:
        evaluate(defs, OpenLineageResource(url=url, dataset_namespace="s3://lake/warehouse"))
    [start, fail] = received
    conforms(start) and conforms(fail)
    assert (start["eventType"], fail["eventType"]) == ("START", "FAIL")
    assert fail["run"]["runId"] == start["run"]["runId"]
    assert "upstream partition is empty" in fail["run"]["facets"]["errorMessage"]["message"]
    assert [o["name"] for o in fail["outputs"]] == ["gold.broken_report"]
    assert [i["name"] for i in fail["inputs"]] == ["silver.trades"]
    assert fail["outputs"][0]["namespace"] == "s3://lake/warehouse"
