//! The error of a rule or test file: where (file, line, column) and what is wrong.

use std::fmt;

/// One problem in a rule file or rule test file. Loading reports every problem it finds.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct RuleError {
    /// The file's name as given to the loader.
    pub file: String,
    /// 1-based line, 0 when the problem has no place in the file (a duplicate across files).
    pub line: u64,
    /// 1-based column.
    pub column: u64,
    /// What is wrong, lowercase, saying with which input.
    pub message: String,
}

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file, self.message)
        } else {
            write!(
                f,
                "{}:{}:{}: {}",
                self.file, self.line, self.column, self.message
            )
        }
    }
}

impl RuleError {
    /// A problem at a place in `file`.
    pub fn at(
        file: &str,
        location: serde_saphyr::Location,
        message: impl Into<String>,
    ) -> RuleError {
        RuleError {
            file: file.to_owned(),
            line: location.line(),
            column: location.column(),
            message: message.into(),
        }
    }

    /// A YAML syntax or shape error (an unknown key, a wrong type) from the parser.
    pub fn from_yaml(file: &str, error: &serde_saphyr::Error) -> RuleError {
        let (line, column) = error.location().map_or((0, 0), |l| (l.line(), l.column()));
        let text = error.without_snippet().to_string();
        // The parser's message starts with its own "line L column C: "; the place is ours to print.
        let message = match text.split_once(": ") {
            Some((place, rest))
                if place.starts_with("line ") || place.starts_with("error: line ") =>
            {
                rest.to_owned()
            }
            _ => text,
        };
        RuleError {
            file: file.to_owned(),
            line,
            column,
            message: message.trim().to_owned(),
        }
    }
}
