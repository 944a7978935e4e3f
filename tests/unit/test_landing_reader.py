"""Landing file parsing: every record is accepted or quarantined with a reason."""

import io

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from platformq_assets.lake.landing_reader import parse_file


def test_csv_types_inferred_and_bad_rows_quarantined():
    data = b"id,price,ts,flag\n1,2.5,2024-01-01T00:00:00Z,true\n2,abc,2024-01-02,false\n3,4\n4,5,2024-01-03,yes\n"
    p = parse_file("q.csv", data)
    assert p.columns == {"id": "long", "price": "double", "ts": "timestamp", "flag": "boolean"}
    assert p.records_read == 4 and len(p.accepted) == 2 and p.reconciles
    reasons = {q.line: q.reason for q in p.quarantined}
    assert "'abc' is not a double" in reasons[3]
    assert reasons[4] == "expected 4 fields, found 2"
    assert p.quarantined[0].raw == "2,abc,2024-01-02,false"


def test_existing_table_types_win_over_inference():
    p = parse_file("q.csv", b"id,price\n1,10\n2,x\n", table_types={"price": "double"})
    assert p.columns["price"] == "double"
    assert "table's column type is double" in p.quarantined[0].reason
    assert p.accepted == [{"id": 1, "price": 10.0}]


@pytest.mark.parametrize("name, data, reason", [
    ("a.csv", b"", "empty file (0 bytes)"),
    ("a.jsonl", b"", "empty file (0 bytes)"),
    ("a.csv", b"id,price\n", "file has a header but no data rows"),
    ("a.csv", "id,name\n1,café\n".encode("latin-1"), "file is not valid UTF-8 (byte 0xe9"),
    ("a.parquet", b"PAR1 this is not parquet", "unreadable Parquet file"),
    ("a.xlsx", b"whatever", "unsupported file type .xlsx"),
])
def test_file_level_problems_have_clear_reasons(name, data, reason):
    p = parse_file(name, data)
    assert p.records_read == 1 and not p.accepted and len(p.quarantined) == 1
    assert p.quarantined[0].line is None and reason in p.quarantined[0].reason
    assert p.reconciles


def test_truncated_parquet_is_quarantined():
    buffer = io.BytesIO()
    pq.write_table(pa.table({"a": list(range(1000))}), buffer)
    p = parse_file("t.parquet", buffer.getvalue()[:-100])
    assert "unreadable Parquet file (truncated or corrupt)" in p.quarantined[0].reason
    assert p.quarantined[0].raw.startswith("base64:")


def test_jsonl_bad_lines_and_non_objects():
    p = parse_file("e.jsonl", b'{"a": 1}\n[1, 2]\n{oops\n\n{"a": 2, "b": {"x": 1}}\n')
    assert p.records_read == 4 and len(p.accepted) == 2 and p.reconciles
    assert [q.line for q in p.quarantined] == [2, 3]
    assert "not an object" in p.quarantined[0].reason and "invalid JSON" in p.quarantined[1].reason
    assert p.accepted[1]["b"] == '{"x": 1}'  # nested values kept as JSON text


def test_parquet_rows_cast_against_table_types():
    buffer = io.BytesIO()
    pq.write_table(pa.table({"id": [1, 2], "price": ["1.5", "bad"]}), buffer)
    p = parse_file("p.parquet", buffer.getvalue(), table_types={"price": "double"})
    assert p.accepted == [{"id": 1, "price": 1.5}] and len(p.quarantined) == 1 and p.reconciles


def test_utf8_bom_and_crlf_are_fine():
    p = parse_file("b.csv", "\ufeffid,name\r\n1,Zoë\r\n".encode())
    assert p.accepted == [{"id": 1, "name": "Zoë"}]


def test_values_a_bronze_column_cannot_hold_are_quarantined_not_fatal():
    big = str(2**63).encode()
    p = parse_file("q.csv", b"id,qty\n1,5\n2," + big + b"\n3,-9223372036854775808\n")
    assert p.columns["qty"] == "long" and p.reconciles
    assert [r["qty"] for r in p.accepted] == [5, -(2**63)]
    assert "outside the 64-bit integer range" in p.quarantined[0].reason and p.quarantined[0].line == 3
    # text float() or int() would take, but that is not a plain number
    p = parse_file("q.csv", b"id,x\n1,2.5\n2,nan\n3,1_0\n4,inf\n5,-1e3\n", table_types={"x": "double"})
    assert [r["x"] for r in p.accepted] == [2.5, -1000.0]
    assert sorted(q.line for q in p.quarantined) == [3, 4, 5]
    p = parse_file("q.csv", b"id\n1_000\n7\n", table_types={"id": "long"})
    assert [r["id"] for r in p.accepted] == [7] and "is not a long" in p.quarantined[0].reason


def test_csv_field_limit_unterminated_quote_and_reserved_columns():
    p = parse_file("q.csv", b"id,note\n1," + b"x" * 200_000 + b"\n2,ok\n")  # over the csv module's 128 KiB default
    assert p.reconciles and len(p.accepted) == 2 and len(p.accepted[0]["note"]) == 200_000
    p = parse_file("q.csv", b'id,note\n1,fine\n2,"never closed\n3,lost\n')
    assert p.reconciles and [r["id"] for r in p.accepted] == [1]
    [bad] = p.quarantined
    assert bad.line == 3 and "malformed CSV" in bad.reason and bad.raw == '2,"never closed\n3,lost'
    for header in (b"id,_line", b"id,_source"):
        p = parse_file("q.csv", header + b"\n1,2\n")
        assert p.accepted == [] and p.quarantined[0].line is None and "reserved" in p.quarantined[0].reason
    p = parse_file("q.csv", b"id,,x\n1,2,3\n")
    assert p.accepted == [] and "blank column name" in p.quarantined[0].reason


def test_line_separators_inside_values_do_not_split_records():
    ls = "\u2028".encode()
    p = parse_file("q.jsonl", b'{"id": 1, "t": "a' + ls + b'b"}\n{"id": 2, "t": "c\xc2\x85d"}\n')
    assert p.records_read == 2 and [r["t"] for r in p.accepted] == ["a\u2028b", "c\u0085d"]
    p = parse_file("q.csv", b"id,t\r\n1,a" + ls + b"b\r\n2,c\r\nx,d\r\n")
    assert p.records_read == 3 and p.quarantined[0].line == 4 and p.quarantined[0].raw == "x,d"
    p = parse_file("q.csv", b'id,t\n1,"two\nlines"\nx,y\n', table_types={"id": "long"})
    assert p.accepted[0]["t"] == "two\nlines" and p.quarantined[0].raw == "x,y" and p.quarantined[0].line == 4


def test_summaries_name_the_problem_without_the_values():
    secret = "jane.doe@example.com"
    data = (b"id,price,ts,flag\n1,2.5,2024-01-01,true\n2,3.5,2024-01-02,false\n3,4.5,2024-01-03,true\n"
            b"%s,%s,%s,%s\n" % ((secret.encode(),) * 4))
    p = parse_file("q.csv", data)
    [bad] = p.quarantined
    assert secret in bad.reason and secret not in bad.summary
    assert bad.summary == ("column 'id': not a long (a whole number) (the type inferred for this file is long); "
                           "column 'price': not a double (a plain decimal number) (the type inferred for this file "
                           "is double); column 'ts': not a timestamp (the type inferred for this file is timestamp); "
                           "column 'flag': not a boolean (the type inferred for this file is boolean)")
    whole = parse_file("p.parquet", b"PAR1 " + secret.encode()).quarantined[0]
    assert whole.summary == "unreadable Parquet file (truncated or corrupt)" and whole.reason.startswith(whole.summary)


def test_csv_line_numbers_and_raw_records_follow_lone_carriage_returns():
    """The csv reader ends a line at a lone CR (old Mac files, or one inside a quoted value): the line number and
    raw record a quarantined row keeps are its own, not a neighbour's."""
    p = parse_file("q.csv", b'id,t\n1,"a\rb"\nx,y\n2,z\n')
    assert p.accepted == [{"id": 1, "t": "a\rb"}, {"id": 2, "t": "z"}] and p.accepted_lines == [3, 5]
    [bad] = p.quarantined
    assert (bad.line, bad.raw) == (4, "x,y") and "'x' is not a long" in bad.reason
    p = parse_file("q.csv", b"id,t\r1,a\r2,b\rx,c\r")  # CR-only line ends
    assert p.accepted == [{"id": 1, "t": "a"}, {"id": 2, "t": "b"}]
    assert [(q.line, q.raw) for q in p.quarantined] == [(4, "x,c")]


@pytest.mark.parametrize("name, data, lines", [
    ("q.csv", b"a,b\n1,2\n,\n3,4\n , \n", [3, 5]),
    ("q.jsonl", b'{"a": 1, "b": 2}\n{}\n{"a": null, "b": ""}\n', [2, 3]),
])
def test_records_without_values_are_quarantined_not_dropped(name, data, lines):
    p = parse_file(name, data)
    assert p.reconciles and p.records_read == len(p.accepted) + len(lines)
    assert [q.line for q in p.quarantined] == lines
    assert all(q.reason == "record has no values (every field is empty)" for q in p.quarantined)


def test_codes_written_as_digits_keep_their_zeros_and_signs():
    p = parse_file("q.csv", b"zip,phone,qty\n02139,+4930123,5\n10001,+4930124,-7\n")
    assert p.columns == {"zip": "string", "phone": "string", "qty": "long"}
    assert [(r["zip"], r["phone"]) for r in p.accepted] == [("02139", "+4930123"), ("10001", "+4930124")]


def test_whole_numbers_mixed_with_decimals_make_a_double_column():
    for name, data in (("q.jsonl", b'{"px": 100}\n{"px": 101}\n{"px": 100.5}\n'),
                       ("q.csv", b"px\n100\n101\n100.5\n")):
        p = parse_file(name, data)
        assert p.columns == {"px": "double"} and [r["px"] for r in p.accepted] == [100.0, 101.0, 100.5], name
    # a whole number too large for a long stays a long column's quarantined value (a double would round it)
    assert parse_file("q.csv", b"n\n1\n2\n99999999999999999999\n").columns == {"n": "long"}


def test_a_column_without_values_is_left_untyped():
    """A column blank in a new table's first file gets no type from it (a string column would stay for good and
    refuse the numbers later files bring); its nulls are an Arrow null column the table leaves out."""
    p = parse_file("q.jsonl", b'{"event": "opened", "account_id": null}\n{"event": "kyc", "account_id": ""}\n')
    assert p.columns == {"event": "string", "account_id": "empty"}
    assert [r["account_id"] for r in p.accepted] == [None, None]
    later = parse_file("q.jsonl", b'{"event": "kyc", "account_id": 42}\n', table_types={"event": "string"})
    assert later.columns == {"event": "string", "account_id": "long"}


def test_a_broken_csv_record_is_quarantined_and_the_rest_of_the_file_read():
    body = b"".join(b"%d,ok\n" % i for i in range(3, 2001))
    p = parse_file("q.csv", b'id,note\n1,fine\n2,"bad"x\n' + body)
    assert p.reconciles and p.records_read == 2000
    assert len(p.accepted) == 1999 and [r["id"] for r in p.accepted][:2] == [1, 3]
    [bad] = p.quarantined
    assert bad.line == 3 and bad.raw == '2,"bad"x' and "malformed CSV" in bad.reason
    # a broken record spanning lines: its lines go together, the next line is read
    p = parse_file("q.csv", b'id,note\n1,"two\nlines"x,\n2,ok\n')
    assert p.reconciles and [r["id"] for r in p.accepted] == [2]
    assert p.quarantined[0].line == 2 and p.quarantined[0].raw == '1,"two\nlines"x,'


def test_nan_is_quarantined_in_every_format_and_raw_lines_are_cut():
    p = parse_file("q.jsonl", b'{"id": 1, "risk": NaN}\n{"id": 2, "risk": 0.5}\n{"id": 3, "risk": Infinity}\n',
                   table_types={"risk": "double"})
    assert [r["id"] for r in p.accepted] == [2] and p.reconciles
    assert {q.line: "NaN" in q.reason for q in p.quarantined} == {1: True, 3: False}
    table = pa.table({"id": [1, 2], "risk": pa.array([float("nan"), 1.5], pa.float64())})
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    p = parse_file("q.parquet", buffer.getvalue())
    assert [r["id"] for r in p.accepted] == [2] and "NaN" in p.quarantined[0].reason
    # a NaN first (or after empty values only) is a value too: its row is quarantined, the file read on
    p = parse_file("q.jsonl", b'{"a": NaN, "b": 2}\n{"a": 1, "b": 3}\n', table_types={"a": "double"})
    assert p.reconciles and [r["b"] for r in p.accepted] == [3] and "NaN" in p.quarantined[0].reason
    buffer = io.BytesIO()
    pq.write_table(pa.table({"a": [1.0, float("nan")], "b": [1, 2]}), buffer)
    p = parse_file("q.parquet", buffer.getvalue())
    assert p.reconciles and [r["b"] for r in p.accepted] == [1] and p.quarantined[0].line == 2
    p = parse_file("q.jsonl", b'{"id": 1}\n{"id": "' + b"x" * 100_000 + b'"\n[1, 2' + b", 3" * 50_000 + b"]\n")
    assert p.reconciles and all(len(q.raw) <= 4000 for q in p.quarantined) and len(p.quarantined) == 2


def test_a_json_record_repeating_a_key_is_quarantined_not_half_kept():
    # json.loads keeps the last of two values silently: the first amount was lost with no trace
    p = parse_file("q.jsonl", b'{"id": 1, "amount": 5, "amount": 7}\n{"id": 2, "amount": 3}\n'
                              b'{"id": 3, "meta": {"k": 1, "k": 2}}\n')
    assert p.reconciles and [r["id"] for r in p.accepted] == [2]
    assert [q.line for q in p.quarantined] == [1, 3]
    assert "'amount'" in p.quarantined[0].reason and "repeats" in p.quarantined[0].reason
    assert "'amount'" not in p.quarantined[0].summary  # a key of nested data can be a value


def test_a_json_line_python_cannot_decode_is_quarantined_alone():
    # an integer of more digits than Python converts, or nesting deeper than its recursion limit, raised past the
    # per-line handler: the whole file became one quarantined record and its good lines were never ingested
    data = (b'{"id": 1}\n{"id": ' + b"9" * 5000 + b'}\n{"id": 3, "x": ' + b"[" * 100_000 + b"]" * 100_000
            + b'}\n{"id": 4}\n')
    p = parse_file("q.jsonl", data)
    assert p.records_read == 4 and p.reconciles and [r["id"] for r in p.accepted] == [1, 4]
    assert [q.line for q in p.quarantined] == [2, 3]
    assert all(q.reason.startswith("invalid JSON") for q in p.quarantined)


@pytest.mark.parametrize("name, data", [
    ("q.csv", b"id,iccid\n1,89014103211118510720\n2,89014103211118510721\n"),
    ("q.jsonl", b'{"id": 1, "iccid": 89014103211118510720}\n{"id": 2, "iccid": 89014103211118510721}\n'),
])
def test_whole_numbers_too_long_for_64_bits_stay_text_not_rounded_doubles(name, data):
    # a double column rounded both 20-digit ids to 8.901410321111851e+19: two cards became one
    p = parse_file(name, data)
    assert p.columns["iccid"] == "string" and p.reconciles and not p.quarantined
    assert [r["iccid"] for r in p.accepted] == ["89014103211118510720", "89014103211118510721"]
    # a long column still quarantines the odd one out; decimals still make a double
    assert parse_file("q.csv", b"id\n1\n2\n89014103211118510720\n").columns["id"] == "long"
    assert parse_file("q.csv", b"x\n1.5\n2.5\n89014103211118510720\n").columns["x"] == "double"


def test_json_literals_in_a_text_column_are_read_as_json_writes_them():
    # Infinity was stored as the text 'inf' (NaN is quarantined in every column), true as 'True' (a CSV's
    # 'true' stays 'true': one column held both spellings)
    p = parse_file("q.jsonl", b'{"id": 1, "s": "x"}\n{"id": 2, "s": Infinity}\n{"id": 3, "s": -Infinity}\n'
                              b'{"id": 4, "s": true}\n{"id": 5, "s": false}\n', table_types={"s": "string"})
    assert p.reconciles and [q.line for q in p.quarantined] == [2, 3]
    assert all("infinite" in q.reason for q in p.quarantined)
    assert [r["s"] for r in p.accepted] == ["x", "true", "false"]


def test_parquet_nested_and_binary_values_are_kept_as_text():
    # a struct or list holding a timestamp, a date or a decimal failed json.dumps: every row of the file was
    # quarantined; binary values were stored as Python's repr "b'ab'"
    import datetime as dt
    import decimal

    table = pa.table({
        "id": [1, 2],
        "address": pa.array([{"since": dt.datetime(2024, 1, 1, 12), "born": dt.date(1990, 5, 1),
                              "limit": decimal.Decimal("12.50")}, None]),
        "tags": pa.array([[dt.date(2024, 1, 2)], []]),
        "blob": pa.array([b"ab", b"\xff\x00"]),
    })
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    p = parse_file("q.parquet", buffer.getvalue())
    assert p.reconciles and not p.quarantined and [r["id"] for r in p.accepted] == [1, 2]
    first, second = p.accepted
    assert first["address"] == '{"born": "1990-05-01", "limit": "12.50", "since": "2024-01-01T12:00:00"}'
    assert first["tags"] == '["2024-01-02"]' and second["tags"] == "[]"
    assert first["blob"] == "ab" and second["blob"] == "base64:/wA="


def test_a_parquet_column_of_the_null_type_is_left_untyped():
    # Parquet's null type (a column every value of which is null, as pandas writes an all-None column) was
    # declared text: the new table's account_id became a string column for good
    buffer = io.BytesIO()
    pq.write_table(pa.table({"id": [1, 2], "account_id": pa.nulls(2)}), buffer)
    p = parse_file("q.parquet", buffer.getvalue())
    assert p.columns == {"id": "long", "account_id": "empty"} and p.reconciles and len(p.accepted) == 2


def test_a_csv_without_a_header_row_is_refused_instead_of_naming_columns_after_its_first_record():
    """The first record became the column names (a person's name, e-mail and birth date in the table's schema and
    the run's metadata, out of erasure's reach) and was counted nowhere."""
    p = parse_file("kyc.csv", b"1001,Jane Doe,jane.doe@example.com,1984-02-29\n1002,John Roe,jr@example.com,1990-01-01\n")
    assert p.records_read == 1 and not p.accepted and p.reconciles
    [whole] = p.quarantined
    assert "looks like data, not a header" in whole.reason and "add a header row" in whole.reason
    assert "jane" not in whole.reason.lower()
    assert parse_file("ok.csv", b"account_id,name,email\n1,Jane,j@example.com\n").accepted  # a real header passes
    assert parse_file("wide.csv", b"country,region,2023,2024\nDE,EU,1,2\n").accepted  # a year per column may be
    assert not parse_file("nums.csv", b"1,2.5,3\n4,5.5,6\n").accepted  # a headerless file of numbers is not


def test_a_string_with_an_unpaired_surrogate_quarantines_its_record_only():
    p = parse_file("k.jsonl", b'{"account_id": 1, "name": "a"}\n{"account_id": 2, "name": "cut \\ud83d"}\n'
                              b'{"account_id": 3, "name": "c"}\n')
    assert p.records_read == 3 and [r["account_id"] for r in p.accepted] == [1, 3] and p.reconciles
    [bad] = p.quarantined
    assert bad.line == 2 and "unpaired surrogate" in bad.reason


def test_a_code_with_a_leading_zero_or_sign_is_not_stored_in_an_existing_long_column():
    """Inference keeps such codes text, but a table whose column is already long took "01067" as 1067."""
    p = parse_file("a.csv", b"id,postcode,phone\n1,10115,4930123\n2,01067,4930124\n3,20095,+4935112\n",
                   table_types={"id": "long", "postcode": "long", "phone": "long"})
    assert [r["id"] for r in p.accepted] == [1] and p.reconciles
    assert [q.line for q in p.quarantined] == [3, 4]
    assert all("leading zero or sign" in q.reason for q in p.quarantined)


@pytest.mark.parametrize("data", [b'[\n {"a": 1},\n {"a": 2}\n]\n', b'{\n  "a": 1,\n  "b": 2\n}\n'])
def test_a_json_document_is_not_read_as_json_lines(data):
    """A pretty-printed array was read line by line: fragments quarantined, its last element accepted."""
    p = parse_file("quotes.json", data)
    assert p.records_read == 1 and not p.accepted and p.reconciles
    assert "one JSON document" in p.quarantined[0].reason and "one object per line" in p.quarantined[0].reason
