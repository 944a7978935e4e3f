"""Data API over a real Iceberg lake: tenancy, pagination pinned to a snapshot, validation."""

import datetime as dt
from decimal import Decimal

import pyarrow as pa
import pytest
from fastapi.testclient import TestClient

from services.common.app import ServiceContext
from services.data_api.api import create_data_app
from tests.services.problems import is_problem

DAY = dt.date(2024, 1, 2)


def leaderboard(n, tenant_of):
    return pa.table({
        "pnl_rank": list(range(1, n + 1)), "account_id": list(range(100, 100 + n)),
        "partition_date": pa.array([DAY] * n, pa.date32()),
        "tenant_id": [tenant_of(i) for i in range(n)], "pnl": [float(n - i) for i in range(n)],
    })


@pytest.fixture
def api(lake):
    lake.replace_partition("gold.trader_leaderboard", leaderboard(30, lambda i: "t-acme" if i % 3 else "t-cygnus"),
                           "partition_date", DAY)
    lake.replace_partition("gold.ohlcv_bars", pa.table({"instrument": ["A", "B"], "close": [1.5, 2.5],
                                                        "partition_date": pa.array([DAY] * 2, pa.date32())}),
                           "partition_date", DAY)
    lake.replace_partition("silver.trades", pa.table({"trade_id": [1], "partition_date": pa.array([DAY], pa.date32())}),
                           "partition_date", DAY)
    ctx = ServiceContext("data", rate=1000.0, burst=1000)
    keys = {"acme": ctx.keys.create("ann", "t-acme", ["viewer"]), "cygnus": ctx.keys.create("cy", "t-cygnus", ["viewer"]),
            "nobody": ctx.keys.create("x", "t-acme", ["trader"])}
    return TestClient(create_data_app(ctx, lake), raise_server_exceptions=False), keys, lake


def get(client, key, path, **params):
    return client.get(path, params=params, headers={"X-API-Key": key})


def test_catalog_lists_gold_tables_only(api):
    client, keys, _ = api
    tables = {t["table"]: t for t in get(client, keys["acme"], "/v1/catalog").json()}
    assert set(tables) == {"gold.trader_leaderboard", "gold.ohlcv_bars"}
    assert tables["gold.trader_leaderboard"]["tenant_scoped"] and not tables["gold.ohlcv_bars"]["tenant_scoped"]
    assert {"name": "pnl", "type": "number"} in tables["gold.trader_leaderboard"]["columns"]


def test_rows_are_tenant_scoped(api):
    client, keys, _ = api
    acme = get(client, keys["acme"], "/v1/tables/gold/trader_leaderboard/rows", page_size=1000).json()
    cygnus = get(client, keys["cygnus"], "/v1/tables/gold/trader_leaderboard/rows", page_size=1000).json()
    assert acme["total_rows"] == 20 and cygnus["total_rows"] == 10
    assert {r["tenant_id"] for r in acme["rows"]} == {"t-acme"}
    # a filter cannot widen the scope
    sneaky = get(client, keys["acme"], "/v1/tables/gold/trader_leaderboard/rows", filter="tenant_id:eq:t-cygnus")
    assert sneaky.json()["total_rows"] == 0
    # market-level tables are shared
    assert get(client, keys["cygnus"], "/v1/tables/gold/ohlcv_bars/rows").json()["total_rows"] == 2


def test_pages_are_pinned_to_one_snapshot(api):
    client, keys, lake = api
    first = get(client, keys["acme"], "/v1/tables/gold/trader_leaderboard/rows", page_size=8,
                columns="pnl_rank,pnl").json()
    assert first["columns"] == ["pnl_rank", "pnl"] and set(first["rows"][0]) == {"pnl_rank", "pnl"}
    # a new snapshot lands between pages
    lake.replace_partition("gold.trader_leaderboard", leaderboard(5, lambda i: "t-acme"), "partition_date", DAY)
    seen = list(first["rows"])
    token = first["next_page_token"]
    while token:
        page = get(client, keys["acme"], "/v1/tables/gold/trader_leaderboard/rows", page_size=8,
                   columns="pnl_rank,pnl", page_token=token).json()
        assert page["snapshot_id"] == first["snapshot_id"]
        seen += page["rows"]
        token = page["next_page_token"]
    assert len(seen) == 20 and len({r["pnl_rank"] for r in seen}) == 20
    latest = get(client, keys["acme"], "/v1/tables/gold/trader_leaderboard/rows").json()
    assert latest["total_rows"] == 5 and latest["snapshot_id"] != first["snapshot_id"]
    old = get(client, keys["acme"], "/v1/tables/gold/trader_leaderboard/rows", snapshot_id=first["snapshot_id"])
    assert old.json()["total_rows"] == 20  # time travel to a given snapshot


def test_filters_and_columns_are_validated(api):
    client, keys, _ = api
    ok = get(client, keys["acme"], "/v1/tables/gold/trader_leaderboard/rows", filter=["pnl_rank:le:5", "pnl:gt:26.5"])
    assert [r["pnl_rank"] for r in ok.json()["rows"]] == [2, 3]
    for params, status in (({"columns": "nope"}, 422), ({"filter": "nope:eq:1"}, 422),
                           ({"filter": "pnl_rank:eq:abc"}, 422), ({"filter": "pnl_rank:like:1"}, 422),
                           ({"page_token": "garbage"}, 422), ({"snapshot_id": 12345}, 404)):
        r = get(client, keys["acme"], "/v1/tables/gold/trader_leaderboard/rows", **params)
        assert r.status_code == status and r.headers["content-type"].startswith("application/problem+json"), params
    assert get(client, keys["acme"], "/v1/tables/silver/trades/rows").status_code == 404  # not a gold table
    assert get(client, keys["acme"], "/v1/tables/gold/missing/rows").status_code == 404
    assert client.get("/v1/catalog").status_code == 401


def test_a_repeated_column_or_a_list_column_is_a_422_or_served_never_a_500(api):
    """All three ended in a 500: Arrow refuses to sort a table with two columns of one name, or by a list column,
    and pyiceberg raises TypeError (not ValueError) for a literal compared with a list column."""
    client, keys, lake = api
    lake.replace_partition("gold.tagged_accounts", pa.table({
        "account_id": [1], "tags": pa.array([["vip"]], pa.list_(pa.string())), "tenant_id": ["t-acme"],
        "partition_date": pa.array([DAY], pa.date32())}), "partition_date", DAY)
    for path, params, says in (
            ("/v1/tables/gold/trader_leaderboard/rows", {"columns": "pnl_rank,pnl,pnl_rank"}, "more than once"),
            ("/v1/tables/gold/tagged_accounts/rows", {"filter": "tags:eq:vip"}, "tags")):
        assert says in is_problem(get(client, keys["acme"], path, **params), 422)["detail"]
    # and such a table is served (the list column is not a sort key), its column typed as what it is
    assert get(client, keys["acme"], "/v1/tables/gold/tagged_accounts/rows").json()["rows"] == [
        {"account_id": 1, "tags": ["vip"], "tenant_id": "t-acme", "partition_date": "2024-01-02"}]
    [tagged] = [t for t in get(client, keys["acme"], "/v1/catalog").json() if t["table"] == "gold.tagged_accounts"]
    assert {"name": "tags", "type": "array"} in tagged["columns"]


def test_tables_without_tenant_id_are_unknown_unless_listed_as_shared(api):
    client, keys, lake = api
    # per-account rows with no tenant_id (shaped like platformq_assets/markets/futures.py's gold.futures_margin)
    lake.replace_partition("gold.futures_margin", pa.table({
        "account_id": [101, 202], "balance_cents": [98800, 101200],
        "partition_date": pa.array([DAY] * 2, pa.date32())}), "partition_date", DAY)
    missing = is_problem(get(client, keys["acme"], "/v1/tables/gold/no_such_table/rows"), 404)
    for who in ("acme", "cygnus"):
        for params in ({}, {"columns": "nope"}, {"snapshot_id": 1}, {"filter": "account_id:eq:101"}):
            body = is_problem(get(client, keys[who], "/v1/tables/gold/futures_margin/rows", **params), 404)
            # answered exactly like a table that does not exist
            assert body["type"] == missing["type"] and body["detail"] == "unknown table 'gold.futures_margin'"
        assert "gold.futures_margin" not in {t["table"] for t in get(client, keys[who], "/v1/catalog").json()}
    # a listed market-wide table is served to every tenant, and tenant_id tables are still filtered
    for who in ("acme", "cygnus"):
        assert get(client, keys[who], "/v1/tables/gold/ohlcv_bars/rows").json()["total_rows"] == 2
    rows = get(client, keys["cygnus"], "/v1/tables/gold/trader_leaderboard/rows", page_size=1000).json()["rows"]
    assert len(rows) == 10 and {r["tenant_id"] for r in rows} == {"t-cygnus"}


def test_surveillance_labels_of_the_shared_anomaly_scores_are_served_to_no_tenant(api):
    """gold.snn_anomaly_scores is market-wide, but its ground truth (which window held which known manipulation)
    is about other participants: the scores and flags are served, the labels are unknown columns."""
    client, keys, lake = api
    lake.replace_partition("gold.snn_anomaly_scores", pa.table({
        "instrument": ["A", "B"], "label": [True, False], "anomaly_type": ["wash_trade", None],
        "anomaly_id": ["wash-0017", None], "snn_score": [0.9, 0.1], "snn_flag": [True, False],
        "partition_date": pa.array([DAY] * 2, pa.date32())}), "partition_date", DAY)
    for who in ("acme", "cygnus"):
        body = get(client, keys[who], "/v1/tables/gold/snn_anomaly_scores/rows").json()
        assert body["total_rows"] == 2 and body["columns"] == ["instrument", "snn_score", "snn_flag", "partition_date"]
        assert all(set(r) == set(body["columns"]) for r in body["rows"])
        for params in ({"columns": "instrument,anomaly_id"}, {"filter": "label:eq:true"},
                       {"filter": "anomaly_type:eq:wash_trade"}):
            r = get(client, keys[who], "/v1/tables/gold/snn_anomaly_scores/rows", **params)
            assert is_problem(r, 422)["type"].endswith("/invalid-read") and "wash" not in r.text
        listed = {t["table"]: t for t in get(client, keys[who], "/v1/catalog").json()}["gold.snn_anomaly_scores"]
        assert [c["name"] for c in listed["columns"]] == ["instrument", "snn_score", "snn_flag", "partition_date"]


def test_timestamp_and_non_finite_filters_are_rows_or_422_never_500(api):
    client, keys, lake = api
    naive = [dt.datetime(2024, 1, 2, 10, m) for m in range(3)]
    lake.replace_partition("gold.price_direction_predictions", pa.table({  # event_ts: timestamp (no zone)
        "instrument": ["A"] * 3, "event_ts": pa.array(naive, pa.timestamp("us")), "score": [0.1, 0.5, 0.9],
        "partition_date": pa.array([DAY] * 3, pa.date32())}), "partition_date", DAY)
    lake.replace_partition("gold.snn_anomaly_scores", pa.table({  # window_start: timestamptz
        "instrument": ["A"] * 3, "window_start": pa.array([t.replace(tzinfo=dt.timezone.utc) for t in naive],
                                                           pa.timestamp("us", tz="UTC")),
        "partition_date": pa.array([DAY] * 3, pa.date32())}), "partition_date", DAY)
    for table, column in (("price_direction_predictions", "event_ts"), ("snn_anomaly_scores", "window_start")):
        for value in ("2024-01-02T10:01:00", "2024-01-02T10:01:00Z", "2024-01-02T10:01:00+00:00",
                      "2024-01-02T11:01:00+01:00"):  # all the same instant, read as UTC when it has no zone
            r = get(client, keys["acme"], f"/v1/tables/gold/{table}/rows", filter=f"{column}:ge:{value}")
            assert r.status_code == 200 and r.json()["total_rows"] == 2, (table, value, r.text)
    for value in ("nan", "NaN", "inf", "-Infinity"):
        r = get(client, keys["acme"], "/v1/tables/gold/price_direction_predictions/rows", filter=f"score:eq:{value}")
        assert is_problem(r, 422)["type"].endswith("/invalid-read")
    for value in ("0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"):  # in UTC, outside datetime's range
        r = get(client, keys["acme"], "/v1/tables/gold/price_direction_predictions/rows", filter=f"event_ts:ge:{value}")
        assert is_problem(r, 422)["type"].endswith("/invalid-read")


def test_decimal_filters_select_exactly_the_rows_they_describe(api):
    """A bound between two values of the column's scale is moved onto the right one, never to the nearest."""
    client, keys, lake = api
    lake.replace_partition("gold.positions_pnl", pa.table({
        "account_id": [1, 2, 3, 4], "tenant_id": ["t-acme"] * 4,
        "volume": pa.array([Decimal(4), Decimal(5), Decimal(6), None], pa.decimal128(38, 0)),
        "price": pa.array([Decimal("1.25"), Decimal("2.50"), None, Decimal("-1.00")], pa.decimal128(5, 2)),
        "partition_date": pa.array([DAY] * 4, pa.date32())}), "partition_date", DAY)
    expected = {  # volume: 4, 5, 6, null; price: 1.25, 2.50, null, -1.00
        "volume:gt:4.6": {2, 3}, "volume:ge:4.6": {2, 3}, "volume:lt:4.6": {1}, "volume:le:4.6": {1},
        "volume:eq:5.4": set(), "volume:ne:5.4": {1, 2, 3}, "volume:eq:5": {2}, "volume:eq:5.00": {2},
        "volume:ne:5": {1, 3}, "volume:gt:5": {3}, "volume:ge:5": {2, 3}, "volume:lt:5": {1}, "volume:le:5": {1, 2},
        "volume:gt:5E+0": {3}, "volume:gt:-0.5": {1, 2, 3}, "volume:lt:-0.5": set(), "volume:ge:1e30": set(),
        "volume:lt:1e30": {1, 2, 3}, "volume:le:99999999999999999999999999999999999999": {1, 2, 3},
        "price:gt:1.251": {2}, "price:ge:1.249": {1, 2}, "price:eq:1.250": {1}, "price:eq:1.2500001": set(),
        "price:ne:1.2500001": {1, 2, 4}, "price:lt:-0.999": {4}, "price:le:-1.001": set(),
        "price:ge:-1.001": {1, 2, 4}, "price:le:999.99": {1, 2, 4},
    }
    for condition, accounts in expected.items():
        r = get(client, keys["acme"], "/v1/tables/gold/positions_pnl/rows", filter=condition)
        assert r.status_code == 200, (condition, r.text)
        assert {row["account_id"] for row in r.json()["rows"]} == accounts, condition
    for condition in ("volume:ge:1e38", "volume:eq:-1e38", "price:lt:1000", "price:ge:999.995", "price:eq:1e999999999",
                      "volume:eq:nan", "volume:gt:-inf", "volume:eq:sNaN", "volume:eq:abc"):
        r = get(client, keys["acme"], "/v1/tables/gold/positions_pnl/rows", filter=condition)
        assert is_problem(r, 422)["type"].endswith("/invalid-read"), condition


def test_pages_and_time_travel_read_their_snapshots_schema(api):
    client, keys, lake = api
    path = "/v1/tables/gold/trader_leaderboard/rows"
    first = get(client, keys["acme"], path, page_size=8).json()
    old_columns = first["columns"]
    # the model gains a column between pages
    lake.replace_partition("gold.trader_leaderboard",
                           leaderboard(5, lambda i: "t-acme").append_column("sharpe", pa.array([0.5] * 5)),
                           "partition_date", DAY)
    seen, token = list(first["rows"]), first["next_page_token"]
    while token:
        r = get(client, keys["acme"], path, page_size=8, page_token=token)
        assert r.status_code == 200, r.text
        assert r.json()["columns"] == old_columns and r.json()["snapshot_id"] == first["snapshot_id"]
        seen += r.json()["rows"]
        token = r.json()["next_page_token"]
    assert len(seen) == 20 and {r["tenant_id"] for r in seen} == {"t-acme"}
    old = get(client, keys["acme"], path, snapshot_id=first["snapshot_id"]).json()
    assert old["columns"] == old_columns and old["total_rows"] == 20
    for params in ({"columns": "pnl_rank,sharpe"}, {"filter": "sharpe:gt:0"}):  # not in that snapshot
        r = get(client, keys["acme"], path, snapshot_id=first["snapshot_id"], **params)
        assert is_problem(r, 422)["type"].endswith("/invalid-read"), params
    assert get(client, keys["acme"], path, filter="sharpe:gt:0").json()["total_rows"] == 5


def test_snapshots_from_before_a_table_had_tenant_id_are_never_served(api):
    client, keys, lake = api
    lake.replace_partition("gold.futures_margin", pa.table({
        "account_id": [101, 202], "balance_cents": [98800, 101200],
        "partition_date": pa.array([DAY] * 2, pa.date32())}), "partition_date", DAY)
    before = lake.load_table("gold.futures_margin").current_snapshot().snapshot_id
    lake.replace_partition("gold.futures_margin", pa.table({
        "account_id": [101, 202], "balance_cents": [98800, 101200], "tenant_id": ["t-acme", "t-cygnus"],
        "partition_date": pa.array([DAY] * 2, pa.date32())}), "partition_date", DAY)
    path = "/v1/tables/gold/futures_margin/rows"
    for who, account in (("acme", 101), ("cygnus", 202)):
        assert [r["account_id"] for r in get(client, keys[who], path).json()["rows"]] == [account]
        for params in ({}, {"columns": "account_id"}, {"filter": "account_id:gt:0"}):
            # the rows of that snapshot say nothing of whose they are: answered like a snapshot that does not exist
            body = is_problem(get(client, keys[who], path, snapshot_id=before, **params), 404)
            assert body["type"].endswith("/unknown-snapshot"), body


@pytest.mark.slow
def test_data_api_conforms_to_its_schema(api):
    """Schemathesis over every operation (the lake fixture is per test, so the loop runs inside it)."""
    from tests.services.conformance import check_every_operation

    client, keys, _ = api
    assert len(check_every_operation(client.app, {"X-API-Key": keys["acme"]})) >= 8


class CountingLake:
    """The lake, counting the scans that read rows (not the schema lookups)."""

    def __init__(self, lake):
        self.lake, self.scans = lake, 0

    def list_tables(self):
        return self.lake.list_tables()

    def load_table(self, identifier):
        table, lake = self.lake.load_table(identifier), self

        class Counted:
            def __getattr__(self, name):
                return getattr(table, name)

            def scan(self, **kwargs):
                lake.scans += "row_filter" in kwargs
                return table.scan(**kwargs)

        return Counted()


def read_all(client, key, path, **params):
    r = get(client, key, path, **params).json()
    rows, token = list(r["rows"]), r["next_page_token"]
    while token:
        r = get(client, key, path, page_token=token, **params).json()
        rows, token = rows + r["rows"], r["next_page_token"]
    return rows, r["snapshot_id"]


def test_the_pages_of_a_read_scan_the_table_once(api):
    _, _, lake = api
    path = "/v1/tables/gold/trader_leaderboard/rows"
    apps, ctx_keys = {}, {}
    for name, cache in (("cached", 1 << 20), ("uncached", 0)):
        ctx, counting = ServiceContext("data", rate=1000.0, burst=1000), CountingLake(lake)
        apps[name] = TestClient(create_data_app(ctx, counting, page_cache_bytes=cache)), counting
        ctx_keys[name] = {"acme": ctx.keys.create("ann", "t-acme", ["viewer"]),
                          "cygnus": ctx.keys.create("cy", "t-cygnus", ["viewer"])}
    (cached, counted), (uncached, plain) = apps["cached"], apps["uncached"]
    rows, snapshot = read_all(cached, ctx_keys["cached"]["acme"], path, page_size=3)
    assert len(rows) == 20 and counted.scans == 1  # 7 pages, one scan
    same, _ = read_all(uncached, ctx_keys["uncached"]["acme"], path, page_size=3)
    assert same == rows and plain.scans == 7  # the same rows in the same order as a scan per page
    # another tenant's read is its own: its rows only
    theirs, _ = read_all(cached, ctx_keys["cached"]["cygnus"], path, page_size=3)
    assert len(theirs) == 10 and {r["tenant_id"] for r in theirs} == {"t-cygnus"} and counted.scans == 2
    # a new snapshot: the latest is read again, the old one stays readable by its id
    lake.replace_partition("gold.trader_leaderboard", leaderboard(5, lambda i: "t-acme"), "partition_date", DAY)
    latest, new_snapshot = read_all(cached, ctx_keys["cached"]["acme"], path, page_size=3)
    assert len(latest) == 5 and new_snapshot != snapshot and counted.scans == 3
    again, _ = read_all(cached, ctx_keys["cached"]["acme"], path, page_size=3, snapshot_id=snapshot)
    assert again == rows and counted.scans == 3
    # other columns or filters are other reads
    narrow, _ = read_all(cached, ctx_keys["cached"]["acme"], path, page_size=3, columns="pnl_rank,pnl")
    assert [set(r) for r in narrow] == [{"pnl_rank", "pnl"}] * 5 and counted.scans == 4
    top, _ = read_all(cached, ctx_keys["cached"]["acme"], path, filter="pnl_rank:le:2")
    assert [r["pnl_rank"] for r in top] == [1, 2] and counted.scans == 5


def test_reads_of_an_expired_snapshot_are_dropped_from_memory(api):
    from resources.lake_maintenance import expire_snapshots

    _, _, lake = api
    ctx = ServiceContext("data", rate=1000.0, burst=1000)
    client = TestClient(create_data_app(ctx, lake), raise_server_exceptions=False)
    key = ctx.keys.create("ann", "t-acme", ["viewer"])
    path = "/v1/tables/gold/trader_leaderboard/rows"
    old = get(client, key, path, page_size=3).json()
    lake.replace_partition("gold.trader_leaderboard", leaderboard(5, lambda i: "t-acme"), "partition_date", DAY)
    cache = client.app.state.data_reader.cache
    assert {k[2] for k in cache._entries} == {old["snapshot_id"]}
    expire_snapshots(lake, "gold.trader_leaderboard", dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=5))
    latest = get(client, key, path, page_size=3).json()
    assert latest["total_rows"] == 5 and {k[2] for k in cache._entries} == {latest["snapshot_id"]}
    body = is_problem(get(client, key, path, page_token=old["next_page_token"]), 404)
    assert body["type"].endswith("/unknown-snapshot")


def test_the_page_cache_keeps_at_most_its_bytes_least_recently_used_out():
    from services.data_api.reader import PageCache

    def rows(n):
        return pa.table({"x": pa.array(range(n), pa.int64())})

    a, b, c, d = (("gold.t", "uuid-1", snapshot) for snapshot in (1, 2, 3, 4))
    cache = PageCache(max_bytes=2 * rows(100).nbytes)
    cache.put(a, rows(100))
    cache.put(b, rows(100))
    assert cache.get(a) is not None  # a is now the most recently used
    cache.put(c, rows(100))
    assert cache.get(b) is None and cache.get(a) is not None and cache.get(c) is not None
    assert cache.nbytes == 2 * rows(100).nbytes and len(cache) == 2
    cache.put(d, rows(1000))  # larger than the whole cache: not kept, nothing evicted for it
    assert cache.get(d) is None and len(cache) == 2
    cache.keep_only("gold.t", "uuid-1", {3})  # snapshot 1 is gone
    assert cache.get(a) is None and cache.get(c) is not None and cache.nbytes == rows(100).nbytes
    cache.keep_only("gold.t", "uuid-2", {3})  # the table was dropped and made again under its name
    assert len(cache) == 0 and cache.nbytes == 0


def test_the_served_data_api_takes_its_cache_size_from_the_settings(lake, tmp_path, monkeypatch):
    from resources.services import build_local_app
    from resources.settings import Settings

    config = {k: getattr(lake, k) for k in ("catalog_uri", "warehouse")}
    monkeypatch.setenv("PLATFORMQ_DATA_API_CACHE_MB", "3")
    app, _ = build_local_app("data", str(tmp_path), config,
                             data_page_cache_bytes=Settings().data_api_cache_mb * 2**20)
    assert app.state.data_reader.cache.max_bytes == 3 * 2**20
    app, _ = build_local_app("data", str(tmp_path), config)
    assert app.state.data_reader.cache.max_bytes == 256 * 2**20


def test_a_lake_that_cannot_be_reached_is_a_503_as_the_other_services_dependencies_never_a_500(tmp_path):
    """The lake's catalog database down (or its object store: a data file that cannot be read) answered 500
    "an unexpected error occurred", which clients take for a bug and do not retry; the other services answer
    503 for a dependency that is down (state-store-, registry-, feature-store-unavailable)."""
    from resources.erasure import LakeErasureDesk
    from resources.lake import LakeResource

    # nothing listens on port 1: the catalog's database refuses the connection at once
    down = LakeResource(catalog_uri="postgresql+psycopg2://u:p@127.0.0.1:1/c", warehouse=f"file://{tmp_path}/w")
    ctx = ServiceContext("data", rate=1000.0, burst=1000)
    admin = ctx.keys.create("ann", "t-acme", ["admin"])
    client = TestClient(create_data_app(ctx, down, erasure=LakeErasureDesk(down)), raise_server_exceptions=False)
    for method, path, body in (("GET", "/v1/catalog", None), ("GET", "/v1/tables/gold/trader_leaderboard/rows", None),
                               ("GET", "/v1/audit-log", None), ("GET", "/v1/erasure-requests", None),
                               ("POST", "/v1/erasure-requests", {"account_id": 1, "reason": "DSR-1"})):
        answer = client.request(method, path, json=body, headers={"X-API-Key": admin})
        problem = is_problem(answer, 503)
        assert problem["type"].endswith("/lake-unavailable") and "try again" in problem["detail"], (path, problem)


def test_a_data_file_that_cannot_be_read_is_a_503(api, tmp_path):
    from pathlib import Path
    from urllib.parse import urlparse

    client, keys, lake = api
    table = lake.load_table("gold.trader_leaderboard")
    for task in table.scan().plan_files():  # the object store loses them (or an expiry removed them mid-read)
        Path(urlparse(task.file.file_path).path).unlink()
    is_problem(get(client, keys["acme"], "/v1/tables/gold/trader_leaderboard/rows"), 503)


def test_a_data_file_that_cannot_be_decoded_is_a_500_not_a_503_to_wait_out(api):
    """pyarrow raises OSError for a corrupt Parquet file as for an unreachable store: taken for an outage, every
    read of the table answered 503 "try again later" for ever, and the traceback was dropped."""
    from pathlib import Path
    from urllib.parse import urlparse

    client, keys, lake = api
    table = lake.load_table("gold.trader_leaderboard")
    for task in table.scan().plan_files():
        path = Path(urlparse(task.file.file_path).path)
        data = bytearray(path.read_bytes())
        data[4:len(data) - 8] = b"\x00" * (len(data) - 12)  # the magic bytes stay, the pages and footer are gone
        path.write_bytes(bytes(data))
    problem = is_problem(get(client, keys["acme"], "/v1/tables/gold/trader_leaderboard/rows"), 500)
    assert not problem["type"].endswith("/lake-unavailable")


def test_a_lake_failing_after_an_erasure_request_is_written_is_not_a_503_whose_retry_files_it_again(lake):
    """A service's 503 means the change was not made (the platform's client sends a POST again on one): a catalog
    failing as the request's commit ends (or in the refresh after it) answered 503 although the request was filed,
    and the retry filed a second one."""
    from resources.erasure import LakeErasureDesk, list_requests

    class FailingAfterTheCommit(LakeErasureDesk):
        def file(self, *args):
            super().file(*args)  # filed
            raise OSError("AWS Error NETWORK_CONNECTION during HeadObject operation: curlCode: 7")

    ctx = ServiceContext("data", rate=1000.0, burst=1000)
    admin = ctx.keys.create("ann", "t-acme", ["admin"])
    client = TestClient(create_data_app(ctx, lake, erasure=FailingAfterTheCommit(lake)), raise_server_exceptions=False)
    answer = client.post("/v1/erasure-requests", json={"account_id": 7, "reason": "DSR-7"}, headers={"X-API-Key": admin})
    problem = is_problem(answer, 500)
    assert problem["type"].endswith("/lake-write-outcome-unknown") and "may have been recorded" in problem["detail"]
    assert [r["account_id"] for r in list_requests(lake)] == [7]  # it was: the caller is told to look first
