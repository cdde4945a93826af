"""The pipeline as platform engineers run it: a Ray head started with `ray start --head`, the
job sent with `ray job submit --working-dir .`, the artifacts checked, the head stopped.
The head gets its own ports, so it can run beside the test session's Ray."""
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pandas as pd
import pytest

from raypipe.run.artifacts import read_manifest
from raypipe.config import SyntheticConfig
from raypipe.events.synthetic import generate

pytestmark = pytest.mark.slow
ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
BIN = os.path.dirname(sys.executable)


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


@pytest.fixture
def head():
    """A local Ray head in its own process group; -> (dashboard URL, env for the CLI)."""
    gcs, dash, agent, agent_grpc, metrics, client, runtime_env = free_ports(7)
    # A throwaway local cluster: Ray's token auth off (on a real cluster, keep it on and
    # give `ray job submit` the token).
    # Neither the test session's Ray address nor its dashboard's (jobs/runtime.py sets
    # RAY_API_SERVER_ADDRESS) may reach the head's processes.
    env = {**{k: v for k, v in os.environ.items()
              if k not in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS")},
           "RAY_AUTH_MODE": "disabled"}
    proc = subprocess.Popen(
        [f"{BIN}/ray", "start", "--head", "--block", "--num-cpus=2", f"--port={gcs}",
         "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}",
         f"--dashboard-agent-listen-port={agent}", f"--dashboard-agent-grpc-port={agent_grpc}",
         f"--metrics-export-port={metrics}", f"--ray-client-server-port={client}",
         f"--runtime-env-agent-port={runtime_env}"],
        env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{dash}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"{url}/api/version", timeout=2)
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("the Ray head did not start")
                time.sleep(1)
        yield url, env
    finally:
        os.killpg(proc.pid, signal.SIGTERM)      # `ray start --block` stops its processes
        proc.wait(60)
        forget_head(gcs)


def forget_head(gcs_port: int) -> None:
    """What `ray stop` would also do (it would stop every Ray on the machine): drop the
    note that names this head as the machine's cluster, or a later `ray.init()` joins it."""
    note = "/tmp/ray/ray_current_cluster"
    try:
        with open(note) as f:
            ours = f.read().strip().endswith(f":{gcs_port}")
    except OSError:
        return
    if ours:
        os.remove(note)


def test_ray_job_submit_runs_the_pipeline_to_success(head, tmp_path):
    url, env = head
    paths = generate(SyntheticConfig(users=200, items=100, events=4000, segments=2, seed=3),
                     str(tmp_path / "data"))
    out = tmp_path / "out"
    done = subprocess.run(
        [f"{BIN}/ray", "job", "submit", "--address", url, "--working-dir", ".", "--",
         f"{BIN}/raypipe", "run", "--address", "auto", "--input", paths["events"],
         "--items", paths["items"], "--output", str(out), "--set", "user_repr=pooled",
         "--set", "kmeans.n_clusters=2"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "succeeded" in done.stdout + done.stderr
    manifest = read_manifest(str(out))
    assert manifest["rows"]["kept"] == 4000 and manifest["users"]["profiled"] == 200
    assert len(pd.read_parquet(out / "current" / "profiles.parquet")) == 200
