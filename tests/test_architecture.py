"""The shape of the code: the referee (``compare/check/``) imports nothing of the app, the bench, the
CLI or ``manual/``; no import cycle anywhere, imports inside functions counted; importing the
referee changes no environment variable and compiles nothing."""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("compare", "manual", "torch_ref")
REFEREE = "compare.check"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules() -> dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def imports(source: str, name: str, is_package: bool, known) -> set[str]:
    """Every project module `source` (module `name`) imports, at module level or inside a function:
    ``import a.b`` -> a.b; ``from a import b`` -> a.b where that is a module, else a; relative
    imports resolved."""
    out = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = name.split(".") if is_package else name.split(".")[:-1]
                parent = parent[: len(parent) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                out.add(sub if sub in known else base)
    return {m for m in out if m.split(".")[0] in PACKAGES}


def graph() -> dict[str, set[str]]:
    modules = project_modules()
    return {name: imports(path.read_text(), name, path.name == "__init__.py", modules)
            for name, path in modules.items()}


def foreign_imports(edges: dict[str, set[str]]) -> list[str]:
    """'importer -> imported' for each import from the referee's package to a project module outside it."""
    return sorted(f"{m} -> {t}" for m, ts in edges.items() if m == REFEREE or m.startswith(REFEREE + ".")
                  for t in ts if not (t == REFEREE or t.startswith(REFEREE + ".") or t == "compare"))


def cycle(edges: dict[str, set[str]]) -> list[str]:
    """One import cycle as [a, b, ..., a], or [] when there is none (depth-first search)."""
    state, stack = {}, []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for t in sorted(edges.get(m, ())):
            if state.get(t) == "open":
                return stack[stack.index(t):] + [t]
            if t not in state:
                found = visit(t)
                if found:
                    return found
        state[m] = "done"
        stack.pop()
        return []

    for m in sorted(edges):
        if m not in state:
            found = visit(m)
            if found:
                return found
    return []


def test_the_referee_imports_nothing_of_the_app_the_bench_the_cli_or_manual():
    assert foreign_imports(graph()) == []


def test_the_import_rule_sees_a_function_level_import_of_the_app():
    source = "import numpy as np\n\ndef f():\n    from manual.layers import SoftmaxCrossEntropy\n    from compare import options\n"
    edges = graph()
    edges["compare.check.model"] = imports(source, "compare.check.model", False, project_modules())
    assert foreign_imports(edges) == ["compare.check.model -> compare.options", "compare.check.model -> manual.layers"]


def test_no_import_cycle_counting_imports_inside_functions():
    assert cycle(graph()) == []


def test_the_cycle_search_finds_one_closed_inside_a_function():
    edges = graph()
    known = project_modules()
    edges["compare.check.selftest"] |= imports("def f():\n    from compare.check.engine import check\n",
                                               "compare.check.selftest", False, known)
    found = cycle(edges)
    assert found and found[0] == found[-1] and {"compare.check.engine", "compare.check.selftest"} <= set(found)


def test_importing_the_referee_changes_no_environment_variable_and_compiles_nothing():
    code = ("import os, sys; e = dict(os.environ); from compare import check_layer, check_function, check_model; "
            "assert e == dict(os.environ), 'environment changed'; "
            "assert not [m for m in sys.modules if m.split('.')[0] in ('numba', 'llvmlite', 'manual', 'torch_ref')], "
            "sorted(m for m in sys.modules if m.split('.')[0] in ('numba', 'llvmlite', 'manual', 'torch_ref'))")
    env = {k: v for k, v in __import__("os").environ.items() if k not in ("OPENBLAS_THREAD_TIMEOUT", "GOMP_SPINCOUNT")}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr


# Small enough to read in one sitting (the rule for the referee): a class at most this many
# lines, a function (a method included) at most this many.
MAX_CLASS, MAX_FUNCTION = 150, 60


def oversized(source: str, where: str) -> list[str]:
    """'where: class C, n lines' for each class or function of `source` over its limit."""
    out = []
    for node in ast.walk(ast.parse(source)):
        limit = {ast.ClassDef: MAX_CLASS, ast.FunctionDef: MAX_FUNCTION, ast.AsyncFunctionDef: MAX_FUNCTION}.get(
            type(node))
        size = node.end_lineno - node.lineno + 1 if limit else 0
        if limit and size > limit:
            kind = "class" if isinstance(node, ast.ClassDef) else "function"
            out.append(f"{where}: {kind} {node.name}, {size} lines (at most {limit})")
    return out


def test_no_class_or_function_of_the_referee_is_too_long_to_read_in_one_sitting():
    found = [o for p in sorted((ROOT / "compare" / "check").glob("*.py"))
             for o in oversized(p.read_text(), str(p.relative_to(ROOT)))]
    assert found == []


def test_the_size_rule_sees_a_long_class_and_a_long_function():
    body = "".join(f"    x{i} = {i}\n" for i in range(MAX_FUNCTION))
    source = f"def f():\n{body}\n\nclass C:\n" + "".join(f"    def m{i}(self):\n        return {i}\n\n"
                                                        for i in range(MAX_CLASS // 3 + 1))
    assert [o.split(",")[0] for o in oversized(source, "s.py")] == ["s.py: function f", "s.py: class C"]
    assert oversized("def g():\n    return 1\n", "s.py") == []
