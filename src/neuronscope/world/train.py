"""Training the mini CLIP from scratch on the world, contrastively, on captions only.

The image tower is open_clip's ModifiedResNet (so the paper's layer
conventions apply), the text tower a small transformer with the real BPE
tokenizer. Samples whose captions name the same concept (or the same
reading word) count as positives of each other (soft targets); nothing else
tells the model what a concept is, so no unit is planted.

Checkpoints are written atomically every few minutes; ``train`` started
again on the same directory resumes from the last one, and because every
batch is a function of its step the result does not depend on where it
stopped.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from ..atlas.runs import ctrl_c_held
from ..errors import WorldFileMissing, WorldMismatch
from ..models.preprocess import Preprocess
from .recipe import TrainConfig
from .sampler import BatchStream, check_fonts

logger = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"
#: The keys of a training checkpoint (``export_weights`` needs "config" and "model").
CHECKPOINT_KEYS = ("model", "optimizer", "step", "log", "config")


def build_model(config: TrainConfig) -> torch.nn.Module:
    """A randomly initialised mini CLIP (seeded by ``config.seed``)."""
    import open_clip

    torch.manual_seed(config.seed)
    return open_clip.model.CLIP(**config.model_cfg())


def soft_target_loss(image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor,
                     keys: torch.Tensor) -> torch.Tensor:
    """Symmetric contrastive loss where samples with equal keys are all positives.

    image_features, text_features: [B, D] L2-normalised; keys: [B] concept keys.
    """
    logits = logit_scale * image_features @ text_features.T  # [B, B]
    positives = (keys[:, None] == keys[None, :]).float()
    targets = positives / positives.sum(dim=1, keepdim=True)
    return 0.5 * (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets))


def normalise(images: torch.Tensor, preprocess: Preprocess) -> torch.Tensor:
    """uint8 [B, H, W, 3] → float [B, 3, H, W], normalised as ``preprocess`` says (CLIP's mean and std).

    ``Preprocess.normalize`` runs the float32 ops this always ran, ``(x - mean) / std`` with the constants
    made float32 tensors on x's device, so the trained weights do not change by a bit.
    """
    return preprocess.normalize(images.permute(0, 3, 1, 2).float().div_(255))


def learning_rate(config: TrainConfig, step: int) -> float:
    """Linear warm-up, then cosine decay to zero."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    return 0.5 * config.lr * (1 + math.cos(math.pi * progress))


def _optimizer(model: torch.nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=config.lr)


def _save_atomic(state: dict, path: Path) -> None:
    """Write ``state`` to ``path`` whole or not at all (a kill or a full disk leaves the previous checkpoint)."""
    tmp = path.with_suffix(".tmp")
    try:
        # Through a Python file, not the path: on a full disk torch's own writer raises a bare RuntimeError
        # ("unexpected pos ..."); with a Python file the OSError (ENOSPC) is raised, or is that RuntimeError's
        # context, and the command line finds it there and explains it.
        with open(tmp, "wb") as file:
            torch.save(state, file)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a partial file would hold the space the next try needs
        raise


@dataclass
class TrainProgress:
    """What the trainer reports after each step."""

    step: int
    steps: int
    loss: float
    seconds_per_step: float


#: The key of ``config.json`` that pins the world a run trains on (sha256 of its ``world.json``).
WORLD_KEY = "world_sha256"


def _world_sha256(world_dir: str | Path) -> str:
    """sha256 of a world's ``world.json`` (its concepts, drawings with their hashes and split, reading words)."""
    world_dir = Path(world_dir)
    missing = [name for name in ("world.json", "drawings.npz") if not (world_dir / name).is_file()]
    if missing:
        raise WorldFileMissing(f"{world_dir} is not a world (no {' or '.join(missing)}); build one with "
                                "`neuronscope world build --out DIR` (`make world`)")
    return hashlib.sha256((world_dir / "world.json").read_bytes()).hexdigest()


def train(world_dir: str | Path, out_dir: str | Path, config: TrainConfig,
          on_step: Callable[[TrainProgress], None] | None = None, *, device: str = "cpu",
          loader_workers: int = 1) -> Path:
    """Train (or resume) into ``out_dir``; returns the path of the final checkpoint.

    ``out_dir/config.json`` pins the config: resuming with a different one is an error. ``device``
    and ``loader_workers`` (processes rendering batches) change speed, not the batches; weights
    trained on a GPU are close to, not bit-equal to, the CPU's.
    """
    world_sha = _world_sha256(world_dir)  # checked before anything is written
    check_fonts(config.mix)  # here, not in a DataLoader worker, whose error would lose the advice
    if loader_workers < 1:
        raise WorldMismatch(f"--loader-workers {loader_workers}: give at least 1 (processes rendering batches)")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    config_path = out_dir / "config.json"
    config_dict = json.loads(json.dumps(asdict(config)))
    if config_path.exists():
        saved = json.loads(config_path.read_text())
        # How often to checkpoint does not change the weights: it may differ on resume.
        saved.pop("checkpoint_seconds", None)
        saved.setdefault("augment", False)  # runs from before the option trained without it
        saved_world = saved.pop(WORLD_KEY, None)  # runs from before the key: not checked
        if saved_world is not None and saved_world != world_sha:
            raise WorldMismatch(f"{out_dir} holds a run trained on another world than {world_dir} (its world.json "
                             "differs); use a new --out, or the world it was trained on")
        differences = config_differences(saved, {k: v for k, v in config_dict.items() if k != "checkpoint_seconds"})
        if differences:
            raise WorldMismatch(f"{out_dir} holds a run with another config ({'; '.join(differences)}); "
                                "use a new --out or the same settings")
    else:
        config_path.write_text(json.dumps({**asdict(config), WORLD_KEY: world_sha}, indent=1))

    model = build_model(config).to(device=device, memory_format=torch.channels_last)
    optimizer = _optimizer(model, config)
    checkpoint_path = out_dir / CHECKPOINT
    start_step, log = 0, []
    if checkpoint_path.exists():
        state = read_checkpoint(checkpoint_path, device)
        if state["step"] >= config.steps:
            return checkpoint_path  # trained already: saving it again would rewrite the same weights
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start_step, log = state["step"], state["log"]
    model.train()

    stream = BatchStream(world_dir, config.image_size, config.seed, config.mix, config.batch_size,
                         start_step, config.steps, config.context_length, config.augment)
    loader = torch.utils.data.DataLoader(stream, batch_size=None, num_workers=loader_workers, prefetch_factor=4,
                                         pin_memory=device != "cpu")
    preprocess = Preprocess.from_dict(config.preprocess())
    last_save = time.monotonic()
    started = time.monotonic()
    seconds_before = log[-1]["seconds"] if log else 0.0  # training time of earlier segments

    def save(step: int) -> None:
        _save_atomic({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
                      "log": log, "config": asdict(config)}, checkpoint_path)

    done = start_step  # the steps the model and optimizer hold
    try:
        for step, images, tokens, keys in loader:
            assert step == done, f"batch {step} arrived where {done} was due"
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(config, step)
            batch = [t.to(device, non_blocking=True) for t in (images, tokens, keys)]
            loss = _loss_and_gradients(model, optimizer, batch, preprocess, config.precision == "bf16")
            with ctrl_c_held():  # a Ctrl-C here would leave the parameters half-updated, and save them
                optimizer.step()
                with torch.no_grad():
                    model.logit_scale.clamp_(0, math.log(100))
                seconds = (time.monotonic() - started) / (step + 1 - start_step)
                log.append({"step": step, "loss": round(loss.item(), 5),
                            "seconds": round(seconds_before + time.monotonic() - started, 2)})
                done = step + 1
            if on_step is not None:
                on_step(TrainProgress(step + 1, config.steps, log[-1]["loss"], seconds))
            if time.monotonic() - last_save > config.checkpoint_seconds:
                save(step + 1)
                last_save = time.monotonic()
    except KeyboardInterrupt:
        if done > start_step:  # checkpoints are minutes apart: keep the steps since the last
            save(done)
            logger.warning("interrupted: saved step %d of %d in %s; the same command resumes there",
                           done, config.steps, checkpoint_path)
        raise
    save(config.steps)
    return checkpoint_path




def _loss_and_gradients(model: torch.nn.Module, optimizer: torch.optim.Optimizer, batch: list[torch.Tensor],
                        preprocess: Preprocess, bf16: bool) -> torch.Tensor:
    """One batch's loss, with its gradients in the model (the step itself is the caller's)."""
    images, tokens, keys = batch
    x = normalise(images, preprocess).contiguous(memory_format=torch.channels_last)
    with torch.autocast(images.device.type, dtype=torch.bfloat16, enabled=bf16):
        image_features, text_features, logit_scale = model(x, tokens)
        loss = soft_target_loss(image_features.float(), text_features.float(), logit_scale.float(), keys)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    return loss


def config_differences(saved: dict, given: dict, prefix: str = "") -> list[str]:
    """``"steps: 20 in the run, 40 given"`` for every key whose value differs (nested keys as ``mix.word``)."""
    differences = []
    for key in sorted(saved.keys() | given.keys()):
        was, now = saved.get(key), given.get(key)
        if isinstance(was, dict) and isinstance(now, dict):
            differences += config_differences(was, now, f"{prefix}{key}.")
        elif was != now:
            differences.append(f"{prefix}{key}: {was} in the run, {now} given")
    return differences


def is_checkpoint(state: object) -> bool:
    """Whether a loaded ``.pt`` is a training checkpoint (rather than, say, a plain state dict)."""
    return isinstance(state, dict) and all(key in state for key in CHECKPOINT_KEYS)


def read_checkpoint(path: str | Path, device: str = "cpu") -> dict:
    """A training checkpoint, read as plain data (``weights_only``: never run code from a pickle)."""
    state = torch.load(path, map_location=device, weights_only=True)
    if not is_checkpoint(state):
        raise WorldMismatch(f"{path} is not a `world train` checkpoint (one holds {', '.join(CHECKPOINT_KEYS)})")
    return state


def training_checkpoint(path: str | Path) -> dict | None:
    """The training checkpoint at ``path``, or None when the file is something else (a state dict,
    a TorchScript archive, not a torch file at all), which the model loader reads or explains."""
    from ..models.weights import is_torchscript

    if is_torchscript(path):
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - not a plain-data torch file: the loader says what it is
        return None
    return state if is_checkpoint(state) else None


def export_weights(checkpoint_path: str | Path, out_dir: str | Path) -> None:
    """Write ``config.json`` and fp16 ``weights.safetensors`` (the bundled format) from a checkpoint."""
    write_model_folder(read_checkpoint(checkpoint_path), out_dir)


def write_model_folder(state: dict, out_dir: str | Path) -> None:
    """A training checkpoint's ``state`` as a model folder: ``config.json`` and fp16 ``weights.safetensors``."""
    from safetensors.torch import save_file

    config = TrainConfig.from_dict(state["config"])
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    weights = {name: tensor.to(torch.float16) if tensor.is_floating_point() else tensor
               for name, tensor in state["model"].items()}
    save_file({k: v.contiguous() for k, v in weights.items()}, str(out_dir / "weights.safetensors"))
    meta = {"model_cfg": config.model_cfg(), "preprocess": config.preprocess(), "train_config": state["config"],
            "steps_trained": state["step"], "train_seconds": state["log"][-1]["seconds"] if state["log"] else None}
    (out_dir / "config.json").write_text(json.dumps(meta, indent=1))
