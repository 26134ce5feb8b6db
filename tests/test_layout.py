"""The import rules of the layout, read from the source with `ast` (nothing is imported).

- `streams/core/` is pure: no Faust, Kafka client, Prometheus, Triton client or torch, and none
  of the Faust shell or the apps built on it (`streams/runtime`, `streams/worker`,
  `streams/sidecar`);
- `inference/` never imports `streams/` (the worker depends on the client, not the reverse);
- `streams/` never imports `training/`, `backtest/` or `bench/`, except the command-line
  dispatcher `streams/cli.py` (which does so lazily, by name, when a command runs);
- `training/` imports neither `backtest/` nor `bench/`; its rooms go one way, data ← evaluate
  ← fit ← the root: `training/data/` imports no torch and no other room, `training/evaluate/`
  no torch and not `fit/`, and neither they nor `fit/` import a root module;
- nothing imports the entry scripts `training.train` and `training.retrain` but `training.cli`
  (torchtune's rule for its recipes: a helper another module needs lives in the library);
- `inference/model/onnx.py` does not import `inference/model/export.py` (what both need lives
  in `inference/repository.py`);
- and no import cycle anywhere in the first-party graph (one strongly-connected-components
  check), so a circle cannot hide behind an import inside a function.

Each rule follows imports through first-party modules, so a core module that imports one which
imports Faust breaks the first rule as surely as `import faust` does. Imports inside functions
and under `TYPE_CHECKING` count: the rules are about what a module may depend on.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("streams", "inference", "training", "backtest", "bench")


@dataclass(frozen=True)
class Rule:
    name: str
    scope: str  # the modules the rule applies to: this dotted prefix
    forbidden: tuple[str, ...]  # dotted prefixes they may not reach
    excepted: tuple[str, ...] = ()  # modules of the scope the rule does not apply to


TRANSPORT_AND_TORCH = ("faust", "aiokafka", "prometheus_client", "tritonclient", "torch")
FAUST_SHELL_AND_APPS = ("streams.runtime", "streams.worker", "streams.sidecar")
TRAINING_ROOT = ("training.cli", "training.arguments", "training.train", "training.retrain",
                 "training.publish", "training.card", "training.served", "training.order_log",
                 "training.demo_model")
RULES = (
    Rule("streams/core is pure", "streams.core", (*TRANSPORT_AND_TORCH, *FAUST_SHELL_AND_APPS)),
    Rule("inference never imports streams", "inference", ("streams",)),
    Rule(
        "streams never imports training, backtest or bench",
        "streams",
        ("training", "backtest", "bench"),
        excepted=("streams.cli",),
    ),
    Rule("training never imports backtest or bench", "training", ("backtest", "bench")),
    Rule("training/data is torch-free", "training.data", ("torch",)),
    # The rooms' order: data ← evaluate ← fit ← the root (entry scripts, publish, card).
    Rule("training/data imports no other room", "training.data",
         ("training.fit", "training.evaluate", *TRAINING_ROOT)),
    Rule("training/evaluate is numpy and scikit-learn", "training.evaluate",
         ("torch", "training.fit", *TRAINING_ROOT)),
    Rule("training/fit imports no root module", "training.fit", TRAINING_ROOT),
    Rule("onnx export does not import the version export", "inference.model.onnx",
         ("inference.model.export",)),
)
ENTRY_SCRIPTS = ("training.train", "training.retrain")  # imported by training.cli alone
ENTRY_SCRIPTS_IMPORTER = "training.cli"


@dataclass(frozen=True)
class Import:
    line: int
    name: str  # absolute dotted name


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, root: Path) -> list[Import]:
    """Every import statement of the file, relative ones made absolute. For `from a import b`
    both `a` and `a.b` are listed (b may be a module)."""
    module = module_name(path, root)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [Import(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            if base:
                found.append(Import(node.lineno, base))
            found += [Import(node.lineno, f"{base}.{a.name}".lstrip(".")) for a in node.names]
    return found


def first_party_graph(root: Path) -> dict[str, tuple[Path, list[Import]]]:
    """module -> (file, its imports) for every module of the first-party packages."""
    graph = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            if "__pycache__" not in path.parts:
                graph[module_name(path, root)] = (path, imports_of(path, root))
    return graph


def matches(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def in_graph(name: str, graph: dict[str, tuple[Path, list[Import]]]) -> str | None:
    """The first-party module an imported name loads (a name may be `module.attribute`)."""
    while name:
        if name in graph:
            return name
        name = name.rpartition(".")[0]
    return None


def checked(rule: Rule, module: str) -> bool:
    return matches(module, rule.scope) and module not in rule.excepted


def first_violation(
    rule: Rule, start: str, graph: dict[str, tuple[Path, list[Import]]], root: Path
) -> str | None:
    """The first forbidden name `start` reaches, with the chain of modules that leads there.
    The walk does not enter other checked modules: each reports its own imports."""
    seen = {start}
    pending = [[start]]
    while pending:
        chain = pending.pop()
        path, imports = graph[chain[-1]]
        for imported in imports:
            if any(matches(imported.name, prefix) for prefix in rule.forbidden):
                where = f"{path.relative_to(root).as_posix()}:{imported.line}"
                return f"{rule.name}: {' -> '.join([*chain, imported.name])} ({where})"
            target = in_graph(imported.name, graph)
            if target and target not in seen and not checked(rule, target):
                seen.add(target)
                pending.append([*chain, target])
    return None


def broken(rule: Rule, graph: dict[str, tuple[Path, list[Import]]], root: Path) -> Iterator[str]:
    """One line per checked module that reaches a forbidden name."""
    for module in sorted(graph):
        if checked(rule, module) and (found := first_violation(rule, module, graph, root)):
            yield found


def entry_script_imports(graph: dict[str, tuple[Path, list[Import]]], root: Path) -> list[str]:
    """Every import statement of an entry script by a module other than the CLI (once each:
    `from training.train import run` lists `training.train` and `training.train.run`)."""
    found = {}
    for module, (path, imports) in sorted(graph.items()):
        if module == ENTRY_SCRIPTS_IMPORTER or module in ENTRY_SCRIPTS:
            continue
        for imported in imports:
            if any(matches(imported.name, script) for script in ENTRY_SCRIPTS):
                where = f"{path.relative_to(root).as_posix()}:{imported.line}"
                found.setdefault(where, f"only {ENTRY_SCRIPTS_IMPORTER} imports the entry "
                                        f"scripts: {module} -> {imported.name} ({where})")
    return list(found.values())


def import_cycles(graph: dict[str, tuple[Path, list[Import]]]) -> list[str]:
    """Each strongly connected component of more than one module (or a module importing
    itself), as a sorted chain: imports inside functions count like any other. Tarjan's
    algorithm, iterative so a deep graph cannot hit the recursion limit. A package's
    `__init__` imported through `from package import module` is the module's edge, not the
    package's, so only first-party modules that are imported by name become edges."""
    edges = {module: sorted({target for imported in imports
                             if (target := in_graph(imported.name, graph)) and
                             (target != module or imported.name == module)})
             for module, (_, imports) in graph.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles = []
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(edges[root]))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(edges[child])))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1 or node in edges[node]:
                    cycles.append("import cycle: " + " <-> ".join(sorted(component)))
    return sorted(cycles)


def violations(root: Path) -> list[str]:
    graph = first_party_graph(root)
    return [*(line for rule in RULES for line in broken(rule, graph, root)),
            *entry_script_imports(graph, root), *import_cycles(graph)]


def test_the_repository_keeps_the_import_rules() -> None:
    graph = first_party_graph(ROOT)
    assert "streams.core.events" in graph and "inference.client" in graph  # the scan works
    assert violations(ROOT) == []


# --- the checker catches what it should ---------------------------------------------------------


def write(root: Path, files: dict[str, str]) -> Path:
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    for package in PACKAGES:
        (root / package).mkdir(exist_ok=True)
    return root


CLEAN = {
    "streams/__init__.py": "",
    "streams/core/__init__.py": "",
    "streams/core/events.py": "import orjson\nfrom pydantic import BaseModel\n",
    "streams/core/batching.py": "from streams.core.events import BaseModel\nfrom . import events\n",
    "streams/runtime/__init__.py": "",
    "streams/runtime/topics.py": "import aiokafka\nimport faust\n",
    "streams/settings.py": "import faust\nfrom streams.core import events\n",
    "streams/cli.py": "def main():\n    from training import cli\n",
    "inference/__init__.py": "",
    "inference/client.py": "import tritonclient.grpc\nfrom .heads import Prediction\n",
    "inference/heads.py": "from dataclasses import dataclass\n",
    "training/__init__.py": "",
    "training/cli.py": "def main():\n    from training import train\n",
    "training/train.py": "import torch\nfrom streams.core import events\nfrom . import data\n",
    "training/data/__init__.py": "",
    "training/data/windows.py": "import numpy\nfrom inference.heads import Prediction\n",
}


def test_a_clean_tree_passes(tmp_path: Path) -> None:
    assert violations(write(tmp_path, CLEAN)) == []


@pytest.mark.parametrize(
    ("bad", "expected"),
    [
        pytest.param(
            {"streams/core/sessions.py": "import faust\n"},
            "streams/core is pure: streams.core.sessions -> faust (streams/core/sessions.py:1)",
            id="core-imports-faust",
        ),
        pytest.param(
            {"streams/core/alerts.py": "\n\ndef f():\n    from prometheus_client import Counter\n"},
            "streams.core.alerts -> prometheus_client (streams/core/alerts.py:4)",
            id="core-imports-prometheus-lazily",
        ),
        pytest.param(
            {"streams/core/records.py": "from ..runtime import topics\n"},
            "streams.core.records -> streams.runtime (streams/core/records.py:1)",
            id="core-imports-the-shell-relatively",
        ),
        pytest.param(
            {"streams/core/labelling.py": "from streams.settings import Settings\n"},
            "streams.core.labelling -> streams.settings -> faust (streams/settings.py:1)",
            id="core-reaches-faust-through-settings",
        ),
        pytest.param(
            {"streams/core/offsets.py": "from inference import client\n"},
            "inference.client -> tritonclient.grpc (inference/client.py:1)",
            id="core-reaches-the-triton-client",
        ),
        pytest.param(
            {"inference/heads.py": "from streams.core.events import ShopEvent\n"},
            "inference never imports streams: inference.heads -> streams.core.events",
            id="inference-imports-streams",
        ),
        pytest.param(
            {"streams/worker/__init__.py": "", "streams/worker/agent.py": "import bench.cli\n"},
            "streams never imports training, backtest or bench: streams.worker.agent -> bench.cli",
            id="streams-imports-bench",
        ),
        pytest.param(
            {"training/data/history.py": "\n\ndef f():\n    from backtest import sources\n"},
            "training never imports backtest or bench: training.data.history -> backtest",
            id="training-imports-backtest-lazily",
        ),
        pytest.param(
            {"training/evaluate/__init__.py": "",
             "training/evaluate/gate.py": "from training.fit.loop import predict\n"},
            "training/evaluate is numpy and scikit-learn: training.evaluate.gate -> "
            "training.fit.loop",
            id="evaluate-imports-fit",
        ),
        pytest.param(
            {"training/data/uci.py": "import torch\n"},
            "training/data is torch-free: training.data.uci -> torch",
            id="training-data-imports-torch",
        ),
        pytest.param(
            {"training/demo_model.py": "\n\ndef f():\n    from training.train import run\n"},
            "only training.cli imports the entry scripts: training.demo_model -> training.train",
            id="a-helper-reaches-into-an-entry-script",
        ),
        pytest.param(
            {"inference/model/__init__.py": "",
             "inference/model/onnx.py": "from .export import INTENT_BERT\n",
             "inference/model/export.py": "import torch\n"},
            "onnx export does not import the version export: inference.model.onnx -> "
            "inference.model.export",
            id="onnx-imports-export",
        ),
        pytest.param(
            {"training/data/history.py": "\n\ndef read():\n    from training.data import uci\n",
             "training/data/uci.py": "from training.data import windows\n",
             "training/data/windows.py": "from training.data.history import split\n"},
            "import cycle: training.data.history <-> training.data.uci <-> training.data.windows",
            id="a-cycle-hidden-by-an-import-inside-a-function",
        ),
    ],
)
def test_a_broken_rule_is_reported(tmp_path: Path, bad: dict[str, str], expected: str) -> None:
    found = violations(write(tmp_path, {**CLEAN, **bad}))
    assert len(found) == 1 and expected in found[0], found
