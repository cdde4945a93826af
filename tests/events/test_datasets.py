"""Readers on the real public datasets in ../shared/data (skipped when absent)."""
import os

import pyarrow.compute as pc
import pytest

from raypipe.events import readers, sources
from raypipe.config import SourceConfig


def read_all(cfg):
    mapping = sources.column_mapping(cfg)
    events = [readers.read_events(f, mapping, cfg.kind) for f in sources.plan_events(cfg)]
    items = [readers.read_items(f, mapping, cfg.text_columns) for f in sources.plan_items(cfg)]
    return events[0], items[0]


def test_amazon_beauty_counts(shared_data):
    events, items = read_all(SourceConfig(kind="amazon-p5",
                                          input=os.path.join(shared_data, "amazon-beauty")))
    assert events.num_rows == 198_502
    assert pc.count_distinct(events["user_id"]).as_py() == 22_363
    assert items.num_rows == 12_101 and items["text"].null_count == 0
    assert not any("&amp;" in t for t in items["text"].to_pylist())


def test_amazon_scientific_counts(shared_data):
    events, items = read_all(SourceConfig(kind="recbole",
                                          input=os.path.join(shared_data, "amazon-scientific")))
    assert pc.count_distinct(events["user_id"]).as_py() == 8_442
    assert items.num_rows == 4_385 and items["item_id"].null_count == 0
    assert set(events["item_id"].to_pylist()) <= set(items["item_id"].to_pylist())


@pytest.mark.slow
def test_online_retail_raw_file_is_cleaned_with_reasons(shared_data, ray_session):
    from raypipe.jobs import ingest
    cfg = SourceConfig(kind="online-retail",
                       input=os.path.join(shared_data, "online-retail", "online_retail.parquet"))
    items, _, item_rows = ingest.read_items(cfg, strict=False)
    _, _, rows = ingest.read_events(cfg, items["item_id"], strict=False, partitions=4)
    assert rows["read"] == 531_282 == rows["kept"] + rows["quarantined"]
    # Unknown customers are coded CustomerID 0; each row reports its first failed check.
    assert rows["reasons"]["missing_user_id"] == 133_358
    assert rows["reasons"]["non_positive_price"] > 0
    assert item_rows["read"] == item_rows["kept"] + item_rows["quarantined"]
    assert items.num_rows == pc.count_distinct(items["item_id"]).as_py()
