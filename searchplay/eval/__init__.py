"""Evaluation of a solver agent on QA benchmarks."""
