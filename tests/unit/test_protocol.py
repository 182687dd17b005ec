"""The sealed confirmation split: each domain's matches its committed seal, is disjoint from
every split that anything reads (train, val, fewshot, dev), no committed result or document
names one of its prompts; only the unseal stage reads it (tests/unit/test_confirmation.py)."""

import subprocess

import pytest
import yaml

from polychromic.config import UserError
from polychromic.domains import load_domain
from polychromic.protocol import SEALED, check_seal, read_seal, record_hash, seal_text
from tests.helpers import REPO

PARAMS = yaml.safe_load((REPO / "params.yaml").read_text())
CONFIRMATION_RESULTS = {"docs/confirmation-results.md"}  # studies/ is not scanned
SEALED_DOMAINS = sorted(p.stem for p in (REPO / SEALED).glob("*.sha256"))


@pytest.fixture(scope="module")
def splits():
    return {name: load_domain(name, PARAMS).load_splits() for name in SEALED_DOMAINS}


def test_replies_and_code_are_sealed():
    assert {"replies", "code"} <= set(SEALED_DOMAINS)


@pytest.mark.parametrize("name", SEALED_DOMAINS)
def test_the_confirmation_split_is_the_sealed_one(splits, name):
    domain = load_domain(name, PARAMS)
    confirmation = splits[name]["confirmation"]
    assert check_seal(domain, confirmation, REPO) is None
    assert len(read_seal(REPO / SEALED / f"{name}.sha256").hashes) == len(confirmation) > 100


def texts(record) -> set[str]:
    return {" ".join(t.lower().split()) for t in [record["prompt"], *record["references"]]
            if len(t) > 3}  # a one-word reply ("yes") may repeat across unrelated prompts


@pytest.mark.parametrize("name", SEALED_DOMAINS)
def test_the_confirmation_split_shares_nothing_with_any_other(splits, name):
    confirmation = splits[name]["confirmation"]
    ids = {r["id"] for r in confirmation}
    prompts = {" ".join(r["prompt"].lower().split()) for r in confirmation}
    assert len(ids) == len(confirmation)
    for other in ("train", "val", "fewshot", "dev"):
        records = splits[name][other]
        assert not ids & {r["id"] for r in records}, other
        assert not prompts & {" ".join(r["prompt"].lower().split()) for r in records}, other
    if name == "code":  # nor a reference solution
        solutions = {t for r in confirmation for t in texts(r)}
        for other in ("train", "fewshot"):
            assert not solutions & {t for r in splits[name][other] for t in texts(r)}, other


def test_no_committed_result_or_document_names_a_confirmation_prompt(splits):
    """metrics/, plots/, docs/, scripts/ and the top-level documents: nothing there was ever
    computed on, or chosen with, a confirmation prompt, save the one confirmation run's own
    results (studies/confirmation, its page)."""
    tracked = subprocess.run(["git", "ls-files", "metrics", "plots", "docs", "scripts",
                              "README.md", "CHANGELOG.md", "params.yaml", "profiles"],
                             cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    tracked = [path for path in tracked if path not in CONFIRMATION_RESULTS]
    ids = {r["id"] for name in splits for r in splits[name]["confirmation"]}
    prompts = {r["prompt"] for name in splits for r in splits[name]["confirmation"]
               if len(r["prompt"]) > 40}
    for path in tracked:
        text = (REPO / path).read_text(encoding="utf-8", errors="replace")
        # `mbpp-12` is inside `mbpp-123`: only whole ids count
        named = {i for i in ids
                 if any(not text[m + len(i):m + len(i) + 1].isdigit()
                        for m in _find_all(text, i))}
        assert not named, (path, sorted(named)[:3])
        assert not {p for p in prompts if p in text}, path


def _find_all(text: str, word: str):
    start = text.find(word)
    while start != -1:
        yield start
        start = text.find(word, start + 1)


def test_a_seal_file_is_checked_line_by_line(tmp_path):
    domain = load_domain("replies", PARAMS)
    records = [{"id": "a", "prompt": "p", "references": ["r"], "task": {}}]
    path = tmp_path / "x.sha256"
    path.write_text(seal_text(domain, records))
    assert read_seal(path).hashes == (record_hash(records[0]),)
    path.write_text(seal_text(domain, records).replace("# records: 1", "# records: 2"))
    with pytest.raises(ValueError, match=r"x.sha256:2: says '2' records, the file holds 1"):
        read_seal(path)
    path.write_text(seal_text(domain, records)[:-10] + "\n")
    with pytest.raises(ValueError, match=r"x.sha256:4: not a SHA-256"):
        read_seal(path)
    # a record's hash covers every field
    assert record_hash(records[0]) != record_hash({**records[0], "task": {"x": 1}})


def test_a_seal_is_written_once(tmp_path, monkeypatch):
    from polychromic.commands import seal

    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(PARAMS))
    (tmp_path / SEALED).mkdir(parents=True)
    (tmp_path / SEALED / "code.sha256").write_text("mine")
    with pytest.raises(UserError, match="already sealed"):
        seal.main(["--write", "code"])
    assert (tmp_path / SEALED / "code.sha256").read_text() == "mine"
    with pytest.raises(UserError, match="'nope' is not in params.yaml 'domains'"):
        seal.main(["--write", "nope"])


def test_the_protocol_params_are_params_yaml_with_the_overlay(monkeypatch):
    """studies/protocol/params.yaml is written by `polychromic protocol`: a change to
    params.yaml that it has not seen fails here."""
    from polychromic.commands.protocol import protocol_params
    from polychromic.studies import laid_over

    monkeypatch.chdir(REPO)
    assert (REPO / "studies/protocol/params.yaml").read_text() == protocol_params(), (
        "studies/protocol/params.yaml is out of date: run `polychromic protocol`")
    assert laid_over({"a": {"b": 1, "c": [1]}, "d": 2}, {"a": {"c": [2]}, "e": 3}) == {
        "a": {"b": 1, "c": [2]}, "d": 2, "e": 3}


def test_the_protocol_pipeline_runs_only_stage_modules_that_exist():
    import re

    text = (REPO / "studies/protocol/dvc.yaml").read_text()
    modules = set(re.findall(r"python -m (polychromic\.stages\.\w+)", text))
    assert {"polychromic.stages.match", "polychromic.stages.power",
            "polychromic.stages.frontier"} <= modules
    for module in modules:
        assert (REPO / (module.replace(".", "/") + ".py")).is_file(), module
