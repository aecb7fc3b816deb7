"""Gates that keep the code's shape: ruff clean, mypy no worse, no new import cycle, the contract's import rule.

CI may only run the README's commands, so the gates live in the test suite. The import graph is
read from the source with `ast` (imports inside functions included, because those are how cycles
were hidden), not by importing anything.

`KNOWN_CYCLES` is a ratchet: it lists the cycles that existed when the gate was added (issue 13).
A new cycle fails the test; so does a listed cycle that no longer exists, so the list is shortened
in the commit that breaks the cycle and can only shrink.

`tests/mypy_ratchet.json` is the same kind of ratchet for type errors: module -> how many errors
mypy (pyproject.toml's `[tool.mypy]`, defaults rather than --strict) reports in it. A module with
more errors than recorded fails; so does one with fewer, until its number is lowered (or the module
removed from the file at zero), so the counts can only go down. Issue 13 started it at 62 errors.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("device", "hub")
MYPY_RATCHET = REPO / "tests" / "mypy_ratchet.json"
# under build/ (ignored by git): a cold run takes about 20 s on 2 cores, a warm one under a second
MYPY_CACHE = REPO / "build" / "mypy-cache"

# Empty since the config checks patient ids with device.contract.ids rather than the store's
# helper (the last cycle was store -> aggregate -> config -> store); keep it empty.
KNOWN_CYCLES: set[frozenset[str]] = set()

# What the device-to-hub contract may import from the project: the hub imports it unchanged, so
# it must not pull in the pipeline, the store or the MQTT client.
CONTRACT_MAY_IMPORT = ("device.contract", "device.labels", "device.errors")

# The clinic hub shares the contract and the device's small utilities (errors, config helpers,
# systemd notify, the page's security code), never the device's pipeline, record or MQTT link:
# it runs on a server with no camera and must not change when the device's internals do.
HUB_MUST_NOT_IMPORT = ("device.capture", "device.inference", "device.audio", "device.voice", "device.daemon",
                       "device.analyze", "device.aggregate", "device.fusion", "device.store", "device.uplink")


# Upward imports that are not cycles but tie a lower part to a higher one (issue 13): the live
# appliance and the hub do not import the offline tools (analysis, report, provisioning wizard);
# what both need sits below both (inference.runtime.model_metadata, labels' colours, hub_check).
MUST_NOT_IMPORT: dict[str, tuple[str, ...]] = {
    "device.daemon": ("device.analyze", "device.report", "device.evaluate", "device.evaluate_av",
                      "device.evaluate_speech", "device.provision", "device.cli"),
    "device.web": ("device.analyze", "device.report", "device.provision", "device.cli"),
    "device.selftest": ("device.provision", "device.cli"),
    "device.config": ("device.store", "device.aggregate", "device.fusion"),
    "hub": ("device.report", "device.analyze", "device.provision"),
}

def _project_modules() -> dict[str, Path]:
    modules: dict[str, Path] = {}
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            parts = list(path.relative_to(REPO).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def _import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """module -> the project modules it imports (anywhere in the file)."""

    def resolve(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = name.split(".") if is_package else name.split(".")[:-1]
                    base = base[: len(base) - (node.level - 1)]
                    module = ".".join([*base, *([node.module] if node.module else [])])
                else:
                    module = node.module or ""
                targets = [module, *(f"{module}.{alias.name}" for alias in node.names)]
            else:
                continue
            for target in targets:
                resolved = resolve(target)
                # a module importing its own package (or itself) is not an edge of the layering
                if resolved and resolved != name and not name.startswith(resolved + "."):
                    graph[name].add(resolved)
    return graph


def _cycles(graph: dict[str, set[str]]) -> set[frozenset[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: set[frozenset[str]] = set()
    counter = 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.add(frozenset(component))
    return found


def test_the_cycle_finder_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == {frozenset({"a", "b", "c"})}
    assert _cycles({"a": {"b"}, "b": set()}) == set()


def test_no_new_import_cycle_and_the_known_ones_still_listed() -> None:
    cycles = _cycles(_import_graph(_project_modules()))
    new = cycles - KNOWN_CYCLES
    assert not new, f"new import cycle(s): {[sorted(c) for c in new]}; break them (see device/README.md)"
    gone = KNOWN_CYCLES - cycles
    assert not gone, f"cycle(s) no longer exist, remove them from KNOWN_CYCLES: {[sorted(c) for c in gone]}"


def test_the_contract_imports_only_what_the_hub_can_share() -> None:
    graph = _import_graph(_project_modules())
    contract = [name for name in graph if name == "device.contract" or name.startswith("device.contract.")]
    assert contract, "device.contract not found"
    bad = {name: sorted(target for target in graph[name]
                        if not any(target == allowed or target.startswith(allowed + ".")
                                   for allowed in CONTRACT_MAY_IMPORT))
           for name in contract}
    assert not any(bad.values()), f"device.contract imports beyond {CONTRACT_MAY_IMPORT}: {bad}"


def _reaches(target: str, prefixes: tuple[str, ...]) -> bool:
    return any(target == prefix or target.startswith(prefix + ".") for prefix in prefixes)


def test_hub_and_device_stay_apart() -> None:
    graph = _import_graph(_project_modules())
    hub = {name: sorted(t for t in targets if _reaches(t, HUB_MUST_NOT_IMPORT))
           for name, targets in graph.items() if _reaches(name, ("hub",))}
    assert hub, "the hub package was not found"
    assert not any(hub.values()), f"the hub imports the device's internals: { {k: v for k, v in hub.items() if v} }"
    device = {name: sorted(t for t in targets if _reaches(t, ("hub",)))
              for name, targets in graph.items() if _reaches(name, ("device",))}
    assert not any(device.values()), f"the device imports the hub: { {k: v for k, v in device.items() if v} }"


def test_no_upward_imports() -> None:
    graph = _import_graph(_project_modules())
    bad = {name: sorted(t for t in targets if _reaches(t, banned))
           for prefix, banned in MUST_NOT_IMPORT.items()
           for name, targets in graph.items() if _reaches(name, (prefix,))}
    assert not any(bad.values()), f"upward imports: { {k: v for k, v in bad.items() if v} }"

def test_ruff_check_is_clean() -> None:
    ruff = Path(sys.executable).with_name("ruff")
    if not ruff.exists():
        pytest.skip(f"ruff is not installed next to {sys.executable} (./setup.sh --dev installs it)")
    result = subprocess.run([str(ruff), "check", "--quiet", "--no-cache", str(REPO)], cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"ruff check found problems:\n{result.stdout}{result.stderr}"


_MYPY_ERROR = re.compile(r"^(?P<path>[^:\n]+\.pyi?):\d+(?::\d+)?: error: ", re.MULTILINE)


def _module_of(path: str) -> str:
    parts = list(Path(path).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _mypy_counts(output: str) -> dict[str, int]:
    """module -> number of `error:` lines mypy printed for it (notes are not counted)."""
    counts: dict[str, int] = {}
    for match in _MYPY_ERROR.finditer(output):
        module = _module_of(match["path"])
        counts[module] = counts.get(module, 0) + 1
    return counts


def test_mypy_counts_are_read_per_module() -> None:
    output = ("device/store.py:12: error: Bad  [arg-type]\n"
              "device/store.py:12: note: a note does not count\n"
              "device/store.py:40:7: error: Worse  [assignment]\n"
              "hub/__init__.py:3: error: Also  [misc]\n"
              "Found 3 errors in 2 files (checked 2 source files)\n")
    assert _mypy_counts(output) == {"device.store": 2, "hub": 1}


def test_mypy_errors_only_go_down() -> None:
    if importlib.util.find_spec("mypy") is None:
        pytest.skip(f"mypy is not installed for {sys.executable} (./setup.sh --dev installs it)")
    result = subprocess.run([sys.executable, "-m", "mypy", "--cache-dir", str(MYPY_CACHE), "--no-color-output",
                             "--no-pretty"], cwd=REPO, capture_output=True, text=True, timeout=240)
    # 0: no error, 1: errors found; anything else (2) is mypy failing to run, not a count
    assert result.returncode in (0, 1) and "error: " not in result.stderr, \
        f"mypy did not run:\n{result.stdout}{result.stderr}"
    counts = _mypy_counts(result.stdout)
    recorded: dict[str, int] = json.loads(MYPY_RATCHET.read_text(encoding="utf-8"))
    worse = {m: (recorded.get(m, 0), n) for m, n in counts.items() if n > recorded.get(m, 0)}
    better = {m: (n, counts.get(m, 0)) for m, n in recorded.items() if counts.get(m, 0) < n}
    lines = [line for line in result.stdout.splitlines()
             if _MYPY_ERROR.match(line) and _module_of(line.split(":", 1)[0]) in worse]
    assert not worse, ("mypy finds more errors than tests/mypy_ratchet.json allows "
                       f"(module: (allowed, found)) {worse}; fix them:\n" + "\n".join(lines))
    assert not better, ("fewer mypy errors than tests/mypy_ratchet.json records (module: (recorded, found)) "
                        f"{better}: lower those numbers in the file (drop a module at 0) so they stay down")
