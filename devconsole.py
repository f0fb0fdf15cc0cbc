"""`make dev` in a terminal (`python devconsole.py [options]`): the stack of devstack.py started with
the options given, a banner with every service and its address, the children's output (the API's
one line per request among it: YHF_ACCESS_LOG=0 turns that off), and a quiet Ctrl-C: the
children are stopped in order (API, worker, Temporal, simulators) and the process exits 0,
with no traceback, however early the Ctrl-C comes."""

from __future__ import annotations

import argparse
import os
import signal
import time
from pathlib import Path

if __name__ == "__main__":  # a Ctrl-C while the modules below load (a second): nothing started, nothing to say
    signal.signal(signal.SIGINT, lambda *_: os._exit(0))

from config import DEV_PAYLOAD_KEY
from devstack import ROOT, Stack


def options(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="devconsole.py", description="The sandbox stack of `make dev`.")
    parser.add_argument("--data-dir", type=Path, default=ROOT / ".data", help="the databases (default .data/)")
    parser.add_argument("--api-port", type=int, default=8000)
    parser.add_argument("--temporal-port", type=int, default=7233)
    parser.add_argument("--ui-port", type=int, default=8233)
    parser.add_argument("--wechat-port", type=int, default=None, help="the WeChat Pay simulator (default 8020)")
    parser.add_argument("--alipay-port", type=int, default=None, help="the Alipay simulator (default 8030)")
    parser.add_argument("--bureau-port", type=int, default=None, help="the insurance bureau simulator (default: free)")
    parser.add_argument("--credit-port", type=int, default=None, help="the credit platform simulator (default: free)")
    parser.add_argument("--headless", action="store_true", help="Temporal without its UI")
    return parser.parse_args(argv)


def stack_of(opts: argparse.Namespace) -> Stack:
    # payloads encrypted with the public dev key unless YHF_PAYLOAD_KEY names another
    return Stack(
        data_dir=opts.data_dir,
        api_port=opts.api_port,
        temporal_port=opts.temporal_port,
        ui_port=opts.ui_port,
        headless=opts.headless,
        wechat_port=opts.wechat_port,
        alipay_port=opts.alipay_port,
        bureau_port=opts.bureau_port,
        credit_port=opts.credit_port,
        payload_key=os.environ.get("YHF_PAYLOAD_KEY") or DEV_PAYLOAD_KEY,
    )


def services(stack: Stack) -> list[tuple[str, str]]:
    """(service, where) for every service of the running stack, as the banner lists them."""
    env = stack.child_env()
    api = stack.api_url
    ui = "off (--headless)" if stack.headless else f"http://127.0.0.1:{stack.ui_port}  (payloads decrypted by the API)"
    sms = (
        f"Aliyun Dysms at {env['YHF_ALIYUN_SMS_ENDPOINT']}"
        if env.get("YHF_SMS_BACKEND") == "aliyun"
        else f"outbox; sandbox inbox {api}/v1/sandbox/sms?phone=<number>"
    )
    access = "off (YHF_ACCESS_LOG=0)" if env.get("YHF_ACCESS_LOG", "1").lower() in ("0", "false", "no") else "on"
    return [
        ("API", api),
        ("API docs", f"{api}/docs  (OpenAPI: {api}/openapi.json)"),
        ("patient app", f"{api}/app/"),
        ("Temporal UI", ui),
        ("Temporal", f"127.0.0.1:{stack.temporal_port}  (namespace default)"),
        ("WeChat Pay", _gateway(env, "YHF_WECHAT_GATEWAY", "wechat" in stack.procs)),
        ("Alipay", _gateway(env, "YHF_ALIPAY_GATEWAY", "alipay" in stack.procs)),
        ("insurance bureau", _gateway(env, "YHF_INSURANCE_BUREAU_URL", "bureau" in stack.procs)),
        ("credit platform", _gateway(env, "YHF_CREDIT_PLATFORM_URL", "credit" in stack.procs)),
        ("SMS", sms),
        ("metrics", f"{api}/metrics"),
        ("access log", access),
        ("data", str(stack.data_dir)),
    ]


def _gateway(env: dict[str, str], setting: str, simulated: bool) -> str:
    where = env.get(setting) or "not configured"
    return f"{where}  (simulator)" if simulated else where


def banner(stack: Stack) -> str:
    rows = services(stack)
    width = max(len(name) for name, _ in rows)
    lines = [f"  {name.ljust(width)}  {where}" for name, where in rows]
    return "\n" + "\n".join(lines) + "\n\nA process that dies is restarted. Ctrl-C stops everything."


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> None:
    stack = stack_of(options(argv))
    signal.signal(signal.SIGINT, _interrupt)  # Ctrl-C, and a SIGTERM alike, end the loop below
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        print("starting Temporal dev server, worker and API (sandbox) ...", flush=True)
        stack.start()
        print(banner(stack), flush=True)
        stack.supervise()
        while stack.gave_up is None:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C does not cut the stop short
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("\nstopping ...", flush=True)
        stack.stop()
        print("stopped.", flush=True)
    if stack.gave_up:
        raise SystemExit(f"{stack.gave_up} keeps dying right after it starts; see its output above")


if __name__ == "__main__":
    main()
