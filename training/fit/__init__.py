"""Fitting: torch and scikit-learn (and scipy) code that turns windows into weights."""
