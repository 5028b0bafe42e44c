"""Helpers the test modules share, so that no test module imports another: random BatchNorms, hook counts,
model folders, image files good and broken, the scan tests' layers and settings, a small clipart tree, tiny
timm trunks, the caller's train mode and random states."""

from __future__ import annotations

import io
import json
import random
import struct
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from neuronscope.atlas import Atlas
from neuronscope.mining import ScanSettings
from neuronscope.models import LoadedModel
from neuronscope.world.concepts import Concept


def randomize_last_bn(module: nn.Module, seed: int = 0) -> None:
    """Give every block's bn3 random weights/biases (open_clip zero-inits them)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, child in module.named_modules():
            if name.endswith(".bn3") and ".layer" in name and isinstance(child, nn.BatchNorm2d):
                child.weight.copy_(torch.randn(child.weight.shape, generator=generator) * 0.5 + 0.2)
                child.bias.copy_(torch.randn(child.bias.shape, generator=generator) * 0.1)


def hook_count(module: nn.Module) -> int:
    """All forward hooks and pre-hooks registered on ``module`` and its children."""
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in module.modules())


def write_config_dir(directory: Path, model: LoadedModel, *, fp16: bool = True) -> Path:
    """A model folder in the mini CLIP's layout: config.json + weights.safetensors."""
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    config = {"model_cfg": dict(model.spec.model_cfg), "preprocess": {
        "image_size": model.preprocess.image_size[0], "mean": list(model.preprocess.mean),
        "std": list(model.preprocess.std), "interpolation": "bicubic"}}
    (directory / "config.json").write_text(json.dumps(config))
    dtype = torch.float16 if fp16 else torch.float32
    state = {k: (v.detach().to(dtype) if v.is_floating_point() else v).contiguous()
             for k, v in model.module.state_dict().items()}
    save_file(state, str(directory / "weights.safetensors"))
    return directory


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def noise(height: int = 30, width: int = 50, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8))


def unusual_files() -> dict[str, bytes]:
    """Valid images in modes a scan must convert: name -> bytes (each 50 wide, 30 high as displayed)."""
    rgb = noise()
    palette = rgb.convert("P")
    frames = [Image.new("RGB", (50, 30), colour) for colour in ((255, 0, 0), (0, 255, 0))]
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display": stored 30 wide, 50 high
    return {
        "cmyk.jpg": encode(rgb.convert("CMYK"), "JPEG"),
        "sixteen.png": encode(Image.fromarray(np.full((30, 50), 40000, np.uint16)), "PNG"),
        "grey.png": encode(rgb.convert("L"), "PNG"),
        "palette.png": encode(palette, "PNG", transparency=0),
        "animated.gif": encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100),
        "rotated.jpg": encode(noise(50, 30), "JPEG", exif=exif),
        "grey_alpha.png": encode(rgb.convert("LA"), "PNG"),
    }


def broken_files() -> dict[str, tuple[bytes, str]]:
    """name -> (bytes, the reason a scan must give)."""
    png = encode(noise(), "PNG")
    tiff = bytearray(encode(noise(40, 40), "TIFF", compression="tiff_lzw"))
    tiff[200:260] = b"\xff" * 60  # LZW stream garbled: the decoder fails outright
    return {
        "empty.png": (b"", "zero_byte"),
        "half.png": (png[: len(png) // 2], "truncated"),
        "notes.png": (b"not an image at all", "not_image"),
        "garbled.tif": (bytes(tiff), "unreadable"),
    }


# ----------------------------------------------------------------- the scan tests'

LAYERS = ["neurons", "visual.layer3.0"]
NEURONS = "visual.layer4.1.act3:input"
SETTINGS = ScanSettings(top_k=5, bottom_k=3, n_bins=16, reservoir=2, seed=0)


def make_images(folder: Path, count: int = 24) -> list[Path]:
    """``count`` small non-square PNGs (two folders), each with a bright blob somewhere."""
    paths = []
    for index in range(count):
        image = np.asarray(noise(40 + index % 5, 56, seed=index)).copy() // 3
        top, left = (index * 7) % 30, (index * 11) % 40
        image[top:top + 12, left:left + 14] = 255 - index * 5
        path = folder / ("b" if index % 3 else "a") / f"img{index:02d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(path)
        paths.append(path)
    return paths


def dump(atlas_dir: Path, layer: str, units) -> list[dict]:
    with Atlas(atlas_dir, create=False) as atlas:
        return [atlas.unit(None, layer, unit) for unit in units]


# ----------------------------------------------------------------- the world tests'

CLIPART_CONCEPTS = (Concept("cat", ("animals/cats",)), Concept("dog", ("animals/dogs", "animals/dogs/puppies")))


def blob_drawing(seed: int) -> Image.Image:
    """A distinct small RGBA drawing: a coloured blob on transparency."""
    rng = np.random.default_rng(seed)
    pixels = np.zeros((32, 40, 4), np.uint8)
    top, left = rng.integers(0, 12, size=2)
    pixels[top:top + 16, left:left + 20, :3] = rng.integers(0, 200, size=3)
    pixels[top:top + 16, left:left + 20, 3] = 255
    return Image.fromarray(pixels, "RGBA")


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` pixels (valid CRCs, almost no data)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


def make_clipart_tree(tmp_path: Path) -> Path:
    """A small clipart tree under ``tmp_path / 'png'``: cats, dogs and puppies, and one bad file of each kind
    the world builder must skip (zero bytes, truncated, a 20-megapixel header, not an image, a missing
    link target, a placeholder copied 5 times, a plain repeat)."""
    root = tmp_path / "png"
    cats, dogs, puppies = root / "animals/cats", root / "animals/dogs", root / "animals/dogs/puppies"
    for folder in (cats, dogs, puppies):
        folder.mkdir(parents=True)
    for i in range(16):
        blob_drawing(i).save(cats / f"cat_{i:02d}.png")
    for i in range(10):
        blob_drawing(100 + i).save(dogs / f"dog_{i:02d}.png")
    for i in range(8):
        blob_drawing(200 + i).save(puppies / f"puppy_{i:02d}.png")
    # Bad files, one of each kind the issue names, plus a plain repeat.
    (cats / "empty.png").write_bytes(b"")
    whole = (cats / "cat_00.png").read_bytes()
    (cats / "truncated.png").write_bytes(whole[: len(whole) // 2])
    (cats / "bomb.png").write_bytes(png_claiming(5000, 4000))  # 20 megapixels, by its header
    (cats / "notes.png").write_text("not an image at all")
    (dogs / "gone.png").symlink_to(tmp_path / "nowhere.png")
    placeholder = blob_drawing(999)
    for i in range(5):
        placeholder.save(dogs / f"linked_image_not_found_{i}.png")
    (dogs / "dog_00_copy.png").write_bytes((dogs / "dog_00.png").read_bytes())
    return root


# ----------------------------------------------------------------- a channels-last model

class ChannelsLastBlock(nn.Module):
    """A ConvNeXt block in miniature (timm's layout): a conv on [B, C, H, W], then LayerNorm and an MLP
    on [B, H, W, C], permuted back. Hidden width 12 and a 3x4 grid: no dim is mistaken for another."""

    def __init__(self, channels: int = 6, hidden: int = 12) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, channels, 4, stride=4)
        self.norm = nn.LayerNorm(channels)
        self.fc1 = nn.Linear(channels, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, channels)
        self.out = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x).permute(0, 2, 3, 1)  # [B, H, W, C]
        x = self.fc2(self.act(self.fc1(self.norm(x))))
        return self.out(x.permute(0, 3, 1, 2))  # [B, C, H, W]


def channels_last_model() -> LoadedModel:
    """:class:`ChannelsLastBlock` loaded as a model (12 x 16 px input), seeded."""
    from neuronscope.models import Preprocess, load_model

    torch.manual_seed(0)
    return load_model(ChannelsLastBlock(), preprocess=Preprocess(image_size=(12, 16)))


# ----------------------------------------------------------------- tiny timm trunks

class TimmTower(nn.Module):
    """open_clip's ``TimmModel`` in miniature: a timm model as ``visual.trunk``."""

    def __init__(self, trunk: nn.Module) -> None:
        super().__init__()
        self.trunk = trunk

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.trunk(x)


class TimmClip(nn.Module):
    def __init__(self, trunk: nn.Module) -> None:
        super().__init__()
        self.visual = TimmTower(trunk)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.visual(x)


def timm_trunks() -> dict[str, nn.Module]:
    """Tiny random timm trunks of the kinds open_clip wraps (SigLIP-like ViT, EVA02, Swin, ConvNeXt, FastViT)."""
    from timm.models.convnext import ConvNeXt
    from timm.models.eva import Eva
    from timm.models.fastvit import FastVit
    from timm.models.swin_transformer import SwinTransformer
    from timm.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    return {
        "vit": VisionTransformer(img_size=16, patch_size=4, embed_dim=8, depth=2, num_heads=2, num_classes=0,
                                 class_token=False, global_pool="map"),
        "eva": Eva(img_size=16, patch_size=4, embed_dim=8, depth=2, num_heads=2, num_classes=0, swiglu_mlp=True,
                   scale_mlp=True, mlp_ratio=2),
        "swin": SwinTransformer(img_size=32, patch_size=4, window_size=2, embed_dim=8, depths=(1, 2),
                                num_heads=(1, 1), num_classes=0),
        "convnext": ConvNeXt(depths=(1, 1, 1, 2), dims=(8, 8, 8, 16), kernel_sizes=3, num_classes=0),
        "fastvit": FastVit(layers=(1, 1), embed_dims=(8, 16), mlp_ratios=(2, 2), downsamples=(False, True),
                           token_mixers=("repmixer", "repmixer"), num_classes=0),
    }



def rng_states() -> tuple:
    """The caller's global random states (torch, NumPy, Python), for :func:`same_rng` to compare."""
    return torch.random.get_rng_state().clone(), np.random.get_state()[1].copy(), random.getstate()


def same_rng(before: tuple) -> bool:
    """Whether the global random states are still those :func:`rng_states` saw."""
    torch_state, numpy_state, python_state = rng_states()
    return (torch.equal(before[0], torch_state) and np.array_equal(before[1], numpy_state)
            and before[2] == python_state)


@contextmanager
def training(module: nn.Module) -> Iterator[None]:
    """Put ``module`` in train mode for the block, and check at its end that whatever ran inside (a library
    entry point) changed no buffer (BatchNorm running statistics) and gave every submodule its train mode
    back; the module leaves in eval mode, as the fixtures hand it out."""
    module.train()
    buffers = {name: buffer.clone() for name, buffer in module.named_buffers()}
    try:
        yield
        changed = [name for name, buffer in module.named_buffers() if not torch.equal(buffers[name], buffer)]
        assert not changed, f"buffers changed in train mode: {changed[:3]}"
        assert all(child.training for child in module.modules()), "the caller's train mode was not restored"
    finally:
        module.eval()
