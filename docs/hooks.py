"""MkDocs hook: render bare doctest blocks in docstrings as ``pycon`` code.

A docstring may show a doctest outside a Google ``Examples:`` section (a ``>>>`` line after the
summary). Markdown would read its output, e.g. ``[0.1, 0.2]`` on the line after ``[...]``, as a
reference-style link. This hook adds a Markdown preprocessor that wraps each such run of lines
(from a ``>>>`` line to the next blank line, outside fenced and indented code) in a ``pycon``
fence. It changes nothing else.
"""
from __future__ import annotations

import re

from markdown import Extension
from markdown.preprocessors import Preprocessor

_FENCE = re.compile(r"^\s*(```|~~~)")


class _DoctestFence(Preprocessor):
    def run(self, lines: list[str]) -> list[str]:
        out: list[str] = []
        in_fence = False
        in_doctest = False
        indent = ""
        for line in lines:
            if in_doctest:
                if line.strip() == "":
                    out.append(indent + "```")
                    in_doctest = False
                    out.append(line)
                else:
                    out.append(line)
                continue
            if _FENCE.match(line):
                in_fence = not in_fence
                out.append(line)
                continue
            stripped = line.lstrip(" ")
            lead = len(line) - len(stripped)
            if not in_fence and stripped.startswith(">>>") and lead < 4:
                indent = " " * lead
                if out and out[-1].strip():
                    out.append("")
                out.append(indent + "```pycon")
                out.append(line)
                in_doctest = True
                continue
            out.append(line)
        if in_doctest:
            out.append(indent + "```")
        return out


class DoctestFenceExtension(Extension):
    def extendMarkdown(self, md):  # noqa: N802 (Markdown's API name)
        md.preprocessors.register(_DoctestFence(md), "slt_doctest_fence", 40)


def on_config(config, **kwargs):
    config.markdown_extensions.append(DoctestFenceExtension())
    return config
