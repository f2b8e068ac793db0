"""Distillation of a hybrid from its teacher: data, losses, the accelerate trainer, checkpoints."""
