"""Run under torchrun: one meta-update's gradients (float64) of tiny ProtoNet, MAML
(second-order, learned inner learning rates, 2 inner steps) and Reptile learners on
5 synthetic tasks, split over the processes by the training loop; rank 0 saves
them to the file named by argv[1]. tests/engine/test_distributed.py compares them with
one process's, and checks that drifted parameters are caught."""
import os
import sys

import torch

TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [os.path.dirname(TESTS), TESTS, *(os.path.join(TESTS, folder) for folder in ('algorithms', 'engine'))]

from test_maml import random_batch as maml_batch, tiny_maml  # noqa: E402
from test_protonet import random_batch, tiny_encoder  # noqa: E402
import protonet  # noqa: E402
from fewshot.engine import loop
from fewshot.engine import distributed
from fewshot.algorithms import reptile

def learners():
    """name -> (learner, batch of 5 tasks), float64, the same in every process."""
    return {'protonet': (protonet.ProtoNet(tiny_encoder()), random_batch(num_tasks=5)),
            'maml': (tiny_maml(num_inner_steps=2, learn_inner_lrs=True), maml_batch(num_tasks=5)),
            'reptile': (tiny_maml(num_inner_steps=2, learner_class=reptile.Reptile), maml_batch(num_tasks=5))}


def gradients(processes):
    """name -> (logged metrics, [gradient of each trained tensor]) after one training step."""
    results = {}
    for name, (learner, batch) in learners().items():
        optimizer = loop.build_optimizer(learner, 1e-3)
        metrics = loop.train_step(learner, optimizer, batch, 0, 1e-3, 10, processes)
        results[name] = (metrics, [p.grad.clone() for p in learner.parameters()])
    return results


def drift_is_caught(processes):
    """Whether check_in_step raises once one process's parameter moves by 1e-9."""
    learner, _ = learners()['maml']
    processes.check_in_step(learner.parameters(), 0)  # equal: passes
    with torch.no_grad():
        learner.parameters()[0].view(-1)[0] += 1e-9 * processes.rank
    try:
        processes.check_in_step(learner.parameters(), 1)
    except RuntimeError as error:
        return 'parameters differ' in str(error)
    return False


def buffers_agree(processes):
    """Whether MAML++'s per-step batch-norm running statistics agree across processes after a step
    (each process saw other tasks; the loop averages them)."""
    learner = tiny_maml(num_inner_steps=1, per_step_bn=True)
    loop.train_step(learner, loop.build_optimizer(learner, 1e-3), maml_batch(num_tasks=4), 0, 1e-3, 10,
                        processes)
    try:
        processes.check_in_step(learner.buffers(), 0)
    except RuntimeError:
        return False
    return True


if __name__ == '__main__':
    processes = distributed.start(torch.device('cpu'))
    results = gradients(processes)
    results['drift_is_caught'] = drift_is_caught(processes)
    results['buffers_agree'] = buffers_agree(processes)
    if processes.is_main:
        torch.save(results, sys.argv[1])
    processes.finish()
