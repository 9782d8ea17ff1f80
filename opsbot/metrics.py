"""opsbot's own Prometheus metrics, in a registry of their own.

A dedicated ``CollectorRegistry`` (not prometheus_client's global one) lets tests and several
applications live in one process without "Duplicated timeseries" errors. ``/metrics`` on the
web server serves :meth:`Metrics.render`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import generate_latest

from opsbot.config.objectives import LATENCY_BUCKETS

# Why a webhook request was refused (the label values of webhook_rejected_total).
REJECT_REASONS = ("unauthorized", "too_large", "bad_json", "bad_shape", "ingest_failed")

# What became of an outbox call (the label values of outbox_calls_total).
OUTBOX_OUTCOMES = ("delivered", "retried", "rate_limited", "dropped")

EXECUTOR_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
LAG_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class Metrics:
    """Counters and histograms for one opsbot; ``render()`` gives the text exposition."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, namespace: str = "opsbot") -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.commands_total = Counter(
            "commands", "Commands handled, by verb and outcome.", ["verb", "outcome"],
            namespace=namespace, registry=r,
        )  # fmt: skip
        self.approvals_total = Counter(
            "approvals", "Approval requests decided, by decision.", ["decision"],
            namespace=namespace, registry=r,
        )  # fmt: skip
        self.alerts_received_total = Counter(
            "alerts_received", "Alert events accepted, by source.", ["source"],
            namespace=namespace, registry=r,
        )  # fmt: skip
        self.alerts_sent_total = Counter(
            "alerts_sent", "Alert messages sent to the chat.", namespace=namespace, registry=r
        )
        self.alerts_suppressed_total = Counter(
            "alerts_suppressed", "Alert events not sent, by reason (dedup, silence, storm...).",
            ["reason"], namespace=namespace, registry=r,
        )  # fmt: skip
        self.executor_seconds = Histogram(
            "executor_seconds", "Time spent in executor calls, by kind (ssh, docker, local).",
            ["kind"], buckets=EXECUTOR_BUCKETS, namespace=namespace, registry=r,
        )  # fmt: skip
        self.webhook_rejected_total = Counter(
            "webhook_rejected", "Webhook requests refused, by reason.", ["reason"],
            namespace=namespace, registry=r,
        )  # fmt: skip
        self.monitor_round_lag_seconds = Histogram(
            "monitor_round_lag_seconds",
            "How late a monitor round's first check started, after its due time.",
            buckets=LAG_BUCKETS, namespace=namespace, registry=r,
        )  # fmt: skip
        self.monitor_rounds_late_total = Counter(
            "monitor_rounds_late", "Monitor rounds due while the target's last one still ran "
            "(each runs right after it, late).", namespace=namespace, registry=r,
        )  # fmt: skip
        self.monitor_rounds_skipped_total = Counter(
            "monitor_rounds_skipped", "Monitor rounds not run: due while one was already "
            "waiting behind a running round of the same target (should stay 0).",
            namespace=namespace, registry=r,
        )  # fmt: skip
        self.monitor_checks_in_flight = Gauge(
            "monitor_checks_in_flight", "Monitor checks running now (past their slot).",
            namespace=namespace, registry=r,
        )  # fmt: skip
        for reason in REJECT_REASONS:  # present (at 0) from the start, so rate() works
            self.webhook_rejected_total.labels(reason=reason)
        self.updates_stale_total = Counter(
            "updates_stale", "Commands not run: older than telegram.max_update_age.",
            namespace=namespace, registry=r,
        )  # fmt: skip
        self.updates_duplicate_total = Counter(
            "updates_duplicate", "Updates dropped: their update_id was already handled.",
            namespace=namespace, registry=r,
        )  # fmt: skip
        self.leader = Gauge(
            "leader", "1 while this replica holds the leader lease (polls, background work).",
            namespace=namespace, registry=r,
        )  # fmt: skip
        self.outbox_calls_total = Counter(
            "outbox_calls", "Bot API calls made by the outbox, by outcome.", ["outcome"],
            namespace=namespace, registry=r,
        )  # fmt: skip
        for outcome in OUTBOX_OUTCOMES:
            self.outbox_calls_total.labels(outcome=outcome)
        self.outbox_pending = Gauge(
            "outbox_pending", "Messages, edits and pins waiting in the outbox (last pass).",
            namespace=namespace, registry=r,
        )  # fmt: skip

        # The objectives' SLI, per target, counted where the round ran (the lease holder): sum
        # over replicas, e.g. sum by (target) (rate(opsbot_slo_rounds_good_total[5m])).
        self.slo_rounds_total = Counter(
            "slo_rounds", "Monitor rounds of targets with an objective.", ["target"],
            namespace=namespace, registry=r,
        )  # fmt: skip
        self.slo_rounds_good_total = Counter(
            "slo_rounds_good", "Those rounds that were not failing (the availability SLI).",
            ["target"], namespace=namespace, registry=r,
        )  # fmt: skip
        self.slo_round_seconds = Histogram(
            "slo_round_seconds", "Those rounds' latency (the latency SLI's buckets).",
            ["target"], buckets=LATENCY_BUCKETS, namespace=namespace, registry=r,
        )  # fmt: skip

    @contextmanager
    def time_executor(self, kind: str) -> Iterator[None]:
        """``with metrics.time_executor("ssh"): ...`` observes the elapsed seconds."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self.executor_seconds.labels(kind=kind).observe(time.perf_counter() - started)

    def render(self) -> bytes:
        """The Prometheus text exposition of this registry (serve with ``content_type``)."""
        return generate_latest(self.registry)
