"""The agent's HTTP surface without a host: the token on every route, typed
bodies (400 naming the field), JSON errors, and the wire records' strictness."""

from __future__ import annotations

import json
import os
import stat

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from ferry.api import auth
from ferry.api.app import create_app
from ferry.api.server import parse_listen
from ferry.migration import wire
from ferry.util.errors import Refused, UsageError

TOKEN = "t" * 43


@pytest.fixture
def client(tmp_path):
    return TestClient(create_app(str(tmp_path / "root"), TOKEN), raise_server_exceptions=False)


def authed(token: str = TOKEN) -> dict:
    return {"Authorization": f"Bearer {token}"}


SOURCE = {"arch": "x86_64", "kernel": "6.1.0-28-amd64", "criu_version": "4.2.1", "runc_version": "1.1.5",
          "cgroup_mode": "hybrid", "hostname": "host-a", "cpuinfo_image": "AAAA"}
OFFER = {"wire": 1, "container_id": "a" * 64, "name": "web", "image": "localhost/busybox:latest",
         "image_id": "b" * 64, "memory_bound": 1 << 20, "files_bound": 0, "source": SOURCE}


@pytest.mark.parametrize("method, path", [
    ("GET", "/v1/version"), ("GET", "/v1/host"), ("GET", "/v1/containers"), ("GET", "/v1/openapi.json"),
    ("POST", "/v1/compat"), ("POST", "/v1/migrations"), ("GET", "/v1/migrations/" + "0" * 32),
    ("PUT", "/v1/migrations/" + "0" * 32 + "/checkpoint"), ("GET", "/nowhere"),
])
@pytest.mark.parametrize("headers", [{}, authed("wrong" * 9), {"Authorization": TOKEN},
                                     {"Authorization": f"Basic {TOKEN}"}, authed(TOKEN + "x")])
def test_every_route_needs_the_token(client, method, path, headers):
    response = client.request(method, path, headers=headers, content=b"{}")
    assert response.status_code == 401
    assert response.json() == {"error": "unauthorized"}
    assert response.headers["www-authenticate"] == "Bearer"


def test_version_and_the_api_description(client):
    assert client.get("/v1/version", headers=authed()).json()["api"] == "v1"
    spec = client.get("/v1/openapi.json", headers=authed()).json()
    assert {"/v1/version", "/v1/host", "/v1/compat", "/v1/containers", "/v1/images", "/v1/checkpoints", "/v1/migrations",
            "/v1/migrations/{migration_id}", "/v1/migrations/{migration_id}/checkpoint"} <= set(spec["paths"])
    assert "MigrationOffer" in spec["components"]["schemas"]
    assert client.get("/docs", headers=authed()).status_code == 404


@pytest.mark.parametrize("change, field", [
    ({"ip": "10.0.0.1; rm -rf /"}, "body.ip"),
    ({"name": "../etc"}, "body.name"),
    ({"memory_bound": -1}, "body.memory_bound"),
    ({"memory_bound": "12"}, "body.memory_bound"),      # no coercion
    ({"wire": 2}, "body.wire"),
    ({"surprise": True}, "body.surprise"),
    ({"source": {**SOURCE, "cgroup_mode": "v3"}}, "body.source.cgroup_mode"),
])
def test_a_body_that_is_not_a_valid_message_is_400_naming_the_field(client, change, field):
    response = client.post("/v1/migrations", headers=authed(), json={**OFFER, **change})
    assert response.status_code == 400
    body = response.json()
    assert body["error"].startswith(f"invalid request: {field}:"), body
    assert set(body) == {"error", "hint"}


def test_a_body_that_is_not_json_is_400(client):
    response = client.post("/v1/migrations", headers={**authed(), "Content-Type": "application/json"},
                           content=b"{not json")
    assert response.status_code == 400 and response.json()["error"].startswith("invalid request:")


def test_a_refusal_names_its_check(client, monkeypatch):
    from ferry.engine import migrations

    def refuse(self, offer, local_address=None):
        assert offer.name == "web" and offer.source.hostname == "host-a"
        raise Refused("cannot take the container: arch differs", hint="migrate elsewhere", check="arch")
    monkeypatch.setattr(migrations.Migrations, "preflight", refuse)
    monkeypatch.setattr("ferry.engine.core.require_root", lambda: None)
    response = client.post("/v1/migrations", headers=authed(), json=OFFER)
    assert response.status_code == 409
    assert response.json() == {"error": "cannot take the container: arch differs", "hint": "migrate elsewhere",
                               "check": "arch"}


def test_a_bad_migration_id_is_400(client):
    response = client.get("/v1/migrations/../../etc", headers=authed())
    assert response.status_code in (400, 404)
    assert client.get("/v1/migrations/XYZ", headers=authed()).status_code == 400


def test_wire_records_refuse_what_they_do_not_know():
    wire.MigrationOffer.model_validate(OFFER)
    for bad in ({**OFFER, "container_id": "A" * 64}, {**OFFER, "ports": ["80; drop"]}, {**OFFER, "name": "web\n"},
                {**OFFER, "container_id": "a" * 64 + "\n"},
                {**OFFER, "source": {**SOURCE, "extra": 1}}, {**OFFER, "files_bound": 1 << 60}):
        with pytest.raises(ValidationError):
            wire.MigrationOffer.model_validate(bad)
    report = {"wire": 1, "id": "0" * 32, "container_id": "a" * 64, "name": "web", "seconds": 1.5,
              "phases": {"runc_restore": 0.2}}
    wire.RestoreReport.model_validate_json(json.dumps(report))
    with pytest.raises(ValidationError):
        wire.RestoreReport.model_validate_json(json.dumps({**report, "seconds": "1.5"}))


# ---- the token file ----------------------------------------------------------

def test_a_token_is_made_once_private_and_then_reused(tmp_path):
    path = str(tmp_path / "agent" / "token")
    token, made = auth.load_or_make(path)
    assert made and len(token) >= auth.MIN_TOKEN
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert auth.load_or_make(path) == (token, False)


def test_a_token_file_others_can_read_or_a_short_token_is_refused(tmp_path):
    path = tmp_path / "token"
    path.write_text("x" * 40)
    os.chmod(path, 0o644)
    with pytest.raises(UsageError, match="readable by others"):
        auth.load_or_make(str(path))
    os.chmod(path, 0o600)
    path.write_text("short")
    with pytest.raises(UsageError, match="too short"):
        auth.load_or_make(str(path))


def test_bearer_matching():
    assert auth.bearer_matches(f"Bearer {TOKEN}", TOKEN) and auth.bearer_matches(f"bearer  {TOKEN}", TOKEN)
    for header in (None, "", TOKEN, f"Bearer {TOKEN[:-1]}", f"Token {TOKEN}", "Bearer"):
        assert not auth.bearer_matches(header, TOKEN)


@pytest.mark.parametrize("text, expected", [("127.0.0.1:7070", ("127.0.0.1", 7070)), (":7070", ("0.0.0.0", 7070))])
def test_listen_addresses(text, expected):
    assert parse_listen(text) == expected


@pytest.mark.parametrize("text", ["7070", "localhost:7070", "127.0.0.1:0", "127.0.0.1:99999", "1.2.3:80"])
def test_bad_listen_addresses(text):
    with pytest.raises(UsageError):
        parse_listen(text)


def test_compat_answers_with_the_checks_of_a_preflight(client, monkeypatch):
    from ferry.checkpoint import compat, hostinfo
    here = hostinfo.HostInfo(**{**SOURCE, "arch": "aarch64", "cpu": {}})
    monkeypatch.setattr(hostinfo, "host_info", lambda: here)
    monkeypatch.setattr(hostinfo, "criu_path", lambda: "criu")
    monkeypatch.setattr(compat, "_cpu_refusal", lambda *args: None)
    response = client.post("/v1/compat", headers=authed(), json=SOURCE)
    assert response.status_code == 200, response.text
    rows = {row["key"]: row for row in response.json()["checks"]}
    assert rows["arch"]["verdict"] == "refused" and "architecture they ran on" in rows["arch"]["detail"]
    assert rows["kernel"]["verdict"] == "same" and rows["cpu"]["verdict"] == "same"
    assert client.post("/v1/compat", headers=authed(), json={**SOURCE, "arch": 7}).status_code == 400
