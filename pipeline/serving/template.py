"""Render the Go-template subset our Ollama TEMPLATE uses, so that llama.cpp sees what Ollama sees.

Ollama renders TEMPLATE with Go's text/template. No maintained Python library implements it, and
we need only ``{{ .Field }}`` and ``{{ if .Field }} … {{ end }}`` (with ``{{-``/``-}}`` trimming),
so this is written by hand and refuses anything else: a TEMPLATE that uses more fails loudly here
instead of rendering differently from Ollama.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

_ACTION = re.compile(r"\{\{(-?)\s*(.*?)\s*(-?)\}\}", re.S)
_FIELD = re.compile(r"^\.([A-Z][A-Za-z]*)$")
_IF = re.compile(r"^if\s+\.([A-Z][A-Za-z]*)$")


class TemplateError(ValueError):
    """The template uses a construct outside the supported subset, or is unbalanced."""


def render(template: str, values: Mapping[str, str]) -> str:
    """Render ``template`` with ``values`` (Go field names: System, Prompt, Response)."""
    tokens: list[tuple[str, str]] = []  # ("text", s) | ("field", name) | ("if", name) | ("end", "")
    position = 0
    for match in _ACTION.finditer(template):
        text = template[position : match.start()]
        if match.group(1):
            text = text.rstrip()
        if tokens and tokens[-1][0] == "trim_next":
            tokens.pop()
            text = text.lstrip()
        tokens.append(("text", text))
        action = match.group(2)
        if field := _FIELD.match(action):
            tokens.append(("field", field.group(1)))
        elif condition := _IF.match(action):
            tokens.append(("if", condition.group(1)))
        elif action == "end":
            tokens.append(("end", ""))
        else:
            raise TemplateError(f"unsupported template action {{{{ {action} }}}}")
        if match.group(3):
            tokens.append(("trim_next", ""))
        position = match.end()
    tail = template[position:]
    if tokens and tokens[-1][0] == "trim_next":
        tokens.pop()
        tail = tail.lstrip()
    tokens.append(("text", tail))

    out: list[str] = []
    skipping: list[bool] = []  # one entry per open {{ if }}: True when its body is skipped
    for kind, value in tokens:
        if kind == "if":
            skipping.append(bool(skipping and skipping[-1]) or not values.get(value))
        elif kind == "end":
            if not skipping:
                raise TemplateError("{{ end }} without {{ if }}")
            skipping.pop()
        elif skipping and skipping[-1]:
            continue
        elif kind == "text":
            out.append(value)
        else:
            out.append(values.get(value, ""))
    if skipping:
        raise TemplateError("{{ if }} without {{ end }}")
    return "".join(out)
