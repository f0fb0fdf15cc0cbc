"""The gateway's x-tif-signature as the platform's public clients compute it (SHA-256 of timestamp +
paasToken + nonce + timestamp) and its setting: the sandbox's token by default there, refused
elsewhere; the client built from the settings is heard by a bureau holding that token and refused
by one holding another. (The request refused for each tampering: tests/integrations/test_nhsa.py.)"""

from __future__ import annotations

import hashlib
from contextlib import AsyncExitStack

import httpx
import pytest
from pydantic import ValidationError

from config import DEV_BUREAU_PAAS_TOKEN, Settings
from integrations import nhsa
from integrations.factory import Transports, build_integrations
from integrations.gateway import GatewayError
from integrations.insurance_bureau import WORKER
from simulators import bureau
from tests.api.test_edges import outside_sandbox


def test_the_signature_is_sha256_of_timestamp_token_nonce_timestamp() -> None:
    expected = hashlib.sha256(b"1732950000" + b"tok-1" + b"18c2a-3f2e1" + b"1732950000").hexdigest()
    assert nhsa.gateway_signature("1732950000", "tok-1", "18c2a-3f2e1") == expected
    headers = nhsa.tif_headers("hospital-1", "tok-1", timestamp=1732950000, nonce="18c2a-3f2e1")
    assert headers["x-tif-signature"] == expected and headers["x-tif-paasid"] == "hospital-1"
    assert len(expected) == 64 and expected == expected.lower()


def test_cainfo_is_filled_once_and_signs_the_body_with_it_empty() -> None:
    key = nhsa.new_sm2_private_key()
    unsigned = nhsa.dumps({"infno": "9001", "cainfo": "", "input": {"note": '"cainfo":""'}})
    signed = nhsa.with_cainfo(key, unsigned)
    cainfo = signed.split(b'"cainfo":"')[1][:128].decode()
    assert nhsa.sm2_verify(nhsa.sm2_public_key(key), unsigned, cainfo)
    assert signed.replace(f'"cainfo":"{cainfo}"'.encode(), b'"cainfo":""') == unsigned
    with pytest.raises(ValueError, match="one empty cainfo"):
        nhsa.with_cainfo(key, nhsa.dumps({"infno": "9001", "cainfo": "x"}))


def test_the_sandbox_has_a_token_and_production_refuses_it() -> None:
    assert Settings(_env_file=None, sandbox=True).insurance_bureau_paas_token == DEV_BUREAU_PAAS_TOKEN
    with pytest.raises(ValidationError, match="YHF_INSURANCE_BUREAU_PAAS_TOKEN"):
        outside_sandbox(insurance_bureau_paas_token=DEV_BUREAU_PAAS_TOKEN)
    assert outside_sandbox(insurance_bureau_paas_token="issued-1").insurance_bureau_paas_token == "issued-1"


@pytest.mark.parametrize("name", ["insurance_bureau_paas_token", "insurance_bureau_public_key"])
def test_outside_the_sandbox_the_token_and_the_platforms_key_must_be_set(name: str) -> None:
    """Left empty, the API and the worker do not start (as without the bureau's URL or secret):
    the gateway would refuse every request, or no notification could be verified."""
    with pytest.raises(ValidationError, match=f"YHF_{name.upper()} must be set"):
        outside_sandbox(**{name: ""})


@pytest.mark.parametrize("held", [DEV_BUREAU_PAAS_TOKEN, "another-token"])
async def test_the_client_from_the_settings_signs_with_its_token(held: str) -> None:
    settings = Settings(_env_file=None, sandbox=True)
    app = bureau.simulator_app(
        {settings.insurance_bureau_app_id: settings.insurance_bureau_secret},
        paas_tokens={settings.insurance_bureau_app_id: held},
    )
    async with AsyncExitStack() as stack:
        unused = httpx.MockTransport(lambda request: httpx.Response(503))  # the credit platform: not called
        transports = Transports(bureau=httpx.ASGITransport(app=app), credit=unused)
        found = build_integrations(settings, stack, transports=transports)
        client = found.bureau
        day = client.local_day(client.now())
        if held == settings.insurance_bureau_paas_token:
            assert await client.sign_in(WORKER, day)
        else:
            with pytest.raises(GatewayError) as err:
                await client.sign_in(WORKER, day)
            assert err.value.code == "SignatureDoesNotMatch" and not err.value.retryable
    app.state.store.close()
