import hashlib
import json
import os

import numpy as np
import pytest

SHARED_DATA = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data")


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray for the whole session: starting Ray per test costs seconds."""
    import ray
    from raypipe.jobs import runtime
    # Metrics reach Ray's Prometheus endpoint every 2 s instead of 10 (tests/serve/test_app.py
    # scrapes it).
    os.environ.setdefault("RAY_metrics_report_interval_ms", "2000")
    runtime.start(num_cpus=2)
    yield ray
    ray.shutdown()


@pytest.fixture
def shared_data():
    if not os.path.isdir(SHARED_DATA):
        pytest.skip(f"shared datasets not found at {SHARED_DATA}")
    return os.path.abspath(SHARED_DATA)


def fake_vectors(texts, dim=16):
    """Texts -> deterministic unit vectors (a hash), for tests that need no real model."""
    out = np.zeros((len(texts), dim), np.float32)
    for i, t in enumerate(texts):
        seed = int.from_bytes(hashlib.sha256(t.encode()).digest()[:4], "little")
        out[i] = np.random.default_rng(seed).standard_normal(dim)
    return out / np.linalg.norm(out, axis=1, keepdims=True)


@pytest.fixture(scope="session")
def pipeline_runs(ray_session, tmp_path_factory):
    """user_repr -> (artifacts folder, manifest, synthetic paths): one small run each, made
    on first use and shared by the pipeline, online and serving tests."""
    from raypipe.config import PipelineConfig, SourceConfig, SyntheticConfig, apply_overrides
    from raypipe.pipeline import run
    from raypipe.events.synthetic import generate
    runs = {}

    def get(user_repr: str):
        if user_repr not in runs:
            root = tmp_path_factory.mktemp(f"pipeline-{user_repr}")
            paths = generate(SyntheticConfig(users=600, items=300, events=15000, segments=4,
                                             seed=1), str(root / "data"))
            cfg = PipelineConfig(output=str(root / "out"),
                                 source=SourceConfig(kind="events", input=paths["events"],
                                                     items=paths["items"]))
            # fp32: int8's calibration costs seconds per run; tests/integration/
            # test_choosing_k.py runs the default (auto) end to end.
            cfg = apply_overrides(cfg, ["kmeans.n_clusters=4", "eval.holdout=last",
                                        "embed.precision=fp32",
                                        "recommend.strategies=[vector,segment,blend,multi]",
                                        "recommend.k=10", f"user_repr={user_repr}",
                                        # these runs test the encoder's path; the choice
                                        # against pooled vectors: test_encoder_choice.py
                                        "encoder.compare_pooled=false"])
            runs[user_repr] = (cfg.output, run(cfg), paths)
        return runs[user_repr]
    return get


def write_malformed_corpus(folder) -> dict:
    """A log from many producers, each kind of bad record mixed into good ones, in CSV, JSON
    Lines and Parquet, compressed and not, plus files that are not read. -> {"records":
    {file name: records written}, "reasons": {reason: count}, "good": good records,
    "not_read": names, "secret": a user id that appears only in bad records}. The counts
    come from what was written here, independently of any reader."""
    import bz2
    import gzip

    import pyarrow as pa
    import pyarrow.parquet as pq
    os.makedirs(folder, exist_ok=True)
    secret = "rawid-SECRET-4711"
    records, reasons, good = {}, {}, 0

    def text_file(name, header, rows, opener=open):
        nonlocal good
        with opener(os.path.join(folder, name), "wb") as f:
            if header:
                f.write(header)
            for data, reason in rows:
                f.write(data)
                if reason is None:
                    good += 1
                else:
                    reasons[reason] = reasons.get(reason, 0) + 1
        records[name] = len(rows)

    h = b"user_id,item_id,timestamp,event_type,price,note\n"
    text_file("01_ragged.csv", h, [
        (b"u1,i1,1700000000,view,,\n", None),
        (b"u1,i2,1700000100,purchase,9.5,\n", None),
        (b"%s,i1,1700000000,view,,,extra\n" % secret.encode(), "malformed_csv_row"),
        (b'u2,i3,"1700000200",cart,,"two\nlines"\n', None),             # one record, two lines
        (b"u2,i1,1700000300,view\n", "malformed_csv_row"),
        (b'u2,"i2,1700000400,view,,\n', "malformed_csv_row"),          # a stray quote ...
        (b"u1,i3,1700000500,view,,\n", None),                          # ... swallows no line
    ])
    text_file("02_values.csv", h, [
        (b"u3,i1,1700000000,view,,\n", None),
        (b"%s,i\xff2,1700000000,view,,\n" % secret.encode(), "invalid_utf8"),
        (b"u3,i2,1700000100,purchase,$3.50,\n", "non_numeric_price"),
        (b"%s,i2,1700000100,view,,\n" % (b"u" * 5000), "value_too_long"),
        (b"u3,i3,1e300,view,,\n", "timestamp_out_of_range"),
        (b"\n", None),                                                  # blank: not a record
    ])
    records["02_values.csv"] -= 1
    good -= 1
    j = {"user_id": "u4", "item_id": "i1", "timestamp": 1700000000, "event_type": "view"}
    text_file("03_lines.jsonl", None, [
        (json.dumps(j).encode() + b"\n", None),
        (b'{"user_id": "%s", "item_id": "i2", \n' % secret.encode(), "invalid_json"),
        (b"[1, 2, 3]\n", "not_an_object"),
        (b'{"user_id": "u4", "item_id": "\\ud800", "timestamp": 1}\n', "invalid_unicode"),
        (b'\xff\xfe{"user_id": "u4"}\n', "invalid_utf8"),
        (json.dumps({**j, "item_id": "i3", "note": "a\u2028b"}, ensure_ascii=False).encode()
         + b"\n", None),                                                # U+2028: not a break
    ])
    text_file("04_more.csv.gz", h, [(b"u5,i1,1700000000,view,,\n", None),
                                     (b"u5,i2\n", "malformed_csv_row"),
                                     (b"u5,i3,1700000050,cart,,\n", None)], opener=gzip.open)
    text_file("05_more.jsonl.bz2", None, [(json.dumps({**j, "user_id": "u6"}).encode() + b"\n",
                                           None)], opener=bz2.open)
    with pa.CompressedOutputStream(os.path.join(folder, "06_more.csv.zst"), "zstd") as f:
        f.write(h + b"u7,i1,1700000000,view,,\n")
    records["06_more.csv.zst"], good = 1, good + 1
    ts = pa.array([1_700_000_000_123, 1_700_000_000_900, 1_700_000_001_500], pa.timestamp("ms"))
    pq.write_table(pa.table({
        "user_id": pa.array([b"u8", b"u8", b"u\xff8"], pa.binary()), "item_id": ["i1", "i2", "i3"],
        "timestamp": ts, "event_type": ["view", "view", "view"], "price": ["1.0", "abc", None]}),
        os.path.join(folder, "07_typed.parquet"))
    records["07_typed.parquet"], good = 3, good + 1
    for r in ("non_numeric_price", "invalid_utf8"):
        reasons[r] = reasons.get(r, 0) + 1
    open(os.path.join(folder, "08_empty.csv"), "wb").close()
    with open(os.path.join(folder, "09_header_only.csv"), "wb") as f:
        f.write(h)
    records["08_empty.csv"] = records["09_header_only.csv"] = 0
    for name in ("notes.txt", "_SUCCESS"):
        open(os.path.join(folder, name), "w").write("not a log\n")
    return {"records": records, "reasons": reasons, "good": good,
            "not_read": ["_SUCCESS", "notes.txt"], "secret": secret}
