"""The metrics that run an encoder (the embedded MiniLM): BERTScore against greedy matching by
hand, and the embedder against sentence-transformers."""

import numpy as np
import pytest

from polychromic import metrics


def test_bertscore_matches_greedy_matching_by_hand():
    """BERTScore F1 recomputed from the encoder's layer-L token embeddings: greedy cosine
    matching without [CLS]/[SEP], P and R the mean best match, F1 their harmonic mean; the
    best of two references is taken, and a text against itself scores 1."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    from polychromic.embedding import model_directory

    directory = model_directory("embedded:all-minilm-l6-v2", "test")
    candidate, references = "the weather is lovely today", ["what a nice day", "I hate rain"]
    scores = metrics.bertscore_f1([candidate, "hello"], [references, ["hello"]], directory, 6)
    assert scores[1] == pytest.approx(1.0, abs=1e-5)

    tokenizer = AutoTokenizer.from_pretrained(directory)
    model = AutoModel.from_pretrained(directory).eval()

    def tokens(text):
        encoded = tokenizer(text, return_tensors="pt")
        with torch.inference_mode():
            hidden = model(**encoded, output_hidden_states=True).hidden_states[6][0]
        hidden = hidden[1:-1]  # drop [CLS] and [SEP]
        return hidden / hidden.norm(dim=1, keepdim=True)

    def f1(cand, ref):
        similarity = tokens(cand) @ tokens(ref).T
        precision = similarity.max(dim=1).values.mean()
        recall = similarity.max(dim=0).values.mean()
        return float(2 * precision * recall / (precision + recall))

    expected = max(f1(candidate, r) for r in references)
    assert scores[0] == pytest.approx(expected, abs=1e-4)


def test_embedder_equals_sentence_transformers():
    """The embedder computes MiniLM's mean pooling with plain transformers (importing
    sentence-transformers costs ~10 s per stage); the vectors are sentence-transformers'."""
    from sentence_transformers import SentenceTransformer

    from polychromic.embedding import Embedder, model_directory

    directory = model_directory("embedded:all-minilm-l6-v2", "test")
    texts = ["hi", "", "def add(a, b):\n    return a + b", "word " * 400,  # truncated at 256
             "what are you doing this weekend? anything fun planned?"] * 15  # > one batch
    fast = Embedder("embedded:all-minilm-l6-v2", "test")
    assert fast.model is not None  # the plain path, not sentence-transformers
    reference = SentenceTransformer(directory, device="cpu").encode(
        texts, batch_size=64, convert_to_numpy=True, normalize_embeddings=True)
    np.testing.assert_allclose(fast(texts), reference, atol=2e-5)
    assert np.allclose(np.linalg.norm(fast(texts[:3]), axis=1), 1.0)



def test_the_independent_encoder_is_the_pinned_all_mpnet_base_v2():
    """The five wheels join to upstream all-mpnet-base-v2 (revision e8c3b32e: its
    model.safetensors' SHA-256 on the hub), and it embeds as sentence-transformers does:
    a paraphrase is closer than an unrelated sentence."""
    import hashlib
    from pathlib import Path

    from polychromic.embedding import Embedder, model_directory

    directory = Path(model_directory("embedded:all-mpnet-base-v2", "test"))
    digest = hashlib.sha256((directory / "model.safetensors").read_bytes()).hexdigest()
    assert digest == "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658"
    encoder = Embedder("embedded:all-mpnet-base-v2", "test")
    assert encoder.model is not None and encoder.model.config.model_type == "mpnet"
    a, paraphrase, unrelated = encoder(["I love playing the guitar.",
                                        "Playing guitar is something I really enjoy.",
                                        "The stock market fell today."])
    assert a @ paraphrase > 0.7 > 0.2 > a @ unrelated
