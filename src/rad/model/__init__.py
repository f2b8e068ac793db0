"""Model math only: the config and its formats, the decoder, the Mamba2 mixer and scan, the decode cache,
checkpoint I/O and the attention -> SSM initialisers."""
