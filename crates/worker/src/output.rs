//! What the external handlers (`http`, `command`) hand back: a JSON result
//! kept within a size limit, and error text cut to a readable length.

use tracing::warn;

/// Most bytes of a response body or of stderr recorded as a job's error.
pub const ERROR_TEXT_BYTES: usize = 2048;

/// A byte buffer that keeps at most `limit` bytes and remembers whether
/// more came (the rest is read and dropped, so a writer never blocks).
#[derive(Debug)]
pub struct Capped {
    bytes: Vec<u8>,
    limit: usize,
    overflowed: bool,
    keep_tail: bool,
}

impl Capped {
    /// Keeps the first `limit` bytes.
    pub fn head(limit: usize) -> Self {
        Self { bytes: Vec::new(), limit, overflowed: false, keep_tail: false }
    }

    /// Keeps the last `limit` bytes (the end of stderr says what failed).
    pub fn tail(limit: usize) -> Self {
        Self { bytes: Vec::new(), limit, overflowed: false, keep_tail: true }
    }

    /// Adds `chunk`.
    pub fn push(&mut self, chunk: &[u8]) {
        self.bytes.extend_from_slice(chunk);
        if self.bytes.len() > self.limit {
            self.overflowed = true;
            if self.keep_tail {
                let excess = self.bytes.len() - self.limit;
                self.bytes.drain(..excess);
            } else {
                self.bytes.truncate(self.limit);
            }
        }
    }

    /// True when more than `limit` bytes were pushed.
    pub fn overflowed(&self) -> bool {
        self.overflowed
    }

    /// The bytes kept.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The bytes kept as trimmed text, marked with `…` where cut.
    pub fn text(&self) -> String {
        let text = String::from_utf8_lossy(&self.bytes);
        let text = text.trim();
        match (self.overflowed, self.keep_tail) {
            (false, _) => text.to_string(),
            (true, false) => format!("{text}…"),
            (true, true) => format!("…{text}"),
        }
    }
}

/// The job's result from `output` (a response body, stdout): its JSON, or
/// `None` when it is empty, too large or not JSON. The job still completes
/// then (its side effects happened); a warning says why no result is kept.
pub fn json_result(output: &Capped, source: &str) -> Option<serde_json::Value> {
    if output.overflowed() {
        warn!(limit = output.limit, "{source} is larger than max_result_bytes; completed without a result");
        return None;
    }
    let bytes = output.bytes();
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return None;
    }
    match serde_json::from_slice(bytes) {
        Ok(value) => Some(value),
        Err(err) => {
            warn!(error = %err, "{source} is not JSON; completed without a result");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_keeps_the_start_and_tail_the_end() {
        let mut head = Capped::head(4);
        head.push(b"abc");
        head.push(b"def");
        assert_eq!((head.bytes(), head.overflowed(), head.text().as_str()), (&b"abcd"[..], true, "abcd…"));
        let mut tail = Capped::tail(4);
        tail.push(b"abc");
        tail.push(b"def");
        assert_eq!((tail.bytes(), tail.text().as_str()), (&b"cdef"[..], "…cdef"));
        let mut fits = Capped::tail(4);
        fits.push(b" ab\n");
        assert_eq!((fits.overflowed(), fits.text().as_str()), (false, "ab"));
    }

    #[test]
    fn results_are_json_within_the_limit() {
        let mut ok = Capped::head(100);
        ok.push(br#"{"sent": true}"#);
        assert_eq!(json_result(&ok, "body"), Some(serde_json::json!({"sent": true})));
        let mut empty = Capped::head(100);
        empty.push(b"  \n");
        assert_eq!(json_result(&empty, "body"), None);
        let mut text = Capped::head(100);
        text.push(b"done");
        assert_eq!(json_result(&text, "body"), None);
        let mut big = Capped::head(3);
        big.push(b"1234");
        assert_eq!(json_result(&big, "body"), None);
    }
}
