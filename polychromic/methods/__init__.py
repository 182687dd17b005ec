"""Training methods, pluggable by registration: what differs between the trained systems.

A method is one module that calls `register(Method(...))` at import time: its name (the
system name in params.yaml's `methods`, the train stage's `--method`), the dataclass of its
params section (the section named like the method; a `NoSettings` for none), how to build
its Trainer, and which per-example fields its batches carry beyond the tokens. The module is
named like the method and imported when the method is first asked for (as a domain's
package is), so a run imports only the methods it trains, and adding a method reruns no
other method's stages. Adding a method is one module here plus its params section and its
name in `methods` (docs/methods.md; tests/integration/test_method_contract.py registers one
in a test).

Everything around the Trainer (data, LoRA, schedule, callbacks, saving, MLflow, resuming) is
the same for every method and lives in `training.py`; `build_trainer` below is the one place
that assembles a Trainer, for the train stage, the benchmark and the signal measurement.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from polychromic.config import UserError, load_section


@dataclass
class NoSettings:
    """A method with nothing to set (its params section is `{}`)."""


@dataclass(frozen=True)
class Method:
    name: str
    trainer_class: Callable[[], type]
    """The Trainer (sub)class, imported when asked for (transformers is slow to import)."""
    config: type = NoSettings
    """The dataclass of the method's params section (named like the method)."""
    options: Callable[..., dict[str, Any]] | None = None
    """(config, params, tokenizer, domain, train records, val records) -> the Trainer's
    extra keyword arguments; None: it takes none."""
    batch_fields: tuple[str, ...] = field(default=())
    """Per-example fields the collator keeps in the batch (e.g. `record_index`)."""


_REGISTRY: dict[str, Method] = {}


def register(method: Method) -> Method:
    """Make `method` known by its name; registering a name twice is a programming error."""
    if method.name in _REGISTRY and _REGISTRY[method.name] is not method:
        raise ValueError(f"method {method.name!r} is registered already")
    _REGISTRY[method.name] = method
    return method


def method_modules() -> list[str]:
    """The modules of this package, each a method of its name (not imported)."""
    return sorted(module.name for module in pkgutil.iter_modules(__path__))


def known_methods() -> list[str]:
    """This package's methods and any registered in this process."""
    return sorted({*method_modules(), *_REGISTRY})


def get_method(name: str) -> Method:
    if name not in _REGISTRY and name in method_modules():
        importlib.import_module(f"{__name__}.{name}")
        if name not in _REGISTRY:
            raise ValueError(f"polychromic/methods/{name}.py registers no method named "
                             f"{name!r} (a method's module is named like the method)")
    if name not in _REGISTRY:
        raise UserError(f"params.yaml: 'methods' names unknown method {name!r} "
                        f"(known: {', '.join(known_methods())})")
    return _REGISTRY[name]


def method_config(name: str, params: dict[str, Any]):
    """The method's checked params section (its defaults where params.yaml has none)."""
    method = get_method(name)
    return load_section(method.config, params if name in params else {name: {}}, name)


def method_options(name: str, params: dict[str, Any], tokenizer, domain, train, val) -> dict:
    """The keyword arguments the method's Trainer takes beyond the common ones."""
    method = get_method(name)
    if method.options is None:
        return {}
    return method.options(method_config(name, params), params, tokenizer, domain, train, val)


def build_trainer(name: str, model, args, train_set, eval_set, callbacks, options: dict):
    """The method's Trainer over packed batches (`modeling.PackCollator`, keeping the
    method's batch fields) with the causal-LM loss: the same for every caller."""
    from polychromic.modeling import PackCollator, causal_lm_loss

    method = get_method(name)
    return method.trainer_class()(
        model=model, args=args, train_dataset=train_set, eval_dataset=eval_set,
        data_collator=PackCollator(method.batch_fields), callbacks=callbacks,
        compute_loss_func=causal_lm_loss, **options)
