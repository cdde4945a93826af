"""events/readers.py, formats.py and values.py: every malformed record becomes one row with a
specific reason and its raw text, counted against what was written; compressed files; the
files of a folder that are not read; a fuzz test of random bytes and mutated files."""
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import write_malformed_corpus
from raypipe.events import clean, readers, sources
from raypipe.schema import FILE, READ_ERROR, RECORD, REASON


def read_folder(folder, not_read=None):
    frags = sources.plan_tables(str(folder), not_read)
    return pa.concat_tables([readers.read_events(f, {}, "events") for f in frags])


def test_every_record_of_the_corpus_is_one_row_with_its_reason(tmp_path):
    corpus = write_malformed_corpus(tmp_path / "log")
    not_read = []
    raw = read_folder(tmp_path / "log", not_read)
    tagged = clean.tag_events(raw, pa.array(["i1", "i2", "i3"]))
    per_file = {}
    for f in raw[FILE].to_pylist():
        per_file[os.path.basename(f)] = per_file.get(os.path.basename(f), 0) + 1
    assert per_file == {k: v for k, v in corpus["records"].items() if v}
    assert sorted(os.path.basename(f["file"]) for f in not_read) == corpus["not_read"]
    assert clean.count_reasons(tagged[REASON]) == corpus["reasons"]
    assert tagged.num_rows - sum(corpus["reasons"].values()) == corpus["good"]


def test_bad_records_keep_their_raw_text_escaped(tmp_path):
    write_malformed_corpus(tmp_path / "log")
    raw = read_folder(tmp_path / "log")
    rec = {}
    for reason, record in zip(raw[READ_ERROR].to_pylist(), raw[RECORD].to_pylist()):
        rec.setdefault(reason, record)                # the first of each kind
    assert rec["malformed_csv_row"].endswith(",i1,1700000000,view,,,extra")
    assert "i\\xff2" in rec["invalid_utf8"] or "\\xff\\xfe" in rec["invalid_utf8"]
    assert "$3.50" in rec["non_numeric_price"]
    assert rec["not_an_object"] == "[1, 2, 3]"
    ok = raw.filter(pa.compute.is_null(raw[READ_ERROR]))
    assert "i3" in ok.filter(pa.compute.equal(ok["user_id"], "u2"))["item_id"].to_pylist()


def test_parquet_sub_second_timestamps_and_a_corrupt_file(tmp_path):
    ts = pa.array([1_700_000_000_999], pa.timestamp("ms"))
    pq.write_table(pa.table({"user_id": ["u"], "item_id": ["i"], "timestamp": ts}),
                   tmp_path / "a.parquet")
    good = open(tmp_path / "a.parquet", "rb").read()
    (tmp_path / "b.parquet").write_bytes(good[:-20] + b"\0" * 20)     # footer destroyed
    t = read_folder(tmp_path)
    assert t["timestamp"].to_pylist()[0] == "1700000000"
    assert t[READ_ERROR].to_pylist() == [None, "unreadable_file"]


def test_a_truncated_gzip_keeps_what_was_readable(tmp_path):
    import gzip
    data = gzip.compress(b"user_id,item_id,timestamp\n" + b"".join(
        b"u%d,i%d,%d\n" % (i, i * 7919 % 1000, i * 104729) for i in range(50000)))
    (tmp_path / "a.csv.gz").write_bytes(data[: len(data) // 2])
    t = read_folder(tmp_path)
    assert t.num_rows > 1 and t[READ_ERROR].to_pylist()[-1] == "unreadable_file"


def test_strict_names_file_record_and_column_of_a_reader_error(tmp_path):
    (tmp_path / "a.csv").write_text("user_id,item_id,timestamp,price\nu,i,1,$3.50\n")
    tagged = clean.tag_events(read_folder(tmp_path))
    with pytest.raises(clean.BadRowError, match=r"a.csv, row 1, column 'price': "
                                                r"non_numeric_price"):
        clean.raise_first_bad(tagged)


GOOD_CSV = b"user_id,item_id,timestamp,event_type,price\nu1,i1,1700000000,view,2.5\n" \
           b"u2,i2,2024-01-01T00:00:00Z,cart,\n"
GOOD_JSONL = b'{"user_id": "u1", "item_id": "i1", "timestamp": 1}\n{"user_id": 2}\n'


def _good_parquet() -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(pa.table({"user_id": ["u1", "u2"], "item_id": ["a", "b"],
                             "timestamp": [1, 2]}), sink)
    return sink.getvalue().to_pybytes()


def _mutated(data: bytes, edits: list) -> bytes:
    b = bytearray(data)
    for pos, value, op in edits:
        if not b:
            b.append(value)
            continue
        i = pos % len(b)
        if op == 0:
            b[i] = value
        elif op == 1:
            b.insert(i, value)
        else:
            del b[i]
    return bytes(b)


@settings(max_examples=400, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(kind=st.sampled_from(["csv", "jsonl", "parquet", "csv.gz", "random"]),
       edits=st.lists(st.tuples(st.integers(0, 1 << 16), st.integers(0, 255), st.integers(0, 2)),
                      max_size=8),
       noise=st.binary(max_size=300))
def test_fuzz_readers_never_raise_and_account_for_every_row(tmp_path_factory, kind, edits,
                                                            noise):
    import gzip
    folder = tmp_path_factory.mktemp("fuzz")
    base = {"csv": GOOD_CSV, "jsonl": GOOD_JSONL, "parquet": _good_parquet(),
            "csv.gz": gzip.compress(GOOD_CSV), "random": noise}[kind]
    name = "f.csv" if kind == "random" else f"f.{kind}"
    (folder / name).write_bytes(_mutated(base, edits) if kind != "random" else noise)
    raw = pa.concat_tables([readers.read_events(f, {}, "events")
                            for f in sources.plan_tables(str(folder))])
    assert raw.schema == sources.RAW_EVENTS
    tagged = clean.tag_events(raw, pa.array(["i1", "a"]))
    q = clean.quarantine_rows(tagged, "events")
    kept = clean.kept_rows(tagged, ["user_id", "item_id", "timestamp"])
    assert kept.num_rows + q.num_rows == raw.num_rows
    assert all(r is not None for r in q["record"].to_pylist())
