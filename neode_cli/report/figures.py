"""Figures for reports: matplotlib without pyplot (no global state, no display), rendered to reproducible PNG bytes."""

from __future__ import annotations

import io

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure as MplFigure

from .base import Figure

__all__ = ["new_figure", "to_png", "DPI"]

#: Fixed resolution so a figure's bytes depend only on its data.
DPI = 100


def new_figure(ncols: int = 1, nrows: int = 1, size: tuple[float, float] = (5.0, 3.6)):
    """A fresh matplotlib figure with an Agg canvas and its axes: ``(figure, axes)``; ``axes`` is a list when
    there is more than one. ``size`` is per panel, in inches."""
    fig = MplFigure(figsize=(size[0] * ncols, size[1] * nrows))
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel().tolist()
    # Fixed margins instead of a layout engine: as readable for these plots and several times faster to draw.
    fig.subplots_adjust(left=0.8 / (size[0] * ncols), right=1 - 0.15 / ncols, bottom=0.55 / (size[1] * nrows),
                        top=1 - 0.35 / (size[1] * nrows), wspace=0.38, hspace=0.35)
    return fig, (axes[0] if len(axes) == 1 else axes)


def to_png(fig: MplFigure, name: str, title: str, caption: str) -> Figure:
    """Render ``fig`` as PNG (no timestamp or version metadata, so equal data gives equal bytes)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    return Figure(name=name, title=title, caption=caption, png=buffer.getvalue())
