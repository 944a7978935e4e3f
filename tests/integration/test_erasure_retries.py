"""A second erasure request for an account whose first is under way (a retried filing, a request sent again while
a feature-store outage kept the first in progress) is the tenant's own, not rejected."""

import datetime as dt

import pyarrow as pa

DAY = dt.date(2024, 1, 2)


def test_a_request_sent_again_while_the_first_is_in_progress_is_not_rejected(settings, lake):
    from resources import erasure

    lake.replace_partition("bronze.accounts", pa.table({
        "account_id": pa.array([1, 2], pa.int64()), "tenant_id": ["t-acme", "t-acme"],
        "email": ["p1@example.org", "p2@example.org"], "partition_date": pa.array([DAY] * 2, pa.date32())}),
        "partition_date", DAY)

    def feast_down(_accounts):
        raise ConnectionError("feature store unreachable")

    first = erasure.request_erasure(lake, "t-acme", 2, "DSR-50", "dpo")
    assert erasure.process_requests(lake, online_eraser=feast_down)["completed"] == 0  # the lake's part is done
    again = erasure.request_erasure(lake, "t-acme", 2, "DSR-50 (sent again)", "dpo")
    other = erasure.request_erasure(lake, "t-borealis", 2, "not theirs", "mallory")
    summary = erasure.process_requests(lake, online_eraser=lambda _accounts: 0)
    status = {r["request_id"]: (r["status"], r["detail"]) for r in erasure.list_requests(lake)}
    assert status[first["request_id"]][0] == "completed"
    assert status[again["request_id"]][0] == "completed", status[again["request_id"]]
    assert status[other["request_id"]] == ("rejected", "account 2 is not an account of tenant t-borealis")
    assert (summary["completed"], summary["rejected"]) == (2, 1)
