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
