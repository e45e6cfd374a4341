"""Evaluation: feature spaces, fidelity and conditioning metrics, downstream utility."""
