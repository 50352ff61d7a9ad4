//! Reading script replies: a cursor over the flat arrays the scripts return.
//!
//! Any deviation from the documented shape is a [`Error::Protocol`] naming
//! the script, never a panic.

use redis::Value;

use crate::error::{Error, Result};

/// A cursor over one script's array reply.
pub(crate) struct Reply {
    items: std::vec::IntoIter<Value>,
    script: &'static str,
}

impl Reply {
    /// Starts reading `value`, which must be an array.
    pub fn new(value: Value, script: &'static str) -> Result<Self> {
        match value {
            Value::Array(items) => Ok(Self { items: items.into_iter(), script }),
            other => Err(Error::Protocol { script, detail: format!("expected an array, got {other:?}") }),
        }
    }

    fn next(&mut self, what: &str) -> Result<Value> {
        let script = self.script;
        self.items
            .next()
            .ok_or_else(|| Error::Protocol { script, detail: format!("reply ended before {what}") })
    }

    /// A [`Error::Protocol`] of this script: the reply read so far does not
    /// have the documented shape, as `detail` says.
    pub fn protocol_error(&self, detail: String) -> Error {
        Error::Protocol { script: self.script, detail }
    }

    /// Items not read yet.
    pub fn remaining(&self) -> usize {
        self.items.len()
    }

    /// The next item as text (nil and false read as "").
    pub fn string(&mut self, what: &str) -> Result<String> {
        match self.next(what)? {
            Value::BulkString(bytes) => {
                String::from_utf8(bytes).map_err(|_| self.protocol_error(format!("{what} is not UTF-8")))
            }
            Value::SimpleString(s) => Ok(s),
            Value::Int(i) => Ok(i.to_string()),
            Value::Nil => Ok(String::new()),
            other => Err(self.protocol_error(format!("{what}: unexpected {other:?}"))),
        }
    }

    /// The next item as text, `None` when empty.
    pub fn opt_string(&mut self, what: &str) -> Result<Option<String>> {
        Ok(Some(self.string(what)?).filter(|s| !s.is_empty()))
    }

    /// The next item as an integer (integers and numeric text are accepted;
    /// nil and "" read as 0).
    pub fn int(&mut self, what: &str) -> Result<i64> {
        match self.next(what)? {
            Value::Int(i) => Ok(i),
            Value::Nil => Ok(0),
            Value::BulkString(bytes) if bytes.is_empty() => Ok(0),
            Value::BulkString(bytes) => std::str::from_utf8(&bytes)
                .ok()
                .and_then(|s| s.parse::<f64>().ok())
                .map(|f| f as i64)
                .ok_or_else(|| self.protocol_error(format!("{what} is not a number"))),
            other => Err(self.protocol_error(format!("{what}: unexpected {other:?}"))),
        }
    }

    /// The next item as a non-negative count.
    pub fn count(&mut self, what: &str) -> Result<u32> {
        let n = self.int(what)?;
        u32::try_from(n).map_err(|_| self.protocol_error(format!("{what} = {n} is out of range")))
    }
}
