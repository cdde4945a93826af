"""deploy/kuberay: the RayJob and the RayService follow KubeRay's v1 API (ray.io/v1), run
raypipe's own CLI and Serve config, and agree with each other.

The field tables below are written from KubeRay's API reference for ray.io/v1
(docs/reference/api.md of ray-project/kuberay: RayJobSpec, RayServiceSpec, RayClusterSpec,
HeadGroupSpec, WorkerGroupSpec, AutoscalerOptions, RayServiceUpgradeStrategy). An unknown
field is an error (the operator's strict decoding drops it with a warning: a typo'd field
silently does nothing), and so is a value of the wrong type; `rayStartParams` is a
map[string]string, so `num-cpus: 2` (an integer) is refused by the API server.
"""
import importlib.util
import pathlib
import shlex

import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
KUBERAY = ROOT / "deploy" / "kuberay"

STR, INT, BOOL, NUM = str, int, bool, (int, float)
STR_MAP = ("map", str)
ANY_MAP, ANY_LIST = dict, list
POD_TEMPLATE = "PodTemplateSpec"

AUTOSCALER = {
    "resources": ANY_MAP, "image": STR, "imagePullPolicy": STR, "securityContext": ANY_MAP,
    "idleTimeoutSeconds": INT, "upscalingMode": ("enum", "Default", "Aggressive", "Conservative"),
    "version": ("enum", "v1", "v2"), "env": ANY_LIST, "envFrom": ANY_LIST,
    "volumeMounts": ANY_LIST,
}
HEAD_GROUP = {"template": POD_TEMPLATE, "headService": ANY_MAP, "enableIngress": BOOL,
              "rayStartParams": STR_MAP, "serviceType": STR}
WORKER_GROUP = {
    "suspend": BOOL, "groupName": STR, "replicas": INT, "minReplicas": INT,
    "maxReplicas": INT, "idleTimeoutSeconds": INT, "rayStartParams": STR_MAP,
    "template": POD_TEMPLATE, "scaleStrategy": {"workersToDelete": [STR]},
    "numOfHosts": INT,
}
CLUSTER = {
    "suspend": BOOL, "managedBy": STR, "autoscalerOptions": AUTOSCALER,
    "headServiceAnnotations": STR_MAP, "enableInTreeAutoscaling": BOOL,
    "gcsFaultToleranceOptions": ANY_MAP, "headGroupSpec": HEAD_GROUP, "rayVersion": STR,
    "workerGroupSpecs": [WORKER_GROUP],
}
RAYJOB = {
    "activeDeadlineSeconds": INT, "backoffLimit": INT, "rayClusterSpec": CLUSTER,
    "submitterPodTemplate": POD_TEMPLATE, "metadata": STR_MAP, "clusterSelector": STR_MAP,
    "submitterConfig": {"backoffLimit": INT}, "managedBy": STR, "deletionStrategy": ANY_MAP,
    "entrypoint": STR, "runtimeEnvYAML": STR, "jobId": STR,
    "submissionMode": ("enum", "K8sJobMode", "HTTPMode", "InteractiveMode", "SidecarMode"),
    "entrypointResources": STR, "entrypointNumCpus": NUM, "entrypointNumGpus": NUM,
    "ttlSecondsAfterFinished": INT, "shutdownAfterJobFinishes": BOOL, "suspend": BOOL,
    "schedule": STR,
}
RAYSERVICE = {
    "serviceUnhealthySecondThreshold": INT, "deploymentUnhealthySecondThreshold": INT,
    "serveService": ANY_MAP,
    "upgradeStrategy": {"type": ("enum", "NewCluster", "None",
                                 "NewClusterWithIncrementalUpgrade")},
    "serveConfigV2": STR, "rayClusterConfig": CLUSTER, "excludeHeadPodFromServeSvc": BOOL,
}
REQUIRED = {id(HEAD_GROUP): {"template"}, id(WORKER_GROUP): {"groupName", "template"},
            id(CLUSTER): {"headGroupSpec"}}


def check(value, schema, where: str) -> list[str]:
    """-> the ways value breaks schema (empty: it follows it)."""
    if schema == POD_TEMPLATE:
        return check_pod_template(value, where)
    if isinstance(schema, dict):
        if not isinstance(value, dict):
            return [f"{where}: expected an object, got {type(value).__name__}"]
        errors = [f"{where}.{k}: unknown field" for k in value if k not in schema]
        errors += [f"{where}.{k}: required" for k in REQUIRED.get(id(schema), ()) if k not in value]
        for k, v in value.items():
            if k in schema:
                errors += check(v, schema[k], f"{where}.{k}")
        return errors
    if isinstance(schema, list):
        if not isinstance(value, list):
            return [f"{where}: expected a list"]
        return [e for i, v in enumerate(value) for e in check(v, schema[0], f"{where}[{i}]")]
    if isinstance(schema, tuple) and schema[0] == "enum":
        return [] if value in schema[1:] else [f"{where}: {value!r} not in {schema[1:]}"]
    if isinstance(schema, tuple) and schema[0] == "map":
        if not isinstance(value, dict):
            return [f"{where}: expected a map"]
        return [f"{where}.{k}: {v!r} must be a string" for k, v in value.items()
                if not isinstance(v, str)]
    if schema is INT and isinstance(value, bool) or not isinstance(value, schema):
        return [f"{where}: {value!r} is not {schema}"]
    return []


def check_pod_template(template, where: str) -> list[str]:
    """The parts of Kubernetes' PodTemplateSpec that KubeRay relies on."""
    spec = (template or {}).get("spec") or {}
    containers = spec.get("containers") or []
    errors = [] if containers else [f"{where}.spec.containers: required, non-empty"]
    volumes = {v["name"] for v in spec.get("volumes", [])}
    for i, c in enumerate(containers):
        at = f"{where}.spec.containers[{i}]"
        errors += [f"{at}.{k}: required string" for k in ("name", "image")
                   if not isinstance(c.get(k), str)]
        errors += [f"{at}.volumeMounts: no volume {m['name']!r}"
                   for m in c.get("volumeMounts", []) if m["name"] not in volumes]
        res = c.get("resources", {})
        for name, amount in res.get("requests", {}).items():
            if name.startswith("nvidia.com/") and res.get("limits", {}).get(name) != amount:
                errors.append(f"{at}: {name} must be in limits, equal to requests")
        errors += [f"{at}.env[{j}]: value must be a string" for j, e in
                   enumerate(c.get("env", [])) if "value" in e and not isinstance(e["value"], str)]
    return errors


def load(name: str) -> dict:
    return yaml.safe_load((KUBERAY / name).read_text())


def render_module():
    spec = importlib.util.spec_from_file_location("kuberay_render", KUBERAY / "render.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def groups(cluster: dict):
    yield "head", cluster["headGroupSpec"]
    for group in cluster.get("workerGroupSpecs", []):
        yield group["groupName"], group


def containers(cluster: dict):
    for name, group in groups(cluster):
        for c in group["template"]["spec"]["containers"]:
            yield name, group, c


@pytest.fixture(scope="module")
def rayjob():
    return load("rayjob.yaml")


@pytest.fixture(scope="module")
def rayservice():
    return load("rayservice.yaml")


def test_the_checks_catch_what_the_api_server_refuses():
    good = {"groupName": "w", "rayStartParams": {"num-cpus": "2"},
            "template": {"spec": {"containers": [{"name": "c", "image": "i"}]}}}
    assert check(good, WORKER_GROUP, "w") == []
    assert check({**good, "replica": 1}, WORKER_GROUP, "w") == ["w.replica: unknown field"]
    assert check({**good, "rayStartParams": {"num-cpus": 2}}, WORKER_GROUP, "w")
    assert check({**good, "maxReplicas": "8"}, WORKER_GROUP, "w")
    assert check({"template": good["template"]}, WORKER_GROUP, "w") == ["w.groupName: required"]
    assert check({"type": "BlueGreen"}, RAYSERVICE["upgradeStrategy"], "u")
    gpu = {"spec": {"containers": [{"name": "c", "image": "i", "resources": {
        "requests": {"nvidia.com/gpu": "1"}}}]}}
    assert check_pod_template(gpu, "t")


@pytest.mark.parametrize("name, kind, schema", [("rayjob.yaml", "RayJob", RAYJOB),
                                                ("rayservice.yaml", "RayService", RAYSERVICE)])
def test_the_manifests_follow_kuberays_v1_api(name, kind, schema):
    doc = load(name)
    assert doc["apiVersion"] == "ray.io/v1" and doc["kind"] == kind
    assert isinstance(doc["metadata"]["name"], str)
    assert check(doc["spec"], schema, "spec") == []
    cluster = doc["spec"]["rayClusterSpec" if kind == "RayJob" else "rayClusterConfig"]
    for name, group in groups(cluster):
        if name != "head":
            assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"], name


def test_the_clusters_run_this_ray_with_gpu_and_cpu_groups_and_autoscaling(rayjob, rayservice):
    import ray
    dockerfile = (KUBERAY / "Dockerfile").read_text()
    assert f"ARG RAY_VERSION={ray.__version__}\n" in dockerfile
    for cluster in (rayjob["spec"]["rayClusterSpec"], rayservice["spec"]["rayClusterConfig"]):
        assert cluster["rayVersion"] == ray.__version__
        assert cluster["enableInTreeAutoscaling"] is True
        kinds = {}
        for name, group, c in containers(cluster):
            gpus = c["resources"]["limits"].get("nvidia.com/gpu")
            kinds[name] = bool(gpus)
            assert c["image"].endswith("-gpu") == bool(gpus), (name, c["image"])
        assert kinds.pop("head") is False
        assert sorted(kinds.values()) == [False, True]        # one CPU group, one GPU group


def test_the_jobs_entrypoint_is_a_raypipe_run_on_the_cluster(rayjob, rayservice):
    from raypipe.cli import build_parser, config_from_args
    argv = shlex.split(rayjob["spec"]["entrypoint"])
    assert argv[0] == "raypipe"
    args = build_parser().parse_args(argv[1:])
    assert args.command == "run" and args.address == "auto"
    cfg = config_from_args(args)
    assert cfg.output.startswith("s3://") and cfg.source.input.startswith("s3://")
    env = yaml.safe_load(rayjob["spec"]["runtimeEnvYAML"])
    assert set(env) <= {"env_vars", "pip", "working_dir", "py_modules", "config"}
    served = yaml.safe_load(rayservice["spec"]["serveConfigV2"])
    assert served["applications"][0]["args"]["artifacts"] == cfg.output   # serves the job's run


def test_the_serve_config_is_serve_deploys_own_and_passes_rays_schema(rayservice):
    from ray.serve.schema import ServeDeploySchema
    render = render_module()
    embedded = yaml.safe_load(rayservice["spec"]["serveConfigV2"])
    base = yaml.safe_load((ROOT / "serve" / "config.yaml").read_text())
    artifacts = embedded["applications"][0]["args"]["artifacts"]
    assert embedded == render.serve_config(base, artifacts)
    assert render.main(["--check"]) == 0
    ServeDeploySchema.model_validate(embedded)
    # Nothing but the Kubernetes values differs from the file `serve deploy` uses.
    (app,), (base_app,) = embedded["applications"], base["applications"]
    assert {k: v for k, v in embedded.items() if k != "applications"} == \
        {k: v for k, v in base.items() if k != "applications"}
    assert app["deployments"][0]["autoscaling_config"] == \
        base_app["deployments"][0]["autoscaling_config"]
    assert {k for k in app["args"] if app["args"][k] != base_app["args"].get(k)} == \
        {"artifacts", *render.KUBERNETES}


def test_a_stale_serve_config_is_found(tmp_path):
    render = render_module()
    text = (KUBERAY / "rayservice.yaml").read_text()
    stale = text.replace("max_events: 500", "max_events: 400")
    assert stale != text
    base = yaml.safe_load((ROOT / "serve" / "config.yaml").read_text())
    fixed = render.render(stale, render.serve_config(base, render.ARTIFACTS))
    assert fixed == text and yaml.safe_load(fixed) == yaml.safe_load(text)


def test_every_service_pod_has_the_fast_path_and_the_api_key_secret(rayservice):
    from serve.frontdoor import FAST_PATH_ENV, HAPROXY_ENV
    render = render_module()
    key_dir = str(pathlib.PurePosixPath(render.KEY_FILE).parent)
    cluster = rayservice["spec"]["rayClusterConfig"]
    for name, group, c in containers(cluster):
        env = {e["name"]: e["value"] for e in c.get("env", [])}
        assert {**FAST_PATH_ENV, **HAPROXY_ENV}.items() <= env.items(), name
        mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
        volumes = {v["name"]: v for v in group["template"]["spec"]["volumes"]}
        assert "secret" in volumes[mounts[key_dir]], name
        assert any(p.get("containerPort") == 8000 for p in c.get("ports", [])), name
    served = yaml.safe_load(rayservice["spec"]["serveConfigV2"])
    assert served["applications"][0]["runtime_env"]["env_vars"]["RAYPIPE_API_KEY_FILE"] == \
        render.KEY_FILE
