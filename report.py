"""Reproduce the homework report or the papers' Omniglot table: the program (its code:
tools/report.py). `python report.py --help` lists the flags."""
from tools.report import main

if __name__ == '__main__':
    main()
