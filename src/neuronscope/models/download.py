"""Finding pretrained weights in the local caches, and fetching them fast-or-fail.

A tag's weights are looked up where open_clip would put them (the Hugging
Face cache for ``hf_hub`` entries, ``~/.cache/clip`` for URLs) without any
network access. A download is only tried when the caller asked for those
weights by name, and it fails in seconds when the host cannot be reached:
huggingface_hub alone retries for about 46 s before giving up.
"""

from __future__ import annotations

import logging
import os
import threading
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Mapping

from neuronscope.errors import WeightsError

log = logging.getLogger(__name__)

HF_WEIGHTS = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
HF_CONFIG = "open_clip_config.json"
PROBE_SECONDS = 3.0
OFFLINE_ENV = ("NEURONSCOPE_OFFLINE", "HF_HUB_OFFLINE")


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def offline_requested() -> str | None:
    """Which of :data:`OFFLINE_ENV` forbids downloads (``"NEURONSCOPE_OFFLINE=1 is set"``), or None."""
    for name in OFFLINE_ENV:
        if _truthy(os.environ.get(name)):
            return f"{name}=1 is set"
    return None


def _hf_repo_and_files(hf_hub: str) -> tuple[str, tuple[str, ...]]:
    """open_clip writes ``org/repo/`` (default file names) or ``org/repo/file.bin``."""
    if hf_hub.endswith("/"):
        return hf_hub.rstrip("/"), HF_WEIGHTS
    repo_id, filename = os.path.split(hf_hub)
    # open_clip prefers a .safetensors twin of a .bin/.pth when the repo has one.
    alternatives = (filename[:-4] + ".safetensors",) if filename.endswith((".bin", ".pth")) else ()
    return repo_id, (*alternatives, filename)


def _from_hf_cache(repo_id: str, filename: str, cache_dir: str | os.PathLike | None) -> Path | None:
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, filename, cache_dir=cache_dir)
    return Path(found) if isinstance(found, str) and os.path.isfile(found) else None


def find_cached(pretrained_cfg: Mapping[str, Any], cache_dir: str | os.PathLike | None = None) -> Path | None:
    """The local file of a pretrained entry (open_clip's ``url``/``hf_hub`` cfg), or None. No network."""
    if pretrained_cfg.get("file"):
        path = Path(pretrained_cfg["file"]).expanduser()
        return path if path.is_file() else None
    hf_hub = pretrained_cfg.get("hf_hub", "")
    if hf_hub:
        repo_id, filenames = _hf_repo_and_files(hf_hub)
        for filename in filenames:
            found = _from_hf_cache(repo_id, filename, cache_dir)
            if found is not None:
                return found
    url = pretrained_cfg.get("url", "")
    if url:
        # open_clip's download_pretrained_from_url stores <cache>/<basename of url>.
        folder = Path(cache_dir) if cache_dir else Path("~/.cache/clip").expanduser()
        candidate = folder / os.path.basename(urllib.parse.urlparse(url).path)
        if candidate.is_file():
            return candidate
    return None


def find_cached_repo(repo_id: str, cache_dir: str | os.PathLike | None = None, need_weights: bool = True) -> Path | None:
    """The cached snapshot folder of an ``hf-hub:`` repo (config, and weights if asked), or None."""
    config = _from_hf_cache(repo_id, HF_CONFIG, cache_dir)
    if config is None:
        return None
    if need_weights and not any(_from_hf_cache(repo_id, name, cache_dir) for name in HF_WEIGHTS):
        return None
    return config.parent


# --------------------------------------------------------------------------- network


def unreachable_reason(url: str, timeout: float = PROBE_SECONDS) -> str | None:
    """None if ``url`` answers an HTTP HEAD within ``timeout`` s (any status), else why not.

    An HTTP request, not a bare TCP connect: some networks accept every
    connection and then never answer. urllib honours the usual proxy
    variables. The probe runs in a daemon thread so that a hanging DNS lookup
    or TLS handshake cannot hold the caller past ``timeout``.
    """
    if reason := offline_requested():
        return reason
    if not url:
        return "no download location is known"
    outcome: list[str | None] = []

    def probe() -> None:
        try:
            urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout).close()
            outcome.append(None)
        except urllib.error.HTTPError:
            outcome.append(None)  # the server answered; the download will say more
        except (urllib.error.URLError, OSError, ValueError) as err:
            reason = getattr(err, "reason", err)
            outcome.append(f"{urllib.parse.urlparse(url).netloc} unreachable: {reason}")

    worker = threading.Thread(target=probe, name="neuronscope-net-probe", daemon=True)
    worker.start()
    worker.join(timeout + 0.5)
    if not outcome:
        return f"{urllib.parse.urlparse(url).netloc} did not answer within {timeout:.0f} s"
    return outcome[0]


def _hf_endpoint() -> str:
    from huggingface_hub import constants

    return constants.ENDPOINT


def missing_weights_message(what: str, reason: str, name: str) -> str:
    """One message for every missing download: what, why, and how to give a local file."""
    return (
        f"weights {what} are not in the local cache and cannot be downloaded now ({reason}). "
        f"Pass a local file instead: --weights PATH (Python: load_model({name!r}, weights='PATH')), "
        f"or --weights random for random init"
    )


def missing_config_message(repo_id: str, reason: str) -> str:
    """The repo's architecture config is missing: what random weights still need, and the ways out."""
    return (
        f"hf-hub:{repo_id}: its architecture config ({HF_CONFIG}) is not in the local cache and cannot be "
        f"downloaded now ({reason}); random weights or a local file still need it. Fetch it once while online, "
        f"or use a registered architecture: --model NAME --weights random (`neuronscope models` lists them)"
    )


def fetch_pretrained(pretrained_cfg: Mapping[str, Any], what: str, name: str,
                     cache_dir: str | os.PathLike | None = None) -> Path:
    """Download a tag's weights (explicitly asked for), failing within seconds when offline."""
    import open_clip

    url = _hf_endpoint() if pretrained_cfg.get("hf_hub") else pretrained_cfg.get("url", "")
    reason = unreachable_reason(url)
    if reason is not None:
        raise WeightsError(missing_weights_message(what, reason, name))
    log.warning("downloading %s (not in the local cache)", what)
    try:
        return Path(open_clip.download_pretrained(dict(pretrained_cfg), cache_dir=str(cache_dir) if cache_dir else None))
    except Exception as err:  # noqa: BLE001 - network and hub errors all mean "not downloaded"
        raise WeightsError(missing_weights_message(what, f"download failed: {err}", name)) from err


def fetch_repo(repo_id: str, name: str, cache_dir: str | os.PathLike | None = None, need_weights: bool = True) -> Path:
    """Download an ``hf-hub:`` repo's config (and weights), failing within seconds when offline."""

    def missing(reason: str) -> str:
        # Without weights asked for, only the config is missing: "--weights random" is no way out.
        if need_weights:
            return missing_weights_message(f"hf-hub:{repo_id}", reason, name)
        return missing_config_message(repo_id, reason)

    reason = unreachable_reason(_hf_endpoint())
    if reason is not None:
        raise WeightsError(missing(reason))
    from huggingface_hub import hf_hub_download

    log.warning("downloading hf-hub:%s (not in the local cache)", repo_id)
    try:
        config = Path(hf_hub_download(repo_id, HF_CONFIG, cache_dir=cache_dir))
        if need_weights:
            for filename in HF_WEIGHTS:
                try:
                    hf_hub_download(repo_id, filename, cache_dir=cache_dir)
                    break
                except Exception:  # noqa: BLE001 - try the next file name
                    if filename == HF_WEIGHTS[-1]:
                        raise
    except Exception as err:  # noqa: BLE001
        raise WeightsError(missing(f"download failed: {err}")) from err
    return config.parent
