"""Chest X-ray classification guided by radiologists' gaze: GG-CAM and its data."""
