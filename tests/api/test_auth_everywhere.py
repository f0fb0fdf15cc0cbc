"""Every path a key or token guards refuses a request without it, or with another party's
key: taken from the app's own OpenAPI, so a route added later is checked too."""

from __future__ import annotations

import re

from api.main import create_app
from tests.flows import assert_problem

PUBLIC = {("post", "/v1/patient/sms-code"), ("post", "/v1/patient/login")}
# Temporal UI's codec: open in the sandbox (the contract), the ops key elsewhere (test_codec_endpoint.py)
SANDBOX_OPEN = ("/v1/ops/codec/",)


async def test_every_guarded_path_refuses_strangers(api, settings) -> None:
    paths = create_app(settings).openapi()["paths"]
    checked = 0
    for path, methods in paths.items():
        if not path.startswith(("/v1/his/", "/v1/ops/", "/v1/patient/")):
            continue
        url = re.sub(r"\{[^}]+\}", "x1", path)
        wrong = api.ops if path.startswith(("/v1/his/", "/v1/patient/")) else api.his
        for method in methods:
            if (method, path) in PUBLIC or (settings.sandbox and path.startswith(SANDBOX_OPEN)):
                continue
            headers: dict[str, str]
            for headers in ({}, wrong):
                r = await api.http.request(method.upper(), url, json={}, headers=headers)
                assert_problem(r, 401, "unauthorized")
            checked += 1
    assert checked >= 30  # the contract's guarded paths and ours (34 when written)
