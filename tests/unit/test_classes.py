"""Equivalence classes of a prompt's samples (distinct_k): the metrics over labels, and each
domain's labels: qa by final answer, replies by similarity above a threshold calibrated on
val, code by behaviour (the values it computes; the sandbox runs in
tests/integration/test_sandbox.py)."""

import numpy as np
import pytest

from polychromic import metrics
from polychromic.domains import Checker
from polychromic.domains.code import probes
from polychromic.domains.qa import QaChecker, answer_class


def test_distinct_and_correct_classes_by_hand():
    labels = ["a", "b", "a", "c", "b"]
    assert metrics.distinct_classes(labels) == 3
    assert metrics.correct_classes(labels, [True, False, True, False, True]) == 2  # a, b
    assert metrics.correct_classes(labels, [False] * 5) == 0
    with pytest.raises(ValueError):
        metrics.correct_classes(labels, [True])


def test_the_default_classes_are_the_text_up_to_case_and_spacing():
    assert Checker().classes([({}, ["Hi  there", "hi there", "Hi there!"])]) == [
        ["hi there", "hi there", "hi there!"]]


@pytest.mark.parametrize("answer,label", [
    ("7", "7"), ("7.0", "7"), ("7.00", "7"), ("1,000", "1000"), ("0.5", "0.5"),
    ("Paris.", "paris"), ("  PARIS ", "paris"), (None, "(no answer)")])
def test_a_qa_answer_class_is_its_value(answer, label):
    assert answer_class(answer) == label


def test_qa_classes_read_each_samples_final_answer():
    record = {"id": "q", "prompt": "2+5?", "references": ["7"],
              "task": {"check": "exact", "answer": "7"}}
    checker = QaChecker("Answer:")
    samples = [" 7", " 7.0", " 8\nbecause", " I am not sure", " 8"]
    assert checker.classes([(record, samples)]) == [["7", "7", "8", "i am not sure", "8"]]


def test_reply_classes_join_the_first_class_close_enough(monkeypatch):
    """Greedy in sample order: a sample joins the first class whose first member it is at
    least the class threshold similar to; the threshold is the class_quantile of the
    unrelated-reply similarities on val, as the pass threshold is the null_quantile."""
    from polychromic.domains import replies

    angle = {"a": 0.0, "a'": 0.1, "b": 1.0, "b'": 1.05, "c": 2.0, "x": 0.5}
    def embed(texts):
        return np.array([[np.cos(angle[t]), np.sin(angle[t])] for t in texts])
    # the reward's encoder (training's classes) sees b and c as one direction
    reward_angle = {**angle, "c": 1.02}
    def reward_embed(texts):
        return np.array([[np.cos(reward_angle[t]), np.sin(reward_angle[t])] for t in texts])
    asked = []
    monkeypatch.setattr(replies, "shared_embedder", lambda model, *_: asked.append(model) or (
        reward_embed if model == replies.REWARD_CLASS_MODEL else embed))
    val = [{"id": f"p{i}", "prompt": "m", "references": [t]}
           for i, t in enumerate(["a", "b", "c", "x"])]
    config = replies.RepliesChecker(null_quantile=0.5, class_quantile=0.99,
                                    calibration_pairs=400)
    checker = replies.ReplyChecker(config, val, "replies.checker")
    # unrelated pairs among angles {0, 1, 2, 0.5}: the largest similarity is cos(0.5)
    assert checker.class_threshold == pytest.approx(np.cos(0.5), abs=1e-9)
    null = checker.unrelated_similarity(embed)
    assert checker.threshold == pytest.approx(np.quantile(null, 0.5))
    labels, = checker.classes([({}, ["a", "b", "a'", "b'", "c", "a"])])
    assert labels == ["c0", "c1", "c0", "c1", "c2", "c0"]
    assert checker.describe()["class_threshold"] == checker.class_threshold
    assert asked == [config.embedding_model]  # training's encoder only when asked for
    # training's classes: the reward's encoder, at the same quantile of its own null, where
    # the unrelated b and c are cos(0.02) apart: the threshold rises to that, so a' and b'
    # start classes of their own while c joins b
    reward_labels, = checker.reward_classes([({}, ["a", "b", "a'", "b'", "c", "a"])])
    assert asked == [config.embedding_model, replies.REWARD_CLASS_MODEL]
    assert checker.reward_classifier[1] == pytest.approx(np.cos(0.02), abs=1e-9)
    assert reward_labels == ["c0", "c1", "c2", "c3", "c1", "c0"]


@pytest.mark.parametrize("value,text", [
    (1, "1"), (1.0, "1"), (True, "1"), (2.5, "2.5"), ("1", "'1'"), (None, "None"),
    ({3, 1, 2}, "{1,2,3}"), (frozenset({"b", "a"}), "{'a','b'}"),
    ({"b": 1, "a": [1.0, (2,)]}, "{'a':[1,[2]],'b':1}"), (b"x", "b'x'"),
    (float("nan"), "nan"), (2**60 + 0.0, repr(2.0**60))])
def test_canonical_values_are_equal_when_the_values_are(value, text):
    assert probes.canonical(value) == text


def test_variants_shift_the_literal_arguments_of_the_probed_calls():
    tests = ["assert add(2, 3) == 5", "assert add(2, 3) == 5",  # a repeat adds nothing
             "assert rev('ab') == 'ba'",  # not the entry point
             "assert add([1, 2], (3,)) == [1, 2, 3]", "xs = 4\nassert add(xs, 1) == 5"]
    assert probes.variants(tests, "add") == [
        "assert add(3, 4) is not ...", "assert add(4, 6) is not ...",
        "assert add([2, 1], (3, 3)) is not ...", "assert add([1], (3, 3)) is not ...",
    ]
    assert probes.variants(tests, None) == []
    # each variant is a plannable test whose one probe is the changed call
    assert probes.plan("assert add(3, 4) is not ...", "add").probes == ("add(3, 4)",)


@pytest.mark.parametrize("value", [0, -3, 7, 0.0, 2.5, "", "abc", [], [1], (1, 2), True])
def test_a_shifted_input_keeps_its_type_and_differs(value):
    for which in (0, 1):
        changed = probes.shifted(value, which)
        assert type(changed) is type(value)
        assert changed != value or value in ([], ())


def test_behaviour_labels():
    assert probes.behaviour_label("error", [None, None]) == "error"
    same = probes.behaviour_label("finished", ["5", "0"])
    assert same == probes.behaviour_label("finished", ["5", "0"])
    assert same != probes.behaviour_label("finished", ["5", "1"])
    assert same != probes.behaviour_label("timeout", ["5", "0"])
