//! SMTP text shared by inbound and outbound: replies and the reply table, header fields.

pub mod reply;

pub use reply::Reply;

/// The first header field called `name` (ASCII case-insensitive) in a header section (CRLF
/// line ends): its value unfolded and trimmed, if not empty.
pub fn header_field(header: &[u8], name: &str) -> Option<String> {
    let text = String::from_utf8_lossy(header);
    let mut lines = text.split("\r\n").peekable();
    while let Some(line) = lines.next() {
        let Some((field, value)) = line.split_once(':') else {
            continue;
        };
        // A header name has no white space before the colon (RFC 5322 §2.2); a continuation
        // line is not a field of its own.
        if line.starts_with([' ', '\t']) || !field.trim_end().eq_ignore_ascii_case(name) {
            continue;
        }
        let mut v = value.trim().to_string();
        while let Some(next) = lines.peek() {
            if next.starts_with([' ', '\t']) {
                v.push(' ');
                v.push_str(next.trim());
                lines.next();
            } else {
                break;
            }
        }
        let v = v.trim().to_string();
        return (!v.is_empty()).then_some(v);
    }
    None
}
