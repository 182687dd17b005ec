"""Metrics against closed forms, hand-computed values and nltk (those that run an encoder:
tests/integration/test_metrics.py)."""

import math

import numpy as np
import pytest
from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu

from polychromic import metrics


@pytest.mark.parametrize("n,c,k,expected", [
    (10, 3, 1, 0.3),          # pass@1 is the pass rate
    (5, 1, 2, 0.4),           # 1 - C(4,2)/C(5,2) = 1 - 6/10
    (10, 0, 10, 0.0),         # nothing passes
    (10, 10, 1, 1.0),         # everything passes
    (4, 2, 3, 1.0),           # n - c < k: every k-subset holds a pass
    (10, 2, 5, 1 - 56 / 252),  # 1 - C(8,5)/C(10,5)
])
def test_pass_at_k_hand_cases(n, c, k, expected):
    assert metrics.pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


def test_pass_at_k_matches_closed_form_everywhere():
    for n in range(1, 13):
        for c in range(n + 1):
            for k in range(1, n + 1):
                closed = 1 - math.comb(n - c, k) / math.comb(n, k)
                assert metrics.pass_at_k(n, c, k) == pytest.approx(closed, abs=1e-12)


def test_pass_at_k_rejects_impossible_counts():
    with pytest.raises(ValueError):
        metrics.pass_at_k(5, 6, 1)
    with pytest.raises(ValueError):
        metrics.pass_at_k(5, 1, 6)


def test_tokenize_splits_words_and_punctuation():
    assert metrics.tokenize("Hello, World!") == ["hello", ",", "world", "!"]


def test_distinct_n_hand_values():
    samples = ["a b a", "b c"]  # tokens a b a | b c
    assert metrics.distinct_n(samples, 1) == pytest.approx(3 / 5)
    assert metrics.distinct_n(samples, 2) == pytest.approx(3 / 3)  # (a b) (b a) (b c)
    assert metrics.distinct_n(["a a a"], 2) == pytest.approx(1 / 2)


def test_distinct_n_is_undefined_not_zero_without_ngrams():
    assert metrics.distinct_n(["one", ""], 2) is None


def test_self_bleu_hand_computed_unigram_and_bigram():
    samples = ["a b c d", "a b e f"]
    # unigram precision 2/4 both ways, equal lengths so no brevity penalty
    assert metrics.self_bleu(samples, order=1) == pytest.approx(0.5)
    # bigram precision 1/3: BLEU-2 = sqrt(1/2 * 1/3)
    assert metrics.self_bleu(samples, order=2) == pytest.approx(math.sqrt(1 / 6))


def test_self_bleu_brevity_penalty_by_hand():
    # "a b" vs "a b c d": p1 = 1, BP = exp(1 - 4/2); reverse: p1 = 1/2, BP = 1
    expected = (math.exp(-1) + 0.5) / 2
    assert metrics.self_bleu(["a b", "a b c d"], order=1) == pytest.approx(expected)


def test_self_bleu_matches_nltk_leave_one_out():
    samples = ["the cat sat on the mat", "a cat sat on a mat today",
               "the dog ran in the park", "the cat ran on the mat"]
    tokens = [s.split() for s in samples]
    smoothing = SmoothingFunction().method1
    expected = np.mean([sentence_bleu(tokens[:i] + tokens[i + 1:], t,
                                      smoothing_function=smoothing)
                        for i, t in enumerate(tokens)])
    assert metrics.self_bleu(samples) == pytest.approx(expected)
    assert metrics.self_bleu(["the very same words here"] * 3) == pytest.approx(1.0)


def test_self_bleu_undefined_with_fewer_than_two_nonempty_samples():
    assert metrics.self_bleu(["only one", "", "  "]) is None


def test_semantic_diversity_closed_forms():
    assert metrics.semantic_diversity(np.array([[1.0, 0.0], [0.0, 1.0]])) == pytest.approx(1.0)
    three = np.array([[2.0, 0.0], [1.0, 0.0], [0.0, 3.0]])  # pairs: 0, 1, 1
    assert metrics.semantic_diversity(three) == pytest.approx(2 / 3)
    assert metrics.semantic_diversity(np.array([[1.0, 2.0]])) is None


def test_rouge_hand_values_and_best_reference():
    scores = metrics.rouge("the cat sat on the mat", ["the cat is on the mat"])
    # unigrams: 5 of 6 shared each way; bigrams: "the cat", "on the", "the mat" = 3 of 5;
    # LCS "the cat on the mat" = 5 of 6
    assert scores == pytest.approx({"rouge_1": 5 / 6, "rouge_2": 3 / 5, "rouge_l": 5 / 6})
    # each score is the best over the references, chosen per score
    best = metrics.rouge("the cat sat", ["the cat", "cat sat on"])
    assert best["rouge_1"] == pytest.approx(0.8)  # 2/3 and 2/2 -> F1 0.8 (both refs)
    assert best["rouge_2"] == pytest.approx(2 * (1 / 2) * 1 / (1 / 2 + 1))  # "the cat"
    assert metrics.rouge("", ["anything"])["rouge_l"] == 0.0


def test_distinct_3_hand_value():
    # "a b c d" and "a b c e": trigrams abc, bcd, abc, bce -> 3 distinct of 4
    assert metrics.distinct_n(["a b c d", "a b c e"], 3) == pytest.approx(3 / 4)
    assert metrics.distinct_n(["a b", "c"], 3) is None


def test_log_perplexity_pools_tokens_over_references():
    assert metrics.log_perplexity([2.0, 4.0], [1, 3]) == pytest.approx(6 / 4)
    assert metrics.log_perplexity([], []) is None


def test_mean_defined_counts_undefined():
    assert metrics.mean_defined([1.0, None, 3.0]) == (2.0, 1)
    assert metrics.mean_defined([None]) == (None, 1)
