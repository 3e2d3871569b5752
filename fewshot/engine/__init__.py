"""The machinery every algorithm and dataset share: runner.py (train or test a Command),
loop.py, evaluation.py, checkpoints.py, distributed.py (torchrun), tuning.py."""
