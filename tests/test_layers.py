"""The house's rules, read from the code: one import direction, no cycles, small rooms.

Every module's imports are parsed (``ast``: module level, inside functions and under
``TYPE_CHECKING`` alike). The test fails on an import cycle between modules, on a module
importing a layer above its own (``LAYERS``), between wings against ``WINGS``, and on a
module over ``MAX_LINES`` that is not in ``LONG`` with its reason.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "opsbot"
MAX_LINES = 500

#: Top to bottom; a module may import its own layer and the ones below. The longest matching
#: prefix names a module's layer.
LAYERS: tuple[tuple[str, ...], ...] = (
    # entry: composition, processes, the command line
    (
        "opsbot.__main__", "opsbot.cli", "opsbot.runner", "opsbot.app", "opsbot.console",
        "opsbot.preflight", "opsbot.catalog",
    ),
    # the faces: Telegram handlers and the web server
    ("opsbot.handlers", "opsbot.web", "opsbot.miniapp"),
    # each wing's verbs, registering into the registry below
    (
        "opsbot.verbs.core", "opsbot.actions.verbs", "opsbot.actions.backups.verbs",
        "opsbot.actions.deploy.verbs",
        "opsbot.alerting.verbs", "opsbot.incidents.verbs", "opsbot.incidents.oncall_verbs",
        "opsbot.onboarding.verbs", "opsbot.miniapp.verbs", "opsbot.objectives.verbs",
        "opsbot.updates.buttons",
    ),
    # the registry: imports no wing
    ("opsbot.verbs",),
    # the wings (between them: WINGS)
    # (onboarding: import and discover, drafting an inventory; it imports no other wing)
    # (objectives: SLIs from the monitor's rounds, budgets, burn-rate alerts, the report)
    # (updates: a target's registry asked for newer images; it imports no other wing)
    (
        "opsbot.actions", "opsbot.alerting", "opsbot.incidents", "opsbot.onboarding",
        "opsbot.objectives", "opsbot.updates",
    ),
    # the bundle the wings are handed: only what lies below them (their own objects are
    # bound into it by the composition root, under keys each wing declares)
    ("opsbot.services",),
    # what the wings stand on
    ("opsbot.state",),
    ("opsbot.reach",),
    # the ground
    (
        "opsbot.config", "opsbot.errors", "opsbot.redact", "opsbot.render", "opsbot.notify",
        "opsbot.metrics", "opsbot.logsetup", "opsbot.miniapp.link", "opsbot",
    ),
)

#: Between wings, only these directions (importer -> imported).
WINGS = {
    ("opsbot.actions", "opsbot.alerting"),  # a failed scheduled backup raises an alert
    ("opsbot.incidents", "opsbot.alerting"),  # an incident is declared from an alert
    # a failed action's card offers Declare incident, and declares it (this went through
    # ``Services`` unseen while it held the incidents)
    ("opsbot.actions", "opsbot.incidents"),
    ("opsbot.objectives", "opsbot.alerting"),  # a burning budget raises an alert
    ("opsbot.objectives", "opsbot.actions"),  # the report says how old the backups are
    ("opsbot.objectives", "opsbot.incidents"),  # … and how fast incidents were acked, resolved
    # a deploy asks the target's registry for the tag, with the update notices' client
    ("opsbot.actions", "opsbot.updates"),
}

#: Modules allowed over MAX_LINES, each with why it is one idea.
LONG: dict[str, str] = {
    "opsbot.reach.executors.ssh": "one idea: the SSH executor and its pooled connections",
}


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


MODULES = modules()


def _resolve(name: str) -> str | None:
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def imports(path: Path) -> Iterator[str]:
    """The opsbot modules one file imports, wherever the import statement stands."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [
                f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in MODULES else node.module
                for a in node.names
            ]
        for name in names:
            if name == "opsbot" or name.startswith("opsbot."):
                found = _resolve(name)
                if found is not None:
                    yield found


GRAPH = {
    module: {t for t in imports(path) if t != module and t != "opsbot"}
    for module, path in MODULES.items()
}


def _prefix(module: str, prefixes: list[str]) -> str:
    matching = [p for p in prefixes if module == p or module.startswith(p + ".")]
    return max(matching, key=len)


_ALL = [p for layer in LAYERS for p in layer]


def layer(module: str) -> int:
    prefix = _prefix(module, _ALL)
    return next(i for i, group in enumerate(LAYERS) if prefix in group)


def wing(module: str) -> str | None:
    prefix = _prefix(module, _ALL)
    return prefix if prefix in LAYERS[4] else None


def test_the_graph_is_read() -> None:
    assert len(MODULES) > 60
    assert "opsbot.verbs.registry" in GRAPH["opsbot.verbs.core"]
    assert "opsbot.config" in GRAPH["opsbot.services"]


def test_no_import_cycle() -> None:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in sorted(GRAPH[node]):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in sorted(GRAPH):
        if module not in index:
            visit(module)
    assert cycles == []


def test_imports_go_one_way() -> None:
    upward = []
    for importer, imported in sorted((a, b) for a, targets in GRAPH.items() for b in targets):
        if layer(imported) < layer(importer):
            upward.append(f"{importer} -> {imported}")
        elif layer(imported) == layer(importer) == 4:
            pair = (wing(importer), wing(imported))
            if pair[0] != pair[1] and pair not in WINGS:
                upward.append(f"{importer} -> {imported} (between wings)")
    assert upward == []


def reached(module: str) -> set[str]:
    """Every module ``module`` imports, directly or through others."""
    seen: set[str] = set()
    todo = [module]
    while todo:
        for other in GRAPH[todo.pop()] - seen:
            seen.add(other)
            todo.append(other)
    return seen


def test_the_registry_and_the_bundle_reach_no_wing() -> None:
    """Not even through ``Services``: the wings' objects are bound into it at the root."""
    for module in ("opsbot.verbs.registry", "opsbot.verbs.progress", "opsbot.services"):
        assert {wing(m) for m in reached(module)} == {None}, module
        assert not any(layer(m) < layer("opsbot.services") for m in reached(module)), module


def test_no_module_is_too_long() -> None:
    long = {
        module: len(path.read_text().splitlines())
        for module, path in MODULES.items()
        if len(path.read_text().splitlines()) > MAX_LINES
    }
    assert {m: n for m, n in long.items() if m not in LONG} == {}
    assert set(LONG) <= set(long), "an allowed long module got short: drop it from LONG"


def test_the_layer_table_is_checked_against_a_known_upward_import() -> None:
    """The checker itself: an upward import it must catch, one it must let pass."""
    assert layer("opsbot.state.outbox") > layer("opsbot.alerting.engine")
    assert layer("opsbot.verbs.registry") > layer("opsbot.alerting.verbs")
    assert wing("opsbot.alerting.engine") == "opsbot.alerting"
    assert ("opsbot.alerting", "opsbot.incidents") not in WINGS


#: The lifecycle of a request: it looks each action up by the name its request stores and
#: never names one (what differs between actions is declared on them, opsbot/actions/action.py).
LIFECYCLE = (
    "opsbot.actions.lifecycle", "opsbot.actions.cards", "opsbot.actions.reaper",
)  # fmt: skip


def test_the_lifecycle_knows_no_action_by_name() -> None:
    from opsbot.actions.declared import ACTIONS

    named = []
    for module in LIFECYCLE:
        tree = ast.parse(MODULES[module].read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and node.value in ACTIONS:
                named.append(f"{module}:{node.lineno} {node.value!r}")
    assert named == []
