"""Our own Llama-family model code: config, decoder, cache, checkpoint I/O."""
