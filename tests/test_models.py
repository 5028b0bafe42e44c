"""The registry and load_model: contracts, local files, caches, fast offline failure."""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from neuronscope.errors import BundledModelMissing, NeuronscopeError, UnknownModelError, WeightsError
from neuronscope.imagefiles import file_sha256
from neuronscope.models import (
    Architecture,
    LoadedModel,
    Preprocess,
    get_architecture,
    list_architectures,
    load_model,
    register,
    unregister,
)
from neuronscope.models import download
from neuronscope.models.openclip import module_activation
from neuronscope.models.tiny import TINY_RN
from tests.helpers import TimmClip, timm_trunks, write_config_dir

SHA_KEY = re.compile(r"^[\w.-]+@sha256:[0-9a-f]{12}$")


def image_embedding(model: LoadedModel, pixels: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.encode_images(pixels)


# --------------------------------------------------------------------------- registry


def test_tiny_models_have_their_contract():
    rn, vit = load_model("tiny-rn"), load_model("tiny-vit")  # tiny models default to random
    assert (rn.key, vit.key) == ("tiny-rn@random", "tiny-vit@random")
    assert rn.preprocess.image_size == (64, 64) and rn.family == "conv" and vit.family == "vit"
    assert sum(p.numel() for p in rn.module.parameters()) < 10_000_000
    assert not any(p.requires_grad for p in rn.module.parameters()) and not rn.module.training
    assert image_embedding(rn, torch.randn(2, 3, 64, 64)).shape == (2, 64)



def test_timm_transformer_trunks_are_vits_and_run_as_vits(monkeypatch):
    """Every timm trunk was "conv" (its patch embedding is a Conv2d), so a SigLIP, EVA02 or Swin tower got the
    ResNet recipe under --precision auto (bf16 autocast and channels_last instead of bf16 weights on a CPU)."""
    from neuronscope import runtime

    families = {kind: load_model(TimmClip(trunk), preprocess=Preprocess(image_size=32)).family
                for kind, trunk in timm_trunks().items()}
    assert families == {"vit": "vit", "eva": "vit", "swin": "vit", "convnext": "conv", "fastvit": "conv"}
    monkeypatch.setattr(runtime, "bf16_support", lambda device: (True, "native bf16 (test)"))
    plan = runtime.resolve_precision("auto", torch.device("cpu"), families["vit"])
    assert (plan.name, plan.channels_last) == ("bf16-weights", False)

def test_weights_carry_their_contract_without_building():
    openai = get_architecture("RN50x4").spec("openai")
    assert openai.key == "RN50x4@openai"
    assert openai.preprocess.image_size == (288, 288) and openai.preprocess.interpolation == "bicubic"
    assert openai.activation == "quick_gelu"  # OpenAI weights were trained with QuickGELU
    assert get_architecture("RN50x4").spec("random").activation == "gelu"
    assert get_architecture("ViT-B-32").spec("openai").preprocess.mean[0] == pytest.approx(0.48145466)


def test_longest_resize_pads_with_fill_color_as_open_clip_does():
    import numpy as np
    from open_clip.transform import image_transform
    from PIL import Image

    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (30, 50, 3), dtype=np.uint8))
    ours = Preprocess(image_size=32, resize_mode="longest")
    theirs = image_transform(32, is_train=False, mean=ours.mean, std=ours.std, resize_mode="longest")
    torch.testing.assert_close(ours(image)[0], theirs(image), atol=1e-5, rtol=0)
    grey = Preprocess.from_dict({"size": 32, "resize_mode": "longest", "fill_color": 128})
    assert grey.fill_color == 128 and Preprocess.from_dict(grey.to_dict()) == grey
    assert (grey.to_pixels(image)[0, :, 0, 0] * 255).round().tolist() == [128.0] * 3  # the padded top row


@pytest.mark.parametrize("size", [64, 288])
def test_shortest_resize_is_open_clips_transform(size):
    """torchvision's geometry as open_clip runs it (long side truncated, crop offset rounded): the same
    tensors, where rounding the long side and flooring the offset shifted the crop by a pixel for some
    sizes (up to 2.9 after normalisation on noise)."""
    import numpy as np
    from open_clip.transform import image_transform
    from PIL import Image

    ours = Preprocess(image_size=size)
    theirs = image_transform(size, is_train=False, mean=ours.mean, std=ours.std)
    generator = np.random.default_rng(0)
    for width, height in [(100, 73), (73, 100), (301, 200), (640, 427), (65, 64), (size, size)]:
        image = Image.fromarray(generator.integers(0, 255, (height, width, 3), dtype=np.uint8))
        torch.testing.assert_close(ours(image)[0], theirs(image), atol=1e-6, rtol=0)


def test_shortest_resize_of_an_extreme_aspect_ratio_resamples_only_the_crop(monkeypatch):
    # A 40000x1 image was first resized whole, to 2,560,000x64 at 64 px (1.5 GB), then cropped.
    import numpy as np
    from PIL import Image

    strip = Image.fromarray(np.random.default_rng(0).integers(0, 255, (4, 90, 3), dtype=np.uint8))  # 22.5:1
    whole = strip.resize((1440, 64), Image.BICUBIC).crop((688, 0, 752, 64))
    ours = Preprocess(image_size=64).resize(strip)
    assert np.abs(np.asarray(ours, int) - np.asarray(whole, int)).max() <= 1  # the same samples, to rounding
    sizes = []
    resize = Image.Image.resize
    monkeypatch.setattr(Image.Image, "resize", lambda self, size, *a, **k: sizes.append(size) or resize(self, size,
                                                                                                         *a, **k))
    assert Preprocess(image_size=64).resize(Image.new("RGB", (4000, 1), "red")).size == (64, 64)
    assert sizes == [(64, 64)]


def test_every_open_clip_tag_is_listed():
    import open_clip

    names = {arch.name: arch for arch in list_architectures()}
    for arch, tag in open_clip.list_pretrained():
        assert tag in names[arch].weight_choices()
    assert {"mini-clip", "tiny-rn", "tiny-vit"} <= set(names)
    assert [a.name for a in list_architectures("rn50x4*")] == ["RN50x4", "RN50x4-quickgelu"]


def test_unknown_model_suggests_close_names():
    with pytest.raises(UnknownModelError, match="did you mean RN50x4"):
        load_model("RN50x5")


def test_name_at_weights_and_conflicts():
    assert load_model("tiny-rn@random").key == "tiny-rn@random"
    assert load_model("tiny-rn", weights=None).key == "tiny-rn@random"
    with pytest.raises(WeightsError, match="give one"):
        load_model("tiny-rn@random", weights="openai")
    with pytest.raises(WeightsError, match="random, or PATH"):
        load_model("tiny-rn", weights="openai")
    with pytest.raises(WeightsError, match="--weights PATH"):
        load_model("RN50x4@sha256:0123456789ab")


def test_omitted_weights_without_cache_lists_the_choices(tmp_path):
    with pytest.raises(WeightsError) as info:
        load_model("RN50x4", cache_dir=tmp_path)
    message = str(info.value)
    assert "random" in message and "openai" in message and "PATH" in message


# --------------------------------------------------------------------------- offline


@pytest.fixture
def silent_server():
    """A local port that accepts connections and never answers (a black-holed network)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    yield f"https://127.0.0.1:{server.getsockname()[1]}"
    server.close()


@pytest.mark.parametrize("dead", ["refused", "silent"])
def test_missing_download_fails_fast_naming_a_local_file(monkeypatch, tmp_path, silent_server, dead):
    # No offline flag: one bounded probe decides, and the downloader (huggingface_hub retries for ~46 s) is never
    # reached. Fast by construction, not by a clock: the probe's timeout is the only wait.
    endpoint = "https://127.0.0.1:9" if dead == "refused" else silent_server
    for name in ("NEURONSCOPE_OFFLINE", "HF_HUB_OFFLINE", "HTTPS_PROXY", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(download, "_hf_endpoint", lambda: endpoint)
    probes = []
    probe = download.unreachable_reason
    monkeypatch.setattr(download, "unreachable_reason", lambda url: probes.append(url) or probe(url, timeout=1.0))
    import open_clip
    monkeypatch.setattr(open_clip, "download_pretrained", _no_network)
    with pytest.raises(WeightsError) as info:
        load_model("RN50", weights="openai", cache_dir=tmp_path)
    assert probes == [endpoint] and download.PROBE_SECONDS <= 5
    assert "RN50@openai" in str(info.value) and "--weights PATH" in str(info.value)


def test_offline_flag_fails_without_touching_the_network(monkeypatch, tmp_path):
    import urllib.request
    monkeypatch.setattr(socket, "create_connection", _no_network)
    monkeypatch.setattr(urllib.request, "urlopen", _no_network)
    with pytest.raises(WeightsError, match="NEURONSCOPE_OFFLINE=1"):
        load_model("RN50x4", weights="openai", cache_dir=tmp_path)


def _no_network(*args, **kwargs):
    raise AssertionError("a cached or local load touched the network")


@pytest.fixture
def cached_arch():
    """A registered architecture whose two tags point at the HF cache and at a URL cache."""
    arch = register(Architecture(
        name="tiny-rn-cached", source="config", model_cfg=TINY_RN, preprocess=Preprocess(image_size=64),
        tags={"hub": {"hf_hub": "neuronscope-test/tiny-rn/"},
              "url": {"url": "https://example.invalid/weights/tiny-rn-v1.pt", "quick_gelu": True}},
    ), replace=True)
    yield arch
    unregister(arch.name)


def _fake_hf_cache(cache: Path, repo_id: str, files: dict[str, bytes]) -> None:
    """The huggingface_hub cache layout: refs/main -> snapshots/<commit>/<file>."""
    commit = "0" * 40
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for name, data in files.items():
        (snapshot / name).write_bytes(data)


def test_cached_weights_load_without_network(monkeypatch, tmp_path, tiny_rn, cached_arch):
    from safetensors.torch import save

    monkeypatch.setattr(download, "unreachable_reason", _no_network)
    state = {k: v.contiguous() for k, v in tiny_rn.module.state_dict().items()}
    _fake_hf_cache(tmp_path, "neuronscope-test/tiny-rn", {"open_clip_model.safetensors": save(state)})
    torch.save(state, tmp_path / "tiny-rn-v1.pt")  # where open_clip keeps URL downloads

    pixels = torch.randn(1, 3, 64, 64)
    expected = image_embedding(tiny_rn, pixels)
    from_hub = load_model("tiny-rn-cached", weights="hub", cache_dir=tmp_path)
    assert from_hub.key == "tiny-rn-cached@hub"
    torch.testing.assert_close(image_embedding(from_hub, pixels), expected)
    from_url = load_model("tiny-rn-cached@url", cache_dir=tmp_path)
    assert from_url.spec.activation == "quick_gelu"
    torch.testing.assert_close(image_embedding(from_url, pixels), expected)
    # Omitted weights: the first tag found in the local cache.
    assert load_model("tiny-rn-cached", cache_dir=tmp_path).key == "tiny-rn-cached@hub"


def test_hf_hub_random_weights_without_the_config_says_the_config_is_missing(tmp_path):
    with pytest.raises(WeightsError) as info:
        load_model("hf-hub:org/absent", weights="random", cache_dir=tmp_path)
    message = str(info.value)
    assert "open_clip_config.json" in message and "--weights random for random init" not in message


def test_cached_hf_hub_repo_loads_without_network(monkeypatch, tmp_path, tiny_rn):
    from safetensors.torch import save

    monkeypatch.setattr(download, "unreachable_reason", _no_network)
    config = {"model_cfg": TINY_RN, "preprocess_cfg": {"mean": [0.5] * 3, "std": [0.5] * 3}}
    state = {k: v.contiguous() for k, v in tiny_rn.module.state_dict().items()}
    _fake_hf_cache(tmp_path, "org/tiny", {"open_clip_config.json": json.dumps(config).encode(),
                                          "open_clip_model.safetensors": save(state)})
    model = load_model("hf-hub:org/tiny", cache_dir=tmp_path)
    assert model.key == "hf-hub:org/tiny@hub" and model.preprocess.mean == (0.5, 0.5, 0.5)
    assert model.weights_sha256 == file_sha256(model.weights_path)  # provenance: not "random"
    pixels = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(image_embedding(model, pixels), image_embedding(tiny_rn, pixels))
    quick = load_model("hf-hub:org/tiny", cache_dir=tmp_path, activation="quick_gelu")
    assert quick.spec.activation == module_activation(quick.module) == "quick_gelu"
    with pytest.raises(WeightsError, match="NEURONSCOPE_OFFLINE"):
        monkeypatch.setattr(download, "unreachable_reason", lambda url: "NEURONSCOPE_OFFLINE=1 is set")
        load_model("hf-hub:org/other", weights="hub", cache_dir=tmp_path)


# --------------------------------------------------------------------------- local files


@pytest.mark.parametrize("form", ["plain.pt", "wrapped.pt", "ddp.bin", "weights.safetensors"])
def test_local_checkpoint_files_load(tmp_path, tiny_rn, form):
    state = tiny_rn.module.state_dict()
    path = tmp_path / form
    if form == "weights.safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    elif form == "wrapped.pt":
        torch.save({"epoch": 3, "state_dict": state}, path)
    elif form == "ddp.bin":
        torch.save({f"module.{k}": v for k, v in state.items()}, path)
    else:
        torch.save(state, path)
    model = load_model("tiny-rn", weights=str(path))
    assert SHA_KEY.match(model.key) and model.weights_path == path
    pixels = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(image_embedding(model, pixels), image_embedding(tiny_rn, pixels))


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning", "ignore:.*torch.jit.trace.*:FutureWarning")
def test_openai_torchscript_archive_loads(tmp_path, tiny_rn):
    """An archive shaped like OpenAI's: a traced CLIP with input_resolution & co. in its state."""
    import open_clip

    clip = open_clip.CLIP(**TINY_RN)
    clip.load_state_dict(tiny_rn.module.state_dict())
    clip.eval()
    for key, value in (("input_resolution", 64), ("context_length", 77), ("vocab_size", 49408)):
        if hasattr(clip, key):
            delattr(clip, key)  # open_clip keeps these as ints; OpenAI's archives store tensors
        clip.register_buffer(key, torch.tensor(value))
    with torch.no_grad():
        archive = torch.jit.trace(clip, (torch.randn(1, 3, 64, 64), torch.zeros(1, 77, dtype=torch.long)),
                                  check_trace=False)
    path = tmp_path / "RN-tiny.pt"
    archive.save(str(path))

    pixels = torch.randn(2, 3, 64, 64)
    expected = image_embedding(tiny_rn, pixels)
    inferred = load_model(str(path))  # OpenAI archives need no architecture name
    assert re.match(r"^RN-tiny@sha256:[0-9a-f]{12}$", inferred.key)
    assert inferred.spec.activation == "quick_gelu" and inferred.preprocess.image_size == (64, 64)
    torch.testing.assert_close(image_embedding(inferred, pixels), expected)
    assert inferred.weights_sha256 == file_sha256(path)
    as_gelu = load_model(str(path), activation="gelu")  # the override is built, not just noted
    assert as_gelu.spec.activation == module_activation(as_gelu.module) == "gelu"
    named = load_model("tiny-rn", weights=path)
    assert named.spec.activation == "quick_gelu"
    torch.testing.assert_close(image_embedding(named, pixels), expected)
    assert named.layer_aliases["neurons"] == "visual.layer4.1.act3:input"


def test_unreadable_checkpoints_are_one_line_saying_what_to_do(tmp_path, tiny_rn):
    whole = tmp_path / "whole.pt"
    torch.save(tiny_rn.module, whole)  # the whole model pickled, not its state dict
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    for path, advice in ((whole, "model.state_dict()"), (junk, "expected an open_clip state dict")):
        with pytest.raises(WeightsError) as info:
            load_model("tiny-rn", weights=path)
        message = str(info.value)
        assert advice in message and len(message.splitlines()) == 1 and "\x1b" not in message
        assert "weights_only" not in message  # torch's advice (unpickle anything) does not apply


@pytest.mark.filterwarnings("ignore:.*torch.jit.*:FutureWarning")
def test_a_torchscript_archive_that_is_not_a_clip_asks_for_the_architecture(tmp_path):
    path = tmp_path / "linear.pt"
    torch.jit.save(torch.jit.script(nn.Linear(2, 2)), str(path))
    with pytest.raises(WeightsError, match="not an OpenAI CLIP.*--model NAME --weights PATH"):
        load_model(str(path))


def test_weights_path_with_a_tilde_is_the_home_folder(monkeypatch, tmp_path, tiny_rn):
    monkeypatch.setenv("HOME", str(tmp_path))
    torch.save(tiny_rn.module.state_dict(), tmp_path / "rn.pt")
    assert load_model("tiny-rn", weights="~/rn.pt").weights_path == tmp_path / "rn.pt"


def write_open_clip_dir(directory: Path, model: LoadedModel, *, weights: bool = True) -> Path:
    """A folder in open_clip's layout: open_clip_config.json (+ open_clip_model.safetensors)."""
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    config = {"model_cfg": dict(model.spec.model_cfg), "preprocess_cfg": {"size": 64}}
    (directory / download.HF_CONFIG).write_text(json.dumps(config))
    if weights:
        state = {k: v.contiguous() for k, v in model.module.state_dict().items()}
        save_file(state, str(directory / "open_clip_model.safetensors"))
    return directory


def test_open_clip_folder_loads_its_weights_with_their_hash(tmp_path, tiny_vit):
    folder = write_open_clip_dir(tmp_path / "vit", tiny_vit)
    model = load_model("tiny-vit", weights=folder)
    sha = file_sha256(folder / "open_clip_model.safetensors")
    assert model.weights_sha256 == sha and model.key == f"tiny-vit@sha256:{sha[:12]}"
    pixels = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(image_embedding(model, pixels), image_embedding(tiny_vit, pixels))
    quick = load_model("tiny-vit", weights=folder, activation="quick_gelu")  # the override is built, not just noted
    assert quick.spec.activation == module_activation(quick.module) == "quick_gelu"


def test_open_clip_folder_without_weights_is_an_error_not_a_random_model(tmp_path, tiny_vit):
    folder = write_open_clip_dir(tmp_path / "vit", tiny_vit, weights=False)
    with pytest.raises(WeightsError, match="no weights file.*open_clip_model.safetensors"):
        load_model("tiny-vit", weights=folder)


def test_weights_for_another_architecture_say_so(tmp_path, tiny_vit):
    path = tmp_path / "vit.pt"
    torch.save(tiny_vit.module.state_dict(), path)
    with pytest.raises(WeightsError, match="do not fit this architecture.*missing"):
        load_model("tiny-rn", weights=path)
    with pytest.raises(WeightsError, match="which architecture.*--model NAME --weights PATH") as unnamed:
        load_model(str(path))
    assert "RN50'" not in str(unnamed.value)  # a ViT's file was once told to name RN50
    with pytest.raises(WeightsError, match="does not exist"):
        load_model("tiny-rn", weights=tmp_path / "nope.pt")


# --------------------------------------------------------------------------- mini CLIP


def test_mini_clip_missing_is_a_clear_error(no_mini_clip):
    with pytest.raises(BundledModelMissing, match="NEURONSCOPE_MINI_CLIP_DIR"):
        load_model("mini-clip")


def test_mini_clip_loads_from_its_folder_in_fp32(monkeypatch, tmp_path, tiny_rn):
    folder = write_config_dir(tmp_path / "mini_clip", tiny_rn, fp16=True)
    monkeypatch.setenv("NEURONSCOPE_MINI_CLIP_DIR", str(folder))
    model = load_model("mini-clip")  # its load time (< 2 s) is benchmarks/mini_clip.py's
    assert model.key == "mini-clip@bundled" and load_model("mini-clip@bundled").key == "mini-clip@bundled"
    assert all(p.dtype == torch.float32 for p in model.module.parameters())
    reference = tiny_rn.module.state_dict()["visual.layer4.1.conv2.weight"].half().float()
    torch.testing.assert_close(model.module.state_dict()["visual.layer4.1.conv2.weight"], reference)
    assert model.layer_aliases["neurons"] == "visual.layer4.1.act3:input"
    assert load_model("mini-clip", weights="random").key == "mini-clip@random"
    quick = load_model("mini-clip", activation="quick_gelu")
    assert quick.spec.activation == module_activation(quick.module) == "quick_gelu"
    # The same layout works as a --weights folder.
    assert SHA_KEY.match(load_model("tiny-rn", weights=folder).key)


# --------------------------------------------------------------------------- any module


class SmallNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 4, 3, stride=2))
        self.head = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(2, 3)))


def test_any_module_with_a_preprocessing_spec():
    net = SmallNet()
    model = load_model(net, preprocess=Preprocess(image_size=32, mean=(0.5,) * 3, std=(0.5,) * 3), name="small")
    assert SHA_KEY.match(model.key) and model.key.startswith("small@")
    assert model.image_module is net and model.spec.image_tower == ""
    assert image_embedding(model, torch.randn(1, 3, 32, 32)).shape == (1, 2)
    with pytest.raises(NeuronscopeError, match="preprocess=Preprocess"):
        load_model(SmallNet())
    assert model.spec.activation is None  # convolutions and a ReLU: no GELU of either kind
    with pytest.raises(WeightsError, match="runs neither gelu nor quick_gelu, so activation='gelu'"):
        load_model(net, preprocess=Preprocess(image_size=32), activation="gelu")
    assert repr(model) == f"LoadedModel({model.key}, cpu, fp32)"  # not the whole module


def test_a_plain_module_where_a_loaded_model_is_needed_is_one_line_saying_to_wrap_it(tiny_rn):
    """A plain open_clip module passed to list_layers, render_units, zero-shot, attribution or the word probe
    failed deep inside (AttributeError 'CLIP' object has no attribute 'preprocess' / 'device' / 'precision')."""
    from neuronscope.activations import layer_geometry, list_layers, record, resolve_layers
    from neuronscope.errors import ModelNotLoadedError
    from neuronscope.probing.attribution import attribute_texts
    from neuronscope.probing.words import probe_words
    from neuronscope.probing.zeroshot import ZeroShotClassifier, encode_texts
    from neuronscope.visualize import render_units

    clip = tiny_rn.module
    calls = {
        "list_layers": lambda: list_layers(clip),
        "layer_geometry": lambda: layer_geometry(clip, ["neurons"]),
        "render_units": lambda: render_units(clip, "neurons", [1]),
        "ZeroShotClassifier.build": lambda: ZeroShotClassifier.build(clip, ["a", "b"]),
        "encode_texts": lambda: encode_texts(clip, ["a"]),
        "attribute_texts": lambda: attribute_texts(clip, "neurons", ["a star"]),
        "probe_words": lambda: probe_words(clip, "neurons", ["star"]),
    }
    for name, call in calls.items():
        with pytest.raises(ModelNotLoadedError) as raised:
            call()
        message = str(raised.value)
        assert message.startswith(f"{name} needs a LoadedModel, not a plain CLIP module") and "\n" not in message
        assert "wrap it with load_model(module)" in message
    for call in (list_layers, lambda name: encode_texts(name, ["a"])):  # encode_texts runs in eval mode first
        with pytest.raises(ModelNotLoadedError, match=r"load it with load_model\('tiny-rn'\)"):
            call("tiny-rn")
    # The plain module's aliases are the ones record() uses: resolve_layers said it had no 'neurons' alias.
    neurons = tiny_rn.resolve_layer("neurons")
    assert resolve_layers(clip, ["neurons"]) == [neurons]
    assert list(record(clip, torch.zeros(1, 3, 64, 64), ["neurons"])) == [neurons]


def test_a_module_reports_the_activation_it_runs():
    gelu_net = nn.Sequential(nn.Linear(4, 4), nn.GELU())
    contract = Preprocess(image_size=32)
    assert load_model(gelu_net, preprocess=contract).spec.activation == "gelu"
    assert load_model(gelu_net, preprocess=contract, activation="gelu").spec.activation == "gelu"  # what it runs
    with pytest.raises(WeightsError, match="runs gelu, not activation='quick_gelu'"):
        load_model(gelu_net, preprocess=contract, activation="quick_gelu")  # cannot be applied


def test_a_passed_module_is_frozen_in_place_but_its_weights_are_never_cast(monkeypatch):
    """load_model(module, precision="bf16-weights") cast the caller's own module to bf16 in place: its fp32
    weights were lost (m.float() did not bring them back). A cast that changes a passed module's dtype is refused
    before anything is changed; auto autocasts instead of casting; freezing in place is the documented contract."""
    import open_clip

    from neuronscope.models.tiny import TINY_VIT
    from neuronscope.runtime import resolve_precision

    net = SmallNet().train()
    before = {name: value.clone() for name, value in net.state_dict().items()}
    with pytest.raises(NeuronscopeError, match=r"float32 to bfloat16 in place: pass a copy \(load_model\(copy"):
        load_model(net, preprocess=Preprocess(image_size=32), precision="bf16-weights")
    assert net.training and all(p.requires_grad for p in net.parameters())  # refused before anything changed
    assert all(torch.equal(net.state_dict()[name], value) for name, value in before.items())
    model = load_model(net, preprocess=Preprocess(image_size=32), precision="bf16")  # autocast: fp32 weights kept
    assert model.module is net and not net.training and not any(p.requires_grad for p in net.parameters())
    assert all(p.dtype == torch.float32 for p in net.parameters())
    half = SmallNet().to(torch.bfloat16)
    assert load_model(half, preprocess=Preprocess(image_size=32), precision="bf16-weights").precision.name == \
        "bf16-weights"  # its own dtype: nothing to cast
    with pytest.raises(NeuronscopeError, match="bfloat16 to float32 in place.* or precision bf16-weights"):
        load_model(half, preprocess=Preprocess(image_size=32), precision="fp32")
    assert load_model(half, preprocess=Preprocess(image_size=32), precision="auto").precision.name == "bf16-weights"
    # auto picks bf16 weights for a ViT on a CPU with native bf16; a passed ViT keeps fp32 weights and autocasts
    import neuronscope.runtime as runtime

    monkeypatch.setattr(runtime, "bf16_support", lambda device: (True, "native bf16 (test)"))
    assert resolve_precision("auto", torch.device("cpu"), "vit").name == "bf16-weights"
    vit = open_clip.CLIP(**TINY_VIT)
    chosen = load_model(vit, preprocess=Preprocess(image_size=TINY_VIT["vision_cfg"]["image_size"]), precision="auto")
    assert chosen.precision.name == "bf16" and all(p.dtype == torch.float32 for p in vit.parameters())


def test_weights_identity_hashes_the_state_dict_once_per_loaded_model(monkeypatch):
    """weights_identity() hashed every tensor on every call (0.85 s for RN50 on a core; a text command asks
    twice). It is computed once per LoadedModel; one made with another module (dataclasses.replace) hashes its own."""
    import dataclasses

    import neuronscope.models.weights as weights

    hashed = []
    real = weights.sha256_state_dict
    monkeypatch.setattr(weights, "sha256_state_dict", lambda module: hashed.append(module) or real(module))
    torch.manual_seed(0)
    model = load_model("tiny-rn", weights="random")
    first = model.weights_identity()
    assert model.weights_identity() == first and hashed == [model.module]  # the second call hashed nothing
    torch.manual_seed(1)
    other = dataclasses.replace(model, module=load_model("tiny-rn", weights="random").module)
    assert other.weights_identity() != first and len(hashed) == 2


def test_prepare_images_refuses_what_is_not_model_input(mini_clip_fp32):
    prepare = mini_clip_fp32.prepare_images
    assert prepare(torch.zeros(3, 64, 64)).shape == (1, 3, 64, 64)  # one image is a batch of one
    assert prepare([Image.new("RGB", (80, 80))] * 2).shape == (2, 3, 64, 64)
    with pytest.raises(TypeError, match=r"torch.uint8 tensor.*model.preprocess.normalize\(x\)"):
        prepare(torch.zeros(2, 3, 64, 64, dtype=torch.uint8))  # 0-255 pixels would run as if normalised
    with pytest.raises(ValueError, match=r"shape \[2, 64, 64, 3\], not \[B, 3, H, W\]"):
        prepare(torch.zeros(2, 64, 64, 3))
    with pytest.raises(TypeError, match="not a list of Tensor; pass PIL images"):
        prepare([torch.zeros(3, 64, 64)])
    with pytest.raises(TypeError, match="not a ndarray; pass PIL images"):
        prepare(np.zeros((2, 64, 64, 3), dtype=np.uint8))


def test_default_weights_are_the_declared_default_else_a_cached_tag_else_none(monkeypatch) -> None:
    from neuronscope.models import default_weights, download, get_architecture

    assert default_weights(get_architecture("mini-clip")) == "bundled"
    monkeypatch.setattr(download, "find_cached", lambda cfg, cache_dir=None: None)
    assert default_weights(get_architecture("RN50x4")) is None  # nothing at hand: load_model says what to pass
    monkeypatch.setattr(download, "find_cached", lambda cfg, cache_dir=None: "/cache/rn50x4.pt")
    assert default_weights(get_architecture("RN50x4")) == "openai"


def test_aliases_two_image_towers_would_share_are_left_out(tiny_rn) -> None:
    import copy

    from neuronscope.models.aliases import structural_aliases

    one = structural_aliases(tiny_rn.module)
    towers = nn.ModuleDict({"a": copy.deepcopy(tiny_rn.module.visual), "b": copy.deepcopy(tiny_rn.module.visual)})
    assert one["image_block_4/0/Add_6"] == "visual.layer4.0.act3:input" and "neurons" in one
    assert structural_aliases(towers) == {}  # not the last tower's names (b.layer4...) under a shared alias


# --------------------------------------------------------------------------- text tokenizers

TEXTS = ["a photo of a dog.", "Hello World!! ünïcode", "x " * 100]
HF_NAME = "neuronscope-test/absent-tokenizer"
TINY_HF_TEXT = {**TINY_RN, "text_cfg": {**TINY_RN["text_cfg"], "vocab_size": 1000, "hf_tokenizer_name": HF_NAME}}


@pytest.fixture
def hf_text_model():
    """A tiny CLIP whose text_cfg names a Hugging Face tokenizer (as SigLIP's, xlm-roberta's and mt5's do)."""
    arch = register(Architecture(name="tiny-rn-hf-text", source="config", default_weights="random",
                                 model_cfg=TINY_HF_TEXT, preprocess=Preprocess(image_size=64)), replace=True)
    yield load_model(arch.name)
    unregister(arch.name)


class _WordLengths:
    """Enough of a transformers tokenizer for open_clip's HFTokenizer: each word's id is its length."""

    sep_token_id = 2

    def __call__(self, texts, return_tensors, max_length, padding, truncation):
        import types

        rows = torch.zeros(len(texts), max_length, dtype=torch.long)
        for row, text in zip(rows, texts):
            ids = [len(word) for word in text.split()][:max_length]
            row[:len(ids)] = torch.tensor(ids)
        return types.SimpleNamespace(input_ids=rows)


def _fake_transformers(monkeypatch, tokenizer=None) -> list[dict]:
    """A ``transformers`` whose AutoTokenizer returns ``tokenizer`` or (None) misses its cache; returns the calls."""
    import importlib.machinery
    import sys
    import types

    calls: list[dict] = []

    def from_pretrained(name, **kwargs):
        calls.append({"name": name, **kwargs})
        if tokenizer is None:
            raise OSError(f"We couldn't connect to 'https://huggingface.co' to load the files of {name}.\n"
                          f"Check your internet connection")
        return tokenizer

    module = types.ModuleType("transformers")
    module.__spec__ = importlib.machinery.ModuleSpec("transformers", None)
    module.AutoTokenizer = types.SimpleNamespace(from_pretrained=from_pretrained)
    monkeypatch.setitem(sys.modules, "transformers", module)
    return calls


@pytest.mark.parametrize("name", ["tiny-rn", "tiny-vit", "mini-clip"])
def test_clip_models_tokenize_with_clips_bpe_as_before(name):
    import open_clip

    from neuronscope.probing.zeroshot import tokenize

    model = load_model(name)
    expected = open_clip.tokenize(TEXTS, context_length=model.module.context_length)  # what every model got before
    assert model.spec.text_tokenizer.is_clip_bpe and model.spec.to_dict()["tokenizer"] == "CLIP BPE"
    assert torch.equal(tokenize(model, TEXTS), expected)


def test_registry_names_take_open_clips_tokenizer_choice():
    assert get_architecture("RN50x4").spec("random").text_tokenizer.is_clip_bpe
    siglip = get_architecture("ViT-B-16-SigLIP").spec("random").text_tokenizer
    assert (siglip.hf_name, siglip.context_length, siglip.open_clip_name) == (
        "timm/ViT-B-16-SigLIP", 64, "ViT-B-16-SigLIP")
    assert get_architecture("xlm-roberta-base-ViT-B-32").spec("random").text_tokenizer.hf_name == "xlm-roberta-base"


def test_a_hf_tokenizer_without_transformers_fails_in_one_line_only_when_text_is_tokenized(
        monkeypatch, hf_text_model):
    import importlib.util

    from neuronscope.probing.zeroshot import tokenize

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *args: None if name == "transformers" else real_find_spec(name, *args))
    assert image_embedding(hf_text_model, torch.randn(1, 3, 64, 64)).shape == (1, 64)  # the image side works
    with pytest.raises(NeuronscopeError) as info:
        tokenize(hf_text_model, TEXTS)
    message = str(info.value)
    assert "\n" not in message and HF_NAME in message and "pip install transformers" in message


def test_a_hf_tokenizer_is_read_from_the_local_cache_only(monkeypatch, hf_text_model, tiny_rn):
    from dataclasses import replace

    from neuronscope.probing.zeroshot import tokenize

    calls = _fake_transformers(monkeypatch)
    with pytest.raises(NeuronscopeError) as info:
        tokenize(hf_text_model, TEXTS)
    message = str(info.value)
    assert "\n" not in message and "could not be loaded from the local cache" in message
    assert f"hf download {HF_NAME}" in message
    assert calls == [{"name": HF_NAME, "cache_dir": None, "local_files_only": True}]
    # A registry name goes through open_clip.get_tokenizer, also without a download.
    siglip = replace(tiny_rn, spec=get_architecture("ViT-B-16-SigLIP").spec("random"))
    with pytest.raises(NeuronscopeError, match="'timm/ViT-B-16-SigLIP', which could not be loaded"):
        tokenize(siglip, TEXTS)
    assert calls[-1]["name"] == "timm/ViT-B-16-SigLIP" and calls[-1]["local_files_only"] is True


def test_a_hf_tokenizer_at_hand_is_the_one_used(monkeypatch, hf_text_model):
    from neuronscope.probing.zeroshot import tokenize

    _fake_transformers(monkeypatch, _WordLengths())
    tokens = tokenize(hf_text_model, ["a bb ccc"])
    assert tokens.shape == (1, 77) and tokens[0, :4].tolist() == [1, 2, 3, 0]


def test_an_open_clip_folder_reads_its_hf_tokenizer_from_itself(tmp_path, hf_text_model):
    folder = write_open_clip_dir(tmp_path / "hf-text", hf_text_model)
    assert load_model("tiny-rn-hf-text", weights=folder).spec.text_tokenizer.hf_name == str(folder)


def test_a_module_with_another_vocabulary_has_no_tokenizer_to_guess(tiny_rn):
    import open_clip

    from neuronscope.probing.zeroshot import tokenize

    preprocess = Preprocess(image_size=64)
    clip_vocab = load_model(open_clip.CLIP(**TINY_RN), preprocess=preprocess)
    assert torch.equal(tokenize(clip_vocab, TEXTS), open_clip.tokenize(TEXTS))
    other = load_model(open_clip.CLIP(**TINY_HF_TEXT), preprocess=preprocess)
    assert image_embedding(other, torch.randn(1, 3, 64, 64)).shape == (1, 64)
    with pytest.raises(NeuronscopeError) as info:
        tokenize(other, TEXTS)
    assert "\n" not in str(info.value) and "1000 tokens, not CLIP's BPE's 49408" in str(info.value)


def test_a_tower_that_returns_its_tokens_too_is_encoded_as_its_embedding():
    """CoCa's image tower returns (embedding, tokens); zeroshot, attack and attribute read encode_images and
    failed on the tuple ('tuple' object has no attribute 'float')."""
    from neuronscope.probing.zeroshot import encode_pixels

    class EmbeddingAndTokens(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.proj = nn.Conv2d(3, 4, 8, stride=8)

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            tokens = self.proj(x).flatten(2).transpose(1, 2)  # [B, 4, 4]
            return tokens.mean(dim=1), tokens

    model = load_model(EmbeddingAndTokens(), preprocess=Preprocess(image_size=16))
    pixels = torch.rand(3, 3, 16, 16)
    embedding = model.encode_images(pixels)
    assert embedding.shape == (3, 4)
    assert torch.allclose(embedding, model.module(pixels)[0])
    assert encode_pixels(model, pixels, batch_size=2).shape == (3, 4)


def test_a_weights_file_takes_the_contract_its_architectures_tags_share():
    """A state dict does not say how its model sees; a file of MobileCLIP-S1 or SigLIP took the random spec's
    OpenAI mean and std (wrongly normalised pixels for both), and one of RN50x4's only (OpenAI) weights GELU."""
    mobile, guessed = get_architecture("MobileCLIP-S1").spec_for_file("sha256:0123456789ab")
    assert (mobile.preprocess.mean, mobile.preprocess.std, mobile.preprocess.interpolation) == \
        ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0), "bilinear") and guessed == []
    assert mobile.key == "MobileCLIP-S1@sha256:0123456789ab"
    siglip, _ = get_architecture("ViT-B-16-SigLIP").spec_for_file("sha256:0123456789ab")
    assert siglip.preprocess.mean == (0.5, 0.5, 0.5) and siglip.preprocess.resize_mode == "squash"
    assert get_architecture("RN50x4").spec_for_file("sha256:0123456789ab")[0].activation == "quick_gelu"
    vit, guessed = get_architecture("ViT-B-32").spec_for_file("sha256:0123456789ab")  # openai QuickGELU, LAION GELU
    assert guessed == ["activation"] and vit.activation == get_architecture("ViT-B-32").spec("random").activation


def test_a_hugging_face_text_tower_is_built_offline_or_refused_in_one_line(monkeypatch):
    """roberta-ViT-B-32 & co.: open_clip reads the text model's config from the hub even for random weights
    (`random` reached the network), and without transformers `layers` failed with open_clip's RuntimeError."""
    import importlib.util

    import huggingface_hub.constants

    from neuronscope.models.openclip import hf_text_tower

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *args: None if name == "transformers" else real_find_spec(name, *args))
    with pytest.raises(NeuronscopeError, match=r"'roberta-base'.*pip install transformers"):
        load_model("roberta-ViT-B-32", weights="random")

    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *args: object())  # transformers "installed"
    before = huggingface_hub.constants.HF_HUB_OFFLINE
    with pytest.raises(NeuronscopeError, match=r"not in the local cache.*hf download roberta-base"):
        with hf_text_tower("roberta-ViT-B-32", {"hf_model_name": "roberta-base"}):
            assert huggingface_hub.constants.HF_HUB_OFFLINE is True  # no request can leave while it builds
            raise OSError("We couldn't connect to 'https://huggingface.co'")
    assert huggingface_hub.constants.HF_HUB_OFFLINE == before
    monkeypatch.setenv("NEURONSCOPE_OFFLINE", "0")
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    with hf_text_tower("roberta-ViT-B-32", {"hf_model_name": "roberta-base"}, may_download=True):
        assert huggingface_hub.constants.HF_HUB_OFFLINE == before  # a downloading tag was named: its config may come
    monkeypatch.setenv("NEURONSCOPE_OFFLINE", "1")
    with hf_text_tower("roberta-ViT-B-32", {"hf_model_name": "roberta-base"}, may_download=True):
        assert huggingface_hub.constants.HF_HUB_OFFLINE is True
