"""Method `baseline`: standard LoRA, cross-entropy on the target tokens only (prompt tokens
are masked). Its params section `baseline` is `{}`: nothing to set beyond `train`."""

from __future__ import annotations

from polychromic.methods import Method, register


def _trainer_class() -> type:
    from transformers import Trainer

    return Trainer


METHOD = register(Method(name="baseline", trainer_class=_trainer_class))
