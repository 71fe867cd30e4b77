#!/usr/bin/env python3
"""Writes hopguard's Grafana dashboards (dashboards/grafana/*.json) from the definitions below.

The JSON files are the artifacts Grafana loads; this script is where they are edited. After a
change, run `python3 dashboards/generate_dashboards.py` and commit both. `dashboards/check.sh`
fails when the JSON on disk differs from what this script writes (`--check`).

Stdlib only. Targets Grafana 10/11 (schemaVersion 39).
"""

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "grafana"

DS = {"type": "prometheus", "uid": "${datasource}"}
P = 'peer=~"$peer"'  # every query is filtered by the peer variable

RATIO_THRESHOLDS = [{"color": "red", "value": None}, {"color": "green", "value": 1}]
ZERO_IS_GOOD = [{"color": "green", "value": None}, {"color": "red", "value": 1}]


def target(expr, legend="__auto", ref="A", instant=False, fmt="time_series"):
    return {
        "datasource": DS,
        "refId": ref,
        "expr": expr,
        "legendFormat": legend,
        "range": not instant,
        "instant": instant,
        "format": fmt,
        "editorMode": "code",
    }


def targets(*specs, instant=False, fmt="time_series"):
    """specs: (expr, legend) pairs; refIds A, B, C ... in order."""
    return [
        target(e, l, chr(ord("A") + i), instant=instant, fmt=fmt) for i, (e, l) in enumerate(specs)
    ]


def _panel(kind, title, description, tgts, unit="short", thresholds=None, **defaults):
    fd = {
        "unit": unit,
        "color": {"mode": "palette-classic"},
        "thresholds": {
            "mode": "absolute",
            "steps": thresholds or [{"color": "green", "value": None}],
        },
    }
    fd.update(defaults)
    return {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DS,
        "targets": tgts,
        "fieldConfig": {"defaults": fd, "overrides": []},
    }


def timeseries(title, description, tgts, unit="short", stack=None, min_=None, max_=None,
               threshold_line=None, stepped=False, overrides=None):
    custom = {
        "drawStyle": "line",
        "lineWidth": 1,
        "fillOpacity": 10 if stack is None else 60,
        "showPoints": "never",
        "spanNulls": False,
        "lineInterpolation": "stepAfter" if stepped else "linear",
        "stacking": {"mode": stack or "none", "group": "A"},
        "axisSoftMin": 0,
        "thresholdsStyle": {"mode": "line" if threshold_line is not None else "off"},
    }
    steps = [{"color": "transparent", "value": None}]
    if threshold_line is not None:
        steps.append({"color": "red", "value": threshold_line})
    p = _panel("timeseries", title, description, tgts, unit, steps, custom=custom)
    if min_ is not None:
        p["fieldConfig"]["defaults"]["min"] = min_
    if max_ is not None:
        p["fieldConfig"]["defaults"]["max"] = max_
    p["fieldConfig"]["overrides"] = overrides or []
    p["options"] = {
        "legend": {"showLegend": True, "displayMode": "table", "placement": "bottom",
                   "calcs": ["min", "mean", "lastNotNull"]},
        "tooltip": {"mode": "multi", "sort": "desc"},
    }
    return p


def stat(title, description, tgts, unit="short", thresholds=None, no_value="no traffic",
         decimals=None):
    p = _panel("stat", title, description, tgts, unit, thresholds, noValue=no_value)
    p["fieldConfig"]["defaults"]["color"] = {"mode": "thresholds"}
    if decimals is not None:
        p["fieldConfig"]["defaults"]["decimals"] = decimals
    p["options"] = {
        "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
        "colorMode": "background",
        "graphMode": "none",
        "justifyMode": "auto",
        "orientation": "auto",
        "textMode": "value_and_name",
        "wideLayout": True,
        "showPercentChange": False,
    }
    return p


def bargauge(title, description, tgts, unit="short"):
    p = _panel("bargauge", title, description, tgts, unit, min=0)
    p["options"] = {
        "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
        "orientation": "horizontal",
        "displayMode": "gradient",
        "valueMode": "color",
        "namePlacement": "auto",
        "showUnfilled": True,
        "sizing": "auto",
        "minVizWidth": 8,
        "minVizHeight": 16,
    }
    return p


def table(title, description, tgts, columns, order=None, overrides=None):
    """columns: refId -> displayed column name (renames `Value #<refId>`)."""
    p = _panel("table", title, description, tgts, "short",
               custom={"align": "auto", "cellOptions": {"type": "auto"}})
    rename = {f"Value #{ref}": name for ref, name in columns.items()}
    if len(tgts) == 1:
        rename = {"Value": next(iter(columns.values()))}
    index = {name: i for i, name in enumerate(order or [])}
    p["transformations"] = [
        {"id": "merge", "options": {}},
        {"id": "organize", "options": {
            "excludeByName": {"Time": True, "__name__": True},
            "renameByName": rename,
            "indexByName": index,
        }},
    ]
    p["fieldConfig"]["overrides"] = overrides or []
    p["options"] = {
        "showHeader": True,
        "cellHeight": "sm",
        "footer": {"show": False, "reducer": ["sum"], "countRows": False, "fields": ""},
        "sortBy": [{"displayName": "peer", "desc": False}],
    }
    return p


def column_style(name, unit, steps):
    return {
        "matcher": {"id": "byName", "options": name},
        "properties": [
            {"id": "unit", "value": unit},
            {"id": "custom.cellOptions", "value": {"type": "color-background", "mode": "basic"}},
            {"id": "thresholds", "value": {"mode": "absolute", "steps": steps}},
        ],
    }


def color(name, c):
    return {
        "matcher": {"id": "byName", "options": name},
        "properties": [{"id": "color", "value": {"mode": "fixed", "fixedColor": c}}],
    }


def row(title, collapsed=False, panels=None):
    return {"type": "row", "title": title, "collapsed": collapsed, "panels": panels or []}


def layout(items):
    """items: a row dict, or (width, height, panel). Assigns ids and gridPos left to right.

    A collapsed row keeps the (width, height, panel) tuples given in its "panels" and lays
    them out beneath itself, as Grafana stores them."""
    out, ids = [], iter(range(1, 1000))
    x = y = line_h = 0

    def place(w, h, p):
        nonlocal x, y, line_h
        if x + w > 24:
            x, y, line_h = 0, y + line_h, 0
        p["id"] = next(ids)
        p["gridPos"] = {"h": h, "w": w, "x": x, "y": y}
        x += w
        line_h = max(line_h, h)
        return p

    for it in items:
        if isinstance(it, dict):  # a row
            if x:
                x, y, line_h = 0, y + line_h, 0
            it["id"] = next(ids)
            it["gridPos"] = {"h": 1, "w": 24, "x": 0, "y": y}
            y += 1
            nested = it["panels"]
            it["panels"] = []
            if it["collapsed"]:
                for w, h, p in nested:
                    it["panels"].append(place(w, h, p))
                x, y, line_h = 0, y + line_h, 0
            out.append(it)
        else:
            out.append(place(*it))
    return out


def templating():
    return {"list": [
        {
            "name": "datasource",
            "label": "Prometheus",
            "type": "datasource",
            "query": "prometheus",
            "current": {"selected": False, "text": "hopguard Prometheus",
                        "value": "hopguard-prometheus"},
            "hide": 0,
            "includeAll": False,
            "multi": False,
            "options": [],
            "refresh": 1,
            "regex": "",
            "skipUrlSync": False,
        },
        {
            "name": "peer",
            "label": "Peer",
            "description": "Charter peers by configured name; `other` is every other destination"
                           " or client.",
            "type": "query",
            "datasource": DS,
            "definition": "label_values({__name__=~\"hopguard_inbound_messages_total|"
                          "hopguard_outbound_messages_total\"}, peer)",
            "query": "label_values({__name__=~\"hopguard_inbound_messages_total|"
                     "hopguard_outbound_messages_total\"}, peer)",
            "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
            "hide": 0,
            "includeAll": True,
            "allValue": ".*",
            "multi": True,
            "options": [],
            "refresh": 2,
            "regex": "",
            "sort": 1,
            "skipUrlSync": False,
        },
    ]}


def dashboard(uid, title, description, panels, time_from):
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["hopguard", "smtp", "tls"],
        "timezone": "utc",
        "editable": True,
        "graphTooltip": 1,
        "fiscalYearStartMonth": 0,
        "liveNow": False,
        "refresh": "1m",
        "schemaVersion": 39,
        "version": 1,
        "time": {"from": time_from, "to": "now"},
        "timepicker": {},
        "annotations": {"list": []},
        "links": [{
            "title": "hopguard dashboards",
            "type": "dashboards",
            "tags": ["hopguard"],
            "asDropdown": False,
            "includeVars": True,
            "keepTime": True,
            "targetBlank": False,
            "icon": "external link",
            "tooltip": "",
            "url": "",
        }],
        "templating": templating(),
        "panels": panels,
    }


# ---------------------------------------------------------------------------------------------
# Charter compliance
# ---------------------------------------------------------------------------------------------

AUTH_NOTE = (
    " Authenticated = delivered over TLS with the next hop's certificate verified (label"
    " verify = dane-ee, dane-ta, mta-sts, pkix or pinned). A delivery under `tls: encrypt` is"
    " encrypted but not authenticated (verify=none) and lowers the share (see docs/metrics.md)."
)


def charter_compliance():
    cols = {
        "A": "Inbound encrypted",
        "B": "Outbound encrypted",
        "C": "Outbound authenticated",
        "D": "Plaintext deliveries since start",
        "E": "STARTTLS rejections in range",
        "F": "TLS failures in range",
    }
    ratio_cols = [cols[k] for k in "ABC"]
    compliance_table = table(
        "Compliance by peer (ratios: last 15 minutes)",
        "One row per peer. Ratios come from the recording rules (15-minute windows); an empty"
        " cell means no traffic in the window. Red in a count column is a breach only for"
        " charter peers: `other` may legitimately receive plaintext under an opportunistic"
        " policy." + AUTH_NOTE,
        targets(
            (f"sum by (peer) (hopguard:inbound_encrypted_ratio:rate15m{{{P}}})", "{{peer}}"),
            (f"sum by (peer) (hopguard:outbound_encrypted_ratio:rate15m{{{P}}})", "{{peer}}"),
            (f"sum by (peer) (hopguard:outbound_authenticated_ratio:rate15m{{{P}}})", "{{peer}}"),
            (f"sum by (peer) (hopguard_plaintext_deliveries_total{{{P}}})", "{{peer}}"),
            (f"sum by (peer) (increase(hopguard_inbound_starttls_required_rejections_total"
             f"{{{P}}}[$__range]))", "{{peer}}"),
            (f"sum by (peer) (increase(hopguard_tls_failures_total{{{P}}}[$__range]))",
             "{{peer}}"),
            instant=True, fmt="table",
        ),
        cols,
        order=["peer"] + list(cols.values()),
        overrides=[column_style(c, "percentunit", RATIO_THRESHOLDS) for c in ratio_cols]
        + [column_style(cols["D"], "short", ZERO_IS_GOOD),
           column_style(cols["E"], "short", [{"color": "green", "value": None},
                                              {"color": "orange", "value": 1}]),
           column_style(cols["F"], "short", [{"color": "green", "value": None},
                                              {"color": "orange", "value": 1}])],
    )

    panels = [
        row("Compliance now (last 15 minutes)"),
        (8, 6, stat(
            "Outbound: authenticated share",
            "Per peer, share of delivered messages that went over authenticated TLS"
            " (recording rule hopguard:outbound_authenticated_ratio:rate15m). Must be 100%"
            " for every charter peer." + AUTH_NOTE,
            targets((f"hopguard:outbound_authenticated_ratio:rate15m{{{P}}}", "{{peer}}")),
            "percentunit", RATIO_THRESHOLDS, decimals=2)),
        (8, 6, stat(
            "Outbound: encrypted share",
            "Per peer, share of delivered messages that went over TLS of any version"
            " (hopguard:outbound_encrypted_ratio:rate15m). Deferrals are not counted.",
            targets((f"hopguard:outbound_encrypted_ratio:rate15m{{{P}}}", "{{peer}}")),
            "percentunit", RATIO_THRESHOLDS, decimals=2)),
        (8, 6, stat(
            "Inbound: encrypted share",
            "Per peer, share of accepted inbound messages that arrived over TLS"
            " (hopguard:inbound_encrypted_ratio:rate15m). Inbound hops are never counted as"
            " authenticated: hopguard does not verify client certificates.",
            targets((f"hopguard:inbound_encrypted_ratio:rate15m{{{P}}}", "{{peer}}")),
            "percentunit", RATIO_THRESHOLDS, decimals=2)),
        (6, 5, stat(
            "Plaintext deliveries to charter peers",
            "Messages delivered without TLS to charter peers (peer != other) since each relay"
            " process started (the counter resets on restart). Must be 0.",
            targets((f'sum(hopguard_plaintext_deliveries_total{{{P},peer!="other"}})'
                     " or vector(0)", "charter peers")),
            "short", ZERO_IS_GOOD, no_value="0")),
        (6, 5, stat(
            "Charter peers out of compliance",
            "Number of charter peers whose outbound authenticated share or inbound encrypted"
            " share is below 100% over the last 15 minutes (what the critical alerts watch).",
            targets((f'count(hopguard:outbound_authenticated_ratio:rate15m{{{P},peer!="other"}}'
                     f' < 1 or hopguard:inbound_encrypted_ratio:rate15m{{{P},peer!="other"}}'
                     " < 1) or vector(0)", "peers")),
            "short", ZERO_IS_GOOD, no_value="0", decimals=0)),
        (6, 5, stat(
            "STARTTLS-required rejections (530)",
            "MAIL commands refused in the selected time range because the client had not issued"
            " STARTTLS.",
            targets((f"sum(increase(hopguard_inbound_starttls_required_rejections_total{{{P}}}"
                     "[$__range])) or vector(0)", "rejections")),
            "short", [{"color": "green", "value": None}, {"color": "orange", "value": 1}],
            no_value="0", decimals=0)),
        (6, 5, stat(
            "TLS failures",
            "TLS failures (all RFC 8460 result types, both directions) in the selected time"
            " range.",
            targets((f"sum(increase(hopguard_tls_failures_total{{{P}}}[$__range]))"
                     " or vector(0)", "failures")),
            "short", [{"color": "green", "value": None}, {"color": "orange", "value": 1}],
            no_value="0", decimals=0)),
        row("Per-peer compliance"),
        (24, 8, compliance_table),
        row("Trend"),
        (8, 8, timeseries(
            "Outbound authenticated share by peer",
            "hopguard:outbound_authenticated_ratio:rate15m over time; gaps mean no deliveries."
            + AUTH_NOTE,
            targets((f"hopguard:outbound_authenticated_ratio:rate15m{{{P}}}", "{{peer}}")),
            "percentunit", min_=0, max_=1)),
        (8, 8, timeseries(
            "Outbound encrypted share by peer",
            "hopguard:outbound_encrypted_ratio:rate15m over time; gaps mean no deliveries.",
            targets((f"hopguard:outbound_encrypted_ratio:rate15m{{{P}}}", "{{peer}}")),
            "percentunit", min_=0, max_=1)),
        (8, 8, timeseries(
            "Inbound encrypted share by peer",
            "hopguard:inbound_encrypted_ratio:rate15m over time; gaps mean no accepted mail.",
            targets((f"hopguard:inbound_encrypted_ratio:rate15m{{{P}}}", "{{peer}}")),
            "percentunit", min_=0, max_=1)),
        row("How mail was protected"),
        (8, 8, bargauge(
            "Outbound deliveries by policy source",
            "Delivered messages in the selected range by the policy that set the TLS"
            " requirement (dane, mta-sts, charter, requiretls, operator, opportunistic).",
            targets((f'sum by (policy) (increase(hopguard_outbound_messages_total{{{P},'
                     f'outcome="delivered"}}[$__range]))', "{{policy}}"), instant=True))),
        (8, 8, bargauge(
            "Outbound deliveries by TLS version",
            "Delivered messages in the selected range by negotiated TLS version (none ="
            " plaintext).",
            targets((f'sum by (tls) (increase(hopguard_outbound_messages_total{{{P},'
                     f'outcome="delivered"}}[$__range]))', "{{tls}}"), instant=True))),
        (8, 8, bargauge(
            "Inbound messages by TLS version",
            "Accepted inbound messages in the selected range by TLS version (none ="
            " plaintext).",
            targets((f"sum by (tls) (increase(hopguard_inbound_messages_total{{{P}}}"
                     "[$__range]))", "{{tls}}"), instant=True))),
        (12, 8, timeseries(
            "Outbound deliveries by policy source (share)",
            "Delivered messages per second by policy source, stacked to 100%.",
            targets((f'sum by (policy) (rate(hopguard_outbound_messages_total{{{P},'
                     f'outcome="delivered"}}[$__rate_interval]))', "{{policy}}")),
            "short", stack="percent")),
        (12, 8, timeseries(
            "TLS versions over time",
            "Inbound accepted and outbound delivered messages per second by TLS version.",
            targets(
                (f"sum by (tls) (rate(hopguard_inbound_messages_total{{{P}}}"
                 "[$__rate_interval]))", "in {{tls}}"),
                (f'sum by (tls) (rate(hopguard_outbound_messages_total{{{P},'
                 f'outcome="delivered"}}[$__rate_interval]))', "out {{tls}}"),
            ),
            "suffix:msg/s")),
        row("Certificates"),
        (24, 7, bargauge(
            "Days until the certificate of each charter peer MX host expires",
            "From the certificate last presented by each MX host"
            " (hopguard:peer_certificate_expiry:seconds / 86400). Alert below 14 days.",
            targets((f"hopguard:peer_certificate_expiry:seconds{{{P}}} / 86400",
                     "{{peer}} {{mx}}"), instant=True),
            "d")),
        row("Failures and refusals"),
        (12, 8, timeseries(
            "TLS failures by reason",
            "Failures per second by direction and RFC 8460 result type (recording rule"
            " hopguard:tls_failures:rate5m).",
            targets((f"sum by (direction, reason) (hopguard:tls_failures:rate5m{{{P}}})",
                     "{{direction}} {{reason}}")),
            "suffix:/s")),
        (12, 8, bargauge(
            "TLS failures by peer and reason",
            "Failures in the selected range by peer, direction and RFC 8460 result type.",
            targets((f"sum by (peer, direction, reason) (increase(hopguard_tls_failures_total"
                     f"{{{P}}}[$__range])) > 0", "{{peer}} {{direction}} {{reason}}"),
                    instant=True))),
        (12, 8, timeseries(
            "STARTTLS-required rejections (530) by peer",
            "MAIL commands refused per second because the client had not issued STARTTLS.",
            targets((f"sum by (peer) (rate(hopguard_inbound_starttls_required_rejections_total"
                     f"{{{P}}}[$__rate_interval]))", "{{peer}}")),
            "suffix:/s")),
        (12, 8, bargauge(
            "Dry runs: observed policies by peer and would-be result",
            "Hops checked against a policy that is observed, not enforced — a charter peer with"
            " report_only, an MTA-STS policy in testing mode or one that could not be fetched —"
            " in the selected range, by peer, policy and the result the hop would have had"
            " (pass or an RFC 8460 result type). The mail went as the enforced policy allowed."
            " Only pass for a week: the requirement can be enforced.",
            targets((f"sum by (peer, policy, result) (increase(hopguard_policy_observed_total"
                     f"{{{P}}}[$__range])) > 0", "{{peer}} {{policy}} {{result}}"),
                    instant=True))),
        (12, 8, timeseries(
            "Plaintext deliveries by peer (since relay start)",
            "Counter value: messages delivered without TLS since each relay process started."
            " Any step for a charter peer is a breach (alert HopguardPlaintextDeliveryToCharterPeer);"
            " `other` may receive plaintext under an explicit opportunistic policy.",
            targets((f"sum by (peer) (hopguard_plaintext_deliveries_total{{{P}}})", "{{peer}}")),
            "short", stepped=True)),
        row("Delivery detail", collapsed=True, panels=[
            (24, 10, table(
                "Delivered messages by peer, policy and TLS version (in range)",
                "Every combination seen in the selected range, for audits.",
                targets((f'sum by (peer, policy, tls) (increase(hopguard_outbound_messages_total'
                         f'{{{P},outcome="delivered"}}[$__range])) > 0', ""),
                        instant=True, fmt="table"),
                {"A": "Delivered"},
                order=["peer", "policy", "tls", "Delivered"])),
        ]),
    ]
    return dashboard(
        "hopguard-charter-compliance",
        "hopguard / Charter compliance",
        "Are hops with chartered mail providers encrypted and authenticated? Per-peer shares,"
        " policy sources, TLS versions, failures and plaintext deliveries.",
        layout(panels), "now-24h")


# ---------------------------------------------------------------------------------------------
# Relay operations
# ---------------------------------------------------------------------------------------------

def latency_q(q, by):
    return (f"histogram_quantile({q}, sum by ({by}) (rate(hopguard_delivery_latency_seconds_bucket"
            f"{{{P}}}[$__rate_interval])))")


def latency_q_range(q):
    return (f"histogram_quantile({q}, sum by (peer, le) (increase("
            f"hopguard_delivery_latency_seconds_bucket{{{P}}}[$__range])))")


def relay_operations():
    outcome_colors = [color("delivered", "green"), color("deferred", "orange"),
                      color("bounced", "red")]
    age_steps = [{"color": "green", "value": None}, {"color": "orange", "value": 900},
                 {"color": "red", "value": 3600}]
    panels = [
        row("Now"),
        (4, 5, stat(
            "Inbound accepted",
            "Inbound messages accepted (250) per second, selected peers.",
            targets((f"sum(rate(hopguard_inbound_messages_total{{{P}}}[$__rate_interval]))",
                     "in")),
            "suffix:msg/s", no_value="0")),
        (4, 5, stat(
            "Outbound delivered",
            "Messages delivered per second (per destination), selected peers.",
            targets((f'sum(rate(hopguard_outbound_messages_total{{{P},outcome="delivered"}}'
                     "[$__rate_interval]))", "out")),
            "suffix:msg/s", no_value="0")),
        (4, 5, stat(
            "Queued",
            "Sum over the selected peers of hopguard_queue_messages. A message waiting for two"
            " peers counts once for each.",
            targets((f"sum(hopguard_queue_messages{{{P}}}) or vector(0)", "queued")),
            "short", no_value="0")),
        (4, 5, stat(
            "Oldest queued message",
            "Age of the oldest queued message among the selected peers. Alert"
            " HopguardQueueOldestMessageOld fires above one hour.",
            targets((f"max(hopguard_queue_oldest_age_seconds{{{P}}}) or vector(0)", "oldest")),
            "s", age_steps, no_value="0")),
        (4, 5, stat(
            "Deferral share (15m)",
            "Share of delivery results (delivered, deferred, bounced) that were deferrals over"
            " the last 15 minutes, selected peers together.",
            targets((f'(sum(hopguard:outbound_messages:rate15m{{{P},outcome="deferred"}})'
                     f" or vector(0)) / (sum(hopguard:outbound_messages:rate15m{{{P}}}) > 0)",
                     "deferred")),
            "percentunit", [{"color": "green", "value": None}, {"color": "orange", "value": 0.2},
                            {"color": "red", "value": 0.5}])),
        (4, 5, stat(
            "TLS failures (5m)",
            "TLS failures per second, both directions, all result types"
            " (hopguard:tls_failures:rate5m).",
            targets((f"sum(hopguard:tls_failures:rate5m{{{P}}}) or vector(0)", "failures")),
            "suffix:/s", [{"color": "green", "value": None}, {"color": "orange", "value": 0.001}],
            no_value="0")),
        row("Throughput"),
        (12, 8, timeseries(
            "Inbound messages accepted by peer",
            "Messages accepted with 250 per second.",
            targets((f"sum by (peer) (rate(hopguard_inbound_messages_total{{{P}}}"
                     "[$__rate_interval]))", "{{peer}}")),
            "suffix:msg/s")),
        (12, 8, timeseries(
            "Outbound messages delivered by peer",
            "Messages delivered per second, counted once per destination.",
            targets((f'sum by (peer) (rate(hopguard_outbound_messages_total{{{P},'
                     f'outcome="delivered"}}[$__rate_interval]))', "{{peer}}")),
            "suffix:msg/s")),
        (8, 8, timeseries(
            "Outbound results by outcome",
            "Per message and destination: delivered, deferred (each deferral) or bounced.",
            targets((f"sum by (outcome) (rate(hopguard_outbound_messages_total{{{P}}}"
                     "[$__rate_interval]))", "{{outcome}}")),
            "suffix:msg/s", stack="normal", overrides=outcome_colors)),
        (8, 8, timeseries(
            "Outbound attempts by outcome",
            "Next-hop connections tried, and transactions on pooled connections, by outcome.",
            targets((f"sum by (outcome) (rate(hopguard_outbound_attempts_total{{{P}}}"
                     "[$__rate_interval]))", "{{outcome}}")),
            "suffix:/s", stack="normal", overrides=outcome_colors)),
        (8, 8, timeseries(
            "Inbound sessions by TLS state",
            "Inbound SMTP sessions ended per second by final TLS state.",
            targets((f"sum by (tls) (rate(hopguard_inbound_sessions_total{{{P}}}"
                     "[$__rate_interval]))", "{{tls}}")),
            "suffix:/s")),
        row("Queue"),
        (12, 8, timeseries(
            "Queue depth by peer",
            "Messages waiting per destination peer (refreshed on every queue scan).",
            targets((f"sum by (peer) (hopguard_queue_messages{{{P}}})", "{{peer}}")),
            "short")),
        (12, 8, timeseries(
            "Oldest queued message by peer",
            "Age of the oldest queued message per destination peer; the red line is the one-hour"
            " alert threshold.",
            targets((f"max by (peer) (hopguard_queue_oldest_age_seconds{{{P}}})", "{{peer}}")),
            "s", threshold_line=3600)),
        row("Delivery latency (accepted → delivered)"),
        (12, 8, timeseries(
            "Delivery latency, selected peers",
            "Quantiles from the hopguard_delivery_latency_seconds histogram, and the mean."
            " Bucket bounds run from 50 ms to 5 days; the relay measures in whole seconds.",
            targets(
                (latency_q("0.5", "le"), "p50"),
                (latency_q("0.9", "le"), "p90"),
                (latency_q("0.99", "le"), "p99"),
                (f"sum(rate(hopguard_delivery_latency_seconds_sum{{{P}}}[$__rate_interval]))"
                 f" / (sum(rate(hopguard_delivery_latency_seconds_count{{{P}}}"
                 "[$__rate_interval])) > 0)", "mean"),
            ),
            "s")),
        (12, 8, timeseries(
            "p90 delivery latency by peer",
            "90th percentile of the delivery latency per destination peer.",
            targets((latency_q("0.9", "peer, le"), "{{peer}}")),
            "s")),
        (24, 7, table(
            "Delivery latency by peer (selected range)",
            "Quantiles over the whole selected time range.",
            targets((latency_q_range("0.5"), ""), (latency_q_range("0.9"), ""),
                    (latency_q_range("0.99"), ""), instant=True, fmt="table"),
            {"A": "p50", "B": "p90", "C": "p99"},
            order=["peer", "p50", "p90", "p99"],
            overrides=[{"matcher": {"id": "byRegexp", "options": "p50|p90|p99"},
                        "properties": [{"id": "unit", "value": "s"}]}])),
        row("Deferrals and bounces"),
        (8, 8, timeseries(
            "Deferrals by peer",
            "Deferrals per second (one per message and destination per failed attempt).",
            targets((f'sum by (peer) (rate(hopguard_outbound_messages_total{{{P},'
                     f'outcome="deferred"}}[$__rate_interval]))', "{{peer}}")),
            "suffix:msg/s")),
        (8, 8, timeseries(
            "Bounces by peer",
            "Messages bounced per second (per destination).",
            targets((f'sum by (peer) (rate(hopguard_outbound_messages_total{{{P},'
                     f'outcome="bounced"}}[$__rate_interval]))', "{{peer}}")),
            "suffix:msg/s")),
        (8, 8, timeseries(
            "Deferral share by peer (15m)",
            "hopguard:outbound_deferral_ratio:rate15m; alert HopguardManyDeferrals fires above"
            " 50% (with at least 10 deferrals in 15 minutes) for 15 minutes.",
            targets((f"hopguard:outbound_deferral_ratio:rate15m{{{P}}}", "{{peer}}")),
            "percentunit", min_=0, max_=1, threshold_line=0.5)),
        row("TLS failures"),
        (12, 8, timeseries(
            "TLS failure rate by peer and reason",
            "Failures per second by peer, direction and RFC 8460 result type"
            " (hopguard:tls_failures:rate5m).",
            targets((f"sum by (peer, direction, reason) (hopguard:tls_failures:rate5m{{{P}}})",
                     "{{peer}} {{direction}} {{reason}}")),
            "suffix:/s")),
        (12, 8, timeseries(
            "Outbound TLS failures per attempt",
            "Outbound TLS failures divided by outbound attempts, per peer (0 when attempts"
            " had no failures; no value without attempts).",
            targets((f'(sum by (peer) (rate(hopguard_tls_failures_total{{{P},'
                     f'direction="outbound"}}[$__rate_interval])) or sum by (peer) ('
                     f"rate(hopguard_outbound_attempts_total{{{P}}}[$__rate_interval])) * 0)"
                     f" / (sum by (peer) (rate(hopguard_outbound_attempts_total{{{P}}}"
                     "[$__rate_interval])) > 0)", "{{peer}}")),
            "percentunit", min_=0)),
        row("DNS, DNSSEC and MTA-STS health"),
        (12, 7, timeseries(
            "DNSSEC-bogus answers",
            "MX, address and TLSA answers the validating resolver rejected (SERVFAIL) while"
            " routing, per second by destination peer; mail is deferred (dnssec-invalid).",
            targets((f"sum by (peer) (rate(hopguard_dnssec_bogus_answers_total{{{P}}}"
                     "[$__rate_interval])) or vector(0)", "{{peer}}")),
            "suffix:/s", min_=0)),
        (12, 7, timeseries(
            "MTA-STS policy fetch failures",
            "Failed policy fetches per second by peer and reason; a fresh cached policy stays in"
            " force.",
            targets((f"sum by (peer, reason) (rate(hopguard_mta_sts_fetch_failures_total{{{P}}}"
                     "[$__rate_interval])) or vector(0)", "{{peer}} {{reason}}")),
            "suffix:/s", min_=0)),
        row("Attempt detail", collapsed=True, panels=[
            (12, 10, table(
                "Outbound attempts by peer, policy, TLS and outcome (in range)",
                "Every combination seen in the selected range.",
                targets((f"sum by (peer, policy, tls, outcome) (increase("
                         f"hopguard_outbound_attempts_total{{{P}}}[$__range])) > 0", ""),
                        instant=True, fmt="table"),
                {"A": "Attempts"},
                order=["peer", "policy", "tls", "outcome", "Attempts"])),
            (12, 10, table(
                "Inbound sessions by peer and TLS state (in range)",
                "Inbound SMTP sessions ended in the selected range.",
                targets((f"sum by (peer, tls) (increase(hopguard_inbound_sessions_total{{{P}}}"
                         "[$__range])) > 0", ""), instant=True, fmt="table"),
                {"A": "Sessions"},
                order=["peer", "tls", "Sessions"])),
        ]),
    ]
    return dashboard(
        "hopguard-relay-operations",
        "hopguard / Relay operations",
        "Throughput, queue, delivery latency, deferrals, bounces and TLS failures of the hopguard"
        " relays.",
        layout(panels), "now-6h")


DASHBOARDS = {
    "charter-compliance.json": charter_compliance,
    "relay-operations.json": relay_operations,
}


def render(build):
    return json.dumps(build(), indent=2, ensure_ascii=False) + "\n"


def main(argv):
    check = "--check" in argv
    stale = []
    for name, build in DASHBOARDS.items():
        path = OUT / name
        text = render(build)
        if check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(name)
        else:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path.relative_to(HERE.parent)}")
    if stale:
        print("out of date with generate_dashboards.py: " + ", ".join(stale)
              + " (run: python3 dashboards/generate_dashboards.py)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
