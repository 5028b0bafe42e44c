"""Atlas objects that display as HTML cards in Jupyter (``_repr_html_``), as the microscope shows them.

    from neuronscope.atlas import Atlas
    from neuronscope.web import layer_view, unit_view
    with Atlas("my-atlas", read_only=True) as atlas:
        unit_view(atlas, "mini-clip", "neurons", 473)      # feature vis, top examples, words inline
        layer_view(atlas, "mini-clip", "neurons")          # the first units of the layer's grid

The records are read when the view is made (a view outlives its ``Atlas``);
the images are read from the atlas folder when the card is displayed and
inlined as data URIs, so a saved notebook keeps them. A view holds the
folder's absolute path: a notebook that changes directory still finds them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from neuronscope.atlas import Atlas, reading
from neuronscope.atlas.browse import layer_grid
from neuronscope.web import pages
from neuronscope.web.links import InlineLinks

#: Units a layer card shows (the microscope pages the rest).
LAYER_CARD_UNITS = 48


@dataclass
class UnitView:
    """One unit of an atlas: ``record`` is :meth:`Atlas.unit`'s object; displays as the unit page's card."""

    atlas_path: Path
    models: list[str]
    data: dict[str, Any] = field(repr=False)

    @classmethod
    def read(cls, atlas: Atlas, model: str | None, layer: str, unit: int) -> "UnitView":
        model_key = atlas.resolve_model(model)
        return cls(atlas.path.resolve(), atlas.models(), pages.unit_data(atlas, model_key, layer, unit))

    @property
    def record(self) -> dict[str, Any]:
        return self.data["record"]

    def __repr__(self) -> str:
        label = f" {self.record['label']!r}" if self.record["label"] else ""
        return f"UnitView({self.data['model']} {self.data['layer']} unit {self.data['unit']}{label})"

    def _repr_html_(self) -> str:
        return pages.render("notebook_unit.html", InlineLinks(self.models, self.atlas_path), **self.data)


@dataclass
class LayerView:
    """A layer's first units as grid cards (feature vis or top example, label, words)."""

    atlas_path: Path
    models: list[str]
    model: str
    layer: str
    units: int
    cards: list[dict[str, Any]] = field(repr=False)

    def __repr__(self) -> str:
        return f"LayerView({self.model} {self.layer}, {self.units} units)"

    def _repr_html_(self) -> str:
        return pages.render("notebook_layer.html", InlineLinks(self.models, self.atlas_path), model=self.model,
                            layer=self.layer, units=self.units, cards=self.cards)


def unit_view(atlas: Atlas | str | os.PathLike, model: str | None, layer: str, unit: int) -> UnitView:
    """A unit's :class:`UnitView` from an open :class:`Atlas` or an atlas directory."""
    with reading(atlas) as store:
        return UnitView.read(store, model, layer, unit)


def layer_view(atlas: Atlas | str | os.PathLike, model: str | None, layer: str,
               units: int = LAYER_CARD_UNITS) -> LayerView:
    """A layer's :class:`LayerView` (its first ``units`` cards)."""
    with reading(atlas) as store:
        model_key = store.resolve_model(model)
        entry = store.resolve_layer(model_key, layer)
        cards = layer_grid(store, model_key, entry["layer"])[:units]
        return LayerView(store.path.resolve(), store.models(), model_key, entry["layer"], entry["units"], cards)
