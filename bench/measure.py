"""What the ratio benchmark measures on either side: acknowledgement latencies with their time in
the run, visits finished, and what each process spent (CPU seconds from /proc, peak memory), and
how busy the whole machine was meanwhile (so that load from outside the run shows)."""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

TICK = os.sysconf("SC_CLK_TCK")


def pct(values: list[float], p: float) -> float:
    """The p-quantile (0..1) by nearest rank; 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p * len(ordered)) - 1))]


def cpu_seconds(pid: int) -> float:
    """user + system CPU seconds of one process (0.0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime (fields 14 and 15 of stat)


def status_mb(pid: int, field: str) -> float:
    """A memory line of /proc/<pid>/status (VmHWM: the peak resident, VmRSS: resident now), in MB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0.0


def peak_rss_mb(pid: int) -> float:
    return status_mb(pid, "VmHWM")


def rss_mb(pid: int) -> float:
    return status_mb(pid, "VmRSS")


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, all cores."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]  # idle, iowait
    total = sum(values[:8])  # user .. steal (guest time is already inside user)
    return (total - idle) / TICK, total / TICK


class Meter:
    """CPU seconds of named processes (and groups of processes) over a window, and the machine's."""

    def __init__(self, processes: dict[str, list[int]]) -> None:
        self.processes = {name: set(pids) for name, pids in processes.items()}
        self.started = {pid: cpu_seconds(pid) for pids in processes.values() for pid in pids}
        self.machine = machine_busy()
        self.wall = time.perf_counter()

    def include(self, name: str, pids: list[int]) -> None:
        """Processes born during the window (e.g. database connections opened under load): all of
        their CPU counts."""
        self.processes.setdefault(name, set()).update(pids)

    def read(self) -> dict[str, Any]:
        wall = time.perf_counter() - self.wall
        busy, total = machine_busy()
        used = {
            name: round(sum(cpu_seconds(p) - self.started.get(p, 0.0) for p in pids), 2)
            for name, pids in self.processes.items()
        }
        machine = busy - self.machine[0]
        return {
            "wall_s": round(wall, 2),
            "cpu_s": used,
            "machine_busy_s": round(machine, 2),
            "machine_cores": round((total - self.machine[1]) / wall, 2) if wall else 0,
            # CPU the machine spent outside the processes measured here: other work on the machine
            "outside_s": round(machine - sum(used.values()), 2),
            "peak_rss_mb": {name: round(sum(peak_rss_mb(p) for p in pids), 1) for name, pids in self.processes.items()},
        }


@dataclass
class Result:
    """One side, one database, one number of visits in flight."""

    side: str  # "raw" | "product"
    db: str  # "sqlite" | "postgresql" (for raw: the dev server's own SQLite)
    in_flight: int
    visits: int = 0
    elapsed_s: float = 0.0
    acks: list[tuple[float, float]] = field(default_factory=list)  # (seconds into the run, latency s)
    pay: list[float] = field(default_factory=list)  # the pay signal's / the window payment's latency
    by_kind: dict[str, list[float]] = field(default_factory=dict)  # ack latencies (s) by request kind
    retries: int = 0
    errors: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)  # CPU, memory, rows: what the side measured

    @property
    def visits_per_s(self) -> float:
        return self.visits / self.elapsed_s if self.elapsed_s else 0.0

    def ack_ms(self, p: float) -> float:
        return pct([latency for _, latency in self.acks], p) * 1000

    def summary(self) -> dict[str, Any]:
        return {
            "side": self.side,
            "db": self.db,
            "in_flight": self.in_flight,
            "visits": self.visits,
            "acks": len(self.acks),
            "elapsed_s": round(self.elapsed_s, 2),
            "visits_per_s": round(self.visits_per_s, 2),
            "ack_p50_ms": round(self.ack_ms(0.50), 1),
            "ack_p95_ms": round(self.ack_ms(0.95), 1),
            "ack_p99_ms": round(self.ack_ms(0.99), 1),
            "pay_p50_ms": round(pct(self.pay, 0.50) * 1000, 1),
            "pay_p99_ms": round(pct(self.pay, 0.99) * 1000, 1),
            "retries": self.retries,
            "errors": self.errors[:20],
            "ack_ms_by_kind": {
                kind: {"p50": round(pct(xs, 0.5) * 1000, 1), "p95": round(pct(xs, 0.95) * 1000, 1)}
                for kind, xs in self.by_kind.items()
            },
        }

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["acks"] = [[round(t, 3), round(latency * 1000, 1)] for t, latency in self.acks]
        data["pay"] = [round(latency * 1000, 1) for latency in self.pay]
        return {**self.summary(), **{k: data[k] for k in ("acks", "pay", "extra")}}
