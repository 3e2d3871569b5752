"""A course-style autograder over this project's own implementations.

    python grader.py                 # every check, then the total
    python grader.py 2a-0-basic      # one check

Each check is a test case in tests/ (one set of checks, two runners): the
grader runs those cases with pytest and prints one line per check with its
points. Synthetic tasks only: no data, no download, well under a minute on a CPU.
Exits 1 if any check fails, 2 on an unknown check id.
"""
import os
import sys

ROOT = os.path.dirname(os.path.abspath(__file__))

# id -> (description, points, the test cases it runs)
CHECKS = {
    '1a-0-basic': ('sampler: task shapes and label layout', 1,
                   ['tests/test_tasks.py::test_task_shapes_and_label_layout']),
    '1a-1-basic': ('sampler: one class per label, support and query disjoint', 1,
                   ['tests/test_tasks.py::test_classes_distinct_and_support_query_disjoint']),
    '2a-0-basic': ('ProtoNet _step: loss and accuracies against an independent computation', 3,
                   [f'tests/algorithms/test_protonet.py::test_step_matches_independent_per_task_computation[{joint}]'
                    for joint in (False, True)]),
    '3a-0-basic': ('MAML _inner_loop: graph exactly when train=True, shapes, L+1 accuracies', 2,
                   ['tests/algorithms/test_maml.py::test_inner_loop_graph_only_when_training']),
    '3a-1-basic': ('MAML _outer_step: scalar loss and accuracies', 1,
                   ['tests/algorithms/test_maml.py::test_outer_step_returns_scalar_loss_and_accuracies']),
    '3b-0-basic': ('MAML second-order meta-gradient against finite differences', 3,
                   ['tests/algorithms/test_maml.py::test_second_order_meta_gradient_matches_finite_differences']),
    '3c-0-basic': ('MAML learned inner learning rates receive gradients', 1,
                   ['tests/algorithms/test_maml.py::test_learned_inner_lrs_receive_gradients']),
}


class _Outcomes:
    """A pytest plugin recording each test case's first failure message (None when it passed)."""

    def __init__(self):
        self.failures = {}

    def pytest_runtest_logreport(self, report):
        if report.failed and report.nodeid not in self.failures:
            crash = getattr(report.longrepr, 'reprcrash', None)
            self.failures[report.nodeid] = crash.message.splitlines()[0] if crash else str(report.longrepr)[:200]
        elif report.when == 'call':
            self.failures.setdefault(report.nodeid, None)


def run_cases(nodeids):
    """{nodeid: None if passed else a one-line reason}, running the cases in this process."""
    import pytest
    outcomes = _Outcomes()
    paths = [os.path.join(ROOT, n) for n in nodeids]
    code = pytest.main(['-p', 'no:terminal', '-p', 'no:cacheprovider', '--rootdir', ROOT, *paths],
                       plugins=[outcomes])
    if code in (pytest.ExitCode.INTERNAL_ERROR, pytest.ExitCode.USAGE_ERROR):
        raise RuntimeError(f'pytest could not run the checks (exit {code})')
    return {n: outcomes.failures.get(n, 'not run') for n in nodeids}


def grade(check_ids):
    """Print one line per check and the total; return (earned, possible)."""
    nodeids = [n for c in check_ids for n in CHECKS[c][2]]
    results = run_cases(nodeids)
    earned = possible = 0
    for check_id in check_ids:
        description, points, cases = CHECKS[check_id]
        reasons = [results[n] for n in cases if results[n] is not None]
        got = 0 if reasons else points
        earned, possible = earned + got, possible + points
        line = f'{check_id:<12} {description:<78} {got}/{points}'
        print(line + (f'  FAILED: {reasons[0]}' if reasons else ''))
    print(f'{"total":<12} {"":<78} {earned}/{possible}')
    return earned, possible


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv in (['-h'], ['--help']):
        print(f'usage: grader.py [CHECK ...]\n{__doc__}\nchecks: {", ".join(CHECKS)}')
        return 0
    unknown = [a for a in argv if a not in CHECKS]
    if unknown:
        print(f'error: unknown check {unknown[0]}; choose from {", ".join(CHECKS)}', file=sys.stderr)
        return 2
    earned, possible = grade(argv or list(CHECKS))
    return 0 if earned == possible else 1


if __name__ == '__main__':
    sys.exit(main())
