"""Few-shot meta-learning: the library behind protonet.py, maml.py and run_metabolism.py.

    contracts.py   the Dataset, Algorithm, Learner and Sampler contracts
    registry.py    the table of datasets and algorithms, and the programs that offer them
    flags.py       every flag declared once, with its roles; cli.py parses them into a Command
    algorithms/    ProtoNet, MAML (and its inner loop), Reptile, the baseline
    datasets/      Omniglot (with Lake's runs), TDC metabolism, sinusoids
    engine/        the loop, evaluation, checkpoints, several processes, tuning, the runner
    tasks.py, networks.py, execution.py   tasks, functional networks, ways to compute them faster
    errors.py, files.py, runtime.py, stats.py   one-line errors, files, devices, confidence intervals
"""
