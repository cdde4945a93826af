"""The outputs read by the tools analysts use: every table of a finished run with DuckDB,
pandas and pyarrow, row counts as the manifest says; the README's DuckDB query runs."""
import os

import pandas as pd
import pyarrow.dataset as ds
import pytest

from raypipe.run.versions import current_run

pytestmark = pytest.mark.slow
duckdb = pytest.importorskip("duckdb")


@pytest.fixture(scope="module")
def finished(pipeline_runs):
    out, manifest, _ = pipeline_runs("pooled")
    return current_run(out), manifest


def test_every_table_reads_in_duckdb_pandas_and_pyarrow(finished):
    folder, manifest = finished
    assert manifest["tables"]
    con = duckdb.connect()
    for name, rows in manifest["tables"].items():
        path = os.path.join(folder, f"{name}.parquet")
        pattern = os.path.join(path, "*.parquet") if os.path.isdir(path) else path
        got = con.execute(f"SELECT count(*) FROM read_parquet('{pattern}')").fetchone()[0]
        assert got == rows, name
        assert len(pd.read_parquet(path)) == rows, name
        assert ds.dataset(path).count_rows() == rows, name
        if rows:      # every column has a type DuckDB understands
            con.execute(f"SELECT * FROM read_parquet('{pattern}') LIMIT 5").fetchall()


def test_the_readme_query(finished):
    folder, _ = finished
    # the query in the README's "Reading the segments", with its paths
    query = f"""
        SELECT p.segment, count(DISTINCT p.user_id) AS users,
               avg(p.confidence) AS confidence, count(r.item_id) AS recommended
        FROM read_parquet('{folder}/profiles.parquet/*.parquet') p
        JOIN read_parquet('{folder}/recommendations.parquet/*.parquet') r
          ON r.user_id = p.user_id AND r.strategy = 'blend' AND r.rank <= 10
        GROUP BY p.segment ORDER BY p.segment"""
    result = duckdb.connect().execute(query).df()
    profiles = pd.read_parquet(os.path.join(folder, "profiles.parquet"))
    recs = pd.read_parquet(os.path.join(folder, "recommendations.parquet"))
    top = recs[(recs.strategy == "blend") & (recs["rank"] <= 10)].merge(profiles, on="user_id")
    want = top.groupby("segment").agg(users=("user_id", "nunique"), recommended=("item_id", "size"))
    assert result.segment.tolist() == want.index.tolist()
    assert result.users.tolist() == want.users.tolist()
    assert result.recommended.tolist() == want.recommended.tolist()
