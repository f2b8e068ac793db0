"""Evaluation: generation-based accuracy, sandboxed code execution, throughput."""
