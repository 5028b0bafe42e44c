"""Feature visualization: parameterised images optimised to maximise an objective.

    from neuronscope.models import load_model
    from neuronscope.objectives import channel
    from neuronscope.visualize import RenderConfig, render, render_units

    model = load_model("mini-clip")
    result = render(model, 0.5 * channel("neurons", 7) - channel("neurons", 9))
    renders = render_units(model, "neurons", [473, 18, 199], batch_size=16)   # one image per unit

Lucid's recipe (FFT parameterization, decorrelated colour, sigmoid, the
standard transforms, Adam lr 0.05, 512 steps, redirected ReLU for 16 steps),
fed through the model's own preprocessing contract at its input size.
Faceted renders: :mod:`neuronscope.visualize.facets`.
"""

from neuronscope.visualize.param import FFTImage, PixelImage, Upsampled, make_param
from neuronscope.visualize.relu import redirect_relus, redirected_relu
from neuronscope.visualize.render import frozen, render
from neuronscope.visualize.results import RenderConfig, RenderResult, UnitRender, png_bytes, to_pil
from neuronscope.visualize.transforms import (
    CropOrPad,
    Jitter,
    Pad,
    RandomAffine,
    Transforms,
    standard_transforms,
)
from neuronscope.visualize.units import render_diverse, render_units

__all__ = [
    "CropOrPad", "FFTImage", "Jitter", "Pad", "PixelImage", "RandomAffine", "RenderConfig",
    "RenderResult", "Transforms", "UnitRender", "Upsampled",
    "frozen", "make_param", "png_bytes", "redirect_relus", "redirected_relu", "render", "render_diverse",
    "render_units", "standard_transforms", "to_pil",
]
