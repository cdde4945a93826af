"""serve/frontdoor.py: which front door `raypipe serve` puts on the advertised port."""
import pytest

from serve import frontdoor


@pytest.fixture(autouse=True)
def no_env(monkeypatch):
    monkeypatch.delenv("RAY_SERVE_ENABLE_HA_PROXY", raising=False)


def test_auto_takes_haproxy_where_it_runs_and_the_service_may_be_exposed(monkeypatch):
    monkeypatch.setattr(frontdoor, "haproxy_binary", lambda: ("/bin/haproxy", ""))
    assert frontdoor.choose("auto", may_expose=True).kind == "haproxy"
    door = frontdoor.choose("auto", may_expose=False)      # no key: replicas stay closed
    assert door.kind == "proxy" and "API key" in door.note
    with pytest.raises(ValueError, match="API key"):
        frontdoor.choose("haproxy", may_expose=False)


def test_without_haproxy_auto_falls_back_saying_why_and_haproxy_refuses(monkeypatch):
    monkeypatch.setattr(frontdoor, "haproxy_binary", lambda: (None, "no HAProxy binary: x"))
    door = frontdoor.choose("auto", may_expose=True)
    assert door.kind == "proxy" and "no HAProxy binary" in door.note
    with pytest.raises(ValueError, match="no HAProxy binary"):
        frontdoor.choose("haproxy", may_expose=True)
    assert frontdoor.choose("proxy", may_expose=True).kind == "proxy"


def test_an_explicit_environment_wins(monkeypatch):
    monkeypatch.setattr(frontdoor, "haproxy_binary", lambda: ("/bin/haproxy", ""))
    monkeypatch.setenv("RAY_SERVE_ENABLE_HA_PROXY", "0")
    assert frontdoor.choose("auto", may_expose=True).kind == "proxy"


def test_the_bundled_binary_is_found_and_runs():
    path, why = frontdoor.haproxy_binary()
    assert path, why


def test_haproxy_mode_counts_the_replicas_as_exposed(monkeypatch):
    from serve.app import serve_host
    door = frontdoor.FrontDoor("haproxy", "x")
    monkeypatch.setattr(frontdoor.os, "environ", {})
    frontdoor.use_env(door)
    assert frontdoor.os.environ["RAY_SERVE_ENABLE_HA_PROXY"] == "1"
    assert serve_host() == "0.0.0.0"
