"""Example experiments built on the training core."""
