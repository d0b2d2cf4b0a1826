"""Shared fixtures: the tiny model is built once per machine in the cache folder."""

import pytest


@pytest.fixture(scope="session")
def tiny_model_and_tokenizer():
    from core.models import load_model_and_tokenizer

    return load_model_and_tokenizer("embedded:tiny-llama")


@pytest.fixture(scope="session")
def smollm_tokenizer():
    from core.models import load_tokenizer

    return load_tokenizer("embedded:smollm2-135m")
