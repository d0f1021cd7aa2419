"""The floors of the house: root modules name the public surface, the package holds the code.

Imports go one way: root modules and scripts import ``pruning_toolkit``; the package never imports
a root module or a script; a root library module only re-exports names; no script imports another.
"""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "pruning_toolkit"
SCRIPTS = {"main", "setup"}
ROOT_MODULES = {p.stem for p in ROOT.glob("*.py")} - SCRIPTS
SCRIPT_DIRS = ("examples", "benchmarks", "scripts")


def is_script(path):
    return 'if __name__ == "__main__":' in path.read_text(encoding="utf-8")


SCRIPT_MODULES = {p.stem for folder in SCRIPT_DIRS for p in (ROOT / folder).glob("*.py") if is_script(p)} | SCRIPTS


def imported_modules(path):
    """Every module an ``import`` or ``from ... import`` names in the file, at any depth."""
    names = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.append(node.module)
    return names


def top_level(name):
    return name.split(".")[0]


def test_the_package_imports_no_root_module_and_no_script():
    wrong = [(str(path.relative_to(ROOT)), name) for path in sorted(PACKAGE.rglob("*.py"))
             for name in imported_modules(path)
             if top_level(name) in ROOT_MODULES | SCRIPT_MODULES or name.split(".")[-1] in SCRIPT_MODULES]
    assert wrong == []


def test_root_library_modules_only_name_what_the_package_holds():
    for stem in sorted(ROOT_MODULES):
        path = ROOT / f"{stem}.py"
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in tree.body:
            if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
                continue                                    # the docstring
            if isinstance(node, ast.ImportFrom):
                assert node.module.split(".")[0] == "pruning_toolkit", f"{path.name} imports {node.module}"
                continue
            is_all = isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == ["__all__"]
            assert is_all, f"{path.name} line {node.lineno}: a root module holds no code, only names"


def test_every_name_a_root_module_lists_exists():
    for stem in sorted(ROOT_MODULES):
        module = __import__(stem)
        missing = [name for name in getattr(module, "__all__", ()) if not hasattr(module, name)]
        assert missing == [], f"{stem}.__all__ names missing attributes"


@pytest.mark.parametrize("folder", SCRIPT_DIRS)
def test_no_script_imports_another_script(folder):
    wrong = [(path.name, name) for path in sorted((ROOT / folder).glob("*.py"))
             for name in imported_modules(path) if name.split(".")[-1] in SCRIPT_MODULES]
    assert wrong == []


def test_a_test_catches_an_import_against_the_direction(tmp_path):
    wrong = tmp_path / "bad.py"
    wrong.write_text("def f():\n    import msd\n    from pruning_algorithms import LEAN_SV\n")
    assert [top_level(n) for n in imported_modules(wrong)] == ["msd", "pruning_algorithms"]


def test_lean_on_a_plain_cnn_loads_neither_the_msd_model_nor_tiff_reading():
    code = ("import sys, torch\n"
            "from torch import nn\n"
            "import pruning_algorithms as lean\n"
            "from pruning_toolkit import shrink\n"
            "model = nn.Sequential(nn.Conv2d(2, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 3, 3, padding=1))\n"
            "x = torch.randn(1, 2, 8, 8)\n"
            "lean.LEAN_SV(model, 0.5, x)\n"
            "shrink(model, x)\n"
            "print(sorted(m for m in ('tifffile', 'pruning_toolkit.msd_network', 'pruning_toolkit.toy_log')"
            " if m in sys.modules))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert result.stdout.strip() == "[]"
