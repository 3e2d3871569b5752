"""The course's small helpers: one-line errors, the 95% confidence interval, seeding.
Not a program; the library's helpers live in fewshot/ (errors, stats, runtime, files)."""
import sys

from fewshot.errors import UserError, run_cli
from fewshot.runtime import seed_everything
from fewshot.stats import mean_ci95

__all__ = ['UserError', 'mean_ci95', 'run_cli', 'seed_everything']

if __name__ == '__main__':
    sys.exit('util.py is the course\'s importable helpers, not a program; run protonet.py or maml.py')
