"""Confidence intervals of per-task results."""
import numpy as np


def mean_ci95(values):
    """Mean and half-width of the normal 95% confidence interval of (n,) values:
    1.96 * std / sqrt(n), with the population std as in the course."""
    values = np.asarray(values, dtype=np.float64)
    return values.mean(), 1.96 * values.std() / np.sqrt(len(values))


def course_ci95(values, batch_size):
    """The CS330 course's metabolism CI: 1.96 * the std of the means of consecutive
    meta-batches of batch_size tasks / sqrt(the number of tasks). (n,) per-task values, n a
    multiple of batch_size (a last, partial meta-batch is left out). About sqrt(batch_size)
    times narrower than mean_ci95's."""
    whole = len(values) // batch_size * batch_size
    means = np.asarray(values[:whole], dtype=np.float64).reshape(-1, batch_size).mean(1)
    return 1.96 * means.std() / np.sqrt(whole)
