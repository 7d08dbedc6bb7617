"""Model text sent as trusted Markdown: raw HTML escaped outside code, code left as written."""

from __future__ import annotations

import re
from typing import Any

import pytest
from magic_helpers import Harness

from saga_magic.magic.display import AnswerView, final_bundle
from saga_magic.magic.markdown import safe_markdown

ZWNJ = "\N{ZERO WIDTH NON-JOINER}"
_TAG = re.compile(r"<\s*/?\s*[A-Za-z!?]")


def _outside_fences(markdown: str) -> str:
    """The parts of ``markdown`` outside column-0 fenced blocks (what a renderer parses)."""
    out: list[str] = []
    fence: str | None = None
    for line in markdown.splitlines():
        stripped = line.rstrip()
        if fence is None and re.match(r"^`{3,}", line):
            fence = re.match(r"^`+", line).group(0)  # type: ignore[union-attr]
        elif fence is not None and stripped == fence:
            fence = None
        elif fence is None:
            out.append(line)
    return "\n".join(out)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("<script>alert(1)</script>", "&lt;script>alert(1)&lt;/script>"),
        ('x <img src=x onerror="alert(1)"> y', 'x &lt;img src=x onerror="alert(1)"> y'),
        ("Tom & Jerry &amp; co", "Tom &amp; Jerry &amp;amp; co"),
        ("<!-- hidden --> <a href=x>", "&lt;!-- hidden --> &lt;a href=x>"),
        ("**bold** _it_ [link](https://x.y) > quote", "**bold** _it_ [link](https://x.y) > quote"),
        ("keep `a < b && c` in a code span", "keep `a < b && c` in a code span"),
        ("``x ` <b>`` then <b>", "``x ` <b>`` then &lt;b>"),
        ("escaped \\<b> stays, \\\\<b> does not", "escaped \\<b> stays, \\\\&lt;b> does not"),
        ("[x](javascript:alert(1))", f"[x](javascript{ZWNJ}:alert(1))"),
        ("[x](VBScript:msgbox(1))", f"[x](VBScript{ZWNJ}:msgbox(1))"),
        ("plain text", "plain text"),
        ("", ""),
    ],
)
def test_inline_text(text: str, expected: str) -> None:
    assert safe_markdown(text) == expected


def test_code_fences_stay_untouched() -> None:
    text = (
        "Use this:\n\n```html\n<script>alert('<b>') && x</script>\n```\n\n"
        "and <b>this</b> outside.\n~~~\na < b & c\n~~~\n"
    )
    assert safe_markdown(text) == (
        "Use this:\n\n```html\n<script>alert('<b>') && x</script>\n```\n\n"
        "and &lt;b>this&lt;/b> outside.\n```\na < b & c\n```\n"
    )


def test_fences_are_rewritten_so_no_line_can_escape_them() -> None:
    # A body line that some renderer could read as a closing fence cannot close the new one.
    text = "~~~~\n```\n<script>x</script>\n~~~~\n"
    assert safe_markdown(text) == "````\n```\n<script>x</script>\n````\n"
    # An unclosed fence (streaming) is closed; its info string keeps only a language name.
    assert safe_markdown("```py onload=<x>\nprint('<b>')") == "```py\nprint('<b>')\n```"
    # Indented fences (in a list) are moved to column 0, their body dedented.
    assert safe_markdown("1. run\n   ```sh\n   echo <x>\n   ```\n2. done") == (
        "1. run\n```sh\necho <x>\n```\n2. done"
    )


@pytest.mark.parametrize(
    "attack",
    [
        # a list item's fence closed by the end of the list: the old HTML would follow it
        "- ```\n  ```\n  <script>alert(1)</script>\n  ```",
        "- a\n  ```\n<x>\n```\n<script>alert(1)</script>\n```\n<img src=x onerror=alert(1)>",
        # a top-level fence indented by one space, closed by a column-0 fence
        " ```\n```\n<script>alert(1)</script>\n```",
        # a code span that a renderer pairs across lines
        "`a\n`<script>alert(1)</script>`",
        # GFM splits table cells before code spans
        "a | b\n--|--\n`x|<img src=x onerror=alert(1)>`",
        "| `x | <img src=x onerror=alert(1)> ` |",
        # fences behind quote and list markers
        "> ```\n> <script>alert(1)</script>",
        "1. ~~~\n<script>alert(1)</script>",
        # a backslash-escaped backtick does not open a code span
        "\\`<script>alert(1)</script>`",
    ],
)
def test_no_raw_tag_reaches_the_renderer_outside_code(attack: str) -> None:
    safe = safe_markdown(attack)
    outside = _outside_fences(safe)
    trusted_spans = re.sub(r"(?<!\\)(`+)(?!`).*?(?<!`)\1(?!`)", "", outside)
    assert not _TAG.search(trusted_spans), safe
    if "|" in attack or attack.startswith("`a"):
        assert not _TAG.search(outside), safe  # no code span is trusted in these


def test_fence_markers_behind_containers_are_neutralized() -> None:
    assert safe_markdown("- ```\n  x\n") == "- \\```\n  x\n"
    assert safe_markdown("> ~~~\n") == "> \\~~~\n"
    assert safe_markdown("```js```") == "```js```"  # an inline code span, not a fence


def test_final_bundle_and_stream_use_safe_markdown() -> None:
    text = "hi <img src=x onerror=alert(1)>\n```\n<b>code</b>\n```"
    bundle = final_bundle(text, "markdown")
    assert bundle["text/plain"] == text  # the plain fallback is what the model said
    assert bundle["text/markdown"] == "hi &lt;img src=x onerror=alert(1)>\n```\n<b>code</b>\n```"
    code = final_bundle("```js onerror=<x>\nlet a = '<b>'\n```", "code")
    assert code["text/markdown"] == "```js\nlet a = '<b>'\n```"

    calls: list[dict[str, Any]] = []

    def display(bundle: dict[str, Any], **_: Any) -> Any:
        calls.append(bundle)
        return None

    view = AnswerView(display, min_interval=0.0)
    view.append("<script>alert(1)</script>")
    view.refresh(force=True)
    assert calls[-1]["text/markdown"] == "&lt;script>alert(1)&lt;/script> \N{LEFT HALF BLOCK}"
    assert calls[-1]["text/plain"] == "<script>alert(1)</script> \N{LEFT HALF BLOCK}"


def test_a_cell_never_displays_raw_html_from_the_model(harness: Harness) -> None:
    harness.configure = lambda e: setattr(
        e, "answer", lambda t: "Done <script>steal()</script>\n```html\n<p>kept</p>\n```"
    )
    result, captured = harness.run("%%copilot\nsummarize this page")
    assert result.success
    markdowns = [
        o["data"]["text/markdown"] for o in captured._outputs if "text/markdown" in o["data"]
    ]
    assert markdowns
    assert all("<script>" not in text for text in markdowns)
    assert markdowns[-1] == "Done &lt;script>steal()&lt;/script>\n```html\n<p>kept</p>\n```"
    assert harness.shell.user_ns["_copilot"].response_text.startswith("Done <script>")
