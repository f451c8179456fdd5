"""Data the project makes itself: synthetic composites with exact alpha (demo, calibration, training)."""
