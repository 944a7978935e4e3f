"""Sample landing-zone files for the demo: real data from vega_datasets, plus bad files.

The good files carry real market data shipped in the ``vega_datasets``
package (monthly stock closes as CSV, daily VIX OHLC as Parquet); the bad
ones show what quarantine does with a malformed row, an unparseable JSON
line and an empty file. Content is deterministic, so seeding twice writes the
same bytes and the landing ledger ingests each file once.
"""

from __future__ import annotations

import io
import json
from importlib import resources
from pathlib import Path


def _vega(name: str) -> bytes:
    return (resources.files("vega_datasets") / "_data" / name).read_bytes()


def sample_files() -> dict[str, bytes]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    ohlc = json.loads(_vega("ohlc.json"))
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(ohlc), buffer)

    kyc_lines = []
    for i in range(1, 19):
        kyc_lines.append(json.dumps({
            "account_id": i, "event": "kyc_reviewed" if i % 3 else "kyc_refreshed",
            "at": f"2024-01-{(i % 28) + 1:02d}T09:{i:02d}:00Z", "verified": i % 5 != 0, "risk_score": round(0.05 * i, 2),
        }))
    kyc_lines.insert(7, '{"account_id": 99, "event": "kyc_reviewed", "at": ')  # truncated record
    kyc_lines.insert(11, '{"account_id": "abc", "event": "kyc_reviewed", "at": "2024-01-05T10:00:00Z"}')

    bad_quotes = (
        "symbol,date,price\n"
        "MSFT,Jan 1 2011,27.91\n"
        "MSFT,Feb 1 2011,n/a\n"  # not a number
        "MSFT,Mar 1 2011,25.39,extra\n"  # too many fields
        "IBM,Jan 1 2011,162.00\n"
    )
    return {
        "partner_quotes/stocks_monthly.csv": _vega("stocks.csv"),
        "partner_quotes/vix_daily.parquet": buffer.getvalue(),
        "partner_quotes/quotes_2011_with_errors.csv": bad_quotes.encode(),
        "kyc_events/kyc_2024.jsonl": ("\n".join(kyc_lines) + "\n").encode(),
        "kyc_events/empty_export.jsonl": b"",
    }


def seed_landing_zone(landing_dir: Path) -> list[Path]:
    """Write the sample files that are not there yet (never overwrites)."""
    written = []
    for relpath, data in sample_files().items():
        path = Path(landing_dir) / relpath
        if path.exists():
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")  # the landing zone ignores *.tmp until renamed
        tmp.write_bytes(data)
        tmp.replace(path)
        written.append(path)
    return written
