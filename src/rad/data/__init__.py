"""Synthetic task generators with exact answers (math word problems, code output prediction)."""
