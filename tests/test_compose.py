"""The deployment (issue 11): docker-compose.yml, .env.example, the Dockerfile, its entry point
and the lock files. The compose file is read as compose reads it (YAML, `${VAR:?}` interpolation
from an env file); `docker-compose config` itself runs where the binary is installed (CI installs
Debian's: `make compose-check`). Nothing here needs a Docker engine."""

from __future__ import annotations

import asyncio
import base64
import os
import re
import secrets
import shutil
import socket
import subprocess
import threading
import tomllib
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from pydantic import ValidationError
from temporalio import activity, workflow
from temporalio.api.taskqueue.v1 import PollerInfo
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

import entrypoint
from config import Settings, get_settings
from devstack import search_attribute_args
from tests.support import free_port

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
APP_SERVICES = ("api", "worker", "migrate")


# --- reading the compose file as compose does ------------------------------------------------


def env_example() -> dict[str, str]:
    """.env.example's variables (the commented-out optional ones left out)."""
    pairs = (line.split("=", 1) for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines())
    return {k.strip(): v.strip() for k, *rest in pairs if rest and not k.startswith("#") for v in rest}


def filled_env() -> dict[str, str]:
    """.env.example with every empty value filled in as an operator would: random secrets, URLs."""
    env = env_example()
    for name, value in env.items():
        if value:
            continue
        if name == "YHF_PAYLOAD_KEY":
            env[name] = "k1:" + base64.b64encode(secrets.token_bytes(32)).decode()
        elif name.endswith(("_URL", "_ORIGIN")):
            env[name] = f"https://{name.lower().replace('_', '-')}.example.org"
        else:
            env[name] = secrets.token_hex(16)
    return env


_VAR = re.compile(r"\$\$|\$\{(\w+)(?:(:?[?-])([^}]*))?\}|\$(\w+)")


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's interpolation: ${VAR}, ${VAR:-default}, ${VAR:?error} (unset or empty: an
    error), $$ for a literal $."""

    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1) or match.group(4)
        value, op, arg = env.get(name, ""), match.group(2), match.group(3)
        if op in (":?", "?") and not value:
            raise LookupError(f"{name}: {arg}")
        if op in (":-", "-") and not value:
            return arg
        return value

    return _VAR.sub(one, text)


def resolved(node: Any, env: dict[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, dict):
        return {k: resolved(v, env) for k, v in node.items()}
    if isinstance(node, list):
        return [resolved(v, env) for v in node]
    return node


def compose(env: dict[str, str] | None = None) -> dict[str, Any]:
    raw = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    return resolved(raw, filled_env() if env is None else env)


def service_env(service: dict[str, Any], env: dict[str, str]) -> dict[str, str]:
    """What a container gets: the values given, and the pass-through ones (no value) the env sets."""
    given = service.get("environment") or {}
    return {k: (str(v) if v is not None else env[k]) for k, v in given.items() if v is not None or k in env}


# --- the services ------------------------------------------------------------------------------


def test_the_stack_has_the_services_issue_11_lists() -> None:
    services = compose()["services"]
    images = {name: s.get("image", "") for name, s in services.items()}
    assert images["temporal"].startswith("temporalio/server:")
    assert images["temporal-ui"].startswith("temporalio/ui:")
    assert images["temporal-schema"].startswith("temporalio/admin-tools:")
    assert images["temporal-setup"].startswith("temporalio/admin-tools:")
    assert images["temporal-postgresql"].startswith("postgres:") and images["postgres"].startswith("postgres:")
    for name in (*APP_SERVICES, "bureau", "credit"):
        assert services[name]["build"] == "." and services[name]["command"] == [name]
    assert services["worker"]["deploy"]["replicas"] == 2 and services["api"]["deploy"]["replicas"] == 2
    # docker-compose 1.x refuses a service with both
    assert not any("scale" in s for s in services.values())
    assert services["bureau"]["profiles"] == ["sandbox"] and services["credit"]["profiles"] == ["sandbox"]
    assert all("profiles" not in services[name] for name in services if name not in ("bureau", "credit"))


def test_every_image_is_pinned_to_a_version() -> None:
    images = {name: s["image"] for name, s in compose()["services"].items()}
    for name, image in images.items():
        tag = image.partition(":")[2]
        assert tag and tag != "latest" and re.fullmatch(r"\d+\.\d+(\.\d+)?(-[a-z0-9.]+)?", tag), (name, image)
    version = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["version"]
    assert images["api"] == f"yihoufu:{version}"
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11\.\d+-slim-\w+$", dockerfile(), re.M)


def test_dependencies_wait_for_health_or_completion() -> None:
    services = compose()["services"]
    wanted = {
        "temporal-schema": {"temporal-postgresql": "service_healthy"},
        "temporal": {"temporal-schema": "service_completed_successfully"},
        "temporal-setup": {"temporal": "service_healthy"},
        "temporal-ui": {"temporal": "service_healthy"},
        "migrate": {"postgres": "service_healthy"},
        "worker": {"migrate": "service_completed_successfully", "temporal-setup": "service_completed_successfully"},
        "api": {"migrate": "service_completed_successfully", "temporal-setup": "service_completed_successfully"},
        "proxy": {"api": "service_healthy"},
    }
    for name, deps in wanted.items():
        assert {k: v["condition"] for k, v in services[name]["depends_on"].items()} == deps, name
    # what others wait to be healthy has a health check (the app's image has its HEALTHCHECK)
    for name in ("temporal-postgresql", "temporal", "postgres"):
        assert services[name]["healthcheck"]["test"], name
    assert "HEALTHCHECK" in dockerfile()


def test_the_compose_file_registers_every_search_attribute() -> None:
    """The admin-tools job registers what `make dev` registers (devstack.py), each with its type;
    an attribute it lacks fails the visit workflow's first upsert."""
    script = compose()["services"]["temporal-setup"]["command"][0]
    registered = re.findall(r"--name (\w+) --type (\w+)", script)
    args = search_attribute_args()
    wanted = [tuple(value.split("=")) for flag, value in zip(args[::2], args[1::2], strict=True)]
    assert all(flag == "--search-attribute" for flag in args[::2])
    assert sorted(registered) == sorted(wanted) and len(wanted) == 8


def test_temporal_ui_decodes_through_the_api_codec_endpoint() -> None:
    env = filled_env()
    services = compose(env)["services"]
    ui = services["temporal-ui"]["environment"]
    assert ui["TEMPORAL_CODEC_ENDPOINT"] == env["YHF_PUBLIC_BASE_URL"] + "/v1/ops/codec"
    assert service_env(services["api"], env)["YHF_UI_ORIGIN"] == env["YHF_UI_ORIGIN"]


# --- the app's settings ------------------------------------------------------------------------


def settings_from(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    for name in [n for n in os.environ if n.startswith("YHF_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return Settings(_env_file=None)


@pytest.mark.parametrize("name", APP_SERVICES)
def test_every_setting_the_app_requires_is_set(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The environment compose gives the api, the worker and migrate satisfies the settings'
    validators outside the sandbox (which refuse missing and dev secrets): a new required
    YHF_* setting the compose file lacks fails here."""
    env = filled_env()
    given = service_env(compose(env)["services"][name], env)
    assert given["YHF_SANDBOX"] == "0"
    settings = settings_from(given, monkeypatch)
    assert not settings.sandbox and settings.payload_keys() and settings.database_url.startswith("postgresql")
    # and what the validators require is among them: without each, the settings refuse to load
    required = set()
    for var in given:
        try:
            settings_from({k: v for k, v in given.items() if k != var}, monkeypatch)
        except ValidationError:
            required.add(var)
    assert {"YHF_HIS_API_KEY", "YHF_OPS_API_KEY", "YHF_DATA_KEY", "YHF_PAYLOAD_KEY"} <= required
    assert {"YHF_INSURANCE_BUREAU_URL", "YHF_CREDIT_PLATFORM_SECRET"} <= required
    assert {"YHF_INSURANCE_BUREAU_PAAS_TOKEN", "YHF_INSURANCE_BUREAU_PUBLIC_KEY"} <= required


def test_no_secret_has_a_default_in_the_compose_file() -> None:
    """A secret left out of .env stops compose, naming it; none is given a fallback value."""
    example = env_example()
    secret_names = [n for n in example if re.search(r"KEY|SECRET|PASSWORD", n)]
    assert len(secret_names) >= 8 and all(example[n] == "" for n in secret_names)
    text = COMPOSE.read_text(encoding="utf-8")
    for name in secret_names:
        assert re.findall(rf"\$\{{{name}(\W)", text) and set(re.findall(rf"\$\{{{name}(:\?)", text)) == {":?"}, name
        with pytest.raises(LookupError, match=name):
            compose({**filled_env(), name: ""})
    assert "dev-" not in text and 'YHF_SANDBOX: "0"' in text


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose is not installed")
def test_docker_compose_config_validates(tmp_path: Path) -> None:
    env_file = tmp_path / "compose.env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in filled_env().items()), encoding="utf-8")
    run = ["docker-compose", "--project-directory", str(ROOT), "-f", str(COMPOSE)]
    ok = subprocess.run(
        [*run, "--env-file", str(env_file), "--profile", "sandbox", "config", "-q"], capture_output=True
    )
    assert ok.returncode == 0, ok.stderr.decode()
    refused = subprocess.run([*run, "--env-file", str(ENV_EXAMPLE), "config", "-q"], capture_output=True)
    assert refused.returncode != 0 and b"in .env (see .env.example)" in refused.stderr


# --- the README names what the file runs -----------------------------------------------------


def test_the_readme_names_every_service() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Deploying (compose)", 1)[1].split("\n## ", 1)[0]
    first_cells = [row.split("|")[1] for row in section.splitlines() if row.startswith("| `")]
    named = {name for cell in first_cells for name in re.findall(r"`([a-z-]+)`", cell)}
    assert named == set(compose()["services"])
    for variable in env_example():
        assert f"`{variable}`" in section, variable


# --- the image ---------------------------------------------------------------------------------


def dockerfile() -> str:
    return (ROOT / "Dockerfile").read_text(encoding="utf-8")


def test_the_image_is_built_from_the_lock_and_runs_as_a_user() -> None:
    text = dockerfile()
    assert len(re.findall(r"^FROM ", text, re.M)) == 2  # the dependencies' stage, the runtime's
    assert "pip install --require-hashes --no-deps -r /tmp/requirements.lock" in text
    user = re.findall(r"^USER (\S+)", text, re.M)
    assert user and not user[-1].startswith(("root", "0"))
    assert re.search(r'^ENTRYPOINT \["python", "/app/entrypoint.py"\]$', text, re.M)
    ignored = (ROOT / ".dockerignore").read_text(encoding="utf-8").split()
    assert {".env", ".git", ".venv", "tests", ".data"} <= set(ignored)


@pytest.mark.skipif(shutil.which("hadolint") is None, reason="hadolint is not installed (make install brings it)")
def test_hadolint_finds_nothing_in_the_dockerfile() -> None:
    lint = subprocess.run(["hadolint", "--no-color", str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert lint.returncode == 0, lint.stdout + lint.stderr


def test_each_role_has_its_command() -> None:
    env = {"YHF_INSURANCE_BUREAU_SECRET": "s", "YHF_CREDIT_PLATFORM_APP_ID": "app"}
    assert entrypoint.command("api", env)[1:4] == ["-m", "uvicorn", "api.main:create_app"]
    assert entrypoint.command("worker", env)[1:] == ["worker.py"]
    assert entrypoint.command("migrate", env)[1:] == ["-m", "db.migrate"]
    assert entrypoint.command("bureau", env)[1:] == [
        "-m",
        "simulators.bureau",
        "8040",
        "yhf-hospital",
        "s",
        "/data/bureau.db",
    ]
    assert entrypoint.command("bureau", {**env, "SIMULATOR_DATA_DIR": "/srv"})[-1] == "/srv/bureau.db"
    with pytest.raises(SystemExit, match="YHF_CREDIT_PLATFORM_SECRET"):
        entrypoint.command("credit", env)
    with pytest.raises(SystemExit, match="unknown role"):
        entrypoint.command("shell", env)


class _Answer(BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status if self.path in ("/healthz", "/readyz") else 404)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def health_server() -> Iterator[tuple[HTTPServer, int]]:
    port = free_port()
    handler = type("Answer", (_Answer,), {})
    server = HTTPServer(("127.0.0.1", port), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server, port
    server.shutdown()
    server.server_close()


def test_the_api_is_healthy_when_healthz_answers_200(health_server: tuple[HTTPServer, int]) -> None:
    server, port = health_server
    assert entrypoint.http_ok(port)
    server.RequestHandlerClass.status = 503  # type: ignore[attr-defined]
    assert not entrypoint.http_ok(port)
    assert entrypoint.port_open(port)
    server.shutdown()
    server.server_close()
    assert not entrypoint.http_ok(port, timeout=1) and not entrypoint.port_open(port, timeout=1)


def test_pollers_count_when_they_are_this_hosts_and_recent() -> None:
    now = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)

    def poller(identity: str, ago: float) -> PollerInfo:
        info = PollerInfo(identity=identity)
        info.last_access_time.FromDatetime(now - timedelta(seconds=ago))
        return info

    assert entrypoint.polling_from([poller("7@c0ffee", 5)], "c0ffee", now)
    assert entrypoint.polling_from([poller("1@other", 1), poller("7@c0ffee", 89)], "c0ffee", now)
    assert not entrypoint.polling_from([poller("7@c0ffee", 91)], "c0ffee", now)  # gone quiet
    assert not entrypoint.polling_from([poller("7@other", 1)], "c0ffee", now)  # another container's
    assert not entrypoint.polling_from([poller("7@xc0ffee", 1)], "c0ffee", now)
    assert not entrypoint.polling_from([], "c0ffee", now)


@workflow.defn(name="ComposeHealthProbe")
class _Probe:
    @workflow.run
    async def run(self) -> None:
        pass


@activity.defn(name="compose_health_probe")
async def _probe() -> None:
    pass


async def test_a_polling_worker_is_seen_from_its_host(temporal_env: WorkflowEnvironment) -> None:
    """The worker's health check asks Temporal, as the container's HEALTHCHECK does: a worker
    polling the queue from this host counts; no worker, or a queue nobody polls, does not."""
    client = temporal_env.client
    queue = f"compose-health-{uuid.uuid4().hex[:8]}"
    host = socket.gethostname()
    assert not await entrypoint.worker_polling(client, client.namespace, queue, host)
    probe = Worker(
        client, task_queue=queue, workflows=[_Probe], activities=[_probe], workflow_runner=UnsandboxedWorkflowRunner()
    )
    async with probe:
        seen = False
        for _ in range(50):  # the first polls reach the server within moments
            if seen := await entrypoint.worker_polling(client, client.namespace, queue, host):
                break
            await asyncio.sleep(0.1)
        assert seen
        assert not await entrypoint.worker_polling(client, client.namespace, queue, "another-container")


# --- the lock files ----------------------------------------------------------------------------


def pins(lock: str) -> dict[str, str]:
    text = (ROOT / lock).read_text(encoding="utf-8")
    entries = re.findall(r"^([A-Za-z0-9_.\-\[\]]+)==([^\s;\\]+)", text, re.M)
    hashed = re.findall(r"^[A-Za-z0-9_.\-\[\]]+==[^\n]*\\\n(?:\s+--hash=sha256:[0-9a-f]{64}\s*\\?\n)+", text, re.M)
    assert len(hashed) == len(entries), f"{lock}: every pin carries its hashes"
    return {canonicalize_name(name.split("[")[0]): version for name, version in entries}


def test_the_locks_pin_every_dependency_of_pyproject() -> None:
    """requirements.lock (the image) and requirements-dev.lock (`make install`) are current: each
    dependency pyproject.toml names is pinned at a version it allows (`make lock` regenerates them),
    and the two agree on every package they share."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    runtime, dev = pins("requirements.lock"), pins("requirements-dev.lock")
    for lock, wanted in (
        (runtime, project["dependencies"]),
        (dev, project["dependencies"] + project["optional-dependencies"]["dev"]),
    ):
        for spec in map(Requirement, wanted):
            name = canonicalize_name(spec.name)
            assert name in lock, f"{spec.name} is not in the lock: run `make lock`"
            assert spec.specifier.contains(lock[name], prereleases=True), (
                f"{spec}: locked {lock[name]}: run `make lock`"
            )
    assert {n: v for n, v in dev.items() if n in runtime} == runtime
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert "pip install --quiet --require-hashes -r requirements-dev.lock" in makefile
    assert "$(STAMP): pyproject.toml requirements-dev.lock" in makefile


@pytest.fixture
def worker_settings(temporal_env: WorkflowEnvironment, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The settings a worker container has, for a task queue of this test's own (its name)."""
    queue = f"compose-health-{uuid.uuid4().hex[:8]}"
    for name in [n for n in os.environ if n.startswith("YHF_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("YHF_SANDBOX", "1")
    monkeypatch.setenv("YHF_TEMPORAL_ADDRESS", temporal_env.client.service_client.config.target_host)
    monkeypatch.setenv("YHF_TEMPORAL_NAMESPACE", temporal_env.client.namespace)
    monkeypatch.setenv("YHF_TASK_QUEUE", queue)
    get_settings.cache_clear()
    yield queue
    get_settings.cache_clear()


async def test_the_worker_health_check_connects_as_the_worker_does(
    temporal_env: WorkflowEnvironment,
    worker_settings: str,
    health_server: tuple[HTTPServer, int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What the HEALTHCHECK runs in a worker container: connected through the settings (as the
    worker is), healthy once this host polls the settings' queue, and not while the worker's own
    readiness answer, when it is served, is not 200."""
    assert not await entrypoint.worker_healthy()  # nobody polls yet
    probe = Worker(
        temporal_env.client,
        task_queue=worker_settings,
        workflows=[_Probe],
        activities=[_probe],
        workflow_runner=UnsandboxedWorkflowRunner(),
    )
    async with probe:
        for _ in range(50):
            if await entrypoint.worker_healthy():
                break
            await asyncio.sleep(0.1)
        assert await entrypoint.worker_healthy()
        server, port = health_server
        monkeypatch.setenv("YHF_WORKER_HEALTH_ADDRESS", f"127.0.0.1:{port}")
        get_settings.cache_clear()
        assert await entrypoint.worker_healthy()
        server.RequestHandlerClass.status = 503  # type: ignore[attr-defined]
        assert not await entrypoint.worker_healthy()
