"""The datasets: each a Dataset (contracts.py) with its data path, samplers and network."""
