"""The microscope: browse an atlas in a web browser, in a notebook, or as a static site.

    neuronscope serve ATLAS                 # http://127.0.0.1:8000/
    neuronscope export ATLAS --site DIR     # plain HTML + images for any static host

    from neuronscope.web import create_app, serve, export_site, unit_view
    unit_view("my-atlas", "mini-clip", "neurons", 473)   # an HTML card in Jupyter

Reads the atlas only (SQLite ``mode=ro``); needs ``pip install neuronscope[web]``.
"""

from neuronscope.web.app import DEFAULT_HOST, DEFAULT_PORT, create_app, serve
from neuronscope.web.export import export_site
from neuronscope.web.notebook import LayerView, UnitView, layer_view, unit_view

__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "LayerView", "UnitView", "create_app", "export_site", "layer_view",
           "serve", "unit_view"]
