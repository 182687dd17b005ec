"""Task domains, each declared as data: where its records come from, how a prompt is put to
the model, and how a single reply is checked. Evaluation is one entry point for all of them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from polychromic.config import UserError

# The fields of a prepared record (data/processed/<domain>/*.jsonl) that stages read.
RECORD_FIELDS = {"tweet_id": str, "tweet": str, "reply": str}


@dataclass(frozen=True)
class Domain:
    name: str
    instruction: str
    """System message that states the task; the same for prompting, training and evaluation."""
    load_raw: Callable[[], list[dict]]
    """Records in the seed's schema: tweet_id, tweet, reply, engagement (+ optional fields)."""
    heuristic_check: Callable[[str, str], bool]
    """(prompt, sample) -> well-formed?  The cheap checker from the design document."""


def get_domain(name: str) -> Domain:
    from polychromic.domains import replies

    domains = {"replies": replies.DOMAIN}
    if name not in domains:
        raise UserError(f"params.yaml: 'domains' names unknown domain {name!r} "
                        f"(known: {', '.join(domains)})")
    return domains[name]
