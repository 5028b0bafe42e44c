"""neuronscope: find and explain the neurons of CLIP models."""

__version__ = "0.1.0"
