"""`make dev` survives its processes dying: the supervised Stack restarts a child killed with
kill -9 (Temporal on the same database file, the worker, the API), and the API keeps answering
while the engine is down. And it is readable: a banner with every service, one access-log line
per request, a quiet Ctrl-C."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from devstack import Stack
from tests.flows import Clinic, assert_problem
from tests.support import free_port, fresh_database

pytestmark = pytest.mark.e2e

HIS = {"Authorization": "Bearer dev-his-key"}


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    """A stack of its own (this test kills its engine), supervised as `make dev` runs it."""
    async with fresh_database(tmp_path) as url:
        s = Stack(
            data_dir=tmp_path / "data",
            api_port=free_port(),
            temporal_port=free_port(),
            headless=True,
            wechat_port=free_port(),
            alipay_port=free_port(),
            env={"YHF_DATABASE_URL": url},
            log_dir=tmp_path / "logs",
        )
        try:
            await asyncio.to_thread(s.start)
            s.supervise(every=0.2)
            yield s
        finally:
            await asyncio.to_thread(s.stop)


def kill_9(stack: Stack, name: str) -> int:
    """kill -9 from outside, as a crash or the OOM killer would: the stack is not told."""
    proc = stack.procs[name]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    return proc.pid


async def healthz(http: httpx.AsyncClient) -> int:
    """/healthz's status; a refused connection fails the test (the API must keep serving)."""
    return (await http.get("/healthz")).status_code


async def until(probe: Any, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not await probe():
        assert time.monotonic() < deadline, f"not reached in {timeout:.0f}s"
        await asyncio.sleep(0.3)


async def test_supervised_stack_restarts_what_kill_9_took(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.api_url, timeout=30) as http:
        clinic = Clinic.over(http, HIS)
        patient_id, _ = await clinic.enrolled_patient()
        visit_id = (await clinic.register(patient_id))["visit_id"]
        await clinic.event(visit_id, "checked_in", channel="app")

        # Temporal down (taken out of supervision for a moment, so it stays down): the API answers
        stack.kill("temporal")
        assert await healthz(http) == 503
        for path, body in [
            (
                "/v1/his/visits",
                {"visit_id": visit_id + "-down", "patient_id": patient_id, "department": "外科", "channel": "kiosk"},
            ),
            (
                f"/v1/his/visits/{visit_id}/events",
                {"event_id": "called-1", "type": "called", "occurred_at": "2026-11-29T10:00:00+08:00"},
            ),
        ]:
            started = time.monotonic()
            r = await http.post(path, json=body, headers=HIS)
            # not a hang and not taken for done: a problem the HIS retries after Retry-After
            assert time.monotonic() - started < 10, path
            assert_problem(r, 503, "engine_unavailable")
            assert int(r.headers["retry-after"]) > 0
        await asyncio.to_thread(stack.start_temporal)  # back, and under supervision again
        await until(lambda: healthz_is(http, 200))

        # kill -9 of Temporal: it comes back by itself on the same --db-filename; the API never stops answering
        kill_9(stack, "temporal")
        seen: set[int] = set()

        async def back() -> bool:
            seen.add(status := await healthz(http))
            return status == 200

        await until(back)
        assert 503 in seen  # it was down, and the API said so rather than refusing the connection
        assert stack.restarts == [("temporal", -signal.SIGKILL)]
        # the visit registered before the kill goes on; the event refused while the engine was down is taken now
        r = await http.post(
            f"/v1/his/visits/{visit_id}/events",
            headers=HIS,
            json={"event_id": "called-1", "type": "called", "occurred_at": "2026-11-29T10:00:00+08:00"},
        )
        assert r.status_code == 200 and r.json()["stage"] == "called", r.text

        # kill -9 of the worker: restarted, and it takes the visit's next event
        old = kill_9(stack, "worker")
        await until(lambda: asyncio.sleep(0, result=stack.procs["worker"].pid != old))
        assert (await clinic.event(visit_id, "consultation_started"))["stage"] == "in_consultation"

        # kill -9 of the API: restarted on the same port
        kill_9(stack, "api")
        await until(lambda: healthz_is(http, 200, refused_ok=True))
        await clinic.event(visit_id, "consultation_ended")
        assert (await clinic.event(visit_id, "discharged"))["stage"] == "discharged"
        assert stack.restarts == [(name, -signal.SIGKILL) for name in ("temporal", "worker", "api")]
        # the visit has every event it was acknowledged for, once each
        visit = (await http.get(f"/v1/his/visits/{visit_id}", headers=HIS)).json()
        assert [e["type"] for e in visit["events"]] == [
            "checked_in",
            "called",
            "consultation_started",
            "consultation_ended",
            "discharged",
        ]
        # the registration refused while the engine was down is served on retry
        r = await http.post(
            "/v1/his/visits",
            json={"visit_id": visit_id + "-down", "patient_id": patient_id, "department": "外科", "channel": "kiosk"},
            headers=HIS,
        )
        assert r.status_code in (200, 201), r.text


async def healthz_is(http: httpx.AsyncClient, status: int, *, refused_ok: bool = False) -> bool:
    try:
        return await healthz(http) == status
    except httpx.TransportError:
        if not refused_ok:
            raise
        return False


def test_a_child_that_keeps_dying_is_given_up_on(tmp_path: Path) -> None:
    """Backoff, one line per restart, then a clear stop: a child that exits at once is started again
    `give_up_after - 1` times, and `gave_up` names it."""
    stack = Stack(data_dir=tmp_path)
    stack.spawn("flaky", [sys.executable, "-c", "raise SystemExit(3)"])
    try:
        thread = stack.supervise(every=0.05, give_up_after=3)
        thread.join(timeout=30)
        assert not thread.is_alive()
        assert stack.gave_up == "flaky"
        assert stack.restarts == [("flaky", 3), ("flaky", 3)]
    finally:
        stack.stop()


SERVICES = (
    "API",
    "API docs",
    "patient app",
    "Temporal UI",
    "Temporal",
    "WeChat Pay",
    "Alipay",
    "insurance bureau",
    "credit platform",
    "SMS",
    "metrics",
    "access log",
)


def test_make_dev_lists_every_service_logs_each_request_and_ends_quietly_on_ctrl_c(tmp_path: Path) -> None:
    """`python devconsole.py` as `make dev` runs it (on free ports): the banner names every service with
    its address, a request is one access-log line with its request id, and Ctrl-C (SIGINT) stops
    everything in a few lines of output and exit status 0: no traceback, no storm of warnings."""
    ports = {name: free_port() for name in ("api", "temporal", "ui", "wechat", "alipay")}
    args = [f"--{name}-port={port}" for name, port in ports.items()]
    env = {k: v for k, v in os.environ.items() if not k.startswith("YHF_")}
    out, err = (open(tmp_path / name, "w+b") for name in ("out", "err"))  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [sys.executable, "devconsole.py", "--data-dir", str(tmp_path / "data"), *args],
        cwd=Path(__file__).resolve().parents[2],
        env=env,
        stdout=out,
        stderr=err,
    )
    try:
        deadline = time.monotonic() + 120
        while b"Ctrl-C stops everything" not in (tmp_path / "out").read_bytes():
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "err").read_text()
            time.sleep(0.3)
        banner = (tmp_path / "out").read_text()
        api = f"http://127.0.0.1:{ports['api']}"
        for name in SERVICES:
            assert re.search(rf"^  {re.escape(name)} +\S", banner, re.MULTILINE), (name, banner)
        for where in (api, f"{api}/docs", f"{api}/app/", f"127.0.0.1:{ports['ui']}", f"127.0.0.1:{ports['wechat']}"):
            assert where in banner, (where, banner)
        assert f"127.0.0.1:{ports['alipay']}" in banner and f"127.0.0.1:{ports['temporal']}" in banner

        r = httpx.get(f"{api}/v1/his/visits/no-such-visit?x=1", headers={**HIS, "X-Request-Id": "req-dev-1"})
        assert r.status_code == 404
        wait_for(lambda: b"req-dev-1" in (tmp_path / "err").read_bytes())
        logged = [line for line in (tmp_path / "err").read_text().splitlines() if "req-dev-1" in line]
        assert len(logged) == 1 and "GET /v1/his/visits/no-such-visit 404 " in logged[0], logged

        before = len((tmp_path / "err").read_bytes().splitlines())
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=90) == 0
        said = (tmp_path / "err").read_text().splitlines()[before:]
        assert len(said) < 10 and not any("Traceback" in line for line in said), said
        assert "stopped." in (tmp_path / "out").read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        out.close()
        err.close()


def wait_for(done: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, "not reached"
        time.sleep(0.1)


@pytest.mark.parametrize("after", [0.2, 2.5])
def test_ctrl_c_while_make_dev_starts_is_quiet_too(tmp_path: Path, after: float) -> None:
    """While the modules load, and while the children start: exit 0, no traceback, nothing left running."""
    args = [f"--{name}-port={free_port()}" for name in ("api", "temporal", "ui", "wechat", "alipay")]
    proc = subprocess.Popen(
        [sys.executable, "devconsole.py", "--data-dir", str(tmp_path / "data"), *args],
        cwd=Path(__file__).resolve().parents[2],
        env={k: v for k, v in os.environ.items() if not k.startswith("YHF_")},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    time.sleep(after)
    proc.send_signal(signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0 and b"Traceback" not in err and len(err.splitlines()) < 10, err.decode()
    assert running_under(tmp_path) == []


def running_under(folder: Path) -> list[str]:
    """The command lines of the processes that name this folder (a child's data dir)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(folder) in args:
            found.append(args)
    return found
