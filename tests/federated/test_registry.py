"""The participant registry and its CLI against a real (local Iceberg) lake, and the per-tenant export's
features: fast, no federation."""

import datetime as dt

import pyarrow as pa
from click.testing import CliRunner


def _accounts(lake, tenants=("t-a", "t-b")):
    lake.append("silver.accounts", pa.table({"account_id": [f"acc-{t}" for t in tenants], "tenant_id": list(tenants)}))


def _cli(*args):
    from platformq_assets.federated.cli import participants

    return CliRunner().invoke(participants, list(args))


def test_recording_a_run_keeps_a_suspension_and_a_consent_withdrawal_made_while_it_ran(lake):
    from platformq_assets.federated import participants as registry

    registry.enrol(lake, "t-a")
    registry.enrol(lake, "t-b")
    started = registry.list_participants(lake)  # what the asset read when the run started
    registry.suspend(lake, "t-a", "audit")
    registry.set_consent(lake, "t-b", False)
    registry.record_run(lake, started, {"rounds": [{"round": 1, "accepted": ["t-a", "t-b"]}],
                                        "participants": ["t-a", "t-b"], "epsilon": {"t-a": 1.5}})
    rows = {r["tenant_id"]: r for r in registry.list_participants(lake)}
    assert rows["t-a"]["status"] == registry.SUSPENDED and rows["t-a"]["suspended_reason"] == "audit"
    assert rows["t-b"]["consent"] is False
    # the run itself is still recorded
    assert rows["t-a"]["rounds_joined"] == 1 and rows["t-a"]["epsilon_spent"] == 1.5
    assert rows["t-b"]["rounds_joined"] == 1 and rows["t-b"]["last_seen"] is not None
    assert registry.eligible(list(rows.values())) == []


def test_a_run_whose_server_died_mid_round_charges_the_in_flight_bound(lake):
    """A DP round's training messages went out and the server died before recording the replies: the history
    names what those participants can have spent at most, and the registry charges the larger value."""
    from platformq_assets.federated import participants as registry

    registry.enrol(lake, "t-a")
    registry.enrol(lake, "t-b")
    started = registry.list_participants(lake)
    registry.record_run(lake, started, {"rounds": [{"round": 1, "accepted": ["t-a", "t-b"]}], "complete": False,
                                        "participants": ["t-a", "t-b"], "epsilon": {"t-a": 1.2, "t-b": 1.3},
                                        "epsilon_in_flight": {"t-a": 4.0}})
    rows = {r["tenant_id"]: r for r in registry.list_participants(lake)}
    assert rows["t-a"]["epsilon_spent"] == 4.0 and rows["t-b"]["epsilon_spent"] == 1.3
    assert rows["t-a"]["rounds_joined"] == 1  # the unfinished round is not a round joined


def test_enrolling_again_never_overrides_a_consent_withdrawal(lake):
    from platformq_assets.federated import participants as registry

    _accounts(lake)
    assert _cli("enrol", "--all").exit_code == 0
    assert _cli("consent", "t-a", "--withdraw").exit_code == 0
    result = _cli("enrol", "--all")  # e.g. run again when a new tenant appears
    assert result.exit_code == 0, result.output
    assert "t-a: enrolled, consent=no" in result.output
    assert registry.get(lake, "t-a")["consent"] is False and registry.get(lake, "t-b")["consent"] is True
    assert registry.eligible(registry.list_participants(lake)) == ["t-b"]
    # an explicit grant still works, and an explicit --no-consent on a new participant too
    assert _cli("enrol", "t-a", "--consent").exit_code == 0
    assert registry.get(lake, "t-a")["consent"] is True


def test_enrol_with_an_unknown_tenant_enrols_none_of_them(lake):
    from platformq_assets.federated import participants as registry

    _accounts(lake)
    result = _cli("enrol", "t-a", "t-typo")
    assert result.exit_code == 2 and "t-typo" in result.output and "Traceback" not in result.output
    assert registry.list_participants(lake) == []


def test_a_tenants_exported_features_do_not_depend_on_another_tenants_orders():
    import duckdb

    from platformq_assets.federated.datasets import FEATURE_SQL

    ts = dt.datetime(2024, 3, 4, 10, 0, tzinfo=dt.timezone.utc)

    def features(other_price: int) -> list[dict]:
        rows = [("o1", "acc-t-a", 100), ("o2", "acc-t-a", 102)] + [(f"b{i}", "acc-t-b", other_price) for i in range(3)]
        n = len(rows)
        orders = pa.table({
            "order_id": [r[0] for r in rows], "account_id": [r[1] for r in rows], "instrument": ["X"] * n,
            "side": ["BUY"] * n, "order_type": ["LIMIT"] * n, "price_ticks": [r[2] for r in rows],
            "qty_lots": [1] * n, "filled_lots": [0] * n, "cancelled_lots": [0] * n, "status": ["NEW"] * n,
            "anomaly_type": pa.array([None] * n, pa.string()), "ts": [ts] * n,
            "cancelled_ts": pa.array([None] * n, pa.timestamp("us", tz="UTC")),
            "partition_date": [dt.date(2024, 3, 4)] * n})
        con = duckdb.connect()
        con.register("orders", orders)
        con.register("accounts", pa.table({"account_id": ["acc-t-a", "acc-t-b"], "tenant_id": ["t-a", "t-b"]}))
        return [r for r in con.sql(FEATURE_SQL).to_arrow_table().to_pylist() if r["tenant_id"] == "t-a"]

    assert features(100) == features(200)
    assert [round(r["price_deviation"], 3) for r in features(200)] == [-0.99, 0.99]  # from t-a's own median, 101


def test_enrol_all_on_a_lake_without_accounts_says_so(lake):
    result = _cli("enrol", "--all")
    assert result.exit_code == 2 and "--all found no tenant" in result.output, result.output
    assert "name at least one tenant" in _cli("enrol").output


def test_enrol_all_does_not_lift_a_suspension(lake):
    """`enrol --all` is what is run again when a new tenant appears; it re-enrolled every suspended tenant (one under
    audit trained in the next run). A suspension is lifted only by naming the tenant."""
    from platformq_assets.federated import participants as registry

    _accounts(lake)
    assert _cli("enrol", "--all").exit_code == 0
    assert _cli("suspend", "t-a", "--reason", "audit").exit_code == 0
    _accounts(lake, ("t-c",))  # a new tenant
    result = _cli("enrol", "--all")
    assert result.exit_code == 0, result.output
    assert "t-a: still suspended (audit)" in result.output and "t-c: enrolled" in result.output
    rows = {r["tenant_id"]: r for r in registry.list_participants(lake)}
    assert rows["t-a"]["status"] == registry.SUSPENDED and rows["t-a"]["suspended_reason"] == "audit"
    assert registry.eligible(list(rows.values())) == ["t-b", "t-c"]
    assert _cli("enrol", "t-a").exit_code == 0  # named: enrolled again
    assert registry.get(lake, "t-a")["status"] == registry.ENROLLED
