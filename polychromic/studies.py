"""Second pipelines under studies/<name>/ (docs/protocol.md, docs/experiments.md): each has
its own dvc.yaml and reads its own params files, written from the repository's params.yaml
with the study's few keys laid over, so that a change to params.yaml reaches a study only
when its params are written again (`polychromic protocol`, `polychromic study <name>`)."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import yaml

from polychromic.config import UserError, read_yaml_mapping
from polychromic.params_check import check_all
from polychromic.tracking import declared

STUDIES = Path("studies")
ARM_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def laid_over(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """`changes` over `base`: mappings merged key by key, anything else replaced."""
    out = copy.deepcopy(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = laid_over(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def dump(params: dict[str, Any], name: str, sources: str) -> str:
    """A study's params file: what wrote it and from what, then the params."""
    return (f"# Written by `polychromic study {name}` from {sources}: do not edit.\n"
            + yaml.safe_dump(params, sort_keys=False, allow_unicode=True))


def arm_file(name: str, arm: str, params: dict[str, Any]) -> tuple[Path, str]:
    """studies/<name>/arms/<arm>/params.yaml and its text."""
    return (STUDIES / name / "arms" / arm / "params.yaml",
            dump(params, name, f"../../../../params.yaml, {name}.yaml's common and arms.{arm}"))


def read_spec(root: Path, name: str, known: set[str]) -> tuple[Path, dict]:
    """studies/<name>/<name>.yaml, with its keys checked against `known`."""
    spec_path = root / STUDIES / name / f"{name}.yaml"
    spec = read_yaml_mapping(spec_path)
    unknown = sorted(set(spec) - known)
    if unknown:
        raise UserError(f"{spec_path}: unknown key(s) {unknown} (known: "
                        f"{', '.join(sorted(known))})")
    common, arms = spec.get("common") or {}, spec.get("arms")
    if not isinstance(common, dict):
        raise UserError(f"{spec_path}: 'common' must be a mapping of params")
    if not isinstance(arms, dict) or not arms:
        raise UserError(f"{spec_path}: 'arms' must map each arm's name to its params")
    return spec_path, spec


def arm_params(spec_path: Path, shared: dict, arm: Any, changes: Any,
               method: str | None = None) -> dict[str, Any]:
    """One arm's params: `changes` over `shared`; with `method`, that method is among the
    arm's `methods` and has its section (its defaults where the arm sets none)."""
    if not isinstance(arm, str) or not ARM_NAME.fullmatch(arm):
        raise UserError(f"{spec_path}: arms.{arm}: a name of letters, digits, '.', '_', "
                        "'-' (it names a folder)")
    if not isinstance(changes, dict):
        raise UserError(f"{spec_path}: arms.{arm}: must be a mapping of params")
    params = laid_over(shared, changes)
    if method is not None:
        params["methods"] = list(dict.fromkeys([*params.get("methods", []), method]))
        params.setdefault(method, {})
    try:
        check_all(params)
    except UserError as err:
        raise UserError(f"{spec_path}: arms.{arm}: {err}") from None
    return params


def sweep_files(root: Path = Path(), name: str = "sweep") -> dict[Path, str]:
    """The params files of an arms study (studies/<name>/<name>.yaml: `common`, laid over
    params.yaml for every arm, and `arms`, each laid over that): the study's params.yaml
    (with `arms`, the arms' names, for its dvc.yaml's matrix) and each arm's
    arms/<arm>/params.yaml. Each arm's params pass the params check."""
    folder = STUDIES / name
    spec_path, spec = read_spec(root, name, {"common", "arms"})
    shared = laid_over(read_yaml_mapping(root / "params.yaml"), spec.get("common") or {})
    files = {}
    for arm, changes in spec["arms"].items():
        path, text = arm_file(name, arm, arm_params(spec_path, shared, arm, changes))
        files[path] = text
    files[folder / "params.yaml"] = dump(
        {**shared, "arms": list(spec["arms"])}, name,
        f"../../params.yaml and {name}.yaml's common (arms: the arms' names)")
    return files


def selection_files(root: Path = Path(), name: str = "selection") -> dict[Path, str]:
    """The params files of the selection study (docs/objectives.md): as `sweep_files`, but
    each arm trains the method it names (`method:`, beside its params) in each domain it
    lists (`domains:`, default every domain of `common`), and the study's params.yaml holds
    `runs`, one entry per arm, domain and seed ({arm, method, domain, seed}) for its
    dvc.yaml's foreach, and `arms`, each arm's method and domains."""
    folder = STUDIES / name
    spec_path, spec = read_spec(root, name, {"common", "arms"})
    shared = laid_over(read_yaml_mapping(root / "params.yaml"), spec.get("common") or {})
    files, runs, arms = {}, {}, {}
    for arm, entry in spec["arms"].items():
        entry = dict(entry) if isinstance(entry, dict) else entry
        if not isinstance(entry, dict) or not isinstance(entry.get("method"), str):
            raise UserError(f"{spec_path}: arms.{arm}: needs 'method: <a method>'")
        method = entry.pop("method")
        domains = entry.pop("domains", None) or shared.get("domains") or []
        params = arm_params(spec_path, shared, arm, entry, method)
        unknown = sorted(set(domains) - set(shared.get("domains") or []))
        if unknown:
            raise UserError(f"{spec_path}: arms.{arm}.domains: {unknown} not in common "
                            "'domains'")
        params["domains"] = list(domains)
        arms[arm] = {"method": method, "domains": list(domains)}
        for domain in domains:
            for seed in params.get("seeds") or []:
                runs[f"{arm}-{domain}-{seed}"] = {"arm": arm, "method": method,
                                                  "domain": domain, "seed": seed}
        path, text = arm_file(name, arm, params)
        files[path] = text
    files[folder / "params.yaml"] = dump(
        {**shared, "arms": arms, "runs": runs}, name,
        f"../../params.yaml and {name}.yaml's common (arms, runs: the arms)")
    return files


TRAIN_KEYS = ("runtime", "train")  # with the method and <domain>.<TRAINED>: what train reads
TRAINED = ("train", "prompt", "sampling", "checker")
PROTOCOL = "../../protocol"  # the protocol run's folder, from a confirmation domain's folder


def selected_arm(root: Path, domain: str) -> dict[str, Any] | None:
    """The selection study's choice for `domain` ({arm, method, params: the arm's params,
    seed: the seed it was trained with}), or None where no objective was eligible."""
    folder = root / STUDIES / "selection"
    path = folder / "metrics" / domain / "selection.json"
    if not path.is_file():
        raise UserError(f"{path}: no such file (the confirmation run carries each domain's "
                        "objective chosen on val: dvc repro studies/selection/dvc.yaml first)")
    chosen = read_yaml_mapping(path).get("chosen")
    if chosen is None:
        return None
    study = read_yaml_mapping(folder / "params.yaml")
    arm_params_path = folder / "arms" / str(chosen) / "params.yaml"
    if chosen not in (study.get("arms") or {}) or not arm_params_path.is_file():
        raise UserError(f"{path}: chose {chosen!r}, which is not an arm of "
                        f"{folder / 'params.yaml'} (polychromic study selection)")
    return {"arm": chosen, "method": study["arms"][chosen]["method"],
            "params": read_yaml_mapping(arm_params_path), "seed": study["seeds"][0]}


def confirmation_files(root: Path = Path(), name: str = "confirmation") -> dict[Path, str]:
    """The confirmation run's params (docs/protocol.md): per domain, <domain>/params.yaml,
    params.yaml with studies/protocol/protocol.yaml (the frozen protocol), confirmation.yaml's
    `common` and its `per_domain.<domain>` laid over, and the domain's objective chosen on val (the
    selection study's choice: its method, its settings, and LoRA matched to its val
    diversity); the study's params.yaml holds what its dvc.yaml's foreach lists run over.

    Adapters are not trained twice: LoRA's and polychromic's are the protocol run's, the
    selected objective's first seed the selection study's (its training params must be this
    run's, or the writer refuses), its other seeds trained here."""
    folder = STUDIES / name
    spec_path = root / folder / f"{name}.yaml"
    spec = read_yaml_mapping(spec_path)
    unknown = sorted(set(spec) - {"common", "per_domain", "prompts"})
    if unknown:
        raise UserError(f"{spec_path}: unknown key(s) {unknown} (known: common, per_domain, "
                        "prompts)")
    shared = laid_over(read_yaml_mapping(root / STUDIES / "protocol" / "protocol.yaml"),
                       spec.get("common") or {})
    shared = laid_over(read_yaml_mapping(root / "params.yaml"), shared)
    prompts, per_domain = spec.get("prompts") or {}, spec.get("per_domain") or {}
    if not isinstance(prompts, dict) or not isinstance(per_domain, dict) or (
            (set(prompts) | set(per_domain)) - set(shared.get("domains") or [])):
        raise UserError(f"{spec_path}: 'prompts' and 'per_domain' map each of 'domains' to "
                        "its count and its settings")
    lists: dict[str, dict] = {key: {} for key in (
        "unseal", "trainings", "trained", "matched", "matches", "evaluated", "comparisons",
        "frontier_trained", "pages")}
    files: dict[Path, str] = {}
    domains = shared.get("domains") or []
    chosen_files = [root / STUDIES / "selection/metrics" / d / "selection.json" for d in domains]
    if not any(path.is_file() for path in chosen_files):
        # before the selection has chosen: a pipeline of no stages (DVC reads every dvc.yaml
        # of the repository, so this folder's must parse from a fresh clone)
        files[folder / "params.yaml"] = dump(
            {"domains": [], "prompting": [], "seeds": [], "frontier": shared["frontier"],
             **lists}, name, f"{name}.yaml before the selection study has chosen (no "
            "stages until it has: then run this again)")
        return files
    lists["pages"] = {"confirmation": {"out": "docs/confirmation-results.md"}}
    for domain in domains:
        count = prompts.get(domain, 0)
        if not isinstance(count, int) or isinstance(count, bool) or count < 0:
            raise UserError(f"{spec_path}: prompts.{domain}: a count of sealed records (0: "
                            "all of them)")
        params = laid_over(laid_over(shared, per_domain.get(domain) or {}),
                           {"domains": [domain]})
        chosen = selected_arm(root, domain)
        systems = list(params["systems"])
        comparisons = {"polychromic": ("baseline_matched", list(params["compare"]["against"]))}
        lists["unseal"][domain] = {"domain": domain, "prompts": count}
        for seed in params["seeds"]:
            for system in params["methods"]:
                lists["trained"][f"{domain}-{system}-{seed}"] = {
                    "domain": domain, "system": system, "seed": seed,
                    "adapter": f"{PROTOCOL}/models/{domain}/{system}/seed{seed}"}
            lists["matched"][f"{domain}-baseline_matched-{seed}"] = {
                "domain": domain, "system": "baseline_matched", "seed": seed,
                "adapter": f"{PROTOCOL}/models/{domain}/baseline/seed{seed}",
                "temperature": f"../metrics/{domain}/matched_polychromic.json"}
        # the protocol's match, from its val metrics: the same temperature as its
        # matched.json, here beside the selected objective's
        lists["matches"][f"{domain}-polychromic"] = {
            "domain": domain, "method": "polychromic",
            "reference": f"{PROTOCOL}/metrics/val/{domain}/polychromic/evaluated.json"}
        if chosen is not None:
            method, arm = chosen["method"], chosen["arm"]
            params["methods"] = [*params["methods"], method]
            params[method] = chosen["params"][method]
            keys = (*TRAIN_KEYS, method, *(f"{domain}.{sub}" for sub in TRAINED))
            ours, theirs = declared(params, keys), declared(chosen["params"], keys)
            differ = [key for key in keys if ours.get(key) != theirs.get(key)]
            if differ:
                raise UserError(f"{spec_path}: {domain}'s objective was selected with "
                                f"other {', '.join(differ)} (studies/selection/arms/{arm}: "
                                "rerun the selection, or keep these as they were)")
            matched = f"baseline_matched_{method}"
            systems += [method, matched]
            comparisons[method] = (matched, ["baseline", matched, "zero_shot", "few_shot",
                                             "polychromic"])
            lists["matches"][f"{domain}-{method}"] = {
                "domain": domain, "method": method,
                "reference": f"../../selection/arms/{arm}/metrics/{domain}/"
                             f"seed{chosen['seed']}.json"}
            for seed in params["seeds"]:
                adapter = f"models/{method}/seed{seed}"
                if seed == chosen["seed"]:
                    adapter = f"../../selection/arms/{arm}/models/{domain}/seed{seed}"
                else:
                    lists["trainings"][f"{domain}-{method}-{seed}"] = {
                        "domain": domain, "method": method, "seed": seed}
                lists["trained"][f"{domain}-{method}-{seed}"] = {
                    "domain": domain, "system": method, "seed": seed, "adapter": adapter}
                lists["matched"][f"{domain}-{matched}-{seed}"] = {
                    "domain": domain, "system": matched, "seed": seed,
                    "adapter": f"{PROTOCOL}/models/{domain}/baseline/seed{seed}",
                    "temperature": f"../metrics/{domain}/matched_{method}.json"}
        params["systems"] = systems
        try:
            check_all(params)
        except UserError as err:
            raise UserError(f"{spec_path}: {domain}: {err}") from None
        for system in systems:
            for seed in params["seeds"]:
                lists["evaluated"][f"{domain}-{system}-{seed}"] = {
                    "domain": domain, "system": system, "seed": seed}
        for reference, (matched, against) in comparisons.items():
            lists["comparisons"][f"{domain}-{reference}"] = {
                "domain": domain, "reference": reference, "matched": matched,
                "against": ",".join(against)}
        seed = params["frontier"]["seed"]
        if seed not in params["seeds"]:
            raise UserError(f"{spec_path}: frontier.seed {seed} is not among the seeds "
                            f"{params['seeds']} (the frontiers read that seed's adapters)")
        for system in params["methods"]:
            lists["frontier_trained"][f"{domain}-{system}"] = {
                **lists["trained"][f"{domain}-{system}-{seed}"]}
        files[folder / domain / "params.yaml"] = dump(
            params, name, f"../../../params.yaml, ../../protocol/protocol.yaml, {name}.yaml's "
            f"common and per_domain.{domain}, and the selection study's choice")
    files[folder / "params.yaml"] = dump(
        {"domains": shared.get("domains") or [], "prompting": shared["prompting"],
         "seeds": shared["seeds"], "frontier": shared["frontier"], **lists}, name,
        f"{name}.yaml and the selection study's choices (what dvc.yaml runs over; each "
        "domain's params are in <domain>/params.yaml)")
    return files


ARMS_STUDIES = {"sweep": sweep_files, "selection": selection_files,
                "confirmation": confirmation_files}
"""Each study's params writer, by the study's name (`polychromic study <name>`)."""
