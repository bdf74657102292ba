"""Plugins that depend on plugins: ``requires`` in a manifest, checked everywhere it matters.

``"requires": {"mikrotik": ">=1.0,<2"}`` (``packaging`` specifiers). The rules:

- plugins load in dependency order (a topological sort); one that requires a plugin
  that is missing, failed to load or has a version outside the range is not loaded, and
  its error names the plugin, the range wanted and the version found;
- a cycle is refused, spelled out (``a -> b -> a``);
- enabling needs every requirement enabled and in range; disabling or uninstalling a
  plugin that enabled plugins depend on is refused unless cascading, which disables the
  dependants first;
- an upgrade that would take a dependency out of a dependant's range is refused before
  anything changes.

Everything here is pure: the runtime passes a snapshot of what is loaded.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from packaging.specifiers import SpecifierSet
from packaging.version import InvalidVersion, Version

from isp.errors import Conflict


@dataclass(frozen=True)
class Node:
    """One plugin as dependency resolution sees it."""

    version: str | None  # None: not loaded (missing files or failed)
    enabled: bool
    requires: Mapping[str, str] = field(default_factory=dict)


Graph = Mapping[str, Node]


def satisfies(version: str | None, wanted: str) -> bool:
    if version is None:
        return False
    try:
        return SpecifierSet(wanted).contains(Version(version), prereleases=True)
    except InvalidVersion:
        return False


def unmet(name: str, requires: Mapping[str, str], graph: Graph, *, enabled: bool) -> list[str]:
    """Why ``requires`` cannot be met, one sentence per requirement (empty when met)."""
    problems = []
    for dependency, wanted in sorted(requires.items()):
        node = graph.get(dependency)
        if node is None:
            problems.append(f"{name} requires {dependency} {wanted}, which is not installed")
        elif node.version is None:
            problems.append(f"{name} requires {dependency} {wanted}, which failed to load")
        elif not satisfies(node.version, wanted):
            problems.append(
                f"{name} requires {dependency} {wanted}, but {dependency} {node.version} is "
                "installed"
            )
        elif enabled and not node.enabled:
            problems.append(f"{name} requires {dependency} {wanted}, which is disabled")
    return problems


def find_cycle(requires: Mapping[str, Mapping[str, str]]) -> list[str] | None:
    """A dependency cycle as ``[a, b, a]``, or None."""
    state: dict[str, int] = {}  # 1 visiting, 2 done
    path: list[str] = []

    def visit(name: str) -> list[str] | None:
        state[name] = 1
        path.append(name)
        for dependency in sorted(requires.get(name, {})):
            if dependency not in requires:
                continue
            if state.get(dependency) == 1:
                return path[path.index(dependency) :] + [dependency]
            if state.get(dependency) is None:
                found = visit(dependency)
                if found:
                    return found
        path.pop()
        state[name] = 2
        return None

    for name in sorted(requires):
        if state.get(name) is None:
            found = visit(name)
            if found:
                return found
    return None


def load_waves(
    requires: Mapping[str, Mapping[str, str]],
) -> tuple[list[list[str]], dict[str, str]]:
    """Names in waves, and the plugins refused because of a cycle (with why).

    A wave's plugins require none of each other, only plugins of earlier waves (or
    plugins that are not there), so they may load at the same time.
    """
    refused: dict[str, str] = {}
    remaining = {name: dict(deps) for name, deps in requires.items()}
    while (cycle := find_cycle(remaining)) is not None:
        why = "dependency cycle: " + " -> ".join(cycle)
        for name in cycle[:-1]:
            refused[name] = why
            remaining.pop(name, None)
    waves: list[list[str]] = []
    placed: set[str] = set()
    while len(placed) < len(remaining):
        ready = sorted(
            name
            for name, deps in remaining.items()
            if name not in placed and all(d in placed or d not in remaining for d in deps)
        )
        waves.append(ready)
        placed.update(ready)
    return waves, refused


def dependants(name: str, graph: Graph, *, enabled_only: bool = True) -> list[str]:
    """Plugins that require ``name`` (directly or not), dependants of dependants last."""
    found: list[str] = []
    frontier = [name]
    while frontier:
        current = frontier.pop(0)
        for other, node in sorted(graph.items()):
            if current in node.requires and other not in found and other != name:
                if enabled_only and not node.enabled:
                    continue
                found.append(other)
                frontier.append(other)
    return found


def refuse(detail: str, plugin: str, **extra: Any) -> Conflict:
    return Conflict(detail, plugin=plugin, **extra)


def check_upgrade(name: str, new_version: str, graph: Graph) -> None:
    """Refuse a new version of ``name`` that an enabled dependant's range excludes."""
    broken = [
        f"{other} requires {name} {node.requires[name]}"
        for other, node in sorted(graph.items())
        if node.enabled
        and name in node.requires
        and not satisfies(new_version, node.requires[name])
    ]
    if broken:
        raise refuse(
            f"{name} {new_version} would break its dependants: " + "; ".join(broken),
            name,
            dependants=[b.split(" ", 1)[0] for b in broken],
        )


def check_install(name: str, requires: Mapping[str, str], graph: Graph) -> None:
    """Refuse a plugin whose requirements are unmet or that would close a cycle."""
    problems = unmet(name, requires, graph, enabled=True)
    if problems:
        raise refuse("; ".join(problems), name, requires=dict(requires))
    edges = {other: dict(node.requires) for other, node in graph.items()}
    edges[name] = dict(requires)
    cycle = find_cycle(edges)
    if cycle and name in cycle:
        ring = cycle[:-1]
        start = ring.index(name)  # spell it from the plugin being installed
        cycle = ring[start:] + ring[:start] + [name]
        raise refuse("dependency cycle: " + " -> ".join(cycle), name, cycle=cycle)
