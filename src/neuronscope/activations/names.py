"""Layer names: canonical dot paths, ``:input`` ports, wildcards and aliases.

A canonical layer name is a module's dot path, meaning its *output*
(``visual.layer4.5``), or ``dotpath:input``, meaning its *input* read with a
forward pre-hook (``visual.layer4.5.act3:input``). On top of these:

- aliases (``neurons``, ``image_block_4/5/Add_6``; the URL form
  ``image_block_4~5~Add_6`` too), see :mod:`neuronscope.models.aliases`;
- wildcards over dot paths: ``*`` matches within one path segment
  (``visual.layer4.*`` = the blocks of layer4), ``**`` across segments
  (``visual.layer4.**`` = everything below), ``?`` one character, and
  ``{a,b}`` alternatives (``visual.layer3.{0,2,4}``). A wildcard that matches
  nothing is an error, like an unknown name (with close matches).
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Mapping, Sequence

from torch import nn

from neuronscope.errors import LayerNotFoundError

if TYPE_CHECKING:  # loaded.py imports this module lazily; annotations only
    from neuronscope.models.loaded import LoadedModel

INPUT = ":input"
Port = Literal["output", "input"]


@dataclass(frozen=True)
class LayerRef:
    """A parsed canonical layer name: module dot path plus which side of it."""

    path: str
    port: Port = "output"

    @classmethod
    def parse(cls, name: str) -> "LayerRef":
        if name.endswith(INPUT):
            return cls(name[: -len(INPUT)], "input")
        return cls(name, "output")

    def __str__(self) -> str:
        return self.path + (INPUT if self.port == "input" else "")


def all_layer_names(module: nn.Module) -> list[str]:
    """Every canonical name in ``module``: each submodule's output and input, in registration order."""
    names: list[str] = []
    for path, _ in module.named_modules():
        if path:
            names.extend((path, path + INPUT))
    return names


def _expand_braces(pattern: str) -> list[str]:
    match = re.search(r"\{([^{}]*)\}", pattern)
    if match is None:
        return [pattern]
    head, tail = pattern[: match.start()], pattern[match.end():]
    return [expanded for option in match.group(1).split(",") for expanded in _expand_braces(head + option.strip() + tail)]


def _glob_regex(pattern: str) -> re.Pattern[str]:
    out = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append(r"[^.]*")
            i += 1
        elif pattern[i] == "?":
            out.append(r"[^.]")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out) + r"\Z")


def _suggest(name: str, candidates: Sequence[str], n: int = 5) -> str:
    # Compare like with like: dotted names against dotted names, aliases against aliases.
    close = difflib.get_close_matches(name, candidates, n=n, cutoff=0.6)
    return f"; did you mean {', '.join(close)}?" if close else ""


def _module_and_aliases(
    model: nn.Module | LoadedModel, aliases: Mapping[str, str] | None, model_key: str
) -> tuple[nn.Module, dict[str, str], str]:
    """A LoadedModel brings its module, aliases and key; explicit ``aliases``/``model_key`` still win.

    A plain module's aliases are those its structure gives (``neurons`` on an open_clip tower), as
    ``record()`` and the Recorder find them, so a name resolves the same way here and there.
    """
    if isinstance(model, nn.Module):
        if aliases is None:
            from neuronscope.models.aliases import structural_aliases  # models imports activations

            aliases = structural_aliases(model)
        return model, dict(aliases), model_key or type(model).__name__
    return model.module, dict(model.layer_aliases if aliases is None else aliases), model_key or model.key


NEURONS = "neurons"
"""The alias of the paper's layer, every command's default layer (:mod:`neuronscope.models.aliases`)."""


def no_neurons_message(module: nn.Module, model_key: str = "") -> str:
    """The one-line error for ``neurons`` on a model without that alias: why, and a layer to name instead."""
    from neuronscope.models.aliases import neurons_candidate  # models imports activations

    candidate = neurons_candidate(module)
    instead = f"name a layer instead, e.g. --layer {candidate}" if candidate else "name a layer instead with --layer"
    return (f"{model_key or 'this model'} has no 'neurons' alias (it is defined for image towers that are "
            f"ResNets, ViTs, timm transformer trunks or ConvNeXts); {instead} (`neuronscope layers MODEL` lists them)")


def resolve_layers(
    module: nn.Module | LoadedModel, names: str | Sequence[str], aliases: Mapping[str, str] | None = None, *,
    model_key: str = "",
) -> list[str]:
    """Resolve layer names, aliases and wildcards to canonical names.

    Args:
        module: the model the names refer to: a :class:`LoadedModel` (its
            aliases and key come with it), or an ``nn.Module`` (the whole
            CLIP, not the tower).
        names: one name or several (see :func:`split_layer_list` for ``--layers a,b``).
        aliases: ``{alias: canonical}`` (``LoadedModel.layer_aliases``).
        model_key: for error messages.

    Returns:
        Canonical names, in the order asked, duplicates dropped.

    Raises:
        LayerNotFoundError: a name, alias or wildcard that matches nothing;
            the message lists close matches.
    """
    module, aliases, model_key = _module_and_aliases(module, aliases, model_key)
    if isinstance(names, str):
        names = [names]
    paths = [path for path, _ in module.named_modules() if path]
    known = set(paths)
    where = f" in {model_key}" if model_key else ""
    resolved: list[str] = []
    for raw in names:
        name = raw.strip()
        name = aliases.get(name, aliases.get(name.replace("~", "/"), name))
        for expanded in _expand_braces(name):
            ref = LayerRef.parse(expanded)
            if any(ch in ref.path for ch in "*?"):
                regex = _glob_regex(ref.path)
                matched = [p for p in paths if regex.match(p)]
                if not matched:
                    raise LayerNotFoundError(
                        f"no layer{where} matches {raw!r}{_suggest(ref.path, paths)} "
                        f"(`neuronscope layers MODEL` lists them)"
                    )
                resolved.extend(str(LayerRef(p, ref.port)) for p in matched)
            elif ref.path in known:
                resolved.append(str(ref))
            elif ref.path == NEURONS:
                raise LayerNotFoundError(no_neurons_message(module, model_key))
            else:
                candidates = [*paths, *aliases] if "." in ref.path else [*aliases, *paths]
                raise LayerNotFoundError(
                    f"unknown layer {raw!r}{where}{_suggest(ref.path, candidates)} "
                    f"(`neuronscope layers MODEL` lists them)"
                )
    return list(dict.fromkeys(resolved))


def resolve_layer(
    module: nn.Module | LoadedModel, name: str, aliases: Mapping[str, str] | None = None, *, model_key: str = ""
) -> str:
    """Resolve exactly one layer (a wildcard must match exactly one module)."""
    found = resolve_layers(module, [name], aliases, model_key=model_key)
    if len(found) != 1:
        raise LayerNotFoundError(f"{name!r} matches {len(found)} layers ({', '.join(found[:4])}...); name one layer")
    return found[0]


def split_layer_list(text: str) -> list[str]:
    """Split ``--layers`` text on commas outside braces: ``"a.{0,2},b"`` -> ``["a.{0,2}", "b"]``."""
    parts, depth, current = [], 0, []
    for ch in text:
        depth += ch == "{"
        depth -= ch == "}"
        if ch == "," and depth == 0:
            parts.append("".join(current).strip())
            current = []
        else:
            current.append(ch)
    parts.append("".join(current).strip())
    return [part for part in parts if part]


def aliases_by_layer(aliases: Mapping[str, str]) -> dict[str, list[str]]:
    """Invert ``{alias: canonical}`` to ``{canonical: [aliases]}`` (``neurons`` first)."""
    inverted: dict[str, list[str]] = {}
    for alias, canonical in sorted(aliases.items(), key=lambda item: (item[0] != "neurons", item[0])):
        inverted.setdefault(canonical, []).append(alias)
    return inverted
