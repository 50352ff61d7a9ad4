//! Script arguments: [`Args`] collects them as bytes, [`truncate`] cuts a
//! text argument to its bound.

/// Collects script arguments as bytes.
#[derive(Default)]
pub(crate) struct Args(pub Vec<Vec<u8>>);

impl Args {
    /// Appends one argument.
    pub fn push(&mut self, value: impl ToString) -> &mut Self {
        self.0.push(value.to_string().into_bytes());
        self
    }

    /// Appends one text argument without copying through `ToString`.
    pub fn text(&mut self, value: &str) -> &mut Self {
        self.0.push(value.as_bytes().to_vec());
        self
    }
}

/// Cuts `text` to at most `max` bytes on a character boundary.
pub(crate) fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::truncate;

    #[test]
    fn truncate_respects_char_boundaries() {
        assert_eq!(truncate("hello", 10), "hello");
        assert_eq!(truncate("hello", 3), "hel");
        assert_eq!(truncate("héllo", 2), "h", "é is two bytes and must not be split");
    }
}
