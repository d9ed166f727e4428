"""A small renderer for the subset of Go templates (and Helm/Sprig functions) our chart uses.

Helm itself cannot be installed on this project's machines (no binary reaches them), so the chart tests
render it with this: actions ``{{ }}`` with trim markers, ``define``/``include``, ``if``/``end``, ``range
$k, $v := ...``, field paths (``.Values.a.b``, ``.Release.Name``), variables, string and number literals,
parenthesised sub-pipelines, and the functions quote, default, nindent, indent, toYaml. Anything else raises,
so a template using more than this fails its test instead of rendering wrongly.
"""

from __future__ import annotations

import json
import re
import shlex
from typing import Any

import yaml

_ACTION = re.compile(r"\{\{(-?)\s*(.*?)\s*(-?)\}\}", re.DOTALL)


def _tokens(text: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    for m in _ACTION.finditer(text):
        lead = text[pos:m.start()]
        if m.group(1):
            lead = lead.rstrip()
        out.append(("text", lead))
        out.append(("action", m.group(2)))
        pos = m.end()
        if m.group(3):
            rest = text[pos:]
            pos += len(rest) - len(rest.lstrip())
    out.append(("text", text[pos:]))
    return out


def _parse(tokens: list[tuple[str, str]], i: int = 0, stop: tuple[str, ...] = ()) -> tuple[list[Any], int]:
    nodes: list[Any] = []
    while i < len(tokens):
        kind, value = tokens[i]
        if kind == "text":
            nodes.append(("text", value))
            i += 1
            continue
        word = value.split(None, 1)[0] if value else ""
        if word in stop:
            return nodes, i
        if word in ("if", "range", "define"):
            body, j = _parse(tokens, i + 1, ("end", "else"))
            other: list[Any] = []
            if tokens[j][1] == "else":
                other, j = _parse(tokens, j + 1, ("end",))
            nodes.append((word, value[len(word):].strip(), body, other))
            i = j + 1
            continue
        if word in ("end", "else"):
            raise ValueError(f"unexpected {word}")
        nodes.append(("expr", value))
        i += 1
    return nodes, i


class Renderer:
    def __init__(self, templates: dict[str, str]) -> None:
        self.defines: dict[str, list[Any]] = {}
        self.trees: dict[str, list[Any]] = {}
        for name, text in templates.items():
            tree, _ = _parse(_tokens(text))
            self.trees[name] = tree
            self._collect(tree)

    def _collect(self, nodes: list[Any]) -> None:
        for node in nodes:
            if node[0] == "define":
                self.defines[shlex.split(node[1])[0]] = node[2]

    def render(self, name: str, ctx: dict[str, Any]) -> str:
        return self._run(self.trees[name], ctx, {})

    def _run(self, nodes: list[Any], dot: Any, env: dict[str, Any]) -> str:
        out = []
        for node in nodes:
            kind = node[0]
            if kind == "text":
                out.append(node[1])
            elif kind == "expr":
                out.append(self._str(self._pipeline(node[1], dot, env)))
            elif kind == "if":
                out.append(self._run(node[2] if self._truthy(self._pipeline(node[1], dot, env)) else node[3],
                                     dot, env))
            elif kind == "range":
                m = re.match(r"^\$(\w+)\s*,\s*\$(\w+)\s*:=\s*(.+)$", node[1])
                if not m:
                    raise ValueError(f"unsupported range: {node[1]}")
                seq = self._pipeline(m.group(3), dot, env) or {}
                items = sorted(seq.items()) if isinstance(seq, dict) else list(enumerate(seq))
                for k, v in items:
                    out.append(self._run(node[2], dot, {**env, m.group(1): k, m.group(2): v}))
            elif kind == "define":
                continue
        return "".join(out)

    @staticmethod
    def _truthy(value: Any) -> bool:
        return bool(value)

    @staticmethod
    def _str(value: Any) -> str:
        if value is None:
            return ""
        if isinstance(value, bool):
            return "true" if value else "false"
        return str(value)

    def _pipeline(self, text: str, dot: Any, env: dict[str, Any]) -> Any:
        stages = _split(text, "|")
        value = self._command(stages[0], dot, env, None, False)
        for stage in stages[1:]:
            value = self._command(stage, dot, env, value, True)
        return value

    def _command(self, text: str, dot: Any, env: dict[str, Any], piped: Any, has_piped: bool) -> Any:
        words = _split(text.strip(), " ")
        name, args = words[0], [self._term(w, dot, env) for w in words[1:]]
        if has_piped:
            args.append(piped)
        funcs = {
            "include": lambda tpl, ctx: self._run(self.defines[tpl], ctx, {}),
            # Sprig's quote is Go's %q: escapes included, so multi-line text stays one YAML scalar.
            "quote": lambda v: json.dumps(self._str(v)),
            "default": lambda d, v=None: v if v else d,
            "nindent": lambda n, v: "\n" + "\n".join(" " * int(n) + line if line else line
                                                     for line in self._str(v).split("\n")),
            "indent": lambda n, v: "\n".join(" " * int(n) + line for line in self._str(v).split("\n")),
            "toYaml": lambda v: yaml.safe_dump(v, default_flow_style=False, sort_keys=True).rstrip("\n"),
        }
        if name in funcs:
            return funcs[name](*args)
        if args:
            raise ValueError(f"unsupported function: {name}")
        return self._term(name, dot, env)

    def _term(self, word: str, dot: Any, env: dict[str, Any]) -> Any:
        if word.startswith("(") and word.endswith(")"):
            return self._pipeline(word[1:-1], dot, env)
        if word.startswith('"'):
            return shlex.split(word)[0]
        if re.fullmatch(r"-?\d+", word):
            return int(word)
        if word == ".":
            return dot
        if word.startswith("$"):
            return env[word[1:]]
        if word.startswith("."):
            value = dot
            for part in word[1:].split("."):
                value = value.get(part) if isinstance(value, dict) else None
            return value
        raise ValueError(f"unsupported term: {word}")


def _split(text: str, sep: str) -> list[str]:
    """Split on ``sep`` outside quotes and parentheses."""
    parts, depth, quote, cur = [], 0, False, ""
    for ch in text:
        if ch == '"':
            quote = not quote
        elif not quote and ch == "(":
            depth += 1
        elif not quote and ch == ")":
            depth -= 1
        if ch == sep and depth == 0 and not quote:
            if cur.strip():
                parts.append(cur.strip())
            cur = ""
            continue
        cur += ch
    if cur.strip():
        parts.append(cur.strip())
    return parts
