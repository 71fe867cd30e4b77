//! Report renderers: JSON (everything), CSV (one row per peer and direction) and one
//! self-contained HTML file (inline CSS and SVG; no scripts, no external references).

use std::fmt::Write as _;

use hopguard_policy::VerifyMethod;

use super::report::{PeerStats, Report};

/// The whole report as pretty-printed JSON.
pub fn render_json(report: &Report) -> Result<String, serde_json::Error> {
    serde_json::to_string_pretty(report)
}

/// Header of the CSV rendering; one row per peer and direction follows.
pub const CSV_HEADER: &str = "peer,direction,charter,hop_events,messages,encrypted,\
share_encrypted,authenticated,share_authenticated,dane_ee,dane_ta,mta_sts,pkix,pinned,\
unauthenticated,tls_1_3,tls_1_2,tls_other,plaintext,failures,failure_reasons,\
chain_verified";

/// One row per peer and direction with the main figures. Shares are fractions (0..1) with four
/// decimals, empty when undefined. `chain_verified` repeats the period's verification result.
pub fn render_csv(report: &Report) -> String {
    let mut out = String::from(CSV_HEADER);
    out.push('\n');
    let verified = if report.verification.is_ok() {
        "yes"
    } else {
        "no"
    };
    for s in &report.peers {
        let method = |m: VerifyMethod| count(&s.by_method, m.as_str()).to_string();
        let tls_other = s
            .tls_versions
            .iter()
            .filter(|(v, _)| !["TLSv1.3", "TLSv1.2", "none"].contains(&v.as_str()))
            .map(|(_, n)| n)
            .sum::<u64>();
        let reasons = s
            .failures
            .iter()
            .map(|(r, n)| format!("{r}:{n}"))
            .collect::<Vec<_>>()
            .join(";");
        let fields = [
            csv_field(&s.peer),
            s.direction.clone(),
            s.charter.to_string(),
            s.hop_events.to_string(),
            s.messages.to_string(),
            s.encrypted.to_string(),
            fraction(s.share_encrypted),
            s.authenticated.to_string(),
            fraction(s.share_authenticated),
            method(VerifyMethod::DaneEe),
            method(VerifyMethod::DaneTa),
            method(VerifyMethod::MtaSts),
            method(VerifyMethod::Pkix),
            method(VerifyMethod::Pinned),
            method(VerifyMethod::None),
            count(&s.tls_versions, "TLSv1.3").to_string(),
            count(&s.tls_versions, "TLSv1.2").to_string(),
            tls_other.to_string(),
            s.plaintext.to_string(),
            s.failures.values().sum::<u64>().to_string(),
            csv_field(&reasons),
            verified.to_owned(),
        ];
        out.push_str(&fields.join(","));
        out.push('\n');
    }
    out
}

fn count(map: &std::collections::BTreeMap<String, u64>, key: &str) -> u64 {
    map.get(key).copied().unwrap_or(0)
}

fn fraction(share: Option<f64>) -> String {
    share.map(|s| format!("{s:.4}")).unwrap_or_default()
}

/// Quotes a CSV field when needed (RFC 4180), and defuses spreadsheet formulas.
fn csv_field(value: &str) -> String {
    let formula = value.starts_with(['=', '+', '-', '@']);
    let value = if formula {
        format!("'{value}")
    } else {
        value.to_owned()
    };
    if value.contains([',', '"', '\n', '\r']) || formula {
        format!("\"{}\"", value.replace('"', "\"\""))
    } else {
        value
    }
}

/// Escapes text for HTML element content and quoted attribute values.
fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn percent(share: Option<f64>) -> String {
    share.map_or_else(|| "–".to_owned(), |s| format!("{:.1}%", s * 100.0))
}

const CSS: &str = "body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:70em}\
table{border-collapse:collapse;margin:.5em 0 1.5em}th,td{border:1px solid #ccc;padding:.25em .6em;\
text-align:left}td.n{text-align:right}th{background:#f2f2f2}.ok{background:#e6f4ea;\
border:2px solid #2e7d32}.fail{background:#fdecea;border:2px solid #c62828}.verdict{padding:1em;\
margin:1em 0;font-size:1.1em}tr.charter td{background:#fff3e0;font-weight:bold}.meta{color:#555}";

/// A single HTML file: period, node, the verification result at the top, the per-peer tables,
/// bar charts (inline SVG) of the share encrypted and authenticated, and every plaintext hop.
pub fn render_html(report: &Report) -> String {
    let mut h = String::new();
    let title = format!("hopguard hop audit report {} to {}", report.from, report.to);
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title>\
         <style>{CSS}</style></head><body>\n<h1>Hop audit report</h1>\n",
        esc(&title)
    );
    let nodes = if report.nodes.is_empty() {
        "(no records)".to_owned()
    } else {
        report.nodes.join(", ")
    };
    let _ = writeln!(
        h,
        "<p class=\"meta\">Period: <strong>{} to {}</strong> (UTC days, inclusive) · Node: \
         <strong>{}</strong> · Hop events: {}</p>",
        esc(&report.from),
        esc(&report.to),
        esc(&nodes),
        report.hop_events
    );
    verdict(&mut h, report);
    peer_table(&mut h, report);
    h.push_str("<h2>Share of hops encrypted</h2>\n");
    bars(&mut h, report, |s| s.share_encrypted);
    h.push_str("<h2>Share of delivered messages authenticated (outbound)</h2>\n");
    bars(&mut h, report, |s| s.share_authenticated);
    breakdown(
        &mut h,
        report,
        "Authentication method (outbound delivered)",
        |s| &s.by_method,
    );
    breakdown(&mut h, report, "TLS versions (hop events)", |s| {
        &s.tls_versions
    });
    breakdown(&mut h, report, "Failures by RFC 8460 result type", |s| {
        &s.failures
    });
    plaintext(&mut h, report);
    h.push_str(
        "<p class=\"meta\">Built from the hash-chained audit log alone. To check it \
         independently: <code>hopguard audit verify DIR --pubkey audit-key.pub.pem</code> on a \
         copy of the files.</p>\n</body></html>\n",
    );
    h
}

fn verdict(h: &mut String, report: &Report) {
    let v = &report.verification;
    let (class, headline) = if v.is_ok() {
        ("ok", format!("Audit log verified: {}", v.mode()))
    } else {
        (
            "fail",
            format!("Audit log verification FAILED ({})", v.mode()),
        )
    };
    let _ = write!(
        h,
        "<div class=\"verdict {class}\"><strong>{}</strong>",
        esc(&headline)
    );
    match &v.failure {
        Some(failure) => {
            let _ = write!(h, "<br>First bad spot: {}", esc(&failure.to_string()));
        }
        None => {
            let _ = write!(
                h,
                "<br>{} files, {} hop records, {} checkpoints; {} records after the last \
                 checkpoint (chained but not yet signed); {} hop events reported dropped.",
                v.files.len(),
                v.records,
                v.checkpoints,
                v.unsigned_tail,
                v.dropped
            );
        }
    }
    h.push_str("</div>\n");
}

fn peer_table(h: &mut String, report: &Report) {
    h.push_str(
        "<h2>Per peer and direction</h2>\n<table><tr><th>Peer</th><th>Direction</th>\
         <th>Hop events</th><th>Messages</th><th>Encrypted</th><th>Authenticated</th>\
         <th>Plaintext hops</th><th>Failures</th></tr>\n",
    );
    for s in &report.peers {
        let _ = writeln!(
            h,
            "<tr><td>{}{}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
             <td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
             <td class=\"n\">{}</td></tr>",
            esc(&s.peer),
            if s.charter { " (charter)" } else { "" },
            esc(&s.direction),
            s.hop_events,
            s.messages,
            percent(s.share_encrypted),
            percent(s.share_authenticated),
            s.plaintext,
            s.failures.values().sum::<u64>()
        );
    }
    h.push_str("</table>\n");
}

/// Horizontal bars, one per peer and direction with a defined share.
fn bars(h: &mut String, report: &Report, value: impl Fn(&PeerStats) -> Option<f64>) {
    let rows: Vec<(String, f64)> = report
        .peers
        .iter()
        .filter_map(|s| value(s).map(|v| (format!("{} {}", s.peer, s.direction), v)))
        .collect();
    if rows.is_empty() {
        h.push_str("<p>No data.</p>\n");
        return;
    }
    let (label_w, bar_w, row_h) = (220, 400, 24);
    let height = rows.len() * row_h + 4;
    let _ = writeln!(
        h,
        "<svg width=\"{}\" height=\"{height}\" role=\"img\" font-size=\"13\" \
         font-family=\"sans-serif\">",
        label_w + bar_w + 70
    );
    for (i, (label, v)) in rows.iter().enumerate() {
        let y = i * row_h + 2;
        let filled = (v.clamp(0.0, 1.0) * bar_w as f64).round() as usize;
        let colour = if *v >= 0.999_95 { "#2e7d32" } else { "#e65100" };
        let _ = writeln!(
            h,
            "<text x=\"0\" y=\"{ty}\">{}</text><rect x=\"{label_w}\" y=\"{y}\" width=\"{bar_w}\" \
             height=\"18\" fill=\"#eee\"/><rect x=\"{label_w}\" y=\"{y}\" width=\"{filled}\" \
             height=\"18\" fill=\"{colour}\"/><text x=\"{tx}\" y=\"{ty}\">{}</text>",
            esc(label),
            percent(Some(*v)),
            ty = y + 14,
            tx = label_w + bar_w + 6,
        );
    }
    h.push_str("</svg>\n");
}

/// A table of one count map (method, version or reason) per peer and direction.
fn breakdown(
    h: &mut String,
    report: &Report,
    title: &str,
    map: impl Fn(&PeerStats) -> &std::collections::BTreeMap<String, u64>,
) {
    let _ = writeln!(h, "<h2>{}</h2>", esc(title));
    let rows: Vec<&PeerStats> = report.peers.iter().filter(|s| !map(s).is_empty()).collect();
    if rows.is_empty() {
        h.push_str("<p>None.</p>\n");
        return;
    }
    h.push_str("<table><tr><th>Peer</th><th>Direction</th><th>Counts</th></tr>\n");
    for s in rows {
        let counts = map(s)
            .iter()
            .map(|(k, n)| format!("{}: {n}", esc(k)))
            .collect::<Vec<_>>()
            .join(", ");
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{counts}</td></tr>",
            esc(&s.peer),
            esc(&s.direction)
        );
    }
    h.push_str("</table>\n");
}

fn plaintext(h: &mut String, report: &Report) {
    let charter = report.plaintext.iter().filter(|p| p.charter).count();
    let _ = writeln!(
        h,
        "<h2>Plaintext hops</h2>\n<p>{} hops without TLS, {charter} of them with a charter peer \
         (highlighted).</p>",
        report.plaintext.len()
    );
    if report.plaintext.is_empty() {
        return;
    }
    h.push_str(
        "<table><tr><th>Time (UTC)</th><th>Direction</th><th>Peer</th><th>Remote</th>\
         <th>Outcome</th><th>Reply</th><th>Queue id</th></tr>\n",
    );
    for p in &report.plaintext {
        let remote = match &p.remote_ip {
            Some(ip) => format!("{} [{ip}]", p.remote_host),
            None => p.remote_host.clone(),
        };
        let _ = writeln!(
            h,
            "<tr{}><td>{}</td><td>{}</td><td>{}{}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td>{}</td></tr>",
            if p.charter { " class=\"charter\"" } else { "" },
            esc(&p.time),
            esc(&p.direction),
            esc(&p.peer),
            if p.charter { " (charter)" } else { "" },
            esc(&remote),
            esc(&p.outcome),
            p.reply_code.map(|c| c.to_string()).unwrap_or_default(),
            esc(p.queue_id.as_deref().unwrap_or(""))
        );
    }
    h.push_str("</table>\n");
}
