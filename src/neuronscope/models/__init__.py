"""Models: the registry of architectures and weights, and ``load_model``.

    from neuronscope.models import load_model
    model = load_model("RN50x4", weights="openai")   # or "random", a tag, a PATH
    model.key            # "RN50x4@openai"
    model.preprocess     # Preprocess(image_size=(288, 288), mean=..., std=..., ...)
    model.layer_aliases  # {"neurons": "visual.layer4.5.act3:input", ...}
"""

from neuronscope.models.loaded import LoadedModel
from neuronscope.models.loader import DEFAULT, HUB, build, default_weights, load_model
from neuronscope.models.preprocess import OPENAI_MEAN, OPENAI_STD, Preprocess
from neuronscope.models.registry import (
    Architecture,
    get_architecture,
    list_architectures,
    register,
    split_model_name,
    unregister,
)
from neuronscope.models.spec import BUNDLED, RANDOM, ModelSpec

__all__ = [
    "BUNDLED", "DEFAULT", "HUB", "OPENAI_MEAN", "OPENAI_STD", "RANDOM",
    "Architecture", "LoadedModel", "ModelSpec", "Preprocess",
    "build", "default_weights", "get_architecture", "list_architectures", "load_model", "register", "split_model_name", "unregister",
]
