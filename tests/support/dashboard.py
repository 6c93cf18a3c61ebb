"""The metric names the chart's Grafana dashboard queries, and those a real /metrics exposes."""

from __future__ import annotations

import json
import re
from pathlib import Path

DASHBOARD = Path(__file__).resolve().parents[2] / "charts" / "llmop" / "files" / "dashboards" / "llmop.json"

#: PromQL words that look like names: aggregations' modifiers and operators (functions are
#: recognised by the parenthesis that follows them).
_KEYWORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "and",
    "or",
    "unless",
    "bool",
    "offset",
}
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")


def dashboard_queries(path: Path = DASHBOARD) -> list[str]:
    panels = json.loads(path.read_text())["panels"]
    return [target["expr"] for panel in panels for target in panel.get("targets", [])]


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # label values
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # ranges
    expr = _GROUPING.sub("", expr)  # the labels an aggregation keeps
    names = set()
    for found in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", expr):
        if expr[found.end() :].lstrip().startswith("(") or found.group() in _KEYWORDS:
            continue  # a function or an aggregation
        names.add(found.group())
    return names


def dashboard_metric_names(path: Path = DASHBOARD) -> set[str]:
    return {name for expr in dashboard_queries(path) for name in metric_names(expr)}


def exposed_names(exposition: str) -> set[str]:
    """Every series name a Prometheus text exposition offers: its samples, and the series of each
    family it declares (a labelled family declares them before its first sample)."""
    names = set()
    for line in exposition.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(None, 3)
            names.add(name)
            if kind.strip() == "histogram":
                names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
            elif kind.strip() == "summary":
                names |= {f"{name}_sum", f"{name}_count"}
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{\s]", line, maxsplit=1)[0])
    return names
