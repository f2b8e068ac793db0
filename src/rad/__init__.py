"""rad: Redundancy-Aware Distillation (arXiv 2505.22135).

Turns a pretrained Transformer into a faster hybrid Transformer-SSM model:
diagnose redundant attention layers by self-speculative decoding, convert them
to Mamba2 mixers, distil, and evaluate.
"""

__version__ = "0.1.0"
