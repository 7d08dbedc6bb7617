"""Model text made safe to send as trusted ``text/markdown``.

JupyterLab renders the Markdown of live outputs *with* raw HTML: an answer containing
``<script>`` or ``<img onerror=...>`` (prompt injection through a pasted document, a web page, a
file) would run in the notebook's origin. :func:`safe_markdown` keeps the Markdown but escapes
raw HTML outside code, so every ``<`` the model wrote is shown, never parsed.

Why this is safe whatever the renderer's parser does with lists, quotes or tables:

* **Code blocks are rewritten, not trusted as typed.** Every fenced block (at any indentation)
  is re-emitted at column 0 with a backtick fence longer than any backtick run in its body, and
  always closed (also while the answer is still streaming). No body line can close it early,
  and a column-0 fence cannot belong to a list or a quote, so the body is code for every
  CommonMark / GFM renderer (marked, markdown-it). Its body is left untouched.
* **No other fence exists.** A fence behind a container marker (``- ````, ``> ~~~``) gets a
  backslash before its first fence character, so it is shown as text instead of opening a block
  whose end would depend on the renderer's container rules.
* **Outside those blocks** ``&`` and ``<`` become ``&amp;`` and ``&lt;`` (a backslash-escaped
  ``\\<`` is already literal and stays). Inline code spans are left untouched only where every
  renderer pairs the backticks the same way: within one line, in a paragraph (lines between
  blank lines or fences) whose every line has only matched backtick runs, and not in a line with
  a ``|`` (GFM splits table cells before it looks for code spans).
* ``javascript:`` / ``vbscript:`` link targets get an invisible U+200C before the colon, so a
  link the model wrote cannot run script when clicked.

Everything else (emphasis, lists, tables, links, math) renders as before. Where a renderer would
have seen code that this module treats as text (an indented code block, a code span across
lines), ``<`` shows as ``&lt;`` inside the code: a cosmetic cost on the safe side.
"""

from __future__ import annotations

import re

__all__ = ["safe_markdown"]

_OPEN = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>.*)$")
_CONTAINER_FENCE = re.compile(r"^(?P<prefix>[ \t>*+\-\d.)]*?)(?P<fence>`{3,}|~{3,})(?P<rest>.*)$")
_LANGUAGE = re.compile(r"[\w.+#-]*")
_BACKTICKS = re.compile(r"`+")
_SCRIPT_SCHEME = re.compile(r"(?i)\b((?:java|vb)script)(?=:)")
_ZWNJ = "\N{ZERO WIDTH NON-JOINER}"


def _split_line(line: str) -> tuple[str, str]:
    body = line.rstrip("\r\n")
    return body, line[len(body) :]


def _closes(line: str, char: str, length: int) -> bool:
    stripped = line.strip(" \t\r\n")
    return len(stripped) >= length and stripped == char * len(stripped)


def _dedent(line: str, indent: int) -> str:
    index = 0
    while index < indent and index < len(line) and line[index] in " \t":
        index += 1
    return line[index:]


def _fenced_block(opening: re.Match[str], body: list[str]) -> str:
    indent = len(opening.group("indent"))
    text = "".join(_dedent(line, indent) for line in body)
    if text and not text.endswith("\n"):
        text += "\n"
    longest = max((len(run) for run in _BACKTICKS.findall(text)), default=0)
    fence = "`" * max(3, longest + 1)
    language = _LANGUAGE.match(opening.group("info").strip())
    info = language.group(0) if language is not None else ""
    return f"{fence}{info}\n{text}{fence}"


def _neutralize_fence(line: str) -> str:
    match = _CONTAINER_FENCE.match(line)
    if match is None:
        return line
    fence = match.group("fence")
    if fence[0] == "`" and "`" in match.group("rest"):
        return line  # not a fence for any renderer: backticks in its info string
    return f"{match.group('prefix')}\\{fence}{match.group('rest')}"


def _code_spans(line: str) -> tuple[list[tuple[str, bool]], bool]:
    """Split a line into (text, is_code) parts the way CommonMark pairs backtick runs.

    Returns the parts and whether every backtick run found its closer within the line.
    """
    parts: list[tuple[str, bool]] = []
    balanced = True
    start = index = 0
    size = len(line)
    while index < size:
        char = line[index]
        if char == "\\":
            index += 2  # a backslash escape: the next character is literal
            continue
        if char != "`":
            index += 1
            continue
        end = index
        while end < size and line[end] == "`":
            end += 1
        run = end - index
        closer = -1
        for candidate in _BACKTICKS.finditer(line, end):
            if len(candidate.group(0)) == run:
                closer = candidate.start()
                break
        if closer < 0:
            balanced = False  # literal backticks; a later line could pair with them
            index = end
            continue
        parts.append((line[start:index], False))
        parts.append((line[index : closer + run], True))
        start = index = closer + run
    parts.append((line[start:], False))
    return parts, balanced


def _escape_text(text: str) -> str:
    out: list[str] = []
    backslashes = 0
    for char in text:
        if char in "<&" and backslashes % 2 == 0:
            out.append("&lt;" if char == "<" else "&amp;")
        else:
            out.append(char)
        backslashes = backslashes + 1 if char == "\\" else 0
    return _SCRIPT_SCHEME.sub(lambda m: m.group(1) + _ZWNJ, "".join(out))


def _paragraph(lines: list[str]) -> str:
    """Escape a run of text lines (no blank line, no fence inside)."""
    split = [(_neutralize_fence(body), end) for body, end in map(_split_line, lines)]
    scanned = [(_code_spans(body), "|" in body, end) for body, end in split]
    trusted = all(balanced for (_, balanced), _, _ in scanned)
    out: list[str] = []
    for (parts, _), piped, end in scanned:
        line_trusted = trusted and not piped
        out.append(
            "".join(text if code and line_trusted else _escape_text(text) for text, code in parts)
            + end
        )
    return "".join(out)


def safe_markdown(text: str) -> str:
    """Return ``text`` as Markdown that renders the same but cannot inject HTML or script.

    Args:
        text: Markdown written by the model (complete or still streaming).

    Returns:
        The Markdown to send as ``text/markdown``; code blocks keep their content unchanged.
    """
    lines = text.splitlines(keepends=True)
    out: list[str] = []
    pending: list[str] = []

    def flush() -> None:
        if pending:
            out.append(_paragraph(pending))
            pending.clear()

    index = 0
    while index < len(lines):
        line = lines[index]
        opening = _OPEN.match(line.rstrip("\r\n"))
        if opening is not None and not (
            opening.group("fence")[0] == "`" and "`" in opening.group("info")
        ):
            flush()
            fence = opening.group("fence")
            close = index + 1
            while close < len(lines) and not _closes(lines[close], fence[0], len(fence)):
                close += 1
            out.append(_fenced_block(opening, lines[index + 1 : close]))
            out.append(_split_line(lines[close])[1] if close < len(lines) else "")
            index = close + 1
            continue
        if not line.strip():
            flush()
            out.append(line)
        else:
            pending.append(line)
        index += 1
    flush()
    return "".join(out)
