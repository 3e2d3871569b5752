"""Programs' code that is not the library: the benchmark (bench/) and the report (report.py)."""
