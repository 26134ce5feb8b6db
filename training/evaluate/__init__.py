"""Numbers about predictions: metrics, bootstrap intervals, the gate (numpy, scikit-learn)."""
