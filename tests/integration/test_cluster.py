"""cluster.yaml: valid for Ray's cluster launcher, with the node groups and settings the
README promises."""
import copy
import os

import pytest
import yaml

from serve.app import FAST_PATH_ENV
from serve.frontdoor import HAPROXY_ENV

PATH = os.path.join(os.path.dirname(__file__), "..", "..", "cluster.yaml")


@pytest.fixture(scope="module")
def cluster():
    with open(PATH) as f:
        return yaml.safe_load(f)


def test_the_launcher_accepts_it(cluster):
    from ray.autoscaler._private.util import prepare_config, validate_config
    validate_config(prepare_config(copy.deepcopy(cluster)))     # Ray's own JSON schema
    broken = copy.deepcopy(cluster)
    broken["available_node_types"]["head"]["node_config_typo"] = {}
    with pytest.raises(Exception, match="node_config_typo"):
        validate_config(prepare_config(broken))


def test_a_cpu_head_gpu_workers_and_cpu_workers(cluster):
    types = cluster["available_node_types"]
    assert cluster["provider"]["type"] == "aws" and cluster["head_node_type"] == "head"
    kinds = {name: t["node_config"]["InstanceType"] for name, t in types.items()}
    assert kinds["gpu_workers"].startswith(("g", "p"))          # AWS GPU families
    assert not kinds["head"].startswith(("g", "p")) and not kinds["cpu_workers"].startswith(("g", "p"))
    for group in ("gpu_workers", "cpu_workers"):
        assert types[group]["min_workers"] == 0 < types[group]["max_workers"]


def test_every_node_installs_raypipe_with_the_right_torch(cluster):
    assert cluster["file_mounts"]["~/raypipe"] == "."
    cpu = " ".join(cluster["setup_commands"])
    gpu = " ".join(cluster["available_node_types"]["gpu_workers"]["worker_setup_commands"])
    for commands in (cpu, gpu):
        assert "-c requirements/constraints.txt -e " in commands and "torch==2.13.0" in commands
    assert "whl/cpu" in cpu and "whl/cpu" not in gpu and ".[gpu]" in gpu


def test_dashboard_stays_on_the_head_and_serve_gets_its_fast_path(cluster):
    head = " ".join(cluster["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head and "0.0.0.0" not in head
    for commands in (head, " ".join(cluster["worker_start_ray_commands"])):
        for key, value in {**FAST_PATH_ENV, **HAPROXY_ENV}.items():
            assert f"{key}={value}" in commands, key
