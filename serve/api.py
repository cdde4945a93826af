"""The HTTP face: a FastAPI app over any backend with the four async calls below. Ray Serve's
ingress (serve/app.py) builds it over deployment handles; `LocalBackend` builds it over a
`ProfileService` in one process (the benchmark's plain uvicorn baseline, and tests).

Backend calls return a dict, or {"error": "not_found" | "invalid", "detail": message}:
errors cross Ray as plain values, never as exceptions to unwrap.
"""
from __future__ import annotations

import hmac
import logging
import os
from dataclasses import dataclass

from fastapi import Depends, FastAPI, HTTPException, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import APIKeyHeader

from serve.schemas import (MAX_EVENTS, MAX_K, Health, Problem, Profile, Recommendations,
                           SequenceAnswer, SequenceRequest, Strategy, Version)

log = logging.getLogger("raypipe.serve")
API_KEY_HEADER = "X-API-Key"
STATUS = {"not_found": 404, "invalid": 422, "unavailable": 503}
LOOPBACK = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class Limits:
    max_events: int = 500           # events per POST /v1/recommendations
    max_body_bytes: int = 1 << 20   # request body size
    max_k: int = MAX_K
    max_item_texts: int = 100       # new items' texts per POST /v1/recommendations


def is_loopback(host: str | None) -> bool:
    return host is not None and (host in LOOPBACK or host.startswith("127."))


def check_exposure(api_key: str | None, host: str | None, allow_anonymous: bool) -> None:
    """Fail closed: with no API key the service listens on loopback only, unless anonymous
    access is asked for by name; `host` None (not known) counts as exposed."""
    if api_key is None and not allow_anonymous and not is_loopback(host):
        raise PermissionError(
            f"no API key is set (RAYPIPE_API_KEY or RAYPIPE_API_KEY_FILE) and the service "
            f"would listen on {host or 'an address it cannot check'}: every user's profile "
            f"would be open to anyone who reaches it. Set a key, listen on 127.0.0.1, or "
            f"allow anonymous access explicitly (raypipe serve --allow-anonymous; "
            f"args.allow_anonymous: true in serve/config.yaml).")


def key_matches(given: str | None, api_key: str) -> bool:
    """Constant-time comparison as bytes: a header of any characters is a wrong key, never
    an error (headers arrive decoded as Latin-1)."""
    if not given:
        return False
    try:
        raw = given.encode("latin-1")
    except UnicodeEncodeError:
        raw = given.encode("utf-8", "surrogatepass")
    return hmac.compare_digest(raw, api_key.encode("utf-8"))


def read_api_key(env: str = "RAYPIPE_API_KEY", file_env: str = "RAYPIPE_API_KEY_FILE"
                 ) -> str | None:
    """The API key from the environment variable `env`, or from the file named by `file_env`
    (a mounted secret). None: no auth. The key is never logged."""
    if os.environ.get(env):
        return os.environ[env]
    path = os.environ.get(file_env)
    if path:
        with open(path) as f:
            key = f.read().strip()
        if not key:
            raise ValueError(f"API key file named by {file_env} is empty")
        return key
    return None


def guarded(call, *args) -> dict:
    """Run a ProfileService call; its refusals become error values."""
    from serve.service import BadRequest, UnknownUser
    try:
        return call(*args)
    except UnknownUser as exc:
        return {"error": "not_found", "detail": str(exc)}
    except BadRequest as exc:
        return {"error": "invalid", "detail": str(exc)}


def _answer(result: dict) -> dict:
    if "error" in result:
        raise HTTPException(STATUS[result["error"]], result["detail"])
    return result


class BodyLimit:
    """ASGI middleware: bodies over `max_bytes` get 413 before any parsing, whether they
    announce their length or arrive chunked."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            return await self._refuse(send)
        messages, size = [], 0
        while True:
            msg = await receive()
            messages.append(msg)
            size += len(msg.get("body", b""))
            if size > self.max_bytes:
                return await self._refuse(send)
            if msg["type"] != "http.request" or not msg.get("more_body"):
                break

        async def replay():
            return messages.pop(0) if messages else await receive()
        return await self.app(scope, replay, send)

    async def _refuse(self, send):
        response = JSONResponse({"detail": f"request body over {self.max_bytes} bytes"}, 413)
        await response({"type": "http"}, None, send)


def check_limits(body: SequenceRequest, limits: Limits) -> None:
    """A posted sequence over the service's limits is refused before any work."""
    if len(body.events) > min(limits.max_events, MAX_EVENTS):
        raise HTTPException(422, f"{len(body.events)} events; at most "
                                 f"{limits.max_events} per request")
    if body.k > limits.max_k:
        raise HTTPException(422, f"k={body.k}; at most {limits.max_k}")
    if len(body.item_texts) > limits.max_item_texts:
        raise HTTPException(422, f"{len(body.item_texts)} item texts; at most "
                                 f"{limits.max_item_texts} per request")


def build_api(backend, api_key: str | None, limits: Limits = Limits()) -> FastAPI:
    """-> the FastAPI app; `backend` has async profile, recommend, sequence and info."""
    api = FastAPI(title="raypipe", version="1",
                  description="User profiles and recommendations from raypipe's artifacts.")
    header = APIKeyHeader(name=API_KEY_HEADER, auto_error=False,
                          description="required when the service has an API key")

    async def authorized(key: str | None = Depends(header)):
        if api_key is not None and not key_matches(key, api_key):
            raise HTTPException(401, f"missing or wrong {API_KEY_HEADER} header",
                                headers={"WWW-Authenticate": API_KEY_HEADER})

    @api.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
                             for e in exc.errors()[:5])
        return JSONResponse({"detail": problems}, 422)

    errors = {401: {"model": Problem}, 404: {"model": Problem}, 413: {"model": Problem},
              422: {"model": Problem}}
    secured = [Depends(authorized)]

    @api.get("/healthz", response_model=Health, tags=["ops"])
    async def healthz():
        info = _answer(await backend.info())
        return {"status": "ok", "version": info["version"]}

    @api.get("/v1/version", response_model=Version, dependencies=secured, responses=errors,
             tags=["ops"])
    async def version():
        return _answer(await backend.info())

    @api.get("/v1/users/{user_id}/profile", response_model=Profile, dependencies=secured,
             responses=errors, tags=["users"])
    async def profile(user_id: str = Path(max_length=256)):
        return _answer(await backend.profile(user_id))

    @api.get("/v1/users/{user_id}/recommendations", response_model=Recommendations,
             dependencies=secured, responses=errors, tags=["users"])
    async def recommendations(user_id: str = Path(max_length=256),
                              k: int = Query(10, ge=1, le=limits.max_k),
                              strategy: Strategy = Query("blend")):
        return _answer(await backend.recommend(user_id, k, strategy))

    @api.post("/v1/recommendations", response_model=SequenceAnswer, dependencies=secured,
              responses=errors, tags=["sequences"])
    async def sequence(body: SequenceRequest, request: Request):
        request.state.strategy = body.strategy          # for the metrics (serve/metrics.py)
        check_limits(body, limits)
        events = [{"item_id": e.item_id, "event_type": e.event_type,
                   "timestamp": e.timestamp.isoformat() if hasattr(e.timestamp, "isoformat")
                   else e.timestamp} for e in body.events]
        return _answer(await backend.sequence(events, body.item_texts, body.user_id, body.k,
                                              body.strategy))

    return BodyLimit(api, limits.max_body_bytes) if limits.max_body_bytes else api


class LocalBackend:
    """The backend in one process: a ProfileService and, when a request brings texts, the
    artifacts' text model (loaded on first use)."""

    def __init__(self, artifacts: str):
        from serve.service import ProfileService
        self.service = ProfileService(artifacts)
        self._embedder = None

    def embed(self, texts: list[str], max_lengths: list[int]):
        import numpy as np
        if self._embedder is None:
            from raypipe.vectors.embed import Embedder
            e = self.service.cfg.embed
            self._embedder = Embedder(e.model, device=e.device, precision=e.precision,
                                      max_length=e.max_length)
        out = np.zeros((len(texts), self._embedder.dim), np.float32)
        for m in sorted(set(max_lengths)):
            rows = [i for i, x in enumerate(max_lengths) if x == m]
            out[rows] = self._embedder.encode([texts[i] for i in rows], max_length=m)
        return out

    async def info(self):
        return self.service.info()

    async def profile(self, user_id):
        return guarded(self.service.profile, user_id)

    async def recommend(self, user_id, k, strategy):
        return guarded(self.service.recommend, user_id, k, strategy)

    async def sequence(self, events, item_texts, user_id, k, strategy):
        def run():
            plan = self.service.plan(events, item_texts, user_id, strategy)
            vectors = self.embed(plan.texts, plan.max_lengths) if plan.texts else None
            return self.service.answer(plan, vectors, k, strategy)
        return guarded(run)
