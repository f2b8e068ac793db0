"""Which attention layers are redundant: Bayesian search over skip sets, its baselines and the diagnosis report."""
