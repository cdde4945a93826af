"""serve/api.py without Ray: the service fails closed (no key on an open address is
refused), keys are compared as bytes (any header is a 401, never a 500), the request
limits are checked before the backend is called, and the OpenAPI spec documents the
recommendations' reasons."""
import pytest
from fastapi.testclient import TestClient

from serve.api import Limits, build_api, check_exposure, key_matches


class Backend:
    """Counts the calls that reach it."""

    def __init__(self):
        self.calls = []

    async def info(self):
        return {"version": "v1", "artifacts": "a", "user_repr": "pooled", "users": 0,
                "items": 0, "segments": 0, "strategies": ["blend"], "model": "m",
                "pseudonymized": False}

    async def profile(self, user_id):
        self.calls.append(("profile", user_id))
        return {"error": "not_found", "detail": "no such user"}

    async def recommend(self, user_id, k, strategy):
        self.calls.append(("recommend", user_id))
        return {"error": "not_found", "detail": "no such user"}

    async def sequence(self, *args):
        self.calls.append(("sequence",) + args)
        return {"error": "invalid", "detail": "x"}


@pytest.mark.parametrize("host", ["0.0.0.0", "10.0.0.5", "::", None])
def test_no_key_on_an_open_address_is_refused_unless_asked_for(host):
    with pytest.raises(PermissionError, match="no API key"):
        check_exposure(None, host, allow_anonymous=False)
    check_exposure(None, host, allow_anonymous=True)
    check_exposure("a-key", host, allow_anonymous=False)


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "127.0.0.2"])
def test_no_key_on_loopback_is_allowed(host):
    check_exposure(None, host, allow_anonymous=False)


def test_raypipe_serve_refuses_an_open_address_without_a_key_before_starting(monkeypatch,
                                                                            capsys):
    from raypipe.cli import main
    monkeypatch.delenv("RAYPIPE_API_KEY", raising=False)
    monkeypatch.delenv("RAYPIPE_API_KEY_FILE", raising=False)
    assert main(["serve", "--artifacts", "nowhere", "--host", "0.0.0.0"]) == 2
    assert "no API key" in capsys.readouterr().err


def test_raypipe_serve_will_not_open_haproxy_mode_without_a_key(monkeypatch, capsys):
    """HAProxy mode opens the replicas' ports on every interface: asked for by name with no
    key, `raypipe serve` refuses before starting anything, saying why."""
    from raypipe.cli import main
    monkeypatch.delenv("RAYPIPE_API_KEY", raising=False)
    monkeypatch.delenv("RAYPIPE_API_KEY_FILE", raising=False)
    monkeypatch.delenv("RAY_SERVE_ENABLE_HA_PROXY", raising=False)
    assert main(["serve", "--artifacts", "nowhere", "--front-door", "haproxy"]) == 2
    assert "API key" in capsys.readouterr().err


def test_keys_are_compared_as_bytes():
    assert key_matches("s3cret", "s3cret")
    assert not key_matches("s3cre", "s3cret") and not key_matches(None, "s3cret")
    assert not key_matches("s3cr\u00e9t", "s3cret")
    assert key_matches("cl\u00e9".encode("utf-8").decode("latin-1"), "cl\u00e9")


def test_a_non_ascii_key_header_gets_401_not_500():
    backend = Backend()
    client = TestClient(build_api(backend, "s3cret"), raise_server_exceptions=False)
    for header in ("cl\u00e9".encode("utf-8"), b"\xff\xfe", "s3cret\u00e9".encode("latin-1")):
        r = client.get("/v1/users/u1/profile", headers={"X-API-Key": header})
        assert r.status_code == 401, (header, r.status_code)
    assert client.get("/v1/users/u1/profile", headers={"X-API-Key": "s3cret"}).status_code == 404
    assert backend.calls == [("profile", "u1")]


def test_item_texts_are_capped_before_the_backend_is_called():
    backend = Backend()
    client = TestClient(build_api(backend, None, Limits(max_item_texts=2)))
    body = {"events": [{"item_id": "a", "event_type": "view", "timestamp": 1}],
            "item_texts": {"x": "t", "y": "t", "z": "t"}}
    r = client.post("/v1/recommendations", json=body)
    assert r.status_code == 422 and "at most 2" in r.json()["detail"]
    assert backend.calls == []


def test_the_openapi_spec_documents_each_items_reason_and_evidence():
    spec = TestClient(build_api(Backend(), None)).get("/openapi.json").json()
    item = spec["components"]["schemas"]["Item"]["properties"]
    assert {"reason", "because", "because_weights", "explanation"} <= set(item)
    reasons = {v for alt in item["reason"].get("anyOf", [item["reason"]])
               for v in alt.get("enum", [])}
    assert reasons == {"recent_item", "bought_together", "segment", "interest"}
    assert "history items" in item["because"]["description"]
