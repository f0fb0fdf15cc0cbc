"""The image's entry point (see the Dockerfile): `python entrypoint.py ROLE` becomes that role of
the stack, `python entrypoint.py health` checks the role this container runs (its HEALTHCHECK).

Roles: `api` (uvicorn on :8000), `worker`, `migrate` (the database to the newest schema, then
exit), and for the sandbox only `bureau` and `credit`, the simulated insurance bureau and credit
platform (on :8040 and :8050, their state in /data, or SIMULATOR_DATA_DIR). The role replaces this process (exec), so it
gets the container's signals itself: SIGTERM stops the worker gracefully and uvicorn cleanly.

What `health` checks, by role:
- api: GET /healthz answers 200, i.e. the API reaches its database and Temporal;
- worker: its own readiness answer (YHF_WORKER_HEALTH_ADDRESS, GET /readyz: the worker runs and
  Temporal answers it) is 200 when it is served, and Temporal has seen a poller from this
  container (identity `pid@hostname`, the SDK's default) on both the workflow and the activity
  side of the task queue within the last 90 seconds (a long poll lasts 60), i.e. the worker's
  polls reach the cluster (connected as the worker is: TLS, API key);
- bureau, credit: the simulator accepts TCP connections on its port;
- migrate: nothing to check (it exits when done).
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import urllib.request
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from temporalio.api.enums.v1 import TaskQueueKind, TaskQueueType
from temporalio.api.taskqueue.v1 import PollerInfo, TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client

from config import get_settings
from integrations.temporal import connect

ROLE_FILE = Path(os.environ.get("YHF_ROLE_FILE", "/tmp/yhf-role"))
API_PORT = 8000
SIMULATOR_PORTS = {"bureau": 8040, "credit": 8050}
SIMULATOR_SETTINGS = {"bureau": "INSURANCE_BUREAU", "credit": "CREDIT_PLATFORM"}
POLLED_WITHIN = timedelta(seconds=90)


def command(role: str, env: dict[str, str]) -> list[str]:
    """The command line of a role; SystemExit for an unknown role or a simulator without its secret."""
    python = sys.executable
    if role == "api":
        return [
            python, "-m", "uvicorn", "api.main:create_app", "--factory", "--host", "0.0.0.0",
            "--port", str(API_PORT), "--timeout-graceful-shutdown", "10",
        ]  # fmt: skip
    if role == "worker":
        return [python, "worker.py"]
    if role == "migrate":
        return [python, "-m", "db.migrate"]
    if role in SIMULATOR_PORTS:
        setting = SIMULATOR_SETTINGS[role]
        secret = env.get(f"YHF_{setting}_SECRET")
        if not secret:
            raise SystemExit(f"the {role} simulator needs YHF_{setting}_SECRET (the secret the app signs with)")
        app_id = env.get(f"YHF_{setting}_APP_ID") or "yhf-hospital"
        data = Path(env.get("SIMULATOR_DATA_DIR", "/data"))  # the image's volume
        return [
            python,
            "-m",
            f"simulators.{role}",
            str(SIMULATOR_PORTS[role]),
            app_id,
            secret,
            str(data / f"{role}.db"),
        ]
    raise SystemExit(f"unknown role {role!r}: api, worker, migrate, bureau, credit (sandbox) or health")


def run(role: str) -> None:
    """Become the role: note it for `health`, then exec it."""
    args = command(role, dict(os.environ))
    ROLE_FILE.write_text(role, encoding="utf-8")
    env = dict(os.environ)
    if role in SIMULATOR_PORTS:
        env["SIMULATOR_HOST"] = "0.0.0.0"  # reached from the other containers
    os.execve(args[0], args, env)


def http_ok(port: int = API_PORT, timeout: float = 5.0, path: str = "/healthz") -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as answer:
            return bool(answer.status == 200)
    except OSError:  # URLError and HTTPError (a 503) are OSErrors
        return False


def port_open(port: int, timeout: float = 3.0) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout):
            return True
    except OSError:
        return False


def polling_from(pollers: Sequence[PollerInfo], host: str, now: datetime, within: timedelta = POLLED_WITHIN) -> bool:
    """A poller of this host (identity `pid@host`) was seen within `within` of `now`."""
    return any(
        poller.identity.endswith(f"@{host}") and now - poller.last_access_time.ToDatetime(tzinfo=UTC) <= within
        for poller in pollers
    )


async def worker_polling(client: Client, namespace: str, task_queue: str, host: str) -> bool:
    """Temporal has seen this host's worker on both sides of the task queue lately."""
    for kind in (TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW, TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY):
        answer = await client.workflow_service.describe_task_queue(
            DescribeTaskQueueRequest(
                namespace=namespace,
                task_queue=TaskQueue(name=task_queue, kind=TaskQueueKind.TASK_QUEUE_KIND_NORMAL),
                task_queue_type=kind,
            )
        )
        if not polling_from(answer.pollers, host, datetime.now(UTC)):
            return False
    return True


async def worker_healthy() -> bool:
    settings = get_settings()
    if settings.worker_health_address:
        port = int(settings.worker_health_address.rpartition(":")[2])
        if not await asyncio.to_thread(http_ok, port, 5.0, "/readyz"):
            print("worker health: its /readyz does not answer 200", file=sys.stderr)
            return False
    client = await connect(settings)
    return await worker_polling(client, settings.temporal_namespace, settings.task_queue, socket.gethostname())


def healthy(role: str) -> bool:
    if role == "api":
        return http_ok()
    if role == "worker":
        try:
            return asyncio.run(asyncio.wait_for(worker_healthy(), timeout=10))
        except Exception as err:  # unreachable Temporal, a timeout: unhealthy, said why
            print(f"worker health: {type(err).__name__}: {err}", file=sys.stderr)
            return False
    if role in SIMULATOR_PORTS:
        return port_open(SIMULATOR_PORTS[role])
    return role == "migrate"


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        raise SystemExit("usage: python entrypoint.py api|worker|migrate|bureau|credit|health")
    if argv[1] != "health":
        run(argv[1])
    role = ROLE_FILE.read_text(encoding="utf-8").strip() if ROLE_FILE.exists() else "none"
    ok = healthy(role)
    print(f"{role}: {'healthy' if ok else 'unhealthy'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
