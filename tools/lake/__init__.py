"""Lake et al.'s one-shot challenge: build runs, choose checkpoints, ensembles, the one-command recipe."""
