"""Schemathesis over every operation of the served API, with the HIS key, the ops key, a
patient's token and no credentials: no answer is a 5xx, and every answer is one the OpenAPI
declares (status, content type, headers, body schema). The API runs with a real worker."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from api.main import create_app
from tests.flows import Clinic
from tests.support import served

# checks of what the API answers; `all` would add stateful ones (use_after_free, ...) that need links
CHECKS = (
    "not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,"
    "response_schema_conformance,negative_data_rejection,unsupported_method,allow_header_conformance,"
    "missing_required_header,ignored_auth"
)
EXAMPLES = os.environ.get("YHF_FUZZ_EXAMPLES", "8")  # per operation and phase; the run stays under 3 minutes
ENDS_THE_SESSION = ("/v1/patient/logout", "/v1/patient/enrollment")


async def patient_token(http: httpx.AsyncClient, clinic: Clinic, phone: str) -> str:
    """The token of the patient enrolled with this phone."""
    await asyncio.sleep(1.1)  # the next code for this phone may be asked a second later
    assert (await http.post("/v1/patient/sms-code", json={"phone": phone})).status_code == 202
    r = await http.post("/v1/patient/login", json={"phone": phone, "code": await clinic.last_code(phone)})
    assert r.status_code == 200 and r.json()["patient_id"], r.text
    return r.json()["token"]


async def schemathesis(
    spec: Path, url: str, report: Path, headers: dict[str, str], config: Path, *only: str
) -> tuple[int, str]:
    args = [
        "--config-file",
        str(config),
        "run",
        str(spec),
        "--url",
        url,
        "--checks",
        CHECKS,
        "--max-examples",
        EXAMPLES,
        "--seed",
        "8",
        "--phases",
        "examples,coverage,fuzzing",
        "--workers",
        "1",
        # one worker: hypothesis parses lambdas with ast, which CPython 3.11 does not do safely in threads
        "--no-shrink",
        "--no-color",
        "--generation-database",
        "none",
        "--report",
        "ndjson",
        "--report-ndjson-path",
        str(report),
        "--request-timeout",
        "30",
        "--suppress-health-check",
        "all",
    ]
    for name, value in headers.items():
        args += ["-H", f"{name}: {value}"]
    for path in ENDS_THE_SESSION:  # these run last, alone, so that the token works until then
        args += ["--include-path" if only else "--exclude-path", path]
    proc = await asyncio.create_subprocess_exec(
        Path(sys.executable).with_name("schemathesis"),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        cwd=report.parent,
    )  # its cache too
    out, _ = await proc.communicate()
    return proc.returncode or 0, out.decode(errors="replace")


def answers(report: Path) -> Counter[int]:
    """The status of every answer schemathesis got, read from its event stream."""
    seen: Counter[int] = Counter()
    for line in report.read_text().splitlines():
        event = json.loads(line).get("ScenarioFinished")
        for interaction in (event or {}).get("recorder", {}).get("interactions", {}).values():
            seen[(interaction.get("response") or {}).get("status_code", 0)] += 1
    return seen


async def test_schemathesis_over_every_operation_with_each_key_and_none(
    temporal_env, worker, settings, tmp_path, integrations
) -> None:
    target = temporal_env.client.service_client.config.target_host
    app = create_app(settings.model_copy(update={"temporal_address": target}), integrations=integrations)
    spec = tmp_path / "openapi.json"
    spec.write_text(json.dumps(app.openapi()))
    with served(app) as host:
        url = f"http://{host}"
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            his = {"Authorization": f"Bearer {settings.his_api_key}"}
            clinic = Clinic.over(http, his)
            # ids that exist, so that the fuzzer gets past 404 into the routes and the visit's workflow
            patient_id, phone = await clinic.enrolled_patient()
            visit_id = (await clinic.register(patient_id))["visit_id"]
            token = await patient_token(http, clinic, phone)
        config = tmp_path / "schemathesis.toml"
        config.write_text(f'[parameters]\npatient_id = "{patient_id}"\nvisit_id = "{visit_id}"\n')
        runs: dict[str, tuple[Any, ...]] = {
            "his": (his,),
            "ops": ({"Authorization": f"Bearer {settings.ops_api_key}"},),
            "patient": ({"Authorization": f"Bearer {token}"},),
            "none": ({},),
            "patient, ending the session": ({"Authorization": f"Bearer {token}"}, "only"),
        }
        findings, seen = {}, Counter[int]()
        for who, (headers, *only) in runs.items():
            report = tmp_path / f"{who.split(',')[0]}{'-end' if only else ''}.ndjson"
            code, out = await schemathesis(spec, url, report, headers, config, *only)
            seen += answers(report)
            (tmp_path / f"{report.stem}.log").write_text(out)
            print(f"--- schemathesis with {who}: exit {code}\n{out[-3000:]}")
            if code != 0:
                findings[who] = out[out.find("FAILURES") if "FAILURES" in out else -12000 :][:12000]
    operations = sum(len(m) for m in app.openapi()["paths"].values())
    print(f"schemathesis: {seen.total()} requests over {operations} operations; answers {sorted(seen.items())}")
    assert not findings, "\n".join(f"== {who}\n{out}" for who, out in findings.items())
    assert seen.total() > 1000 and not any(status >= 500 for status in seen)
    assert seen[200] > 50  # it got past the doors, into the routes
