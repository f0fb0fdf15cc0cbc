"""examples/his_walkthrough.py, the integrator's guide as a program, runs to a settled visit
against the stack as `make dev` starts it (here on free ports, with its own database)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import httpx

from devstack import Stack

SCRIPT = Path(__file__).resolve().parents[2] / "examples" / "his_walkthrough.py"


async def test_the_walkthrough_settles_its_visit(stack: Stack, http: httpx.AsyncClient) -> None:
    started = time.monotonic()
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, str(SCRIPT), "--base-url", stack.api_url],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=SCRIPT.parent,  # the script stands alone: nothing of the project on its path
    )
    took = time.monotonic() - started
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "done: the visit is settled" in out and took < 30, (took, out)
    # each step printed; the window took exactly the balance the visit showed
    for step in (
        "POST /v1/his/patients ->",
        "/enrollment -> 201",
        "POST /v1/his/visits -> 201",
        "/v1/ops/payments -> 201",
    ):
        assert step in out, out
    assert "due: balance 24500 fen" in out and "payment" in out and ": 24500 fen, succeeded" in out, out
    visit_id = next(w for w in out.split() if w.startswith("WALK-")).rstrip(":")
    visit = (await http.get(f"/v1/his/visits/{visit_id}", headers={"Authorization": "Bearer dev-his-key"})).json()
    assert visit["payment_status"] == "settled" and visit["bill"]["total_fen"] == 24500
    assert visit["bill"]["balance_fen"] == 0 and [p["method"] for p in visit["bill"]["payments"]] == ["cash"]
    assert [e["type"] for e in visit["events"]][-1] == "discharged" and len(visit["events"]) == 17


async def test_a_wrong_key_stops_the_walk_with_its_reason(stack: Stack) -> None:
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, str(SCRIPT), "--base-url", stack.api_url, "--his-key", "wrong"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=SCRIPT.parent,
    )
    assert done.returncode == 1 and "401" in done.stderr and "unauthorized" in done.stderr, done.stderr
