"""The saved chat template pins Qwen3-style thinking off (or on) and leaves others alone."""

import jinja2

from polychromic.base_source import pin_thinking

QWEN_LIKE = ("{%- if enable_thinking is defined and enable_thinking is false -%}plain"
             "{%- else -%}<think>{%- endif -%}")


def render(template: str, **variables) -> str:
    return jinja2.Environment().from_string(template).render(**variables)


def test_pin_thinking_off_and_on():
    assert render(QWEN_LIKE) == "<think>"  # the template's own default: thinking
    assert render(pin_thinking(QWEN_LIKE, False)) == "plain"
    # pinned inside the template: a caller's variable no longer changes it
    assert render(pin_thinking(QWEN_LIKE, False), enable_thinking=True) == "plain"
    assert render(pin_thinking(QWEN_LIKE, True)) == "<think>"


def test_templates_without_the_switch_are_unchanged():
    template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    assert pin_thinking(template, False) == template
