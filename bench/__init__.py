"""Benchmarks, each with a reference measured in the same run (`python -m bench`, `make bench`)."""
