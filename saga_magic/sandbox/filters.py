"""Azure content-filter annotations (PROTOCOLS 2.4): prompt and choice results, violations."""

from __future__ import annotations

from typing import Final

__all__ = [
    "FILTER_DOWN",
    "SEVERITY_CATEGORIES",
    "choice_filter_results",
    "prompt_filter_results",
    "prompt_violation_results",
]

SEVERITY_CATEGORIES: Final = ("hate", "self_harm", "sexual", "violence")
"""Categories rated by severity (``safe``, ``low``, ``medium``, ``high``)."""
FILTER_DOWN: Final[dict[str, object]] = {
    "error": {"code": "content_filter_error", "message": "The contents are not filtered"}
}
"""``content_filter_results`` when the filter service could not run."""


def _safe() -> dict[str, object]:
    return {name: {"filtered": False, "severity": "safe"} for name in SEVERITY_CATEGORIES}


def prompt_filter_results() -> list[dict[str, object]]:
    """Return ``prompt_filter_results`` for a harmless prompt."""
    results = _safe()
    results["jailbreak"] = {"filtered": False, "detected": False}
    return [{"prompt_index": 0, "content_filter_results": dict(sorted(results.items()))}]


def choice_filter_results(
    *, violence: bool = False, protected_text: bool = False
) -> dict[str, object]:
    """Return a choice's ``content_filter_results`` (optionally with a category triggered)."""
    results = _safe()
    if violence:
        results["violence"] = {"filtered": True, "severity": "medium"}
    results["protected_material_code"] = {"filtered": False, "detected": False}
    results["protected_material_text"] = {"filtered": protected_text, "detected": protected_text}
    return dict(sorted(results.items()))


def prompt_violation_results(flagged: str) -> dict[str, object]:
    """Return the ``content_filter_result`` of a prompt refused for one category.

    A severity category is rated ``medium``; ``jailbreak`` is detected; any other name (for
    example ``indirect_attack``) is added as filtered with severity ``high``.
    """
    results: dict[str, object] = {
        name: {"filtered": name == flagged, "severity": "medium" if name == flagged else "safe"}
        for name in SEVERITY_CATEGORIES
    }
    results["jailbreak"] = {"filtered": flagged == "jailbreak", "detected": flagged == "jailbreak"}
    if flagged not in results:
        results[flagged] = {"filtered": True, "severity": "high"}
    return dict(sorted(results.items()))
