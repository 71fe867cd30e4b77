#!/usr/bin/env python3
"""Structural check of hopguard's Grafana dashboards (run by dashboards/check.sh).

    python3 dashboards/check_dashboards.py [--promtool PATH] [DASHBOARD.json ...]

For every dashboards/grafana/*.json:
  - valid JSON; schemaVersion 39; a unique, non-empty uid;
  - templating defines `datasource` (type datasource, query prometheus) and `peer`;
  - every panel, including those nested in collapsed rows, has a unique id, an allowed type,
    the datasource {"type": "prometheus", "uid": "${datasource}"} and at least one target;
  - every target has that datasource, a unique refId and a non-empty expr that filters on
    peer=~"$peer", uses only template variables that are defined (or Grafana built-ins) and
    range selectors of [$__rate_interval], [$__interval] or [$__range] only;
  - every hopguard_* name in an expr is an exported series listed in docs/metrics.md, and every
    hopguard:* name is a recording rule of dashboards/prometheus/rules.yml.
Also: rules.yml references only exported series, docs/metrics.md names every recording rule and
no other, and
every expr (variables substituted as in extract_queries.py) parses as PromQL, checked by loading
them as recording rules into `promtool check rules`.

Prints one line per query, "dashboard<TAB>panel title<TAB>refId<TAB>expr", then the problems;
exits 1 if there are any. Stdlib only.
"""

import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

sys.dont_write_bytecode = True  # no __pycache__ in the work tree
sys.path.insert(0, str(Path(__file__).resolve().parent))
from extract_queries import (  # noqa: E402
    dashboard_files,
    iter_panels,
    iter_targets,
    substitute,
    variables,
)

ROOT = Path(__file__).resolve().parent.parent
METRICS_MD = ROOT / "docs" / "metrics.md"
RULES = ROOT / "dashboards" / "prometheus" / "rules.yml"

DS = {"type": "prometheus", "uid": "${datasource}"}
PANEL_TYPES = {"timeseries", "stat", "bargauge", "table", "row"}
BUILTINS = {
    "__rate_interval", "__interval", "__interval_ms", "__range", "__range_s", "__range_ms",
    "__from", "__to", "__dashboard", "__org", "__user", "__all", "timeFilter",
}
ALLOWED_WINDOWS = {"[$__rate_interval]", "[$__interval]", "[$__range]"}
PEER_FILTER = 'peer=~"$peer"'

METRIC_RE = re.compile(r"\bhopguard_[a-z0-9_]+")
RULE_RE = re.compile(r"\bhopguard:[a-z0-9_:]+")
# A range selector directly after a selector: `...}[5m]` or `metric[5m]`, not a subquery.
WINDOW_RE = re.compile(r"(?<=[}\w])\s*(\[[^\]]*\])")


def exported_series():
    """Series names Prometheus can query, from the "Exported metrics" table of metrics.md."""
    names = set()
    row = re.compile(r"^\|\s*`(hopguard_[a-z0-9_]+)`\s*\|[^|]*\|\s*(counter|gauge|histogram)\s*\|")
    for line in METRICS_MD.read_text(encoding="utf-8").splitlines():
        m = row.match(line)
        if not m:
            continue
        name, kind = m.groups()
        if kind == "histogram":
            names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
        else:
            names.add(name)
    return names


def recording_rules():
    text = RULES.read_text(encoding="utf-8")
    return set(re.findall(r"^\s*-\s*record:\s*(\S+)\s*$", text, re.M))


def rules_expr_text():
    """rules.yml without comment lines (the planned rules are commented out)."""
    lines = RULES.read_text(encoding="utf-8").splitlines()
    return "\n".join(l for l in lines if not l.lstrip().startswith("#"))


def check_names(where, text, series, rules, problems):
    for name in sorted(set(METRIC_RE.findall(text))):
        if name not in series:
            problems.append(f"{where}: {name} is not an exported series (docs/metrics.md)")
    for name in sorted(set(RULE_RE.findall(text))):
        if name not in rules:
            problems.append(f"{where}: {name} is not a recording rule in rules.yml")


def check_dashboard(path, seen_uids, series, rules, problems, queries):
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        problems.append(f"{path.name}: not valid JSON: {e}")
        return
    where = path.name
    uid = d.get("uid")
    if not uid:
        problems.append(f"{where}: no uid")
    elif uid in seen_uids:
        problems.append(f"{where}: uid {uid!r} also used by {seen_uids[uid]}")
    else:
        seen_uids[uid] = where
    if d.get("schemaVersion") != 39:
        problems.append(f"{where}: schemaVersion is {d.get('schemaVersion')!r}, want 39")
    if not d.get("title"):
        problems.append(f"{where}: no title")

    tvars = {v.get("name"): v for v in (d.get("templating") or {}).get("list", [])}
    dsv = tvars.get("datasource")
    if not dsv or dsv.get("type") != "datasource" or dsv.get("query") != "prometheus":
        problems.append(f"{where}: templating needs a `datasource` variable of type datasource,"
                        " query prometheus")
    pv = tvars.get("peer")
    if not pv or not (pv.get("multi") and pv.get("includeAll")):
        problems.append(f"{where}: templating needs a multi-value `peer` variable with All")
    elif pv.get("datasource") != DS:
        problems.append(f"{where}: the peer variable must query {DS}")
    defined = set(tvars) | BUILTINS

    ids = {}
    for p in iter_panels(d.get("panels")):
        title = p.get("title") or "(untitled)"
        pw = f"{where}: panel {title!r}"
        pid = p.get("id")
        if pid is None:
            problems.append(f"{pw}: no id")
        elif pid in ids:
            problems.append(f"{pw}: id {pid} also used by {ids[pid]!r}")
        else:
            ids[pid] = title
        if p.get("type") not in PANEL_TYPES:
            problems.append(f"{pw}: type {p.get('type')!r} not one of {sorted(PANEL_TYPES)}")
        if "gridPos" not in p:
            problems.append(f"{pw}: no gridPos")
        if p.get("type") == "row":
            continue
        if not p.get("title"):
            problems.append(f"{pw}: no title")
        if p.get("datasource") != DS:
            problems.append(f"{pw}: datasource is {p.get('datasource')!r}, want {DS}")
        tgts = p.get("targets") or []
        if not tgts:
            problems.append(f"{pw}: no targets")
        refs = set()
        for t in tgts:
            ref = t.get("refId") or ""
            tw = f"{pw} target {ref or '?'}"
            if not ref:
                problems.append(f"{tw}: no refId")
            elif ref in refs:
                problems.append(f"{tw}: duplicate refId")
            refs.add(ref)
            if t.get("datasource") != DS:
                problems.append(f"{tw}: datasource is {t.get('datasource')!r}, want {DS}")
            expr = (t.get("expr") or "").strip()
            if not expr:
                problems.append(f"{tw}: empty expr")
                continue
            queries.append((where, title, ref, expr))
            if PEER_FILTER not in expr:
                problems.append(f"{tw}: expr does not filter on {PEER_FILTER}")
            for v in variables(expr):
                if v not in defined:
                    problems.append(f"{tw}: ${v} is not defined in templating")
            for w in WINDOW_RE.findall(expr):
                if w not in ALLOWED_WINDOWS and not w.startswith("[$"):
                    problems.append(f"{tw}: fixed range {w}; use [$__rate_interval] or"
                                    " [$__range] (or a recording rule)")
            if re.search(r"\[\[\w+\]\]", expr):
                problems.append(f"{tw}: deprecated [[var]] syntax")
            check_names(tw, expr, series, rules, problems)


def promql_parse_check(queries, promtool, problems):
    """Loads every substituted expr as a recording rule into `promtool check rules`."""
    lines = ["groups:", "  - name: dashboard-queries", "    rules:"]
    for i, (_, _, _, expr) in enumerate(queries):
        try:
            e = substitute(expr)
        except KeyError as err:
            problems.append(f"cannot substitute variables in {expr!r}: {err}")
            continue
        lines.append(f"      - record: dashboard_query_{i}")
        lines.append(f"        expr: {json.dumps(e)}")
    with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as f:
        f.write("\n".join(lines) + "\n")
        tmp = f.name
    try:
        r = subprocess.run([promtool, "check", "rules", tmp], capture_output=True, text=True)
    except OSError as e:
        problems.append(f"cannot run {promtool}: {e}")
        return
    finally:
        Path(tmp).unlink(missing_ok=True)
    if r.returncode != 0:
        out = (r.stdout + r.stderr).strip()
        for m in re.finditer(r"dashboard_query_(\d+)", out):
            q = queries[int(m.group(1))]
            problems.append(f"{q[0]}: panel {q[1]!r} target {q[2]}: PromQL does not parse")
        problems.append("promtool check rules on the dashboard queries failed:\n" + out)


def main(argv):
    promtool, args = "promtool", list(argv)
    if "--promtool" in args:
        i = args.index("--promtool")
        promtool = args[i + 1]
        del args[i:i + 2]
    problems, queries, seen = [], [], {}
    series = exported_series()
    if not series:
        problems.append("docs/metrics.md: no exported metrics found in its table")
    rules = recording_rules()
    if not rules:
        problems.append("rules.yml: no recording rules found")

    files = dashboard_files(args)
    if not files:
        problems.append("no dashboards in dashboards/grafana/")
    for f in files:
        check_dashboard(f, seen, series, rules, problems, queries)

    check_names("rules.yml", rules_expr_text(), series, rules, problems)
    doc = METRICS_MD.read_text(encoding="utf-8")
    for r in sorted(rules):
        if f"`{r}`" not in doc:
            problems.append(f"docs/metrics.md does not document recording rule {r}")
    for r in sorted(set(RULE_RE.findall(doc)) - rules):
        problems.append(f"docs/metrics.md names {r}, which is not a recording rule in rules.yml")
    if queries:
        promql_parse_check(queries, promtool, problems)

    for q in queries:
        print("\t".join(q))
    print(f"-- {len(queries)} queries in {len(files)} dashboards")
    for p in problems:
        print(f"FAIL {p}", file=sys.stderr)
    if problems:
        print(f"-- {len(problems)} problem(s)", file=sys.stderr)
        return 1
    print("-- dashboards OK")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
