"""opsbot's own Prometheus metrics, in a registry of their own.

A dedicated ``CollectorRegistry`` (not prometheus_client's global one) lets tests and several
applications live in one process without "Duplicated timeseries" errors. ``/metrics`` on the
web server serves :meth:`Metrics.render`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterator, Mapping
from contextlib import contextmanager
from itertools import accumulate
from typing import TypeVar

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from opsbot.config.objectives import LATENCY_BUCKETS

_M = TypeVar("_M", bound=Collector)

# Why a webhook request was refused (the label values of webhook_rejected_total).
REJECT_REASONS = ("unauthorized", "too_large", "bad_json", "bad_shape", "ingest_failed")

# What became of an outbox call (the label values of outbox_calls_total).
OUTBOX_OUTCOMES = ("delivered", "retried", "rate_limited", "dropped", "fenced")

EXECUTOR_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
LAG_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class Metrics:
    """Counters and histograms for one opsbot; ``render()`` gives the text exposition."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, namespace: str = "opsbot") -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        # The same metrics but the SLI series, which a full scrape renders a chunk at a time.
        self._own = CollectorRegistry(auto_describe=True)

        def counter(name: str, doc: str, *labels: str) -> Counter:
            return self._also_own(Counter(name, doc, labels, namespace=namespace, registry=r))

        def gauge(name: str, doc: str) -> Gauge:
            return self._also_own(Gauge(name, doc, namespace=namespace, registry=r))

        def histogram(name: str, doc: str, buckets: tuple[float, ...], *labels: str) -> Histogram:
            return self._also_own(
                Histogram(name, doc, labels, buckets=buckets, namespace=namespace, registry=r)
            )

        self.commands_total = counter(
            "commands", "Commands handled, by verb and outcome.", "verb", "outcome"
        )
        self.approvals_total = counter(
            "approvals", "Approval requests decided, by decision.", "decision"
        )
        self.alerts_received_total = counter(
            "alerts_received", "Alert events accepted, by source.", "source"
        )
        self.alerts_sent_total = counter("alerts_sent", "Alert messages sent to the chat.")
        self.alerts_suppressed_total = counter(
            "alerts_suppressed", "Alert events not sent, by reason (dedup, silence, storm...).",
            "reason",
        )
        self.executor_seconds = histogram(
            "executor_seconds", "Time spent in executor calls, by kind (ssh, docker, local).",
            EXECUTOR_BUCKETS, "kind",
        )
        self.webhook_rejected_total = counter(
            "webhook_rejected", "Webhook requests refused, by reason.", "reason"
        )
        self.monitor_round_lag_seconds = histogram(
            "monitor_round_lag_seconds",
            "How late a monitor round's first check started, after its due time.",
            LAG_BUCKETS,
        )
        self.monitor_rounds_late_total = counter(
            "monitor_rounds_late", "Monitor rounds due while the target's last one still ran "
            "(each runs right after it, late).",
        )
        self.monitor_rounds_skipped_total = counter(
            "monitor_rounds_skipped", "Monitor rounds not run: due while one was already "
            "waiting behind a running round of the same target (should stay 0).",
        )
        self.monitor_checks_in_flight = gauge(
            "monitor_checks_in_flight", "Monitor checks running now (past their slot)."
        )
        for reason in REJECT_REASONS:  # present (at 0) from the start, so rate() works
            self.webhook_rejected_total.labels(reason=reason)
        self.updates_stale_total = counter(
            "updates_stale", "Commands not run: older than telegram.max_update_age."
        )
        self.updates_duplicate_total = counter(
            "updates_duplicate", "Updates dropped: their update_id was already handled."
        )
        self.leader = gauge(
            "leader", "1 while this replica holds the leader lease (polls, background work)."
        )
        self.outbox_calls_total = counter(
            "outbox_calls", "Bot API calls made by the outbox, by outcome.", "outcome"
        )
        for outcome in OUTBOX_OUTCOMES:
            self.outbox_calls_total.labels(outcome=outcome)
        self.outbox_pending = gauge(
            "outbox_pending", "Messages, edits and pins waiting in the outbox (last pass)."
        )

        # The objectives' SLI, per target, counted where the round ran (the lease holder): sum
        # over replicas, e.g. sum by (target) (rate(opsbot_slo_rounds_good_total[5m])).
        self.slo_totals: dict[str, list[float]] = {}
        self._sli = SLITotals(self.slo_totals, namespace)
        r.register(self._sli)

    def _also_own(self, metric: _M) -> _M:
        self._own.register(metric)
        return metric

    @contextmanager
    def time_executor(self, kind: str) -> Iterator[None]:
        """``with metrics.time_executor("ssh"): ...`` observes the elapsed seconds."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self.executor_seconds.labels(kind=kind).observe(time.perf_counter() - started)

    def render(self, names: Collection[str] = ()) -> bytes:
        """The Prometheus text exposition of this registry (serve with ``content_type``);
        ``names``: only those series (``/metrics?name[]=…``, as Prometheus' federation asks),
        so a probe of one gauge does not pay for every target's SLI series."""
        if names:
            return generate_latest(self.registry.restricted_registry(names))
        return generate_latest(self._own) + b"".join(self._sli.render())


#: Where a target's running totals sit in ``Metrics.slo_totals[target]``: rounds, good rounds,
#: the latency sum, then one count per latency bucket (``LATENCY_BUCKETS``, then +Inf).
SLI_ROUNDS, SLI_GOOD, SLI_SUM, SLI_BUCKETS = 0, 1, 2, 3


class SLITotals(Collector):
    """The SLI series, read from running totals when /metrics is scraped.

    Why a custom collector (prometheus_client's own API for figures kept elsewhere) and not a
    Counter and a Histogram child per target: the monitor's hook then adds to a list (about
    1 µs a round) instead of three locked metric updates (about 10 µs); the series are the
    same: ``slo_rounds_total``, ``slo_rounds_good_total``, ``slo_round_seconds``."""

    def __init__(self, totals: Mapping[str, list[float]], namespace: str) -> None:
        self._totals = totals
        self._prefix = f"{namespace}_" if namespace else ""

    def describe(self) -> Iterator[Metric]:
        """The families without samples: the registry then knows their names and collects
        them only when they are asked for (a ``name[]`` probe of one gauge skips 10,000
        targets' series)."""
        return self._families([])

    def collect(self) -> Iterator[Metric]:
        return self._families(list(self._totals.items()))

    def render(self, chunk: int = 500) -> Iterator[bytes]:
        """The text ``generate_latest`` gives for these families, ``chunk`` targets at a time:
        at 10,000 targets all ~170,000 samples at once held ~60 MB until the scrape ended,
        and the freed memory stayed in the process. A family's header comes with its first
        chunk only, so each family's samples stay one block, as the format wants."""
        items = list(self._totals.items())
        for build in self._builders:
            for start in range(0, max(len(items), 1), chunk):
                text = generate_latest(_Families([build(items[start : start + chunk])]))
                if start:
                    text = b"".join(line for line in text.splitlines(keepends=True)
                                    if not line.startswith(b"# "))  # fmt: skip
                yield text

    @property
    def _builders(self) -> tuple[Callable[[list[tuple[str, list[float]]]], Metric], ...]:
        return (self._rounds, self._good, self._seconds)

    def _families(self, totals: list[tuple[str, list[float]]]) -> Iterator[Metric]:
        return (build(totals) for build in self._builders)

    def _rounds(self, totals: list[tuple[str, list[float]]]) -> Metric:
        rounds = CounterMetricFamily(
            f"{self._prefix}slo_rounds", "Monitor rounds of targets with an objective.",
            labels=["target"],
        )  # fmt: skip
        for target, counts in totals:
            rounds.add_metric([target], counts[SLI_ROUNDS])
        return rounds

    def _good(self, totals: list[tuple[str, list[float]]]) -> Metric:
        good = CounterMetricFamily(
            f"{self._prefix}slo_rounds_good",
            "Those rounds that were not failing (the availability SLI).",
            labels=["target"],
        )
        for target, counts in totals:
            good.add_metric([target], counts[SLI_GOOD])
        return good

    def _seconds(self, totals: list[tuple[str, list[float]]]) -> Metric:
        seconds = HistogramMetricFamily(
            f"{self._prefix}slo_round_seconds",
            "Those rounds' latency (the latency SLI's buckets).",
            labels=["target"],
        )
        bounds = [*map(floatToGoString, LATENCY_BUCKETS), "+Inf"]
        for target, counts in totals:
            cumulative = accumulate(counts[SLI_BUCKETS:])
            seconds.add_metric(
                [target], list(zip(bounds, cumulative, strict=True)), counts[SLI_SUM]
            )
        return seconds


class _Families:
    """Families already built, in the shape ``generate_latest`` reads (``collect``)."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)
