"""The packages' layers and dsa/'s rooms, read from the import statements (lazy imports inside functions
included): no import runs back up, and no module imports one that imports it back."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# each package imports only the ones after it: the application, the evaluators and the engine, the language
LAYERS = {"dsa": 0, "evaluators": 1, "gp": 1, "primitives": 2}
ROOMS = ["cli", "experiment", "run", "outputs"]  # dsa/: each room imports only the rooms after it


def imports() -> dict[str, set[str]]:
    """Module → the modules of this repository it imports, by dotted name."""
    modules = {".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): p
               for package in LAYERS for p in (ROOT / package).rglob("*.py")}
    edges = {m: set() for m in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                parts = name.split(".")[: len(name.split(".")) - node.level + (path.name == "__init__.py")] \
                    if node.level else []
                base = ".".join(parts + ([node.module] if node.module else []))
                targets = [base, *(f"{base}.{a.name}" for a in node.names)]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            edges[name] |= {t for t in targets if t in modules and t != name}
    return edges


def test_no_import_runs_back_up_and_no_module_imports_itself_back():
    edges = imports()
    up = [(a, b) for a in edges for b in edges[a] if LAYERS[b.split(".")[0]] < LAYERS[a.split(".")[0]]]
    assert not up, up
    # the engine and the evaluators know nothing of each other; both read and write files through the one
    # low-level reader/writer, evaluators/files.py (standard library only: it knows nothing of LLMs either)
    assert {b for a in edges if a.startswith("gp") for b in edges[a] if b.startswith("evaluators")} <= \
        {"evaluators", "evaluators.files"}
    assert not any(b.startswith("gp") for a in edges if a.startswith("evaluators") for b in edges[a])
    assert not {b for b in edges["evaluators.files"]}  # nothing of this repository

    def reach(start):
        seen, todo = set(), [start]
        while todo:
            for n in edges[todo.pop()] - seen:
                seen.add(n)
                todo.append(n)
        return seen
    cycles = sorted({tuple(sorted((a, b))) for a in edges if a.startswith("dsa") for b in reach(a) if a in reach(b)})
    assert not cycles, cycles


def test_dsa_rooms_import_only_the_rooms_after_them():
    edges = imports()
    room = {m: m.split(".")[1] for m in edges if m.startswith("dsa.") and m.split(".")[1] in ROOMS}
    up = [(a, b) for a in room for b in edges[a] if b in room and ROOMS.index(room[b]) < ROOMS.index(room[a])]
    assert not up, up
    assert all(len(ast.parse((ROOT / "dsa" / r / "__init__.py").read_text()).body) >= 1 and
               ast.get_docstring(ast.parse((ROOT / "dsa" / r / "__init__.py").read_text())) for r in ROOMS)
