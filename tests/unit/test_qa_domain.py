"""The qa domain: questions from reasoning-gym in disjoint splits, answers extracted from
messy samples and scored by the package's own scorer (or exactly/numerically for a user's)."""

import json

import pytest

from polychromic.config import UserError, load_section
from polychromic.domains import NoSettings
from polychromic.domains.qa import (
    DEFAULT_FAMILIES,
    Qa,
    QaChecker,
    QaData,
    QaPrompt,
    extract_answer,
    normalised,
    question_keys,
)
from tests.helpers import domain_sampling

SMALL = {"train_per_family": 30, "val_per_family": 6, "dev_per_family": 5}


def qa_domain(answer_first=False, **data) -> Qa:
    params = {"qa": {"data": {**SMALL, **data}, "prompt": {"answer_first": answer_first},
                     "sampling": {}, "checker": {}}}
    return Qa("qa", {"data": load_section(QaData, params, "qa.data"),
                     "prompt": load_section(QaPrompt, params, "qa.prompt"),
                     "sampling": domain_sampling(), "checker": NoSettings()})


@pytest.mark.parametrize("sample,answer", [
    ("Answer: 42", "42"),
    ("5 + 37 = 42.\nAnswer: 42.", "42"),
    ("**Answer:** 42", "42"),
    ("**Answer: 42**", "42"),
    ("The answer is: `htob`", "htob"),
    ("answer = 7", "7"),
    ("Answer:\n\n  -4\n", "-4"),
    ("Answer: 3\nWait, no.\nAnswer: 5", "5"),     # the last one counts
    ("so $\\boxed{12}$", "12"),
    ("Answer: \"free\"", "free"),
    ("Answer: 7.0", "7.0"),                      # a decimal point is not a full stop
    ("I think it is 12", None),                  # no marker: no answer
    ("Answer:", None),
    ("", None),
])
def test_extract_answer_from_messy_samples(sample, answer):
    assert extract_answer(sample) == answer


@pytest.mark.parametrize("sample,answer", [
    ("So, 10 + 2 = 12.", "12"),
    ("It is 1,250 in all", "1250"),
    ("2 - 4 = -2", "-2"),
    ("The result is 3.5 or so", "3.5"),
    ("Answer: seven (7)", "seven (7)"),         # a marker wins over numbers
    ("no digits at all", None),
])
def test_numeric_questions_fall_back_to_the_last_number(sample, answer):
    assert extract_answer(sample, numeric=True) == answer
    if "Answer" not in sample:
        assert extract_answer(sample) is None     # not for a text answer


def test_splits_are_disjoint_interleaved_and_deterministic():
    domain = qa_domain(confirmation_per_family=4)
    splits = domain.load_splits()
    n = len(DEFAULT_FAMILIES)
    names = ("train", "val", "dev", "confirmation")
    assert [len(splits[s]) for s in names] == [30 * n, 6 * n, 5 * n, 4 * n]
    questions = {name: {normalised(r["prompt"]) for r in splits[name]} for name in names}
    expressions = {name: [r["task"]["entry"]["metadata"]["expression"].replace(" ", "")
                          for r in splits[name] if "expression" in r["task"]["entry"]["metadata"]]
                   for name in names}
    every = [e for name in expressions for e in expressions[name]]
    assert len(every) == len(set(every)) > 0  # '4 - 1' in two families' words is one question
    assert all(len(questions[s]) == len(splits[s]) for s in questions)  # no repeats inside
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert not questions[a] & questions[b], (a, b)
    # the first n dev questions are one of each family, in params order
    assert [r["task"]["family"] for r in splits["dev"][:n]] == list(DEFAULT_FAMILIES)
    assert splits == qa_domain(confirmation_per_family=4).load_splits()
    assert splits["dev"] != qa_domain(seed=7).load_splits()["dev"]
    assert qa_domain(confirmation_per_family=0).load_splits()["confirmation"] == []


def test_confirmation_questions_are_none_of_the_first_generators_pool():
    """Fresh generators (confirmation_seed), less every question that the split's own
    generators could deal at any sizes (their whole pool): none was ever looked at."""
    from polychromic.domains.qa import family_questions

    domain = qa_domain(confirmation_per_family=4)
    config = domain.settings["data"]
    pool = set()
    for family, settings in config.families.items():
        for entry in family_questions(family, settings, config.seed, 4 * (30 + 6 + 5), family):
            pool |= question_keys(entry)
    confirmation = domain.load_splits()["confirmation"]
    assert all(not question_keys(r["task"]["entry"]) & pool for r in confirmation)
    assert confirmation != qa_domain(confirmation_per_family=4,
                                     confirmation_seed=1).load_splits()["confirmation"]


def test_the_same_expression_in_two_families_is_one_question():
    words = [{"question": "Calculate 4 - 1.", "metadata": {"expression": "4 - 1"}},
             {"question": "State the final answer: 4-1 =", "metadata": {"expression": "4-1"}}]
    assert question_keys(words[0]) & question_keys(words[1])
    assert not question_keys({"question": "Calculate 4 - 1.", "metadata": {}}) & \
        question_keys({"question": "Calculate 4 - 2.", "metadata": {}})


def test_reference_answers_score_one_and_wrong_answers_zero():
    """The package's scorer, on records as `prepare` writes them (a JSON round trip)."""
    domain = qa_domain()
    test = json.loads(json.dumps(domain.load_splits()["dev"]))
    checker = domain.checker([])
    items = [(r, [f"Answer: {r['references'][0]}", "Answer: zebra", "no answer"])
             for r in test]
    verdicts = checker.verdicts(items)
    assert all(row[0].passed and row[0].values == {"answered": 1.0, "score": 1.0}
               for row in verdicts)
    assert not any(row[1].passed or row[2].passed for row in verdicts)
    assert all(row[2].values == {"answered": 0.0, "score": 0.0} for row in verdicts)
    assert checker.rewards(items) == [[v.values["score"] for v in row] for row in verdicts]


def test_graded_reward_is_the_package_score():
    """letter_counting's scorer gives partial credit to a near miss; pass needs 1.0."""
    record = {"id": "x", "prompt": "q", "references": ["10"],
              "task": {"family": "letter_counting", "answer": "10", "check": "reasoning_gym",
                       "entry": {"question": "q", "answer": "10", "metadata": {}}}}
    import reasoning_gym

    expected = reasoning_gym.get_score_answer_fn("letter_counting")("10.0", record["task"]
                                                                      ["entry"])
    checker = QaChecker("")
    (verdict,) = checker.verdicts([(record, ["Answer: 10.0"])])[0]
    assert verdict.values["score"] == expected
    assert verdict.passed == (expected == 1.0)


def test_answer_first_prefix_is_part_of_the_checked_text():
    domain = qa_domain(answer_first=True)
    record = domain.load_splits()["dev"][0]
    assert domain.assistant_prefix(record) == "Answer:"
    assert domain.target(record, "12") == " 12"
    checker = domain.checker([])
    assert checker.check(record, f" {record['references'][0]}")
    few_shot = domain.messages(record, [record])
    assert few_shot[2] == {"role": "assistant", "content": f"Answer: {record['references'][0]}"}


ONE_DIGIT = {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1,  # 242 in all
             "operators": ["+", "-"], "allow_parentheses": False, "allow_negation": False}


@pytest.mark.parametrize("data,message", [
    ({"families": {"no_such_family": {}}}, "'qa.data.families.no_such_family' names no "
     "reasoning-gym family"),
    ({"families": {"chain_sum": {"max_terms": "many"}}}, "'qa.data.families.chain_sum': "
     "reasoning-gym refuses these settings"),
    ({"families": {"chain_sum": {"no_such_key": 1}}}, "reasoning-gym refuses these settings"),
    ({"families": {"basic_arithmetic": ONE_DIGIT}, "train_per_family": 1000},
     "too few distinct questions at these settings for the splits' 1011"),
    ({"families": {"basic_arithmetic": ONE_DIGIT}, "confirmation_per_family": 100,
      "train_per_family": 160, "val_per_family": 16, "dev_per_family": 14},
     "'qa.data.families.basic_arithmetic': 16 questions at these settings are in no other "
     "split, fewer than qa.data.confirmation_per_family 100"),
    ({"families": {}}, "'qa.data.families' must name at least one"),
])
def test_bad_family_settings_name_the_key(data, message):
    with pytest.raises(UserError, match=message):
        qa_domain(**data).load_splits()
