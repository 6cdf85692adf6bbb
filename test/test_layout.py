"""The package's layout rules: imports, test doubles, and the size of files and functions.

No import circles, no node importing another node, the ROS runtime independent of the benchmark,
no test double in the package, files and functions small.
"""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "mile_ros"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in PKG.rglob("*.py")}


def imports(path: Path, top_level_only: bool) -> set[str]:
    """Return the mile_ros modules `path` imports (at module level, or anywhere)."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    known, out = modules(), set()
    here = module_name(path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    for node in nodes:
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:   # relative: resolve against this module's package
                base = ".".join(package[:len(package) - node.level + 1] + ([base] if base else []))
            if not base.startswith("mile_ros"):
                continue
            subs = {f"{base}.{a.name}" for a in node.names}
            out |= {s for s in subs if s in known} or {base}
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("mile_ros")}
    return out


def test_no_import_circles():
    graph = {m: imports(p, top_level_only=True) for m, p in modules().items()}

    def visit(m, stack):
        assert m not in stack, "import circle: " + " -> ".join([*stack[stack.index(m):], m])
        for dep in graph.get(m, ()):
            if dep != m and not m.startswith(dep + "."):   # a package's own __init__
                visit(dep, [*stack, m])
    for m in graph:
        visit(m, [])


def test_nodes_import_no_node_and_only_the_dispatcher_imports_nodes():
    node_modules = {m for m in modules() if m.startswith("mile_ros.nodes.")
                    and not m.endswith("._runtime")}
    for m, p in modules().items():
        bad = imports(p, top_level_only=False) & (node_modules - {m})
        assert not bad, f"{m} imports the node module(s) {sorted(bad)}"


def test_ros_runtime_does_not_depend_on_the_benchmark():
    runtime = ("mile_ros.nodes", "mile_ros.policy", "mile_ros.sim", "mile_ros.arms",
               "mile_ros.teleop", "mile_ros.cameras", "mile_ros.bags", "mile_ros.learning",
               "mile_ros.tools")
    for m, p in modules().items():
        if m.startswith(runtime):
            bad = {i for i in imports(p, top_level_only=False)
                   if i.startswith("mile_ros.benchmark")}
            assert not bad, f"{m} imports {sorted(bad)}"


def test_no_test_double_in_the_package():
    assert not list(PKG.rglob("virtual_joystick.py"))
    assert (ROOT / "test" / "support" / "virtual_joystick.py").is_file()


def test_files_and_functions_are_small():
    for p in PKG.rglob("*.py"):
        lines = p.read_text().count("\n")
        assert lines <= 600, f"{p.relative_to(ROOT)}: {lines} lines"
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                assert n < 80, f"{p.relative_to(ROOT)}:{node.lineno} {node.name}: {n} lines"
