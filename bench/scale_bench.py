"""Scale: the pipeline on generated logs of growing size, per-stage seconds, peak memory of
every Ray process, object-store spill. One JSON line per size, then one with each stage's
growth relative to the smallest size (the baseline, measured in the same run).

    .venv/bin/python bench/scale_bench.py --sizes 1000000,3000000,10000000

Each size has 10 events per user and 100 per item (10M events: 1M users, 100k items), as
`raypipe generate` writes them; the run is `raypipe run` in its own local Ray with
`user_repr=pooled` (the encoder's training time is per epoch and in docs/benchmarks.md).
Memory is sampled every second over the driver's session (the driver and every Ray process
it started): the sum of RSS (counts shared object-store pages once per process that maps
them), the sum of PSS (shared pages split between the processes: the honest total) and
the machine's used memory above what it used before the run.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import re
import subprocess
import sys
import threading
import time
from raypipe.run.artifacts import read_manifest

BIN = os.path.dirname(sys.executable)
GIB = 1024 ** 3


def _kib(path: str, field: str) -> int:
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(field):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def session_pids(sid: int) -> list[int]:
    pids = []
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            with open(stat) as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid:           # field 6 of stat: the session id
            pids.append(int(stat.split("/")[2]))
    return pids


def _name(pid: int) -> str:
    """A Ray process's title (ray::IDLE, ray::EmbedActor, raylet, ...) or its program."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            args = f.read().split(b"\0")
    except OSError:
        return str(pid)
    return os.path.basename(args[0].decode(errors="replace"))[:40]


def used_kib() -> int:
    return _kib("/proc/meminfo", "MemTotal:") - _kib("/proc/meminfo", "MemAvailable:")


def spill_bytes() -> int:
    total = 0
    for d in glob.glob("/tmp/ray/session_latest/ray_spilled_objects*"):
        for root, _, files in os.walk(d):
            total += sum(os.path.getsize(os.path.join(root, f)) for f in files
                         if os.path.exists(os.path.join(root, f)))
    return total


class Sampler(threading.Thread):
    """Samples memory every second; the peak PSS is also kept per stage, the stage being the
    last `stage X: started` line the driver has logged."""

    def __init__(self, sid: int, log_path: str):
        super().__init__(daemon=True)
        self.sid, self.stop, self.log_path = sid, threading.Event(), log_path
        self.base = used_kib()
        self.rss = self.pss = self.used = self.spill = 0
        self.stage, self.stage_pss, self.top = "start", {}, []

    def _current_stage(self) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                started = re.findall(r"stage (\w+): started", f.read())
        except OSError:
            return self.stage
        return started[-1] if started else self.stage

    def run(self):
        while not self.stop.is_set():
            pids = session_pids(self.sid)
            self.stage = self._current_stage()
            each = {p: _kib(f"/proc/{p}/smaps_rollup", "Pss:") for p in pids}
            pss = sum(each.values())
            self.rss = max(self.rss, sum(_kib(f"/proc/{p}/status", "VmRSS:") for p in pids))
            if pss > self.pss:
                self.top = [(_name(p), round(kib * 1024 / GIB, 2)) for p, kib in
                            sorted(each.items(), key=lambda kv: -kv[1])[:8]]
            self.pss = max(self.pss, pss)
            self.stage_pss[self.stage] = max(self.stage_pss.get(self.stage, 0), pss)
            self.used = max(self.used, used_kib() - self.base)
            self.spill = max(self.spill, spill_bytes())
            self.stop.wait(1.0)


def run_size(events: int, work: str, extra: list[str]) -> dict:
    users, items = events // 10, events // 100
    data, out = f"{work}/data-{events}", f"{work}/out-{events}"
    start = time.perf_counter()
    if not os.path.exists(f"{data}/items.parquet"):
        subprocess.run([f"{BIN}/raypipe", "generate", "--users", str(users), "--items",
                        str(items), "--events", str(events), "--segments", "16",
                        "--out", data], check=True, stdout=subprocess.DEVNULL)
    generate_s = time.perf_counter() - start
    cmd = [f"{BIN}/raypipe", "run", "--input", f"{data}/events.parquet", "--items",
           f"{data}/items.parquet", "--output", out, "--force", "--set", "user_repr=pooled",
           "--set", "kmeans.n_clusters=16", *extra]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    log = open(f"{work}/run-{events}.log", "w")
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    sampler = Sampler(proc.pid, f"{work}/run-{events}.log")
    sampler.start()
    code = proc.wait()
    wall = time.perf_counter() - start
    sampler.stop.set()
    sampler.join()
    log.close()
    with open(f"{work}/run-{events}.log") as f:
        text = f.read()
    spilled = [int(m) for m in re.findall(r"Spilled (\d+) MiB", text)]
    if code != 0:
        raise SystemExit(f"run at {events} events failed; see {work}/run-{events}.log")
    manifest = read_manifest(out)
    return {"events": events, "users": users, "items": items,
            "profiled": manifest["users"]["profiled"], "wall_s": round(wall, 1),
            "generate_s": round(generate_s, 1), "seconds": manifest["seconds"],
            "peak_rss_sum_gib": round(sampler.rss * 1024 / GIB, 2),
            "peak_pss_sum_gib": round(sampler.pss * 1024 / GIB, 2),
            "peak_pss_gib_by_stage": {k: round(v * 1024 / GIB, 2)
                                      for k, v in sampler.stage_pss.items()},
            "processes_at_peak_gib": sampler.top,
            "peak_machine_used_gib": round(sampler.used * 1024 / GIB, 2),
            "spill_dir_peak_gib": round(sampler.spill / GIB, 3),
            "spilled_mib_logged": max(spilled) if spilled else 0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1000000,3000000,10000000")
    ap.add_argument("--work", default="/tmp/raypipe-scale")
    ap.add_argument("--set", action="append", default=[], help="passed to raypipe run")
    args = ap.parse_args()
    os.makedirs(args.work, exist_ok=True)
    extra = [x for s in args.set for x in ("--set", s)]
    results = []
    for events in (int(s) for s in args.sizes.split(",")):
        results.append(run_size(events, args.work, extra))
        print(json.dumps({"bench": "scale", **results[-1]}), flush=True)
    base = results[0]
    growth = {}
    for r in results[1:]:
        growth[str(r["events"])] = {
            "events_x": round(r["events"] / base["events"], 2),
            "wall_x": round(r["wall_s"] / base["wall_s"], 2),
            "stages_x": {k: round(v / max(base["seconds"].get(k, 0), 1e-9), 2)
                         for k, v in r["seconds"].items() if base["seconds"].get(k)}}
    print(json.dumps({"bench": "scale-growth", "baseline_events": base["events"],
                      "growth": growth}), flush=True)


if __name__ == "__main__":
    main()
