"""Table formatting shared by the report stage (Table 1) and the ablation command (Table 2):
Markdown and booktabs LaTeX, with escaping."""

from __future__ import annotations

from itertools import accumulate
from typing import Any

DASH = "–"  # an undefined value
TEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
       "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "<": "$<$",
       ">": "$>$", DASH: "--", "↓": r"$\downarrow$", "λ": r"$\lambda$", "Δ": r"$\Delta$"}


def fmt(value: Any, digits: int = 3) -> str:
    return DASH if value is None else f"{value:.{digits}f}"


def md_escape(text: str) -> str:
    """A Markdown table cell: `|` escaped, line breaks as <br>."""
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\r\n", "<br>").replace(
        "\n", "<br>")


def tex_escape(text: str) -> str:
    return "".join(TEX.get(char, char) for char in text)


def md_table(header: list[str], rows: list[list[str]], align: str) -> str:
    """`align`: one character per column, l or r."""
    rule = [":---" if a == "l" else "---:" for a in align]
    return "\n".join("| " + " | ".join(cells) + " |" for cells in [header, rule, *rows])


def tex_tabular(header: list[str], rows: list[list[str]], align: str,
                groups: list[tuple[str, int]] | None = None) -> str:
    """A booktabs tabular of escaped cells; `groups`: (title or "", span) over all columns."""
    lines = [rf"\begin{{tabular}}{{{align}}}", r"\toprule"]
    if groups:
        lines.append(" & ".join(rf"\multicolumn{{{span}}}{{c}}{{{title}}}" if title
                                else " & ".join([""] * span) for title, span in groups) + r" \\")
        ends = accumulate(span for _, span in groups)
        lines.append(" ".join(rf"\cmidrule(lr){{{end - span + 1}-{end}}}"
                              for end, (title, span) in zip(ends, groups, strict=True) if title))
    lines += [" & ".join(header) + r" \\", r"\midrule", *(" & ".join(c) + r" \\" for c in rows)]
    return "\n".join(lines + [r"\bottomrule", r"\end{tabular}"])
