"""Simulation of training data (abTEM patterns, noise model, augmentation)."""
