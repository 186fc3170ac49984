"""Benchmarks of s3rs against its peers on the local stack (not part of the test suite).

Run on purpose: `.venv/bin/python -m benchmarks.run --help`. See benchmarks/README.md.
"""
