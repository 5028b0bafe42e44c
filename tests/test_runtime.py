"""The unit parser, device resolution and the precision helper."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from neuronscope.errors import DeviceError, UnitsError
from neuronscope.runtime import bf16_support, resolve_device, resolve_precision
from neuronscope.units import format_units, parse_units


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0-3,550", [0, 1, 2, 3, 550]),
        ("7", [7]),
        (" 2 - 4 , 9 ", [2, 3, 4, 9]),
        ("5,1-2,5", [5, 1, 2]),  # order as written, duplicates dropped
        (3, [3]),
        ([4, 1, 4], [4, 1]),
    ],
)
def test_parse_units(text, expected):
    assert parse_units(text) == expected


def test_parse_units_takes_numpy_and_torch_integers_and_refuses_floats():
    assert parse_units(np.int64(7)) == [7] and parse_units(torch.tensor(5)) == [5]
    assert parse_units([np.int32(1), torch.tensor(2)]) == [1, 2]
    assert parse_units(torch.tensor([3, 4])) == parse_units(np.array([3, 4])) == [3, 4]
    for bad in (3.0, [1.5], np.float64(2.0), torch.tensor(2.0), [True]):
        with pytest.raises(UnitsError, match="bad unit list"):
            parse_units(bad)  # never truncated to an index


def test_parse_units_all_needs_the_layer_size():
    assert parse_units("all", n_units=4) == [0, 1, 2, 3]
    assert parse_units("ALL", n_units=2) == [0, 1]
    with pytest.raises(UnitsError, match="n_units"):
        parse_units("all")


@pytest.mark.parametrize(("text", "message"), [
    ("", "empty"), ("3-1", "backwards"), ("a", "not an index"), ("1,,2", "not an index"), ("-1", "not an index"),
])
def test_parse_units_rejects_bad_lists(text, message):
    with pytest.raises(UnitsError, match=message):
        parse_units(text)


def test_parse_units_checks_the_range():
    with pytest.raises(UnitsError, match="out of range.*2560"):
        parse_units("0-2560", n_units=2560)


def test_parse_units_refuses_a_huge_range_before_building_it():
    """'0-31,5500000000' would be billions of ints; checked against n_units first (memory, not time)."""
    import tracemalloc

    tracemalloc.start()
    try:
        with pytest.raises(UnitsError, match="unit 3000000 is out of range"):
            parse_units("0-31,5-3000000", n_units=2560)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000  # the range built would be ~100 MB


def test_format_units_round_trips():
    assert format_units([0, 1, 2, 5, 7, 8]) == "0-2,5,7-8"
    assert parse_units(format_units([9, 3, 4])) == [3, 4, 9]


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(DeviceError, match="cpu, cuda"):
        resolve_device("tpu9")
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="--device cpu"):
            resolve_device("cuda:0")


def test_auto_precision_follows_native_bf16_and_says_why():
    cpu = torch.device("cpu")
    native, _ = bf16_support(cpu)
    conv, vit = resolve_precision("auto", cpu, "conv"), resolve_precision("auto", cpu, "vit")
    if native:
        assert (conv.name, conv.channels_last) == ("bf16", True)
        assert vit.name == "bf16-weights"
    else:
        assert conv.name == vit.name == "fp32"
    assert "oneDNN" in conv.reason


@pytest.mark.parametrize(("capability", "expected"), [((7, 5), "fp32"), ((8, 0), "bf16")])
def test_auto_precision_on_a_gpu_needs_native_bf16_on_that_gpu(monkeypatch, capability, expected):
    asked = []

    def device_capability(device):
        asked.append(device)
        return capability

    monkeypatch.setattr(torch.cuda, "get_device_capability", device_capability)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device: "a GPU")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: True)  # counts emulation too
    gpu = torch.device("cuda", 1)
    chosen = resolve_precision("auto", gpu, "conv")
    assert chosen.name == expected and f"{capability[0]}.{capability[1]}" in chosen.reason
    assert asked == [gpu]  # the device asked about, not the current one


def test_explicit_precisions():
    cpu = torch.device("cpu")
    bf16 = resolve_precision("bf16", cpu, "conv")
    assert bf16.autocast_dtype == torch.bfloat16 and bf16.channels_last and bf16.weight_dtype == torch.float32
    weights = resolve_precision("bf16-weights", cpu, "vit")
    assert weights.autocast_dtype is None and weights.weight_dtype == torch.bfloat16
    # ResNets get channels_last in every precision (oneDNN's and cuDNN's fast layout for convolutions).
    assert all(resolve_precision(name, cpu, "conv").channels_last for name in ("fp32", "bf16", "fp16", "bf16-weights"))
    assert resolve_precision("fp32", cpu, "conv").autocast_dtype is None
    with pytest.raises(DeviceError, match="auto, fp32"):
        resolve_precision("int8", cpu)


def test_parse_units_keeps_repeats_on_request_and_parse_unit_wants_exactly_one():
    """Per-image unit lists (objectives, attribution columns) may name a unit twice; single-unit arguments
    (render_diverse, the atlas readers) take one, and every result is a plain int (JSON, SQLite)."""
    from neuronscope.units import parse_unit

    assert parse_units([3, 3, np.int64(5)], repeats=True) == [3, 3, 5]
    assert parse_units("3,3", repeats=True) == [3, 3] and parse_units("3,3") == [3]
    assert all(type(u) is int for u in parse_units(np.array([1, 2])) + parse_units(torch.tensor([4])))
    assert parse_unit(np.int64(7)) == parse_unit(torch.tensor(7)) == parse_unit("7") == 7
    assert type(parse_unit(np.int64(7))) is int
    with pytest.raises(UnitsError, match="names 2 units where one is wanted"):
        parse_unit("1-2")
    with pytest.raises(UnitsError, match="3.0 is not an integer unit index"):
        parse_unit(3.0)
