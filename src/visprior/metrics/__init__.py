"""Scores shared by the tasks: saliency maps (``saliency``)."""
