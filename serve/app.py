"""Ray Serve: the profile-and-recommend service, built from the batch job's artifacts.

Two deployments, each an adapter around plain code:
- `Recommender`: the FastAPI app of serve/api.py (auth, limits, schemas) over a
  `serve.service.ProfileService`. Its user_config {"artifacts": URI} names the run it
  answers from; a new URI is loaded beside the old one and swapped in when ready, so no
  request is dropped, and every answer carries the version that made it.
- `TextEmbedder`: the artifacts' text model (`raypipe.vectors.embed.Embedder`) with `@serve.batch`
  dynamic batching, for texts that requests bring (new items; `user_repr: text` sequences).
  It takes a GPU when the cluster has one.

`app_builder(args)` is the application builder: `serve run serve.app:app_builder
artifacts=DIR`, `serve deploy serve/config.yaml`, or `raypipe serve --artifacts DIR`.
"""
from __future__ import annotations

import asyncio
import logging
import time

import numpy as np
from pydantic import BaseModel, Field
from ray import serve
from ray.serve.handle import DeploymentHandle

from serve import frontdoor
from serve.api import Limits, build_api, check_exposure, guarded, read_api_key
from serve.metrics import AppMetrics, Observed, embedder_metrics, refresh_s, swaps
from serve.settings import deployment_options

log = logging.getLogger("ray.serve")

# The request path's settings and the front door (HAProxy or Serve's proxy) live in
# serve/frontdoor.py; FAST_PATH_ENV stays importable from here.
FAST_PATH_ENV = frontdoor.FAST_PATH_ENV


class ServeArgs(BaseModel):
    """Typed builder arguments (`serve run ... key=value` or the config's `args`)."""
    artifacts: str = Field(description="the batch job's output: folder or pyarrow.fs URI")
    model: str | None = Field(None, description="text model; default: the one the artifacts "
                                                "were embedded with")
    api_key_env: str = Field("RAYPIPE_API_KEY", description="env var holding the API key")
    api_key_file_env: str = Field("RAYPIPE_API_KEY_FILE",
                                  description="env var naming a file that holds the key")
    max_batch_size: int = Field(32, ge=1, description="texts per embedding batch")
    batch_wait_timeout_s: float = Field(0.005, ge=0)
    embedder_gpus: float | None = Field(None, ge=0, description="None: 1 if the cluster "
                                                                "has GPUs")
    max_events: int = Field(500, ge=1, le=1000)
    max_body_bytes: int = Field(1 << 20, ge=1024)
    max_k: int = Field(100, ge=1, le=100)
    max_item_texts: int = Field(100, ge=0, le=1000, description="new items' texts per request")
    embed_timeout_s: float = Field(10.0, gt=0, description="longest wait for the text model; "
                                                           "then 503")
    allow_anonymous: bool = Field(False, description="serve without an API key on a "
                                                     "non-loopback address")
    poll_s: float = Field(30.0, ge=0, description="how often to look for a new version "
                                                  "(LATEST) of the artifacts; 0: never")
    answers_max_rows: int = Field(20_000_000, ge=0, description="known users' answers are "
                                  "read from the batch's table when it has at most this "
                                  "many rows (33 bytes each in memory); 0: always computed")


def serve_host() -> str | None:
    """The address the service listens on: every interface in HAProxy mode (the replicas'
    own ports), else Ray Serve's HTTP proxy's, from its controller; None when it cannot be
    asked (then the service counts as exposed)."""
    if frontdoor.replicas_exposed():
        return "0.0.0.0"
    try:
        import ray
        from ray.serve._private.constants import SERVE_CONTROLLER_NAME, SERVE_NAMESPACE
        controller = ray.get_actor(SERVE_CONTROLLER_NAME, namespace=SERVE_NAMESPACE)
        return ray.get(controller.get_http_config.remote(), timeout=30).host
    except Exception:       # noqa: BLE001 - private API; fail closed
        return None


# Deployment options (replicas, autoscaling, limits) live in serve/config.yaml only; the
# builder applies them (serve/settings.py).
@serve.deployment
class TextEmbedder:
    def __init__(self, model: str | None, device: str | None, precision: str,
                 max_batch_size: int, batch_wait_timeout_s: float):
        from raypipe.vectors.embed import Embedder
        self.embedder = Embedder(model, device=device, precision=precision)
        self._batched.set_max_batch_size(max_batch_size)
        self._batched.set_batch_wait_timeout_s(batch_wait_timeout_s)

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.005)
    async def _batched(self, items: list[tuple[str, int, float]]) -> list[np.ndarray]:
        queue_ms, batch_size = embedder_metrics()
        now = time.perf_counter()
        for _, _, queued in items:
            queue_ms.observe((now - queued) * 1e3)
        batch_size.observe(len(items))
        out = [None] * len(items)
        for m in sorted({m for _, m, _ in items}):
            rows = [i for i, (_, x, _) in enumerate(items) if x == m]
            vectors = self.embedder.encode([items[i][0] for i in rows], max_length=m)
            for i, v in zip(rows, vectors):
                out[i] = v
        return out

    async def encode(self, texts: list[str], max_lengths: list[int]) -> np.ndarray:
        """texts (each with its token cap) -> (n, d) float32; batched with other requests'."""
        queued = time.perf_counter()
        return np.stack(await asyncio.gather(*(self._batched((t, m, queued))
                                               for t, m in zip(texts, max_lengths))))


@serve.deployment
@serve.ingress()
class Recommender:
    """The FastAPI ingress, answering from its own ProfileService: a request costs one
    Serve hop, not two (each hop costs about 14 ms of CPU on 2 cores; docs/benchmarks.md)."""

    def __init__(self, embedder: DeploymentHandle, args: dict):
        self.embedder, self.args, self.service = embedder, ServeArgs(**args), None
        self.swap_error, self._reload, self._poller = None, None, None   # _poller: its tasks
        self.metrics = AppMetrics()
        self.api_key = read_api_key(self.args.api_key_env, self.args.api_key_file_env)
        check_exposure(self.api_key, serve_host(), self.args.allow_anonymous)
        log.info("raypipe: API key %s", "required" if self.api_key else "not required")

    def __serve_build_asgi_app__(self):
        a = self.args
        api = build_api(self, self.api_key, Limits(a.max_events, a.max_body_bytes, a.max_k,
                                                   a.max_item_texts))
        return Observed(api, self.metrics.record)

    async def reconfigure(self, config: dict) -> None:
        """user_config {"artifacts": URI}: load that run (off the event loop, so requests go
        on being answered by the current one), then swap it in. A version that fails to
        load (missing, incomplete, another text model) leaves the current one answering:
        the failure is logged, counted and shown by /v1/version; only a replica with
        nothing to answer from yet fails."""
        uri = config["artifacts"]
        if self.service is not None and self.service.uri == uri and \
                config.get("reload") == self._reload:
            return
        self._reload = config.get("reload")
        await self._swap(uri)
        if self._poller is None:
            loop = asyncio.get_running_loop()
            self._poller = [loop.create_task(self._refresh_metrics())]
            if self.args.poll_s > 0:
                self._poller.append(loop.create_task(self._poll()))

    async def _refresh_metrics(self) -> None:
        while True:
            await asyncio.sleep(refresh_s())
            self.metrics.refresh()

    async def _swap(self, uri: str) -> None:
        from serve.service import ProfileService
        try:
            service = await asyncio.to_thread(ProfileService, uri, self.args.answers_max_rows)
            if self.service is not None and \
                    service.cfg.embed.model != self.service.cfg.embed.model:
                raise ValueError(f"{uri} was embedded with model {service.cfg.embed.model!r}, "
                                 f"the service runs {self.service.cfg.embed.model!r}: redeploy")
        except Exception as exc:           # noqa: BLE001 - any failure keeps the old version
            if self.service is None:
                raise
            self.swap_error = {"artifacts": uri, "error": f"{type(exc).__name__}: {exc}",
                               "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
            swaps().inc(tags={"result": "failed"})
            log.error("raypipe: could not load %s, still answering from %s (version %s): %s",
                      uri, self.service.run, self.service.version, self.swap_error["error"])
            return
        old, self.service, self.swap_error = self.service, service, None
        swaps().inc(tags={"result": "ok"})
        self.metrics.served(service, old)
        log.info("raypipe: answering from %s (version %s; was %s)", service.run,
                 service.version, old.version if old else None)

    async def _poll(self) -> None:
        """Take a new version of the artifacts when their LATEST pointer moves (a new run,
        a `forget`); a version that failed is not retried until the pointer moves again."""
        from raypipe.run.versions import current_run
        tried = None
        while True:
            await asyncio.sleep(self.args.poll_s)
            try:
                run = await asyncio.to_thread(current_run, self.service.uri)
            except Exception as exc:       # noqa: BLE001 - an unreachable store: try later
                log.warning("raypipe: cannot read %s's pointer: %s", self.service.uri, exc)
                continue
            if run != self.service.run and run != tried:
                tried = run
                await self._swap(self.service.uri)

    async def info(self) -> dict:
        return {**self.service.info(), "swap_error": self.swap_error}

    async def profile(self, user_id: str) -> dict:
        return guarded(self.service.profile, user_id)

    async def recommend(self, user_id: str, k: int, strategy: str) -> dict:
        return guarded(self.service.recommend, user_id, k, strategy)

    async def sequence(self, events, item_texts, user_id, k, strategy) -> dict:
        service = self.service       # one version answers the whole request
        plan = guarded(lambda: {"plan": service.plan(events, item_texts, user_id, strategy)})
        if "error" in plan:
            return plan
        plan = plan["plan"]
        vectors = None
        if plan.texts:
            response = self.embedder.encode.remote(plan.texts, plan.max_lengths)
            try:
                vectors = await asyncio.wait_for(_awaited(response), self.args.embed_timeout_s)
            except asyncio.TimeoutError:
                response.cancel()
                return {"error": "unavailable", "detail": "the text model did not answer in "
                                                          f"{self.args.embed_timeout_s} s"}
        return guarded(service.answer, plan, vectors, k, strategy)


async def _awaited(response):
    return await response


def _embedder_gpus(args: ServeArgs) -> float:
    if args.embedder_gpus is not None:
        return args.embedder_gpus
    import ray
    return 1.0 if ray.is_initialized() and ray.cluster_resources().get("GPU", 0) else 0.0


def app_builder(args: ServeArgs) -> serve.Application:
    """-> the Serve application. To move to a new run without a restart, change only the
    Recommender's `user_config` (serve/config.yaml): Serve then reconfigures the running
    replicas in place; changing `args` redeploys everything."""
    from raypipe.run.artifacts import read_manifest
    args = args if isinstance(args, ServeArgs) else ServeArgs(**args)
    check_exposure(read_api_key(args.api_key_env, args.api_key_file_env), serve_host(),
                   args.allow_anonymous)
    embed = read_manifest(args.artifacts)["config"]["embed"]
    model = args.model or embed["model"]
    gpus = _embedder_gpus(args)
    options = deployment_options("TextEmbedder")
    options["ray_actor_options"] = {**options.get("ray_actor_options", {}), "num_gpus": gpus}
    embedder = TextEmbedder.options(**options).bind(
        model, "cuda" if gpus else "cpu", embed.get("precision", "auto"), args.max_batch_size,
        args.batch_wait_timeout_s)
    return Recommender.options(**deployment_options("Recommender"),
                               user_config={"artifacts": args.artifacts}).bind(
        embedder, args.model_dump())
