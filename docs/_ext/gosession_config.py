"""``gosession-config``: a table of settings, generated from the code.

Usage (MyST)::

    ```{gosession-config} core
    ```

The argument is a section of :mod:`settings_table` (``core``,
``encryption`` or a built-in provider's name). Columns: key, default,
description; backticks in a description become inline literals. A key
without a description is a build error (an ERROR, which ``-W`` and
the CI build turn into a failure), so the table cannot drift from
the code.
"""
from __future__ import annotations

import re
import typing as t

import settings_table
from docutils import nodes
from docutils.parsers.rst import Directive, directives

_CODE = re.compile(r"`([^`]+)`")


def _paragraph(text: str) -> nodes.paragraph:
    para = nodes.paragraph()
    pos = 0
    for match in _CODE.finditer(text):
        if match.start() > pos:
            para += nodes.Text(text[pos:match.start()])
        para += nodes.literal(match.group(1), match.group(1))
        pos = match.end()
    if pos < len(text):
        para += nodes.Text(text[pos:])
    return para


def _cell(content: nodes.Node) -> nodes.entry:
    entry = nodes.entry()
    entry += content
    return entry


class SettingsTable(Directive):
    required_arguments = 1
    has_content = False
    option_spec: t.ClassVar[dict[str, t.Any]] = {"class": directives.class_option}

    def run(self) -> list[nodes.Node]:
        section = self.arguments[0]
        try:
            rows = settings_table.rows(section)
        except ValueError as err:
            raise self.error(str(err)) from None
        missing = [row.key for row in rows if not row.description]
        if missing:
            raise self.error(f"settings without a description: {', '.join(missing)}")
        table = nodes.table(classes=["gosession-config", *self.options.get("class", [])])
        group = nodes.tgroup(cols=3)
        table += group
        for width in (30, 20, 50):
            group += nodes.colspec(colwidth=width)
        head = nodes.thead()
        group += head
        header = nodes.row()
        for title in ("key", "default", "description"):
            header += _cell(nodes.paragraph(text=title))
        head += header
        body = nodes.tbody()
        group += body
        for row in rows:
            line = nodes.row()
            line += _cell(nodes.paragraph("", "", nodes.literal(row.key, row.key)))
            line += _cell(nodes.paragraph("", "", nodes.literal(row.default, row.default)))
            line += _cell(_paragraph(t.cast(str, row.description)))
            body += line
        return [table]


def setup(app: t.Any) -> dict[str, t.Any]:
    app.add_directive("gosession-config", SettingsTable)
    return {"parallel_read_safe": True, "parallel_write_safe": True, "version": "1"}
