"""The errors neuronscope raises for things a user can fix.

Every message says what went wrong *and* what to do next; the command line
prints it as one line (no traceback unless ``--debug``).
"""

from __future__ import annotations


class NeuronscopeError(Exception):
    """Base class of the errors whose message is meant for the user."""


class UnknownModelError(NeuronscopeError, LookupError):
    """A model name that is neither registered nor an open_clip architecture."""


class WeightsError(NeuronscopeError):
    """Weights that cannot be had: unknown tag, missing file, failed download."""


class WeightsMismatch(WeightsError):
    """Weights whose keys or shapes do not fit the architecture they were loaded into.

    ``what`` names the weights (a file, a tag) and ``details`` the keys that differ, for a caller whose own
    advice fits better than the generic "name the architecture" (a command that needs one architecture).
    """

    def __init__(self, what: str, details: str) -> None:
        self.what, self.details = what, details
        super().__init__(f"the weights in {what} do not fit this architecture: {details}. Name the architecture "
                         f"they were saved from (MODEL@PATH or --model NAME --weights PATH)")


class BundledModelMissing(WeightsError):
    """The bundled mini CLIP's files are not (yet) in the package."""


class ModelNotLoadedError(NeuronscopeError, TypeError):
    """A plain module (or a name) where a function needs a LoadedModel's contract: wrap it with load_model."""


class LayerNotFoundError(NeuronscopeError, LookupError):
    """A layer name, alias or wildcard that matches nothing in the model."""


class UnitsError(NeuronscopeError, ValueError):
    """A unit list that does not parse or does not fit the layer."""


class DeviceError(NeuronscopeError):
    """A device or precision that this machine cannot provide."""


class WorldError(NeuronscopeError):
    """A world, training run or test split (``neuronscope world ...``) that cannot be used as given."""


class WorldFileMissing(WorldError, FileNotFoundError):
    """Something the world needs is not installed or not there: a font, the clipart, wordfreq, a world's files."""


class WorldMismatch(WorldError, ValueError):
    """A world, run, checkpoint or split that does not fit the others (another config, other concepts, ...)."""
