"""docs/grafana-dashboard.json: valid JSON, and every query names metrics that exist: the API's
(api/metrics.py, read from its registry) or the Temporal SDK's (the names its core exports with
the `temporal_` prefix; tests/api/test_observability.py scrapes a live worker for some of them)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from prometheus_client.metrics import MetricWrapperBase

from api import metrics

DASHBOARD = Path(__file__).resolve().parents[1] / "docs" / "grafana-dashboard.json"

# Temporal's core SDK metrics (docs.temporal.io, "SDK metrics"); histograms in milliseconds
TEMPORAL_HISTOGRAMS = {
    "temporal_workflow_task_schedule_to_start_latency",
    "temporal_workflow_task_execution_latency",
    "temporal_workflow_task_replay_latency",
    "temporal_workflow_endtoend_latency",
    "temporal_activity_schedule_to_start_latency",
    "temporal_activity_execution_latency",
    "temporal_activity_succeed_endtoend_latency",
    "temporal_local_activity_execution_latency",
    "temporal_request_latency",
    "temporal_long_request_latency",
}
TEMPORAL_OTHERS = {
    "temporal_workflow_completed",
    "temporal_workflow_failed",
    "temporal_workflow_canceled",
    "temporal_workflow_continue_as_new",
    "temporal_workflow_task_execution_failed",
    "temporal_workflow_task_queue_poll_succeed",
    "temporal_workflow_task_queue_poll_empty",
    "temporal_activity_execution_failed",
    "temporal_activity_execution_cancelled",
    "temporal_local_activity_execution_failed",
    "temporal_activity_task_received",
    "temporal_activity_poll_no_task",
    "temporal_request",
    "temporal_request_failure",
    "temporal_long_request",
    "temporal_long_request_failure",
    "temporal_num_pollers",
    "temporal_worker_task_slots_available",
    "temporal_worker_task_slots_used",
    "temporal_worker_start",
    "temporal_sticky_cache_hit",
    "temporal_sticky_cache_miss",
    "temporal_sticky_cache_size",
    "temporal_sticky_cache_total_forced_eviction",
}
SUFFIXES = ("_bucket", "_sum", "_count")
METRIC = re.compile(r"\b(?:yhf|temporal)_[a-z0-9_]+\b")
GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")


def api_metrics() -> dict[str, set[str]]:
    """Each series name the API exports -> its label names."""
    names: dict[str, set[str]] = {}
    for collector in [m for m in vars(metrics).values() if isinstance(m, MetricWrapperBase)]:
        labels = set(getattr(collector, "_labelnames", ()))
        for family in collector.describe():
            if family.type == "counter":
                series = [family.name + "_total"]
            elif family.type == "histogram":
                series = [family.name + s for s in SUFFIXES]
            else:
                series = [family.name]
            for name in series:
                names[name] = labels | ({"le"} if name.endswith("_bucket") else set())
    return names


def temporal_metrics() -> set[str]:
    return TEMPORAL_OTHERS | {h + s for h in TEMPORAL_HISTOGRAMS for s in SUFFIXES}


def targets() -> list[tuple[str, dict[str, Any]]]:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    found = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            found.append((panel["title"], target))
    return found


def test_the_dashboard_is_grafana_json_with_unique_ids() -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert dashboard["title"] and dashboard["uid"] and dashboard["schemaVersion"] >= 30
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert {"h", "w", "x", "y"} <= panel["gridPos"].keys() and panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
    # both audiences: the finance lead's figures and on-call's API and worker signals
    exprs = " ".join(t["expr"] for _, t in targets())
    for name in ("yhf_receivables_fen", "yhf_window_payments_fen_total", "yhf_http_request_seconds_bucket"):
        assert name in exprs
    for name in ("temporal_workflow_task_schedule_to_start_latency_bucket", "temporal_activity_execution_failed"):
        assert name in exprs


def test_every_query_names_metrics_that_exist() -> None:
    api, temporal = api_metrics(), temporal_metrics()
    assert "yhf_http_requests_total" in api and "yhf_receivables_fen" in api
    found = targets()
    assert len(found) >= 15
    for title, target in found:
        expr = target["expr"]
        names = set(METRIC.findall(expr))
        assert names, f"{title}: no metric in {expr!r}"
        unknown = {n for n in names if n not in api and n not in temporal}
        assert not unknown, f"{title}: unknown metrics {unknown}"
        # the labels an API metric is grouped or filtered by are its own
        for name in names & api.keys():
            used = {label.strip() for group in GROUPING.findall(expr) for label in group.split(",") if label.strip()}
            used |= set(re.findall(rf"{name}\{{([a-z_]+)\s*=", expr))
            assert used <= api[name], f"{title}: {name} has no label {used - api[name]}"
        assert expr.count("(") == expr.count(")"), f"{title}: unbalanced {expr!r}"
