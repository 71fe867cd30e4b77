//! Reading received messages: unfolded header fields, Received trace headers, body.

/// The header fields of `msg` in order, unfolded (RFC 5322 §2.2.3), names as written.
pub fn headers(msg: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for line in msg.lines() {
        let line = line.trim_end_matches('\r');
        if line.is_empty() {
            break;
        }
        if line.starts_with([' ', '\t']) {
            if let Some((_, v)) = out.last_mut() {
                v.push(' ');
                v.push_str(line.trim());
            }
            continue;
        }
        if let Some((name, value)) = line.split_once(':') {
            out.push((name.trim().to_string(), value.trim().to_string()));
        }
    }
    out
}

/// The unfolded values of every field called `name` (case-insensitive), top first.
pub fn header_values(msg: &str, name: &str) -> Vec<String> {
    headers(msg)
        .into_iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
        .collect()
}

/// The Received fields, newest (top) first.
pub fn received(msg: &str) -> Vec<String> {
    header_values(msg, "Received")
}

/// Everything after the first empty line.
pub fn body(msg: &str) -> &str {
    for sep in ["\r\n\r\n", "\n\n"] {
        if let Some(i) = msg.find(sep) {
            return &msg[i + sep.len()..];
        }
    }
    ""
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folded_received_headers_are_unfolded() {
        let msg = "Received: from a\n\tby b; date\nSubject: x\nReceived: from c by d\n\nbody\n";
        assert_eq!(received(msg), vec!["from a by b; date", "from c by d"]);
        assert_eq!(header_values(msg, "subject"), vec!["x"]);
        assert_eq!(body(msg), "body\n");
    }
}
