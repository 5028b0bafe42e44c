"""The Recorder: capture (and edit) chosen layers during a forward.

    with Recorder(model, ["neurons", "visual.layer3.*"], early_stop=True) as rec:
        acts = rec.run(images)          # {canonical name: tensor}, e.g.
                                        # acts["visual.layer4.5.act3:input"]  # [B, 2560, 9, 9]

Guarantees:

- only the requested (and edited) layers are hooked, plus one pre-hook per
  top-level submodule that contains them (``visual``) to mark where a
  forward starts (for a layer that *is* a top-level submodule, a pre- and
  forward hook on the root as well: the root's call is its forward);
- exactly the hooks it added are removed on exit, also when the forward
  raised; hooks of anyone else stay;
- every captured tensor is a clone: ``act3`` is an in-place ReLU, so even a
  pre-hook's input would otherwise change under us after the hook returns
  (``clone=False`` opts out, and :meth:`Recorder.run` raises when a kept
  tensor was changed in place afterwards);
- with ``early_stop`` the forward is abandoned (a private exception, caught
  by :meth:`Recorder.run`) as soon as every requested layer is captured;
- edits run before every capture of their layer, this recorder's or another's
  (their hooks are prepended), so a capture shows what flowed downstream
  whichever ``with`` was opened first;
- a hooked module that runs twice within one call of its top-level
  submodule (of the root, for a top-level layer) triggers a warning, and the
  first call is kept (as early stop would).
"""

from __future__ import annotations

import warnings
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import partial
from typing import Any

import torch
from PIL import Image
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from neuronscope.activations.edits import Edit
from neuronscope.activations.layout import CHANNELS_FIRST, Layout
from neuronscope.activations.names import LayerRef, resolve_layer, resolve_layers
from neuronscope.errors import LayerNotFoundError, NeuronscopeError
from neuronscope.models.aliases import structural_aliases
from neuronscope.models.loaded import LoadedModel, evaluating

Images = Tensor | Image.Image | Sequence[Image.Image]


_EDITING: weakref.WeakSet[Recorder] = weakref.WeakSet()
"""The recorders attached now that carry edits (see :func:`attached_edits`)."""


def attached_edits(module: nn.Module) -> list[Edit]:
    """The edits of every Recorder attached now to ``module`` or one of its submodules: a forward of
    ``module`` runs edited. Hooks are invisible from outside, so whoever stores activations as the
    model's own (a scan) asks here first."""
    inside = set(module.modules())
    return [edit for recorder in list(_EDITING) if recorder.root in inside
            for edits in recorder.edits.values() for edit in edits]


class _StopForward(Exception):
    """Raised from a hook once every requested layer is captured; caught by ``Recorder.run``."""


def _first_tensor(value: Any) -> tuple[Tensor | None, int | None]:
    """The tensor a module returned, or the first tensor of a tuple/list it returned (and its index)."""
    if isinstance(value, Tensor):
        return value, None
    if isinstance(value, (tuple, list)):
        for index, item in enumerate(value):
            if isinstance(item, Tensor):
                return item, index
    return None, None


class Recorder:
    """Capture the activations of chosen layers, and optionally edit units.

    Args:
        model: a :class:`LoadedModel` (aliases, preprocessing and precision
            come with it) or a plain ``nn.Module``.
        layers: names, aliases or wildcards (see :mod:`neuronscope.activations.names`).
        edits: :class:`Edit` s active while the recorder is attached.
        early_stop: let :meth:`run` stop the forward once all layers are captured.
        detach: store detached clones (default); ``False`` keeps them in the
            autograd graph, for objectives that need gradients.
        capture_fn: applied to each captured tensor inside the hook, e.g. a
            reduction to [B, C] so that big maps are never kept; or a mapping
            ``{layer: function}`` whose keys are names like ``layers`` (aliases,
            ``:input`` points, wildcards) of recorded layers; layers not in it
            are kept whole.
            Its result is cloned when it shares memory with the module's tensor.
        clone: ``False`` keeps the very tensor the forward goes on with (with
            ``detach=False``: gradients *with respect to the layer* then exist,
            as faceted feature visualization needs). Only for layers no
            in-place module changes afterwards (not ``act3:input``):
            :meth:`run` raises when one was.
    """

    def __init__(
        self,
        model: LoadedModel | nn.Module,
        layers: str | Sequence[str] = (),
        *,
        edits: Iterable[Edit] = (),
        early_stop: bool = False,
        detach: bool = True,
        capture_fn: Callable[[Tensor], Tensor] | Mapping[str, Callable[[Tensor], Tensor]] | None = None,
        clone: bool = True,
    ) -> None:
        if isinstance(model, LoadedModel):
            self.model: LoadedModel | None = model
            self.root = model.module
            self.aliases = model.layer_aliases
            self._key = model.key
        else:
            self.model = None
            self.root = model
            self.aliases = structural_aliases(model)
            self._key = type(model).__name__
        self.layers: list[str] = resolve_layers(self.root, layers, self.aliases, model_key=self._key) if layers else []
        self.edits: dict[str, list[Edit]] = {}
        for edit in edits:
            name = resolve_layer(self.root, edit.layer, self.aliases, model_key=self._key)
            self.edits.setdefault(name, []).append(edit)
        self._edit_layouts: dict[str, Layout | None] = {}  # of the edited 4-D layers, found on attach
        self.early_stop = early_stop
        self.detach = detach
        self.capture_fn = self._resolve_capture_fns(capture_fn) if isinstance(capture_fn, Mapping) else capture_fn
        self.clone = clone
        self.activations: dict[str, Tensor] = {}
        self._handles: list[RemovableHandle] = []
        self._calls: dict[str, int] = {}
        self._pending: set[str] = set()
        self._warned: set[str] = set()
        self._armed = False
        self._root_depth = 0  # calls of the root in progress (the boundary of top-level layers)
        self._versions: dict[str, int] = {}  # with clone=False: each kept tensor's version at capture

    def _resolve_capture_fns(self, capture_fns: Mapping[str, Callable[[Tensor], Tensor]]) -> dict[str, Callable]:
        """``{name, alias or wildcard: function}`` -> ``{recorded canonical layer: function}``.

        A key that names no recorded layer would silently keep that layer whole: an error instead.
        """
        resolved: dict[str, Callable[[Tensor], Tensor]] = {}
        for key, function in capture_fns.items():
            names = resolve_layers(self.root, key, self.aliases, model_key=self._key)
            strays = [name for name in names if name not in self.layers]
            if strays:
                named = "" if strays == [key] else f" ({', '.join(strays)})"
                raise LayerNotFoundError(f"capture_fn key {key!r}{named} is not a recorded layer; record it or drop "
                                         f"the key (recorded: {', '.join(self.layers) or 'none'})")
            resolved.update(dict.fromkeys(names, function))
        return resolved

    def __repr__(self) -> str:
        layers = ", ".join(self.layers) or "no layers"
        edited = f"; edits on {', '.join(self.edits)}" if self.edits else ""
        return f"Recorder({self._key}: {layers}{edited}{'; attached' if self.attached else ''})"

    # ------------------------------------------------------------------ attach / remove

    @property
    def attached(self) -> bool:
        return bool(self._handles)

    def __enter__(self) -> "Recorder":
        self.attach()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.remove()

    def attach(self) -> None:
        """Register the hooks (``with`` does this). Partial registration is undone on error."""
        if self._handles:
            raise RuntimeError("this Recorder is already attached; use one `with` block at a time")
        if self.edits and self.model is not None and not self._edit_layouts:
            # Before our hooks exist: the catalogue runs a forward of its own. Imported here: the
            # catalogue records with a Recorder.
            from neuronscope.activations.catalog import layer_layouts

            self._edit_layouts = layer_layouts(self.model)
        try:
            # Boundaries first: hooks of one module run in registration order, and a
            # boundary must reset the call counts before this call's capture.
            self._attach_boundaries([LayerRef.parse(name) for name in [*self.layers, *self.edits]])
            for name in self.edits:
                # Prepended: every recorder's edits run before any capture, whichever `with` opened
                # first (an outer capture shows an inner edit). The recorder attached last edits first.
                self._hook(name, self._edit, prepend=True)
            for name in self.layers:
                self._hook(name, self._capture_if_recorded, prepend=False)
        except BaseException:
            self.remove()
            raise
        if self.edits:
            _EDITING.add(self)
        self._reset()

    def _hook(self, name: str, act: Callable[[str, Tensor], Tensor], *, prepend: bool) -> None:
        """Hook layer ``name`` (an output, or an ``:input`` with a pre-hook) with ``act``: edit or capture."""
        ref = LayerRef.parse(name)
        module = self.root.get_submodule(ref.path)
        if ref.port == "input":
            hook = partial(self._on_input, name, act)
            self._handles.append(module.register_forward_pre_hook(hook, with_kwargs=True, prepend=prepend))
        else:
            self._handles.append(module.register_forward_hook(partial(self._on_output, name, act), prepend=prepend))

    def _attach_boundaries(self, refs: Sequence[LayerRef]) -> None:
        """Pre-hooks that mark where one forward of each hooked layer starts.

        A nested layer's forward is a call of its top-level submodule
        (``visual``). A top-level layer is itself that submodule, so a reused
        one would start a new forward on every call: its boundary is the root's
        call, or its own call when the root is not running (``encode_image``
        calls ``visual`` directly).
        """
        nested = dict.fromkeys(ref.path.split(".")[0] for ref in refs if "." in ref.path)
        for top in nested:
            self._handles.append(self.root.get_submodule(top).register_forward_pre_hook(partial(self._boundary, top)))
        tops = list(dict.fromkeys(ref.path for ref in refs if "." not in ref.path))
        if not tops:
            return
        self._root_depth = 0
        self._handles.append(self.root.register_forward_pre_hook(partial(self._enter_root, tops)))
        # always_call: the depth must drop also when the forward raises (early stop does).
        self._handles.append(self.root.register_forward_hook(self._leave_root, always_call=True))
        for top in tops:
            module = self.root.get_submodule(top)
            self._handles.append(module.register_forward_pre_hook(partial(self._top_boundary, top)))

    def remove(self) -> None:
        """Remove exactly the hooks this recorder added."""
        while self._handles:
            self._handles.pop().remove()
        _EDITING.discard(self)
        self._armed = False
        self._root_depth = 0

    # ------------------------------------------------------------------ hooks

    def _reset(self, only: Callable[[LayerRef], bool] | None = None) -> None:
        """Zero the call counts of the recorded layers (those ``only`` accepts): a new forward starts."""
        for name in self.layers:
            if only is None or only(LayerRef.parse(name)):
                self._calls[name] = 0
                self._pending.add(name)

    def _boundary(self, top: str, module: nn.Module, args: tuple) -> None:
        self._reset(lambda ref: ref.path.startswith(top + "."))

    def _top_boundary(self, top: str, module: nn.Module, args: tuple) -> None:
        if self._root_depth == 0:
            self._reset(lambda ref: ref.path == top)

    def _enter_root(self, tops: list[str], module: nn.Module, args: tuple) -> None:
        if self._root_depth == 0:
            self._reset(lambda ref: ref.path in tops)
        self._root_depth += 1

    def _leave_root(self, module: nn.Module, args: tuple, output: Any) -> None:
        self._root_depth = max(self._root_depth - 1, 0)

    def _on_input(self, name: str, act: Callable[[str, Tensor], Tensor], module: nn.Module, args: tuple,
                  kwargs: dict) -> tuple | None:
        if args:
            tensor, _ = _first_tensor(args[0])
            key = None
        else:
            key = next((k for k, v in kwargs.items() if isinstance(v, Tensor)), None)
            tensor = kwargs[key] if key is not None else None
        if tensor is None:
            return None
        edited = act(name, tensor)
        if edited is tensor:
            return None
        if key is None and not isinstance(args[0], Tensor):
            raise TypeError(f"cannot edit {name}: the module's first argument is a "
                            f"{type(args[0]).__name__}, not a tensor; edit the output of the module before it")
        # The input may be passed more than once: open_clip's attention runs attn(x, x, x)
        # as query, key and value. Every argument that *is* this tensor gets the edit.
        return (tuple(edited if arg is tensor else arg for arg in args),
                {name_: edited if value is tensor else value for name_, value in kwargs.items()})

    def _capture_if_recorded(self, name: str, tensor: Tensor) -> Tensor:
        """Capture what the model goes on with (every edit's hook ran before); the tensor is left as it is."""
        if name in self._calls:
            self._capture(name, tensor)
        return tensor

    def _on_output(self, name: str, act: Callable[[str, Tensor], Tensor], module: nn.Module, args: tuple,
                   output: Any) -> Any:
        tensor, index = _first_tensor(output)
        if tensor is None:
            return None
        edited = act(name, tensor)
        if edited is tensor:
            return None
        if index is None:
            return edited
        items = list(output)
        items[index] = edited
        return type(output)(items)

    def _edit(self, name: str, tensor: Tensor) -> Tensor:
        edits = self.edits.get(name, ())
        if not edits:
            return tensor
        # A plain module has no catalogue: its 4-D layers are read as [B, C, H, W].
        layout = self._edit_layouts.get(name, CHANNELS_FIRST) if tensor.ndim == 4 else CHANNELS_FIRST
        if layout is None:
            raise NeuronscopeError(f"cannot edit {name}: it is not known whether it holds its units first or last; "
                                   f"edit a neighbouring Conv, Linear or norm layer")
        for edit in edits:
            tensor = edit.apply(tensor, layout)
        return tensor

    def _capture(self, name: str, tensor: Tensor) -> None:
        self._calls[name] += 1
        if self._calls[name] > 1:
            if name not in self._warned:
                self._warned.add(name)
                warnings.warn(
                    f"layer {name} ran {self._calls[name]} times in one forward; the recorder keeps the first call "
                    f"(the module is reused: hook a module that runs once)",
                    RuntimeWarning,
                    stacklevel=2,
                )
            return
        kept = tensor.detach() if self.detach else tensor
        capture_fn = self.capture_fn.get(name) if isinstance(self.capture_fn, Mapping) else self.capture_fn
        if capture_fn is not None:
            kept = capture_fn(kept)
        if self.clone and kept.device.type != "meta" and kept.untyped_storage().data_ptr() == tensor.untyped_storage().data_ptr():
            # Clone what shares the module's memory: act3 is an in-place ReLU, so even a
            # pre-hook's input changes under us once the hook returns.
            kept = kept.clone()
        elif not self.clone and kept.device.type != "meta":
            self._versions[name] = kept._version  # checked after the forward: see _check_unchanged
        self.activations[name] = kept
        self._pending.discard(name)
        if self._armed and not self._pending:
            raise _StopForward

    # ------------------------------------------------------------------ use

    def __getitem__(self, name: str) -> Tensor:
        """The last capture of a layer, by canonical name or alias."""
        canonical = self.aliases.get(name, name)
        try:
            return self.activations[canonical]
        except KeyError:
            raise LayerNotFoundError(
                f"{name!r} has no capture: recorded layers are {', '.join(self.layers) or 'none'}"
            ) from None

    def run(self, images: Images, *, grad: bool = False, require_all: bool = True) -> dict[str, Tensor]:
        """One forward of the image tower; returns ``{layer: activations}`` for the requested layers.

        Args:
            images: a normalised float tensor [B, 3, H, W] or PIL image(s) (preprocessed
                by the model's contract; needs a :class:`LoadedModel`).
            grad: run with autograd on (for objectives); default off.
            require_all: raise if a requested layer did not run (e.g. a
                text-tower layer in an image forward).

        Attaches for the duration of the call when not already inside ``with``. The forward runs in eval
        mode (:func:`~neuronscope.models.loaded.evaluating`); a forward of your own inside ``with`` runs in
        the mode you left the model in.
        """
        pixels = self._prepare(images)
        attached_here = not self.attached
        if attached_here:
            self.attach()
        self.activations.clear()
        self._versions.clear()
        self._reset()
        self._armed = self.early_stop and bool(self.layers)
        try:
            with torch.set_grad_enabled(grad), evaluating(self.root):
                try:
                    self._forward(pixels)
                except _StopForward:
                    pass
        finally:
            self._armed = False
            if attached_here:
                self.remove()
        self._check_unchanged()
        if require_all:
            self.check_image_forward()
        return {name: self.activations[name] for name in self.layers if name in self.activations}

    def check_image_forward(self) -> None:
        """After an image forward (:meth:`run`, or ``model.encode_images`` inside ``with``): raise when a
        recorded layer did not run in it, saying why (a text-tower layer needs a text forward) rather than
        leaving a caller to find no capture.

        Raises:
            LayerNotFoundError: one or more recorded layers were not captured.
        """
        missing = [name for name in self.layers if name not in self.activations]
        if missing:
            raise LayerNotFoundError(
                f"layer(s) {', '.join(missing)} did not run in the image forward of {self._key} "
                f"(text-tower layers need a text forward): name an image-tower layer"
            )

    def _check_unchanged(self) -> None:
        """With ``clone=False``: raise when the forward changed a kept tensor in place after its capture.

        The capture is then the very tensor, so it would hold the changed
        values (``act3:input`` after the ReLU). Only tensors kept uncloned are
        tracked: the default path costs nothing.
        """
        changed = [name for name, version in self._versions.items() if self.activations[name]._version != version]
        if changed:
            raise NeuronscopeError(f"layer(s) {', '.join(changed)} were changed in place after their capture (e.g. by "
                                   f"an in-place ReLU), so clone=False would return the changed values; use clone=True")

    def _prepare(self, images: Images) -> Tensor:
        if self.model is not None:
            return self.model.prepare_images(images)
        if not isinstance(images, Tensor):
            raise TypeError("a plain nn.Module takes a normalised tensor [B, 3, H, W]; wrap it with load_model "
                            "(and its preprocessing) to pass PIL images")
        parameter = next(self.root.parameters(), None)
        return images.to(parameter.device) if parameter is not None else images

    def _forward(self, pixels: Tensor) -> Any:
        if self.model is not None:
            return self.model.encode_images(pixels)
        return self.root(pixels)
