"""Kubernetes deployments and their namespaces, where ``kubectl`` answers."""

from __future__ import annotations

import json

from opsbot.onboarding.findings import Deployment, Findings
from opsbot.onboarding.probing import NOT_INSTALLED, probe, why
from opsbot.reach.executors import Executor

ARGV = ["kubectl", "get", "deployments", "--all-namespaces", "-o", "json", "--request-timeout=5s"]


async def discover_deployments(executor: Executor, findings: Findings) -> None:
    result = await probe(executor, ARGV)
    if result.exit_status in NOT_INSTALLED:
        findings.notes.append("kubectl: not installed")
        return
    if not result.ok:  # no cluster configured or reachable: nothing to draft, nothing wrong
        findings.notes.append(f"kubectl: no cluster answers ({why(result)})")
        return
    try:
        items = json.loads(result.stdout).get("items", [])
    except (ValueError, AttributeError):
        findings.problems.append("kubectl: get deployments did not print a JSON list")
        return
    for item in items if isinstance(items, list) else []:
        meta = item.get("metadata", {}) if isinstance(item, dict) else {}
        name, namespace = meta.get("name"), meta.get("namespace", "default")
        if not isinstance(name, str) or not isinstance(namespace, str):
            continue
        spec, status = item.get("spec") or {}, item.get("status") or {}
        findings.deployments.append(
            Deployment(
                name=name,
                namespace=namespace,
                replicas=_count(spec.get("replicas")),
                ready=_count(status.get("readyReplicas")),
            )
        )


def _count(value: object) -> int:
    return value if isinstance(value, int) else 0
