"""run/lock.py: one writer per output. A second `run` or `forget` on a locked output refuses,
naming the holder; locks of dead processes (same host) or without a heartbeat (any host) are
taken over; of several processes racing for one lock exactly one gets it."""
import json
import os
import socket
import subprocess
import sys
import time

import pytest

from raypipe.run.lock import OutputLock, OutputLocked, lock_uri


def write_lock(output, **fields):
    record = {"purpose": "run", "pid": os.getpid(), "host": socket.gethostname(),
              "started_at": "2026-01-01T00:00:00Z", "heartbeat": time.time(), "token": "t",
              **fields}
    with open(lock_uri(output), "w") as f:
        json.dump(record, f)


def test_a_second_writer_refuses_naming_the_holder(tmp_path):
    out = str(tmp_path / "artifacts")
    with OutputLock(out, "run"):
        with pytest.raises(OutputLocked, match=rf"`raypipe run` \(pid {os.getpid()} on "):
            OutputLock(out, "forget").acquire()
    assert not os.path.exists(lock_uri(out))                 # released
    with OutputLock(out, "forget"):
        assert json.load(open(lock_uri(out)))["purpose"] == "forget"


def test_a_dead_processs_lock_is_taken_over(tmp_path):
    out = str(tmp_path / "artifacts")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    write_lock(out, pid=dead.pid)
    with OutputLock(out, "run") as lock:
        assert json.load(open(lock_uri(out)))["token"] == lock.token


def test_another_hosts_lock_is_stale_only_without_a_heartbeat(tmp_path):
    out = str(tmp_path / "artifacts")
    write_lock(out, host="elsewhere", pid=1)
    with pytest.raises(OutputLocked, match="on elsewhere"):
        OutputLock(out, "run").acquire()
    write_lock(out, host="elsewhere", pid=1, heartbeat=time.time() - 3600)
    with OutputLock(out, "run"):
        pass


def test_run_and_forget_refuse_a_locked_output(tmp_path, capsys):
    from raypipe.cli import EXIT_LOCKED, main
    out = str(tmp_path / "artifacts")
    with OutputLock(out, "run"):
        assert main(["run", "--output", out, "--num-cpus", "1"]) == EXIT_LOCKED
        assert "being written by `raypipe run`" in capsys.readouterr().err
        assert main(["forget", "--artifacts", out, "--user", "u1"]) == EXIT_LOCKED


RACER = """
import sys, time
from raypipe.run.lock import OutputLock, OutputLocked
try:
    with OutputLock(sys.argv[1], "run"):
        print("got", flush=True)
        time.sleep(8)            # the others start within this
except OutputLocked:
    print("refused", flush=True)
"""


def test_of_processes_racing_for_one_lock_exactly_one_gets_it(tmp_path):
    out = str(tmp_path / "artifacts")
    procs = [subprocess.Popen([sys.executable, "-c", RACER, out], stdout=subprocess.PIPE,
                              text=True) for _ in range(4)]
    results = sorted(p.communicate(timeout=60)[0].strip() for p in procs)
    assert results == ["got", "refused", "refused", "refused"]
