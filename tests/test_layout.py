"""The layout's rules, checked on the source: data flows one way, no import cycles, no private names across
modules. Every import counts, including the ones inside functions (a lazy import is still an arrow)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("configs", "data", "pipeline", "policies")
TOP = ("demo", "clip_demo", "train", "benchmarks", "experiments")

# the flow, earliest first: a module may import its own stage and earlier ones, never a later one
STAGES = (
    ("configs",),
    ("data.source", "data.schema", "data.manifest", "data.shards", "data.quality_labels", "data.success_labels", "data.metaworld"),
    ("pipeline.progress", "pipeline.rewards"),
    ("pipeline.plots", "pipeline.annotate"),
    ("pipeline.report",),
    ("data.progress_table", "data.batches", "data.demo"),
    ("policies.weighting", "policies.adapters"),
    ("policies.module", "policies.callbacks", "policies.run_folder", "policies.run_weights"),
    ("policies.training", "policies.export"),
    ("policies.evaluation", "policies.evaluate", "policies.review", "policies.plan"),
    TOP,
)


def module_name(path: Path, root: Path = REPO) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path, root: Path = REPO) -> list[tuple[str, list[str], int]]:
    """(imported module, names taken from it, line) of every import statement of ``path``."""
    me = module_name(path, root)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(a.name, [], node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            out.append((base, [a.name for a in node.names], node.lineno))
    return out


def project_modules(root: Path = REPO) -> dict[str, Path]:
    files = [p for pkg in (*PACKAGES, "benchmarks", "experiments") for p in (root / pkg).rglob("*.py")]
    files += [root / f"{name}.py" for name in TOP if (root / f"{name}.py").is_file()]
    return {module_name(p, root): p for p in files}


def stage_of(module: str) -> int | None:
    for i, prefixes in enumerate(STAGES):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return i
    return None


def resolve(name: str, names: list[str], known: dict[str, Path]) -> list[str]:
    """The project modules an import reaches (``from pkg import mod`` reaches ``pkg.mod``)."""
    hits = [f"{name}.{n}" for n in names if f"{name}.{n}" in known]
    if name in known:
        hits.append(name)
    return hits


def graph(root: Path = REPO) -> dict[str, set[str]]:
    known = project_modules(root)
    return {m: {t for name, names, _ in imports(p, root) for t in resolve(name, names, known) if t != m}
            for m, p in known.items()}


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in g.get(v, ()):
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

    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def backward_arrows(root: Path = REPO) -> list[str]:
    bad = []
    known = project_modules(root)
    for m, path in known.items():
        mine = stage_of(m)
        for name, names, line in imports(path, root):
            if name.split(".")[0] == "tests" and m.split(".")[0] in PACKAGES:
                bad.append(f"{m}:{line} imports the test fixtures {name}")
            for target in resolve(name, names, known):
                theirs = stage_of(target)
                if mine is not None and theirs is not None and theirs > mine:
                    bad.append(f"{m}:{line} imports the later stage {target}")
    return bad


def private_imports(root: Path = REPO) -> list[str]:
    bad = []
    for m, path in project_modules(root).items():
        for name, names, line in imports(path, root):
            private = [n for n in names if n.startswith("_") and not n.startswith("__")]
            if private or any(part.startswith("_") and not part.startswith("__") for part in name.split(".")):
                bad.append(f"{m}:{line} from {name} import {', '.join(names)}")
    return bad


def test_every_project_module_has_a_stage():
    # the top-level packages' own __init__ files are empty: nothing to place
    assert [m for m, p in project_modules().items() if stage_of(m) is None and p.read_text().strip()] == []
    assert stage_of("policies.weighting.registry") > stage_of("data.shards")  # control: prefixes resolve


def test_no_stage_imports_a_later_one():
    assert backward_arrows() == []


def test_no_import_cycles():
    assert cycles(graph()) == []


def test_no_private_names_imported_across_modules():
    assert private_imports() == []


def test_the_checks_bite(tmp_path):
    """Negative controls: a tree with a backward arrow, a cycle and a private import is caught on each."""
    for pkg in ("data", "policies", "pipeline"):
        (tmp_path / pkg).mkdir()
        (tmp_path / pkg / "__init__.py").write_text("")
    (tmp_path / "data" / "schema.py").write_text("def f():\n    from policies.training import train\n")
    (tmp_path / "policies" / "training.py").write_text("from policies.module import _helper\n")
    (tmp_path / "policies" / "module.py").write_text("import policies.training\n")
    (tmp_path / "pipeline" / "progress.py").write_text("from tests.fixtures.tiny_vlm import build\n")
    assert sorted(backward_arrows(tmp_path)) == [
        "data.schema:2 imports the later stage policies.training",
        "pipeline.progress:1 imports the test fixtures tests.fixtures.tiny_vlm",
        "policies.module:1 imports the later stage policies.training"]
    assert cycles(graph(tmp_path)) == [["policies.module", "policies.training"]]
    assert private_imports(tmp_path) == ["policies.training:1 from policies.module import _helper"]


@pytest.mark.parametrize("module", ["pipeline.annotate", "pipeline.report", "data.demo", "policies.export",
                                    "policies.evaluate", "policies.review", "benchmarks.rabc_experiment",
                                    "benchmarks.weight_phases"])
def test_documented_commands_have_an_entry(module):
    """``python -m <module>`` keeps working where a module moved: a thin entry that calls the command's main."""
    path = REPO / (module.replace(".", "/") + ".py")
    path = path if path.is_file() else REPO / module.replace(".", "/") / "__main__.py"
    text = path.read_text()
    assert 'if __name__ == "__main__":' in text and "main()" in text
