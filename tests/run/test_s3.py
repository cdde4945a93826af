"""Object storage: inputs, stages and artifacts on an S3-compatible server (moto) that the test
starts on loopback; the pipeline run as `raypipe run` with s3:// URIs, then the service
loading the run from S3. (Reuse of finished stages is the same code on every filesystem;
tests/test_stages.py covers it.)"""
import logging
import os
import subprocess
import sys

import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from raypipe.config import SyntheticConfig
from raypipe.events.synthetic import generate

pytestmark = pytest.mark.slow
BIN = os.path.dirname(sys.executable)
BUCKET = "raypipe-test"


@pytest.fixture(scope="module")
def s3():
    """-> (environment naming the server, pyarrow filesystem on it)."""
    server_mod = pytest.importorskip("moto.server")
    logging.getLogger("werkzeug").setLevel(logging.WARNING)      # a line per request
    server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": f"http://{host}:{port}",
           "AWS_EC2_METADATA_DISABLED": "true"}
    fs = pafs.S3FileSystem(access_key="testing", secret_key="testing", region="us-east-1",
                           endpoint_override=f"{host}:{port}", scheme="http",
                           allow_bucket_creation=True)
    fs.create_dir(BUCKET)
    yield env, fs
    server.stop()


def listing(fs, prefix: str) -> list[str]:
    return sorted(i.path for i in fs.get_file_info(pafs.FileSelector(prefix, recursive=True))
                  if i.type == pafs.FileType.File)


def test_a_run_reads_and_writes_s3_and_the_service_loads_it(s3, tmp_path, monkeypatch):
    env, fs = s3
    paths = generate(SyntheticConfig(users=200, items=100, events=4000, segments=2, seed=5),
                     str(tmp_path / "data"))
    for name in ("events", "items"):
        pafs.copy_files(paths[name], f"{BUCKET}/in/{name}.parquet", destination_filesystem=fs)
    out = f"s3://{BUCKET}/runs/out"
    cmd = [f"{BIN}/raypipe", "run", "--input", f"s3://{BUCKET}/in/events.parquet",
           "--items", f"s3://{BUCKET}/in/items.parquet", "--output", out, "--num-cpus", "2",
           "--set", "user_repr=pooled", "--set", "kmeans.n_clusters=2"]
    run_env = {**{k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}, **env}
    done = subprocess.run(cmd, env=run_env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]

    for key, value in env.items():
        monkeypatch.setenv(key, value)
    from raypipe.run.artifacts import read_manifest, read_table
    manifest = read_manifest(out)
    assert manifest["rows"]["kept"] == 4000
    assert manifest["users"]["with_events"] == manifest["tables"]["sequences"] >= 190
    files = listing(fs, f"{BUCKET}/runs")
    markers = {f.split("/")[-2].rsplit("-", 1)[0] for f in files if f.endswith("/_stage.json")}
    assert markers == set(manifest["stages"]), "every stage finished on S3"
    assert not [f for f in files if ".tmp-" in f or ".old-" in f], "temporary files left"
    from raypipe.run.versions import current_run
    version = current_run(out).split("://", 1)[1]
    assert version.startswith(f"{BUCKET}/runs/out/runs/")
    for table, rows in manifest["tables"].items():
        assert pq.read_table(f"{version}/{table}.parquet",
                             filesystem=fs).num_rows == rows, table

    from serve.service import ProfileService
    service = ProfileService(out)
    profiles = read_table(out, "profiles").to_pylist()
    for row in profiles[:10]:
        answer = service.profile(row["user_id"])
        assert answer["segment"]["id"] == row["segment"]
        assert answer["version"] == service.version


def test_an_object_rewritten_with_the_same_size_gets_a_new_content_tag(s3):
    from raypipe.run.paths import content_tag
    _, fs = s3
    path = f"{BUCKET}/tags/events.csv"
    with fs.open_output_stream(path) as f:
        f.write(b"user_id,item_id,timestamp\nu1,a,1\n")
    first = content_tag(fs, path)
    with fs.open_output_stream(path) as f:
        f.write(b"user_id,item_id,timestamp\nu1,b,1\n")
    assert first.startswith("etag:") and content_tag(fs, path) != first


def test_the_output_lock_on_s3_is_a_conditional_put(s3, monkeypatch):
    from raypipe.run.lock import OutputLock, OutputLocked
    env, fs = s3
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    out = f"s3://{BUCKET}/locked/artifacts"
    with OutputLock(out, "run"):
        assert fs.get_file_info(f"{BUCKET}/locked/artifacts.lock").size > 0
        with pytest.raises(OutputLocked, match="being written by `raypipe run`"):
            OutputLock(out, "forget").acquire()
    with OutputLock(out, "forget"):
        pass


def test_a_crash_at_each_point_of_an_s3_commit_leaves_a_complete_run(s3, monkeypatch):
    """On an object store the LATEST PUT is the commit: a crash before it (mid-copy of the
    tables, or before the manifest) leaves the previous version current and whole."""
    import pyarrow as pa

    from raypipe.run import artifacts, versions
    from raypipe.run.artifacts import read_manifest, read_table
    env, _ = s3
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    out = f"s3://{BUCKET}/versioned/artifacts"
    real = artifacts.Folder.bytes

    def write(n, die_on=None):
        def bytes_(self, name, data):
            if name == die_on:
                raise SystemExit("killed")
            return real(self, name, data)
        monkeypatch.setattr(artifacts.Folder, "bytes", bytes_)
        w = versions.ArtifactWriter(out)
        w.table("t", pa.table({"x": list(range(n))}))
        w.json("manifest.json", {"n": n, "tables": w.tables})
        w.commit()
    write(1)
    for point in ("manifest.json", "LATEST"):
        with pytest.raises(SystemExit):
            write(2, die_on=point)
        assert read_manifest(out)["n"] == 1 and read_table(out, "t").num_rows == 1
        versions.verify(versions.current_run(out))
    write(3)
    assert read_manifest(out)["n"] == 3
