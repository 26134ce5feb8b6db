"""Where labelled windows come from: simulated shoppers, the UCI sessions, the platform's own
history. Torch-free (tests/test_layout.py).
"""
