"""TDC metabolism: tables.py (the CYP tables), features.py (molecule features, cached), dataset.py."""
