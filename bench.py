"""Speed and memory of the training steps against the naive way, in one run: the program
(its code: tools/bench/). `python bench.py --help` lists the parts."""
from fewshot.errors import run_cli
from tools.bench import main

if __name__ == '__main__':
    run_cli(main)
