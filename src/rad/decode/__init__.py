"""Decoding: the prefill/decode loop and self-speculative decoding."""
