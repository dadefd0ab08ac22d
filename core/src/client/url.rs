//! The URL a client connects to: the application's URL with its identity added.

use alloc::string::String;

use super::Error;
use crate::protocol::source_problem;

/// The URL to open for `url` and identity `source`, the same in every driver: `source` is added
/// as the `source` query parameter (percent-encoded, after any query the URL has), followed by
/// `v=1` (the protocol version: the server then knows before any frame that a hello will
/// come, and never takes a silent new connection for a bare client), an empty path becomes
/// `/` (a request line needs one), and a fragment is dropped (it is never sent to the server,
/// and some runtimes refuse WebSocket URLs that have one).
///
/// Fails with [`Error::InvalidOption`] when the URL is not `ws://` or `wss://` with a host, or
/// when `source` is not one the server accepts ([`source_problem`], the one rule both sides
/// apply).
pub fn connect_url(url: &str, source: &str) -> Result<String, Error> {
    if let Some(problem) = source_problem(source) {
        return Err(Error::InvalidOption(problem.into()));
    }
    // One pass over the bytes rather than `str` patterns and slicing: their searchers and
    // panic paths are kilobytes of wasm. Every position found is an ASCII byte, so a char
    // boundary.
    let bytes = url.as_bytes();
    let lower = |i: usize| bytes.get(i).map_or(0, u8::to_ascii_lowercase);
    let scheme_len = match (lower(0), lower(1), lower(2)) {
        (b'w', b's', b':') => 5,
        (b'w', b's', b's') => 6,
        _ => 0,
    };
    if scheme_len == 0 || bytes.get(scheme_len - 3..scheme_len) != Some(b"://".as_slice()) {
        return Err(not_websocket(url));
    }
    let mut end = bytes.len();
    let mut authority_end = None;
    let mut has_query = false;
    // Not `.skip(scheme_len)`: the adapter's code is a few hundred bytes of wasm.
    for (i, &byte) in bytes.iter().enumerate() {
        if i < scheme_len {
            continue;
        }
        match byte {
            b'#' => {
                end = i;
                break;
            }
            b'/' | b'?' if authority_end.is_none() => authority_end = Some(i),
            _ => {}
        }
        has_query |= byte == b'?';
    }
    let authority_end = authority_end.unwrap_or(end);
    if authority_end == scheme_len {
        return Err(not_websocket(url));
    }
    let rest = url.get(authority_end..end).unwrap_or_default();
    let mut out = String::with_capacity(end + source.len() * 3 + 10);
    out.push_str(url.get(..authority_end).unwrap_or_default());
    if !rest.starts_with('/') {
        out.push('/');
    }
    out.push_str(rest);
    out.push(if has_query { '&' } else { '?' });
    out.push_str("source=");
    push_encoded(&mut out, source);
    out.push_str("&v=1");
    Ok(out)
}

/// `url` (from [`connect_url`], which has a query) with a credential added as the `token`
/// query parameter, for a relay that verifies identities: browsers cannot set headers on a
/// WebSocket, so the query is the one place a browser's token can go.
pub fn token_url(url: &str, token: &str) -> String {
    let mut out = String::with_capacity(url.len() + 7 + token.len() * 3);
    out.push_str(url);
    out.push_str("&token=");
    push_encoded(&mut out, token);
    out
}

/// `url` (from [`connect_url`], which has a query) with the connection attempt's name added
/// as the `attempt` query parameter ([`ClientCore::attempt`](super::ClientCore::attempt)): the
/// server refuses an attempt that reaches it after a newer one of the same client.
pub fn attempt_url(url: &str, attempt: &str) -> String {
    let mut out = String::with_capacity(url.len() + 9 + attempt.len());
    out.push_str(url);
    out.push_str("&attempt=");
    push_encoded(&mut out, attempt);
    out
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn push_encoded(out: &mut String, value: &str) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            // Not `format!`: the formatting machinery is kilobytes of wasm.
            out.push('%');
            out.push(char::from(HEX[usize::from(byte >> 4)]));
            out.push(char::from(HEX[usize::from(byte & 15)]));
        }
    }
}

fn not_websocket(url: &str) -> Error {
    let mut message = String::from("not a ws:// or wss:// URL: ");
    message.push_str(url);
    Error::InvalidOption(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_is_added_to_the_query() {
        let url = |url, source| connect_url(url, source).expect("valid");
        assert_eq!(
            url("ws://h:1/chat", "alice"),
            "ws://h:1/chat?source=alice&v=1"
        );
        assert_eq!(
            url("ws://h:1/?a=1#top", "bob b&c"),
            "ws://h:1/?a=1&source=bob%20b%26c&v=1"
        );
        assert_eq!(url("ws://h", "é"), "ws://h/?source=%C3%A9&v=1");
        assert_eq!(url("WSS://h:8?x=1", "a"), "WSS://h:8/?x=1&source=a&v=1");
        assert_eq!(
            url("ws://h:8#f", "a!*'()"),
            "ws://h:8/?source=a%21%2A%27%28%29&v=1"
        );
    }

    #[test]
    fn attempts_are_added() {
        let url = connect_url("ws://h/", "a").expect("valid");
        assert_eq!(
            attempt_url(&url, "Xy3.12"),
            "ws://h/?source=a&v=1&attempt=Xy3.12"
        );
    }

    #[test]
    fn tokens_are_added_encoded() {
        let url = connect_url("ws://h/", "a").expect("valid");
        assert_eq!(
            token_url(&url, "eyJ.x-y_z+/="),
            "ws://h/?source=a&v=1&token=eyJ.x-y_z%2B%2F%3D"
        );
    }

    #[test]
    fn bad_urls_and_sources_are_invalid_options() {
        for (url, source) in [
            ("http://h", "a"),
            ("h:8080", "a"),
            ("ws:///path", "a"),
            ("ws://h", ""),
            ("ws://h", &"x".repeat(129)),
            // What the server refuses, the client refuses first: the same rule.
            ("ws://h", "tab\there"),
            ("ws://h", "nul\0"),
            ("ws://h", "c1\u{85}"),
        ] {
            let error = connect_url(url, source).expect_err(url);
            assert_eq!(error.code(), "invalid_option", "{url} {source}");
        }
        assert!(connect_url("ws://h", &"é".repeat(64)).is_ok(), "128 bytes");
    }
}
