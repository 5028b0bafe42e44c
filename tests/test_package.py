"""The top-level namespace: ``import neuronscope as ns`` reaches the entry points, lazily."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys

import pytest

import neuronscope


def test_import_neuronscope_imports_neither_torch_nor_open_clip():
    script = ("import json, sys, neuronscope\n"
              "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'open_clip'))))")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == []


@pytest.mark.parametrize("name", neuronscope.__all__)
def test_each_exported_name_is_its_owning_modules_object(name):
    owner = importlib.import_module(neuronscope._EXPORTS[name])
    assert getattr(neuronscope, name) is getattr(owner, name)
    assert name in dir(neuronscope)


def test_subpackages_are_attributes_and_unknown_names_raise_attribute_error():
    from neuronscope.objectives import channel

    assert neuronscope.objectives.channel is channel
    with pytest.raises(AttributeError, match="has no attribute 'load_modle'"):
        neuronscope.load_modle  # noqa: B018
    assert not hasattr(neuronscope, "__wrapped__")  # inspect/doctest probes must not import anything odd


def test_every_package_the_source_imports_is_declared_in_pyproject():
    """fontTools (probing.raster) and joblib (analysis.sparse_codes) were imported but arrived only through
    matplotlib and scikit-learn: a release of those that dropped them would break words and emotions."""
    import ast
    import importlib.metadata
    import re
    import tomllib
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    requirements = [*project["dependencies"], *(r for extra in project["optional-dependencies"].values() for r in extra)]
    declared = {re.split(r"[\[<>=;! ]", requirement, maxsplit=1)[0].lower().replace("_", "-")
                for requirement in requirements}
    modules = set()
    for path in (root / "src" / "neuronscope").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                modules |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules.add(node.module.split(".")[0])
    distributions = importlib.metadata.packages_distributions()
    third_party = {module for module in modules if module not in sys.stdlib_module_names and module != "neuronscope"}
    undeclared = {module: distributions.get(module) for module in third_party
                  if not {name.lower().replace("_", "-") for name in distributions.get(module, [module])} & declared}
    assert undeclared == {}
