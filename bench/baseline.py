"""The product at a baseline git revision, in the same run as the current tree (issue 12: a
speed-up counts when the same run shows it against the baseline).

`export` writes a revision's tree into a temporary folder (`git archive REV | tar -x`: the repo's
worktrees and refs are left alone); `run_baseline` runs the product side of THAT tree (its own
bench/his_load.py, devstack.py and code) as `python -m bench.ratio --sides product ...`, with this
venv's python and cwd (and PYTHONPATH) the exported folder, then reads back the JSON it wrote and
returns its run as a Result labelled `product@<short rev>`. `compare` puts the current product
beside each baseline: visits/s ratio, ack p50/p99 change."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.measure import Result
from devstack import ROOT


class NoBaseline(Exception):
    """The revision cannot be a baseline (unknown, or without the ratio benchmark)."""


@dataclass
class Baseline:
    rev: str  # as given on the command line
    commit: str
    short: str
    subject: str
    tree: Path  # the exported tree

    @property
    def side(self) -> str:
        return f"product@{self.short}"

    def describe(self) -> dict[str, str]:
        return {"rev": self.rev, "commit": self.commit, "short": self.short, "subject": self.subject}


def git(*args: str) -> str:
    done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
    if done.returncode:
        raise NoBaseline(done.stderr.strip() or f"git {' '.join(args)} failed")
    return done.stdout.strip()


def export(rev: str, into: Path) -> Baseline:
    """`rev`'s tree in a folder of its own under `into`; NoBaseline when it has no bench/ratio.py."""
    try:
        commit = git("rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")
    except NoBaseline:
        raise NoBaseline(f"{rev}: not a revision of this repository") from None
    short, subject = git("log", "-1", "--format=%h%x00%s", commit).split("\0", 1)
    if subprocess.run(
        ["git", "cat-file", "-e", f"{commit}:bench/ratio.py"], cwd=ROOT, stderr=subprocess.DEVNULL
    ).returncode:
        raise NoBaseline(f"{rev} ({short}) has no bench/ratio.py: the ratio benchmark came later (61acacf has it)")
    tree = into / short
    if tree.exists():
        raise NoBaseline(f"{rev} ({short}) is already a baseline of this run")
    tree.mkdir(parents=True)
    archive = subprocess.Popen(["git", "archive", "--format=tar", commit], cwd=ROOT, stdout=subprocess.PIPE)
    assert archive.stdout is not None
    untar = subprocess.run(["tar", "-x", "-C", str(tree)], stdin=archive.stdout)
    archive.stdout.close()
    if archive.wait() or untar.returncode:
        raise NoBaseline(f"{rev} ({short}): git archive | tar failed")
    return Baseline(rev, commit, short, subject, tree)


def result_from_json(run: dict[str, Any], side: str, extra: dict[str, Any]) -> Result:
    """A Result back from a run of the report's JSON (`Result.to_json`: latencies in ms)."""
    return Result(
        side=side,
        db=run["db"],
        in_flight=run["in_flight"],
        visits=run["visits"],
        elapsed_s=run["elapsed_s"],
        acks=[(t, ms / 1000) for t, ms in run["acks"]],
        pay=[ms / 1000 for ms in run["pay"]],
        retries=run.get("retries", 0),
        errors=list(run.get("errors", [])),
        extra={**run.get("extra", {}), **extra},
    )


async def run_baseline(
    base: Baseline, db: str, postgres_url: str, in_flight: int, rounds: int, profile: Path | None
) -> Result:
    """One product run of the baseline's tree, in a process of its own; its output is relayed."""
    out = base.tree.parent / f"{base.short}-results-{db}-{in_flight}"
    args = [sys.executable, "-m", "bench.ratio", "--sides", "product", "--in-flight", str(in_flight)]
    args += ["--rounds", str(rounds), "--db", db, "--out", str(out)]
    if profile is not None:
        args += ["--profile", str(profile / base.side)]
    env = {k: v for k, v in os.environ.items() if k != "YHF_TEST_DATABASE_URL"}
    env["PYTHONPATH"] = str(base.tree)  # that tree's packages, whatever this one's environment says
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    if db == "postgresql":
        env["YHF_TEST_DATABASE_URL"] = postgres_url
    proc = await asyncio.create_subprocess_exec(
        *args,
        cwd=base.tree,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        limit=1 << 20,
    )
    assert proc.stdout is not None
    try:
        while line := await proc.stdout.readline():
            print(f"    {base.short} | {line.decode('utf-8', 'replace').rstrip()}", flush=True)
        code = await proc.wait()
    finally:
        if proc.returncode is None:  # interrupted: its own stack goes down with it
            proc.terminate()
            await proc.wait()
    if code:
        raise RuntimeError(f"{base.side} exited with {code} (its output is above)")
    reports = sorted(out.glob("*.json"))
    if not reports:
        raise RuntimeError(f"{base.side} wrote no report in {out}")
    report = json.loads(reports[-1].read_text())
    runs = [
        r for r in report.get("runs", []) if r["side"] == "product" and r["db"] == db and r["in_flight"] == in_flight
    ]
    if not runs:
        raise RuntimeError(f"{base.side}: its report has no product run on {db} at {in_flight} (it failed, see above)")
    extra = {"rev": base.commit, "rev_short": base.short, "baseline_policy_decide_us": report.get("policy_decide_us")}
    return result_from_json(runs[0], base.side, extra)


def change(now: float, before: float) -> float | None:
    return round(now / before - 1, 3) if before else None


def compare(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The current product against each baseline at the same database and number in flight."""
    current = {(r["db"], r["in_flight"]): r for r in rows if r["side"] == "product"}
    out = []
    for base in (r for r in rows if r["side"].startswith("product@")):
        now = current.get((base["db"], base["in_flight"]))
        if now is None:
            continue
        out.append(
            {
                "db": base["db"],
                "in_flight": base["in_flight"],
                "baseline": base["side"],
                "rev": base.get("rev"),
                "visits_per_s": [base["visits_per_s"], now["visits_per_s"]],
                "visits_per_s_ratio": round(now["visits_per_s"] / base["visits_per_s"], 3)
                if base["visits_per_s"]
                else None,
                "ack_p50_ms": [base["ack_p50_ms"], now["ack_p50_ms"]],
                "ack_p50_change": change(now["ack_p50_ms"], base["ack_p50_ms"]),
                "ack_p99_ms": [base["ack_p99_ms"], now["ack_p99_ms"]],
                "ack_p99_change": change(now["ack_p99_ms"], base["ack_p99_ms"]),
                "pay_p50_ms": [base["pay_p50_ms"], now["pay_p50_ms"]],
                "pay_p50_change": change(now["pay_p50_ms"], base["pay_p50_ms"]),
            }
        )
    return out


def print_comparison(comparisons: list[dict[str, Any]]) -> None:
    if not comparisons:
        return

    def pct(value: float | None) -> str:
        return f"{value * 100:+.0f}%" if value is not None else "-"

    print("\nThe current tree (product) against each baseline, same run, interleaved:")
    head = f"  {'db':<11}{'in flight':>9}  {'baseline':<17}{'visits/s before -> now':>27}"
    head += f"{'ack p50 before -> now':>28}{'ack p99 before -> now':>28}"
    print(head)
    for c in comparisons:
        ratio = f"x{c['visits_per_s_ratio']:.2f}" if c["visits_per_s_ratio"] is not None else "-"
        (v0, v1), (a0, a1), (b0, b1) = c["visits_per_s"], c["ack_p50_ms"], c["ack_p99_ms"]
        line = f"  {c['db']:<11}{c['in_flight']:>9}  {c['baseline']:<17}"
        line += f"{v0:>9.2f} -> {v1:>6.2f} {ratio:>7}"
        line += f"{a0:>9.0f} -> {a1:>5.0f} ms {pct(c['ack_p50_change']):>6}"
        line += f"{b0:>9.0f} -> {b1:>5.0f} ms {pct(c['ack_p99_change']):>6}"
        print(line)
    print("  (visits/s: xN = now over before, above 1 is faster; ack: a negative change is faster)")
