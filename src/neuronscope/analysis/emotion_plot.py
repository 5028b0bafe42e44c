"""The emotion atlas as a picture: the 2-factor NMF map, coloured by the 7-factor groups."""

from __future__ import annotations

import io

from neuronscope.analysis.emotions import EmotionAtlas


def plot_emotion_atlas(atlas: EmotionAtlas, *, title: str | None = None) -> bytes:
    """A PNG of the emotion map: one labelled point per emotion at its 2-factor NMF loadings,
    coloured by its 7-factor group (the legend names each group's top units)."""
    # An Agg canvas of its own: no pyplot and no matplotlib.use(), so the caller's backend (a notebook's
    # inline one, say) is left alone, and the figure is freed with the last reference.
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(10, 8), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.subplots()
    colours = colormaps["tab10"]
    loadings, groups = atlas.map2.loadings, atlas.groups7.groups
    for group in range(atlas.groups7.components.shape[0]):
        members = groups == group
        units = ", ".join(str(u) for u in atlas.groups7.top_columns(group, 3))
        axes.scatter(loadings[members, 0], loadings[members, 1], s=18, color=colours(group),
                     label=f"group {group} (units {units})")
    for emotion, (x, y), group in zip(atlas.emotions, loadings, groups):
        axes.annotate(emotion, (x, y), fontsize=7, color=colours(int(group)), xytext=(2, 2),
                      textcoords="offset points")
    axes.set_xlabel("NMF factor 1")
    axes.set_ylabel("NMF factor 2")
    axes.set_title(title or f"Emotion atlas: {atlas.model} {atlas.layer}")
    axes.legend(fontsize=7, loc="best")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()
