"""events/sources.py: each input format read with provenance, column checks, catalogue texts,
the public dataset layouts."""
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from raypipe.events import readers, sources
from raypipe.config import SourceConfig


def test_tables_in_each_format_read_with_provenance(tmp_path):
    (tmp_path / "a.csv").write_text("uid,item_id,timestamp\nu1,i1,1700000000\nu2,i2,bad\n")
    (tmp_path / "b.jsonl").write_text(json.dumps({"uid": 7, "item_id": "i3", "timestamp":
                                                  "2024-01-01T00:00:00"}) + "\n{broken\n")
    pq.write_table(pa.table({"uid": [1.0, None], "item_id": ["i4", "i5"],
                             "timestamp": [1, 2], "event_type": ["cart", "view"]}),
                   tmp_path / "c.parquet")
    frags = sources.plan_tables(str(tmp_path))
    assert [f.fmt for f in frags] == ["csv", "jsonl", "parquet"]
    tables = [readers.read_events(f, {"user_id": "uid"}, "events") for f in frags]
    t = pa.concat_tables(tables)
    assert t.schema == sources.RAW_EVENTS
    assert t["user_id"].to_pylist() == ["u1", "u2", "7", None, "1", None]
    assert t["timestamp"].to_pylist()[:2] == ["1700000000", "bad"]
    assert t["_row"].to_pylist() == [1, 2, 1, 2, 1, 2]
    assert t["event_type"].to_pylist()[4:] == ["cart", "view"]


def test_missing_required_columns_fail_naming_them(tmp_path):
    (tmp_path / "a.csv").write_text("user,item_id\nu1,i1\n")
    frag = sources.plan_tables(str(tmp_path))[0]
    with pytest.raises(ValueError, match=r"missing required columns \['user_id', 'timestamp'\]"):
        sources.check_columns([frag], {})
    sources.check_columns([frag], {"user_id": "user", "timestamp": "item_id"})


def test_catalogue_text_joined_from_title_category_brand(tmp_path):
    pq.write_table(pa.table({"item_id": ["i1", "i2"], "title": ["Tent", None],
                             "category": ["camping", None], "brand": ["Acme", None]}),
                   tmp_path / "items.parquet")
    frag = sources.plan_tables(str(tmp_path / "items.parquet"))[0]
    items = readers.read_items(frag, {}, ("title", "category", "brand"))
    assert items["text"].to_pylist() == ["Tent. camping. Acme", None]


def test_amazon_p5_format(tmp_path):
    (tmp_path / "item_list.txt").write_text(
        'org_id remap_id title\nB1 0 "Nail &amp; Polish, Red"\nB2 1 "Cream"\n')
    (tmp_path / "test.txt").write_text("0 0 1\n1 1\n")
    cfg = SourceConfig(kind="amazon-p5", input=str(tmp_path))
    items = readers.read_items(sources.plan_items(cfg)[0], {}, ())
    assert items["text"].to_pylist() == ["Nail & Polish, Red", "Cream"]
    ev = readers.read_events(sources.plan_events(cfg)[0], {}, "amazon-p5")
    assert ev["user_id"].to_pylist() == ["0", "0", "1"]
    assert ev["item_id"].to_pylist() == ["0", "1", "1"]
    assert ev["timestamp"].to_pylist() == ["0", "1", "0"]


def test_recbole_format(tmp_path):
    (tmp_path / "S.text").write_text("item_id:token\ttext:token_seq\nA1\tSaw blade. \nA2\tGlue\n")
    (tmp_path / "S.item2index").write_text("A1\t0\nA2\t1\n")
    (tmp_path / "S.test.inter").write_text(
        "user_id:token\titem_id_list:token_seq\titem_id:token\n0\t1 0\t1\n")
    cfg = SourceConfig(kind="recbole", input=str(tmp_path))
    items = readers.read_items(sources.plan_items(cfg)[0], {}, ())
    assert items.select(["item_id", "text"]).to_pylist() == [
        {"item_id": "0", "text": "Saw blade."}, {"item_id": "1", "text": "Glue"}]
    ev = readers.read_events(sources.plan_events(cfg)[0], {}, "recbole")
    assert ev["item_id"].to_pylist() == ["1", "0", "1"]


def test_online_retail_unknown_customer_is_null_and_items_most_frequent_first(tmp_path):
    pq.write_table(pa.table({
        "InvoiceNo": [1, 1, 2], "StockCode": ["A", "A", "A"],
        "Description": ["MUG ", "MUG", "CUP"], "Quantity": [1, 2, 3],
        "InvoiceDate": ["2010-12-01 08:26:00"] * 3, "UnitPrice": [1.0, 0.0, 2.0],
        "CustomerID": [17850.0, 0.0, 12.0], "Country": ["UK"] * 3}), tmp_path / "r.parquet")
    cfg = SourceConfig(kind="online-retail", input=str(tmp_path / "r.parquet"))
    mapping = sources.column_mapping(cfg)
    ev = readers.read_events(sources.plan_events(cfg)[0], mapping, "online-retail")
    assert ev["user_id"].to_pylist() == ["17850", None, "12"]
    assert ev["price"].to_pylist() == [1.0, 0.0, 2.0]
    items = readers.read_items(sources.plan_items(cfg)[0], mapping, ())
    assert items.select(["item_id", "text"]).to_pylist() == [
        {"item_id": "A", "text": "MUG"}, {"item_id": "A", "text": "CUP"}]
