#!/usr/bin/env python3
"""Prints every query of hopguard's Grafana dashboards as JSON lines.

    python3 dashboards/extract_queries.py [--substitute] [DASHBOARD.json ...]

One line per panel target, panels nested in collapsed rows included:

    {"dashboard": "charter-compliance.json", "panel": "<panel title>", "refId": "A",
     "expr": "<PromQL>", "instant": false}

`instant` says whether Grafana runs the target as an instant query (stat/bargauge/table
snapshots) or a range query. Without arguments it reads dashboards/grafana/*.json.

With --substitute, Grafana variables are replaced so the expression can be sent to Prometheus
as is: $peer -> .*, $__rate_interval -> 1m, $__interval -> 1m, $__range -> 1h (see
SUBSTITUTIONS). Without it the expressions are printed exactly as stored.

Stdlib only; check_dashboards.py imports iter_targets() and substitute() from here.
"""

import json
import re
import signal
import sys
from pathlib import Path

GRAFANA_DIR = Path(__file__).resolve().parent / "grafana"

# What a test harness substitutes for Grafana's variables before querying Prometheus.
SUBSTITUTIONS = {
    "peer": ".*",
    "datasource": "",
    "__rate_interval": "1m",
    "__interval": "1m",
    "__interval_ms": "60000",
    "__range": "1h",
    "__range_s": "3600",
    "__range_ms": "3600000",
}

# $name, ${name} and ${name:format}
VAR_RE = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)(?::[^}]*)?\}|([A-Za-z_][A-Za-z0-9_]*))")


def variables(expr):
    """Names of the Grafana variables used in expr."""
    return [a or b for a, b in VAR_RE.findall(expr)]


def substitute(expr, values=None):
    values = SUBSTITUTIONS if values is None else values

    def repl(m):
        name = m.group(1) or m.group(2)
        if name not in values:
            raise KeyError(f"no substitution for ${name}")
        return values[name]

    return VAR_RE.sub(repl, expr)


def iter_panels(panels):
    """Every panel, rows included, descending into the panels a collapsed row holds."""
    for p in panels or []:
        yield p
        if p.get("type") == "row":
            yield from iter_panels(p.get("panels"))


def iter_targets(dashboard):
    """(panel, target) for every target of every non-row panel."""
    for p in iter_panels(dashboard.get("panels")):
        if p.get("type") == "row":
            continue
        for t in p.get("targets") or []:
            yield p, t


def dashboard_files(args):
    return [Path(a) for a in args] if args else sorted(GRAFANA_DIR.glob("*.json"))


def main(argv):
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # quiet when piped into head
    sub = "--substitute" in argv
    files = dashboard_files([a for a in argv if a != "--substitute"])
    for f in files:
        d = json.loads(f.read_text(encoding="utf-8"))
        for p, t in iter_targets(d):
            expr = t.get("expr", "")
            print(json.dumps({
                "dashboard": f.name,
                "panel": p.get("title", ""),
                "refId": t.get("refId", ""),
                "expr": substitute(expr) if sub else expr,
                "instant": bool(t.get("instant", False)),
            }, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
