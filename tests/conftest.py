"""Shared fixtures: tiny random checkpoints of each supported family, built with transformers
(the independent reference) and saved to temporary folders once per session."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Tiny models gain nothing from intra-op threads, and on a busy 2-core machine OpenMP's barriers turn a
# microsecond kernel into milliseconds; one thread per process (subprocesses inherit it) keeps tests fast.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

from tiny_models import FAMILIES, save_tiny_model  # noqa: E402


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory):
    """{family name: (folder, transformers model)} for every family in FAMILIES."""
    root = tmp_path_factory.mktemp("tiny")
    return {name: save_tiny_model(name, root / name) for name in FAMILIES}


@pytest.fixture(scope="session")
def llama_dir(tiny_dirs):
    return tiny_dirs["llama"][0]
