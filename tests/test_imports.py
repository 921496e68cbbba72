"""The package's import graph has no cycle, and the search space has one home (`mammosynth.space`)."""

import ast
from pathlib import Path

import mammosynth
from mammosynth import space, train, tune
from mammosynth.cluster import katib

SRC = Path(mammosynth.__file__).resolve().parent


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _import_graph() -> dict[str, set[str]]:
    """Module -> the mammosynth modules it imports at module level (lazy in-function imports excluded)."""
    modules = {_module_name(p): p for p in SRC.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        deps: set[str] = set()
        for node in ast.parse(path.read_text()).body:
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            deps |= {t for t in targets if t in modules and t != name}
        graph[name] = deps
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                return stack[stack.index(dep) :] + [dep]
            if dep not in state and (found := visit(dep)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_package_has_no_import_cycle():
    graph = _import_graph()
    assert "mammosynth.space" in graph and "mammosynth.cluster.katib" in graph
    assert _cycle(graph) is None, f"import cycle: {' -> '.join(_cycle(graph))}"


def test_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_space_is_the_one_home_of_the_search_space():
    assert tune.SEARCH_SPACE is space.SEARCH_SPACE and katib.SEARCH_SPACE is space.SEARCH_SPACE
    assert space.space_for("simple_cnn") == tuple(
        p for p in space.SEARCH_SPACE if p.name in ("dense_units", "dropout", "learning_rate")
    )
    graph = _import_graph()
    assert graph["mammosynth.space"] == set()
    assert "mammosynth.tune" not in graph["mammosynth.cluster.katib"]


def test_trainer_flags_come_from_the_space():
    actions = {a.dest: a for a in train._parser()._actions}
    for p in space.SEARCH_SPACE:
        assert p.name in actions, f"train has no {p.flag}"
        assert actions[p.name].type is p.python_type
    assert actions["learning_rate"].default == 1e-3 and actions["dense_units"].default is None
