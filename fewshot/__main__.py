"""python -m fewshot --algorithm A --dataset D ...: any registered algorithm on any registered
dataset it fits (the course's programs offer their own choices: protonet.py, maml.py, run_metabolism.py).
A launcher above the library: it trains the course's classes, as the programs do."""
import maml
import protonet
from fewshot import cli, registry
from fewshot.errors import run_cli

LEARNERS = {**protonet.LEARNERS, **maml.LEARNERS}

if __name__ == '__main__':
    run_cli(lambda: cli.main(registry.program('python -m fewshot'), learners=LEARNERS))
