"""The package's folders are its pipeline, and imports run one way: a stage may use the stages before
it, never one after it. Read from the source (every import statement, in functions too), so a
shortcut taken anywhere in the package fails here first."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "calforensics"

# stages in pipeline order; a module may import its own stage and any stage before it
STAGES = [
    ("shared", ("calforensics.schema", "calforensics.anomalies", "calforensics.version")),
    ("runtime", ("calforensics.runtime",)),
    ("collect", ("calforensics.collect",)),
    ("ingest", ("calforensics.ingest",)),
    ("meaning", ("calforensics.meaning",)),
    ("join", ("calforensics.join",)),
    ("bundle", ("calforensics.bundle",)),
    ("analyses", ("calforensics.analyses",)),
    ("render", ("calforensics.render",)),
    ("interface", ("calforensics.cli", "calforensics")),
]


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _stage(module: str) -> int:
    """The index of the stage holding ``module`` (the longest prefix that names one)."""
    best, best_len = -1, -1
    for i, (_, prefixes) in enumerate(STAGES):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best_len:
                best, best_len = i, len(prefix)
    return best


def _imports(path: Path) -> list[tuple[int, str]]:
    return _imports_of(path.read_text(), _module_name(path), path.name == "__init__.py")


def _imports_of(source: str, module: str, is_package: bool) -> list[tuple[int, str]]:
    """(line, module) of every calforensics import in ``source`` (module ``module``), relative ones
    resolved; for `from X import name`, X.name when that names a module, else X."""
    package = module if is_package else module.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "calforensics"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            elif node.module and node.module.split(".")[0] == "calforensics":
                target = node.module
            else:
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                is_module = (PACKAGE.parent / Path(*sub.split("."))).with_suffix(".py").exists() or (
                    PACKAGE.parent / Path(*sub.split(".")) / "__init__.py"
                ).exists()
                out.append((node.lineno, sub if is_module else target))
    return out


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def test_every_module_sits_in_a_stage():
    unplaced = [_module_name(p) for p in _modules() if _stage(_module_name(p)) < 0]
    assert len(_modules()) > 40  # the walk found the package
    assert not unplaced, f"modules outside every stage folder: {unplaced}"


def test_imports_run_from_a_later_stage_to_an_earlier_one():
    against = []
    checked = 0
    for path in _modules():
        mine = _stage(_module_name(path))
        for line, target in _imports(path):
            checked += 1
            theirs = _stage(target)
            if theirs > mine:
                against.append(
                    f"{path.relative_to(PACKAGE.parent)}:{line} ({STAGES[mine][0]}) imports {target} ({STAGES[theirs][0]})"
                )
    assert checked > 150  # the package's own imports were all read
    assert not against, "imports against the pipeline:\n" + "\n".join(against)


def test_no_import_cycles_between_modules():
    """Two modules that import each other (at any depth) cannot be read apart; the façade's lazy
    public names (PEP 562 strings, not import statements) are the one way back, on purpose."""
    graph = {_module_name(p): {t for _, t in _imports(p) if t != _module_name(p)} for p in _modules()}
    # a package's import of itself through its __init__ (from . import x) is an edge to x, not a cycle
    cycles = []
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if nxt not in graph:
                continue
            if state.get(nxt) == 1:
                cycles.append(" -> ".join([*trail[trail.index(nxt) :], nxt]))
            elif not state.get(nxt):
                visit(nxt, [*trail, nxt])
        state[node] = 2

    for node in sorted(graph):
        if not state.get(node):
            visit(node, [node])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


@pytest.mark.parametrize("stage", ["ingest", "meaning", "join", "analyses", "render", "runtime", "collect"])
def test_each_stage_folder_says_what_comes_in_what_goes_out_and_what_it_must_not_do(stage):
    doc = ast.get_docstring(ast.parse((PACKAGE / stage / "__init__.py").read_text())) or ""
    assert "In:" in doc and "Out:" in doc and "Must not" in doc, doc


@pytest.mark.parametrize(
    ("source", "module", "target"),
    [
        ("from ..join import hops\n", "calforensics.ingest.tables", "calforensics.join.hops"),
        ("def f():\n    from ...bundle import Bundle\n", "calforensics.ingest.parsers.pcap", "calforensics.bundle"),
        ("import calforensics.render.report\n", "calforensics.analyses.drops", "calforensics.render.report"),
        ("from .. import analyses\n", "calforensics.join.flows", "calforensics.analyses"),
    ],
)
def test_the_check_sees_a_backward_import_in_every_form(source, module, target):
    """The direction check itself: relative, nested and absolute imports against the flow are read."""
    found = [t for _, t in _imports_of(source, module, False)]
    assert found == [target]
    assert _stage(target) > _stage(module)
