"""The layering holds: read every module's imports with `ast` (module level and inside functions, since heavy
imports live in functions) and check the rules of DEVELOPING.md:

- the foundation (errors, fileio, progress, bundled, logprob, corpora, brown) imports nothing of glassbox but itself, and the architecture
  registry (declarative tables) only the foundation;
- `checkpoint` imports only the foundation and the registry (GGUF name maps live there);
- `anatomy` only `checkpoint`, the registry and the foundation;
- `run` never imports heads, train, timeline, lens or overlay;
- no module imports a `commands.py` (cli.py finds them by name);
- no import cycle between modules, nor between folders (top-level packages and modules).

A failure lists every offending import as `file:line: a imports b: why`.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PKG = SRC / "glassbox"
FOUNDATION = {"errors", "fileio", "progress", "bundled", "logprob", "corpora", "brown"}
REGISTRY = {"registry", "arch"}  # the architecture registry (issue 9 §1): a module or a folder of that name
ABOVE_RUN = {"heads", "train", "timeline", "lens", "overlay"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PKG.rglob("*.py"))}


def _imports(name: str, source: str, is_package: bool, known: set[str]) -> list[tuple[str, int]]:
    """(imported glassbox module, line) for every import in the source, at any depth."""
    tree = ast.parse(source)
    package = name if is_package else name.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            # `from pkg import mod` names a module; `from mod import thing` names mod
            targets = [f"{module}.{a.name}" if f"{module}.{a.name}" in known else module for a in node.names]
        else:
            continue
        for target in targets:
            if target == "glassbox" or target.startswith("glassbox."):
                while target not in known and "." in target:
                    target = target.rpartition(".")[0]
                if (target, node.lineno) not in found:
                    found.append((target, node.lineno))
    return found


def _graph() -> tuple[dict[str, Path], dict[str, list[tuple[str, int]]]]:
    modules = _modules()
    known = set(modules)
    return modules, {name: _imports(name, path.read_text(encoding="utf-8"), path.name == "__init__.py", known)
                     for name, path in modules.items()}


def _unit(module: str) -> str:
    """The folder (top-level package) or top-level module a module belongs to: glassbox.run.hooks → run."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "glassbox"


def _where(modules: dict[str, Path], name: str, line: int) -> str:
    return f"{modules[name].relative_to(SRC.parent)}:{line}"


def _rule_violations(modules: dict[str, Path], graph: dict[str, list[tuple[str, int]]]) -> list[str]:
    bad = []
    for name, imports in graph.items():
        unit = _unit(name)
        for target, line in imports:
            tunit = _unit(target)
            why = None
            if target.endswith(".commands") and name != "glassbox.cli":
                why = "no module imports a commands.py (cli.py registers them by name)"
            elif unit in FOUNDATION and tunit not in FOUNDATION:
                why = f"the foundation ({', '.join(sorted(FOUNDATION))}) imports nothing above it"
            elif unit in REGISTRY and tunit not in FOUNDATION | REGISTRY:
                why = "the architecture registry imports only the foundation"
            elif unit == "checkpoint" and tunit not in FOUNDATION | REGISTRY | {"checkpoint"}:
                why = "checkpoint imports nothing of glassbox above it (only the foundation and the registry)"
            elif unit == "anatomy" and tunit not in FOUNDATION | REGISTRY | {"checkpoint", "anatomy"}:
                why = "anatomy imports only checkpoint and the architecture registry"
            elif unit == "run" and tunit in ABOVE_RUN:
                why = f"run never imports {', '.join(sorted(ABOVE_RUN))}"
            if why:
                bad.append(f"{_where(modules, name, line)}: {name} imports {target}: {why}")
    return bad


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan), each as a sorted list."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def _explain(cycle: list[str], graph: dict[str, list[tuple[str, int]]], modules: dict[str, Path],
             unit_of=lambda m: m) -> str:
    members = set(cycle)
    lines = [f"import cycle among {', '.join(cycle)}:"]
    for name, imports in sorted(graph.items()):
        for target, line in imports:
            a, b = unit_of(name), unit_of(target)
            if a != b and a in members and b in members:
                lines.append(f"    {_where(modules, name, line)}: {name} imports {target}")
    return "\n".join(lines)


def test_the_graph_is_read():
    """Guard against a test that passes because it read nothing: known edges must be found."""
    modules, graph = _graph()
    assert "glassbox.run.hooks" in modules and "glassbox.checkpoint.base" in modules
    assert ("glassbox.run.layout" in {t for t, _ in graph["glassbox.run.hooks"]})
    # a function-level import counts too: demo imports the atlas inside its command function
    assert "glassbox.heads.atlas" in {t for t, _ in graph["glassbox.demo"]}


def test_layer_rules():
    bad = _rule_violations(*_graph())
    assert not bad, "layering rules broken:\n" + "\n".join(bad)


def test_no_module_cycles():
    modules, graph = _graph()
    edges = {name: {t for t, _ in imports if t != name} for name, imports in graph.items()}
    # a package's __init__ importing its own modules is how a package exposes them, not a cycle of ideas;
    # a module importing its package's __init__ back is still counted
    for name in list(edges):
        if modules[name].name == "__init__.py":
            edges[name] = {t for t in edges[name] if not t.startswith(name + ".")}
    cycles = _cycles(edges)
    assert not cycles, "\n".join(_explain(c, graph, modules) for c in cycles)


def test_no_folder_cycles():
    modules, graph = _graph()
    edges: dict[str, set[str]] = {}
    for name, imports in graph.items():
        for target, _ in imports:
            if _unit(name) != _unit(target):
                edges.setdefault(_unit(name), set()).add(_unit(target))
    cycles = _cycles(edges)
    assert not cycles, "\n".join(_explain(c, graph, modules, _unit) for c in cycles)


def test_the_checks_catch_planted_faults():
    """The checks themselves can fail: planted imports (relative, inside a function) and a planted cycle."""
    modules, graph = _graph()
    known = set(modules)
    planted = "import os\n\ndef f():\n    from ..heads import masks\n    from glassbox.lens.commands import lens\n"
    found = _imports("glassbox.run.hooks", planted, False, known)
    assert found == [("glassbox.heads.masks", 4), ("glassbox.lens.commands", 5)]
    before = set(_rule_violations(modules, graph))
    bad = [b for b in _rule_violations(modules, {**graph, "glassbox.run.hooks": found}) if b not in before]
    assert len(bad) == 2 and "run never imports" in bad[0] and "commands.py" in bad[1]
    assert bad[0].startswith("src/glassbox/run/hooks.py:4: glassbox.run.hooks imports glassbox.heads.masks")
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []
