"""The service under load: Ray Serve vs a plain FastAPI + uvicorn app on the same
`ProfileService`, one after the other on the same cores, driven over loopback by a separate
load-generator process.

Workloads, each for --seconds:
  get_fixed   GET /v1/users/{id}/recommendations at --get-rate requests/s (open loop)
  post_fixed  POST /v1/recommendations with a known user's history at --post-rate (open loop)
  get_max     GET with --concurrency requests in flight (closed loop): throughput
  http_only_max  GET /openapi.json, closed loop: the HTTP path alone, no recommender
Open-loop latency counts from each request's scheduled start, so a stalled server cannot
hide its queue (no coordinated omission).

  .venv/bin/python bench/serve_bench.py --artifacts artifacts
prints one JSON line: per server and workload p50/p99 ms, requests/s and errors, and the
ratio of Serve's GET throughput to the plain app's, for each path into Serve: through the
advertised port (HAProxy, or Serve's HTTP proxy with --front-door proxy), and straight to
the Recommender replica's own port (direct ingress).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pandas as pd
from raypipe.run.versions import current_run

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- load generator (runs in its own process: --drive) -----------------------------------

async def _one(session, method, url, body, start, latencies, errors):
    import aiohttp
    try:
        async with session.request(method, url, json=body) as r:
            await r.read()
            if r.status != 200:
                errors.append(r.status)
                return
    except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
        errors.append(type(exc).__name__)
        return
    latencies.append(time.perf_counter() - start)


async def _drive(base, requests_, rate, concurrency, seconds):
    import aiohttp
    latencies, errors = [], []
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256),
                                     timeout=timeout) as session:
        t0 = time.perf_counter()
        if rate:                       # open loop: one request every 1/rate seconds
            tasks, i = [], 0
            while (due := t0 + i / rate) < t0 + seconds:
                await asyncio.sleep(max(0.0, due - time.perf_counter()))
                method, path, body = requests_[i % len(requests_)]
                tasks.append(asyncio.create_task(
                    _one(session, method, base + path, body, due, latencies, errors)))
                i += 1
            await asyncio.gather(*tasks)
        else:                          # closed loop: `concurrency` requests always in flight
            async def worker(w):
                i = w
                while time.perf_counter() - t0 < seconds:
                    method, path, body = requests_[i % len(requests_)]
                    await _one(session, method, base + path, body, time.perf_counter(),
                               latencies, errors)
                    i += concurrency
            await asyncio.gather(*(worker(w) for w in range(concurrency)))
        elapsed = time.perf_counter() - t0
    ms = np.array(latencies) * 1000 if latencies else np.array([np.nan])
    return {"requests": len(latencies) + len(errors), "errors": len(errors),
            "error_kinds": sorted({str(e) for e in errors})[:5],
            "p50_ms": round(float(np.percentile(ms, 50)), 2),
            "p99_ms": round(float(np.percentile(ms, 99)), 2),
            "rps": round(len(latencies) / elapsed, 1)}


def drive_main(args) -> None:
    with open(args.requests) as f:
        requests_ = [tuple(r) for r in json.load(f)]
    out = asyncio.run(_drive(args.drive, requests_, args.rate, args.concurrency, args.seconds))
    print(json.dumps(out))


def drive(base, requests_file, seconds, rate=0.0, concurrency=0) -> dict:
    """Run the load generator in a separate process; -> its figures."""
    cmd = [sys.executable, __file__, "--drive", base, "--requests", requests_file,
           "--seconds", str(seconds), "--rate", str(rate), "--concurrency", str(concurrency)]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


# ---- the two servers -------------------------------------------------------------------

def wait_ready(base: str, timeout: float = 300) -> None:
    import requests
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if requests.get(base + "/healthz", timeout=5).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(1)
    raise TimeoutError(f"{base} not ready in {timeout} s")


def workloads(base, files, args) -> dict:
    drive(base, files["get"], 3, rate=args.get_rate)             # warm-up
    drive(base, files["post"], 3, rate=args.post_rate)
    return {"get_fixed": drive(base, files["get"], args.seconds, rate=args.get_rate),
            "post_fixed": drive(base, files["post"], args.seconds, rate=args.post_rate),
            "get_max": drive(base, files["get"], args.seconds, concurrency=args.concurrency),
            # the HTTP path alone (no recommender, no handle hop): the server's ceiling
            "http_only_max": drive(base, files["http"], args.seconds,
                                   concurrency=args.concurrency)}


def direct_port(first: int = 30000, tries: int = 16) -> int | None:
    """The first Recommender replica's direct-ingress port, if it has one."""
    import requests
    for port in range(first, first + tries):
        try:
            if requests.get(f"http://127.0.0.1:{port}/healthz", timeout=2).ok:
                return port
        except requests.RequestException:
            continue
    return None


def run_serve(args, files) -> tuple[dict, str]:
    """-> ({"advertised": figures through the front door on the advertised port (HAProxy or
    Serve's proxy, chosen as `raypipe serve --front-door` does), "direct": figures straight
    to the replica's own port (direct ingress; absent with --serve-defaults)}, the door)."""
    import ray
    from ray import serve
    from raypipe.jobs import runtime
    from serve import frontdoor
    from serve.app import ServeArgs, app_builder
    port = free_port()
    # Loopback only, no key: anonymous access is asked for by name, as HAProxy mode opens
    # the replicas' ports on every interface.
    door = frontdoor.choose(args.front_door, may_expose=True)
    if not args.serve_defaults:
        frontdoor.use_env(door)            # as `raypipe serve` does
    runtime.start(num_cpus=args.num_cpus)
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(app_builder(ServeArgs(artifacts=args.artifacts, allow_anonymous=True)),
              name="raypipe", route_prefix="/")
    base = f"http://127.0.0.1:{port}"
    wait_ready(base)
    try:
        out = {"advertised": workloads(base, files, args)}
        direct = None if args.serve_defaults else direct_port()
        if direct:
            out["direct"] = workloads(f"http://127.0.0.1:{direct}", files, args)
        return out, door.note
    finally:
        serve.shutdown()
        ray.shutdown()


PLAIN = """
import sys, uvicorn
from serve.api import LocalBackend, build_api
uvicorn.run(build_api(LocalBackend(sys.argv[1]), None), host="127.0.0.1",
            port=int(sys.argv[2]), log_level="warning")
"""


def run_plain(args, files) -> dict:
    port = free_port()
    server = subprocess.Popen([sys.executable, "-c", PLAIN, args.artifacts, str(port)],
                              cwd=ROOT)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base)
        return workloads(base, files, args)
    finally:
        server.terminate()
        server.wait(30)


def request_files(artifacts: str, folder: str) -> dict:
    """Known users' GETs and POSTs of their histories, shuffled, as JSON files."""
    profiles = pd.read_parquet(f"{current_run(artifacts)}/profiles.parquet", columns=["user_id"])
    users = profiles.user_id.sample(min(2000, len(profiles)), random_state=0).tolist()
    seqs = pd.read_parquet(f"{current_run(artifacts)}/sequences.parquet").set_index("user_id").loc[users]
    gets = [("GET", f"/v1/users/{u}/recommendations?k=10&strategy=blend", None)
            for u in users]
    posts = [("POST", "/v1/recommendations",
              {"events": [{"item_id": i, "event_type": e, "timestamp": int(t)}
                          for i, e, t in zip(r.item_ids, r.event_types, r.timestamps)],
               "k": 10, "strategy": "blend"}) for r in seqs.itertuples()]
    files = {}
    for name, reqs in (("get", gets), ("post", posts),
                       ("http", [("GET", "/openapi.json", None)])):
        files[name] = os.path.join(folder, f"{name}.json")
        with open(files[name], "w") as f:
            json.dump(reqs, f)
    return files


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--artifacts", default="artifacts", help="a finished run (make run)")
    p.add_argument("--seconds", type=float, default=20)
    p.add_argument("--get-rate", type=float, default=100)
    p.add_argument("--post-rate", type=float, default=20)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--num-cpus", type=int, default=None)
    p.add_argument("--front-door", choices=("auto", "haproxy", "proxy"), default="auto",
                   help="what answers on the advertised port (as `raypipe serve`)")
    p.add_argument("--serve-defaults", action="store_true",
                   help="leave Ray Serve's request-path settings at Ray's defaults")
    p.add_argument("--drive", help=argparse.SUPPRESS)
    p.add_argument("--requests", help=argparse.SUPPRESS)
    p.add_argument("--rate", type=float, default=0.0, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.drive:
        return drive_main(args)
    if not os.path.exists(os.path.join(current_run(args.artifacts), "manifest.json")):
        sys.exit(f"no finished run at {args.artifacts!r}: run `make run` first or pass "
                 "--artifacts")
    args.artifacts = os.path.abspath(args.artifacts)
    import tempfile
    with tempfile.TemporaryDirectory() as folder:
        files = request_files(args.artifacts, folder)
        serve_figures, door = run_serve(args, files)
        plain_figures = run_plain(args, files)
    plain_rps = max(plain_figures["get_max"]["rps"], 1e-9)
    print(json.dumps({"bench": "serve", "artifacts": args.artifacts, "cpus": os.cpu_count(),
                      "serve_env": "ray defaults" if args.serve_defaults else "FAST_PATH_ENV",
                      "front_door": door, "seconds": args.seconds, "serve": serve_figures, "plain": plain_figures,
                      "get_throughput_ratio": {
                          path: round(f["get_max"]["rps"] / plain_rps, 3)
                          for path, f in serve_figures.items()}}))


if __name__ == "__main__":
    main()
