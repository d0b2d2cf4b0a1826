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


@pytest.fixture
def library_log_handlers_on_real_stderr():
    """Library loggers (transformers, datasets, torch) make a stderr handler on first use;
    made inside a test, it is bound to a capture stream that pytest closes later (and
    transformers pins that stream's `flush` on it), so the next test's log call fails.
    They are pointed at the process's own stderr, and the handler the CLIs add with
    `logging.basicConfig` is removed after the test."""
    import logging
    import sys

    def rebind() -> None:
        for logger in logging.Logger.manager.loggerDict.values():
            for handler in getattr(logger, "handlers", []):
                if type(handler) is logging.StreamHandler and handler.stream is not sys.__stderr__:
                    handler.stream = sys.__stderr__  # not setStream: it would flush a closed stream
                    handler.__dict__.pop("flush", None)  # transformers pins the old stream's flush

    rebind()
    root = logging.getLogger()
    before = list(root.handlers)
    yield
    for handler in root.handlers[:]:
        if handler not in before:
            root.removeHandler(handler)
    rebind()
