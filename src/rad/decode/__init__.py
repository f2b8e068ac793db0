"""Decoding: plain and self-speculative decoding on shared loop helpers (no timing comparisons, no cost model:
those are rad.eval.profiling's)."""
