from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from rbee_runtime.common.errors import ApiError
from rbee_runtime.queen.app import create_app
from rbee_runtime.queen.auth import ApiKeys
from rbee_runtime.queen.config import QueenConfig


def test_no_keys_means_open() -> None:
    ApiKeys([]).check(None)


@pytest.mark.parametrize(
    ("header", "code"),
    [(None, "MISSING_API_KEY"), ("", "MISSING_API_KEY"), ("Basic abc", "MISSING_API_KEY"),
     ("Bearer ", "MISSING_API_KEY"), ("Bearer wrong", "INVALID_API_KEY")],
)
def test_rejections(header: str | None, code: str) -> None:
    with pytest.raises(ApiError) as err:
        ApiKeys(["k1", "k2"]).check(header)
    assert (err.value.status, err.value.code) == (401, code)
    assert err.value.headers == {"WWW-Authenticate": "Bearer"}
    assert "Authorization: Bearer" in err.value.message


def test_accepts_any_configured_key() -> None:
    keys = ApiKeys(["k1", "k2"])
    keys.check("Bearer k2")
    keys.check("bearer  k1 ")


def test_routes_guarded_except_health_metrics_heartbeat() -> None:
    app = create_app(QueenConfig(api_keys=["sekret"]))
    with TestClient(app) as client:
        assert client.get("/health").status_code == 200
        assert client.get("/metrics").status_code == 200
        for method, path in [("GET", "/v1/models"), ("GET", "/v1/models/x"), ("POST", "/v1/completions"),
                             ("POST", "/v1/chat/completions"), ("POST", "/v1/embeddings"),
                             ("DELETE", "/v1/requests/x"), ("GET", "/v1/hives"), ("GET", "/v1/workers")]:
            resp = client.request(method, path, json={})
            assert resp.status_code == 401, path
            assert resp.headers["www-authenticate"] == "Bearer"
            assert resp.json()["error"]["code"] == "MISSING_API_KEY"
        bad = client.get("/v1/models", headers={"Authorization": "Bearer nope"})
        assert bad.json()["error"]["code"] == "INVALID_API_KEY"
        ok = client.get("/v1/models", headers={"Authorization": "Bearer sekret"})
        assert ok.status_code == 200
        assert ok.json() == {"object": "list", "data": []}
        # heartbeat is internal and open; a malformed one is a 422 naming the field
        resp = client.post("/v1/hives/heartbeat", json={"hive_id": "h"})
        assert resp.status_code == 422
        assert "url" in resp.json()["error"]["message"]
