"""The algorithms, one module each: a Learner and its Algorithm (contracts.py)."""
