"""New prompts in the microscope's search (``serve --model M``): text → units through the text tower.

The atlas alone can only match stored words, labels and texts. With the
atlas's model loaded, a prompt the atlas never saw is attributed to the units
of every layer the atlas holds for that model, with
:func:`neuronscope.probing.attribution.attribute_texts`: for every layer, a
no-grad forward of the image sample and one backward pass per prompt over it
(so the cost grows with the layers the atlas holds; seconds on a CPU for the
mini CLIP's one layer).
Results are cached per prompt; one attribution runs at a time.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

from neuronscope.errors import NeuronscopeError

#: Units listed per layer, and prompts remembered.
TOP_UNITS = 20
CACHE_SIZE = 128


class PromptAttributor:
    """Attributes prompts to the units of ``layers`` of a loaded model (a :class:`LoadedModel`)."""

    def __init__(self, model: Any, layers: list[str]) -> None:
        from neuronscope.probing.attribution import default_image_sample

        if not layers:
            raise NeuronscopeError(f"the atlas holds no layer of {model.key}: --model must be the atlas's model")
        _ = model.tokenizer  # a tokenizer that cannot load fails the server's start, not every search
        self.model = model
        self.layers = layers
        self.sample = default_image_sample(preprocess=model.preprocess)
        self._cache: OrderedDict[str, list[dict[str, Any]]] = OrderedDict()
        self._lock = threading.Lock()

    def attribute(self, prompt: str) -> list[dict[str, Any]]:
        """``[{"model", "layer", "prompt", "units": [{"unit", "score"}]}]``, one per layer, best units first."""
        from neuronscope.probing.attribution import attribute_texts

        prompt = prompt.strip()
        with self._lock:  # torch runs one backward at a time here; a second request waits (or hits the cache)
            if prompt not in self._cache:
                self._cache[prompt] = [attribute_texts(self.model, layer, [prompt], self.sample).to_json(0, TOP_UNITS)
                                       for layer in self.layers]
                while len(self._cache) > CACHE_SIZE:
                    self._cache.popitem(last=False)
            self._cache.move_to_end(prompt)
            return self._cache[prompt]
