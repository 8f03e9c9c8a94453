//! A configuration problem with the path of the setting it concerns.

use std::fmt;

/// One thing wrong with a configuration, located by its path (`feeds[3].topic`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Where: a dotted path with indexes (`feeds[0].decoder.fields[2].pointer`), `line N` for
    /// problems found before parsing, or empty for the file as a whole.
    pub path: String,
    /// What is wrong, lowercase, naming the offending value.
    pub message: String,
}

impl Problem {
    /// A problem at `path`.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Problem {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Collects problems while validation walks the config tree, keeping the current path.
#[derive(Debug, Default)]
pub struct Problems {
    list: Vec<Problem>,
}

impl Problems {
    /// Records a problem at `path`.
    pub fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.list.push(Problem::new(path, message));
    }

    /// Records a problem at `prefix.field` (or `field` when the prefix is empty).
    pub fn at(&mut self, prefix: &str, field: &str, message: impl Into<String>) {
        self.push(join_path(prefix, field), message);
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// The problems recorded so far.
    pub fn into_vec(self) -> Vec<Problem> {
        self.list
    }

    /// Appends problems found elsewhere.
    pub fn extend(&mut self, other: impl IntoIterator<Item = Problem>) {
        self.list.extend(other);
    }
}

/// Joins a path prefix and a field name with a dot, leaving out the dot for an empty prefix.
pub fn join_path(prefix: &str, field: &str) -> String {
    if prefix.is_empty() {
        field.to_owned()
    } else if field.is_empty() {
        prefix.to_owned()
    } else {
        format!("{prefix}.{field}")
    }
}
