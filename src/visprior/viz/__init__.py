"""Figures for segmentation work: label overlays and training curves, drawn with matplotlib."""

from visprior.viz.curves import load_curves, save_curves_png
from visprior.viz.overlay import save_overlay_png

__all__ = ["load_curves", "save_curves_png", "save_overlay_png"]
