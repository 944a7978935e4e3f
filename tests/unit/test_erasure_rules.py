"""Erasure rules on Arrow tables (resources/erasure.py), without a lake."""

import base64
import json

import pyarrow as pa

from platformq_assets.lake.landing_reader import RAW_LIMIT, parse_file
from resources.erasure import RULES, apply_rule

QUARANTINE_RULE = next(rule for rule in RULES if rule.table == "quarantine.landing")


def _quarantine(raws: list[str]) -> pa.Table:
    return pa.table({"file": ["kyc_events/k"] * len(raws), "raw_record": raws})


def _held(name: str, data: bytes) -> str:
    """The raw record landing keeps for a file that is quarantined as one record."""
    [held] = parse_file(name, data).quarantined
    return held.raw


def test_quarantined_files_and_arrays_holding_the_subjects_records_are_erased():
    """A KYC export written as one JSON document (an array over several lines, or JSON Lines with a reserved
    column name) is quarantined whole, as base64 of its first bytes; an array on one line is one record, cut at
    RAW_LIMIT characters. Neither is a JSON object, so the subject's e-mail in them escaped every erasure, the
    residue check passed, and landing stored a later such file naming an erased account."""
    records = [{"account_id": 2, "email": "subject@example.org"}, {"account_id": 3, "email": "other@example.org"}]
    document = _held("kyc.json", json.dumps(records, indent=1).encode())
    reserved = _held("kyc.jsonl", b'{"account_id": "0002", "_note": "x", "email": "subject@example.org"}\n')
    assert document.startswith("base64:") and reserved.startswith("base64:")
    array_line = _held("kyc.jsonl", json.dumps(records).encode() + b"\n")
    # longer than the part kept: cut in the middle of an object; the complete ones before the cut are read
    long = [{"Account_ID": 4, "note": "x"}] + [{"account_id": 3, "email": f"p{i}@example.org"} for i in range(200)]
    cut = _held("long.jsonl", json.dumps(long + [{"account_id": 5}]).encode() + b"\n")
    assert len(cut) == RAW_LIMIT and '"account_id": 5' not in cut
    cut_file = _held("long.json", json.dumps(long + [{"account_id": 5}], indent=1).encode())
    data = _quarantine([document, reserved, array_line, cut, cut_file])

    kept, erased = apply_rule(QUARANTINE_RULE, data, {2})
    assert erased == 3 and kept.column("raw_record").to_pylist() == [cut, cut_file]
    assert apply_rule(QUARANTINE_RULE, data, {4})[1] == 2  # the first object of the cut ones
    assert apply_rule(QUARANTINE_RULE, data, {3})[1] == 4
    assert apply_rule(QUARANTINE_RULE, data, {5})[1] == 0  # past the cut: not kept, nothing to erase
    assert apply_rule(QUARANTINE_RULE, data, {7})[1] == 0


def test_quarantined_text_with_no_complete_object_naming_the_account_is_kept():
    csv_without_header = _held("kyc.csv", b"2,subject@example.org\n")  # nothing safe to match on
    assert csv_without_header.startswith("base64:")
    broken = '{"account_id": 2, "event": '  # an incomplete object
    nested_only = '{"trade": {"account_id": 2}, "account_id": 3}'  # a record of account 3
    not_base64 = 'base64:not base64 at all {"account_id": 2}'
    numbers = "[2, 3]"
    kept, erased = apply_rule(QUARANTINE_RULE, _quarantine([csv_without_header, broken, nested_only, not_base64,
                                                            numbers]), {2})
    assert erased == 0 and kept.num_rows == 5
    binary = "base64:" + base64.b64encode(b"PAR1\x00\xff\xfe account_id {\"account_id\": 7}").decode()
    assert apply_rule(QUARANTINE_RULE, _quarantine([binary]), {7})[1] == 1  # undecodable bytes are passed over
