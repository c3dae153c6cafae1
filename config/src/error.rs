//! Configuration errors: every problem names the key it is about.

use std::fmt;

/// One thing wrong with the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted config key (`server.port`), or `--config` for problems with the file itself,
    /// or the offending environment variable name when it maps to no key.
    pub key: String,
    /// What is wrong, on one line. Never contains a secret value.
    pub message: String,
}

impl Problem {
    /// A problem with `key`.
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// Why settings could not be loaded. `Display` prints one `<key>: <message>` line per problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A layer could not be read or did not fit the schema (missing `--config` file, bad TOML,
    /// unknown key, wrong type, unknown enum value).
    #[error("{}", Lines(.0))]
    Load(Vec<Problem>),
    /// Everything parsed, but values break the rules checked at start-up.
    #[error("{}", Lines(.0))]
    Invalid(Vec<Problem>),
}

impl ConfigError {
    /// All problems, in the order they were found.
    pub fn problems(&self) -> &[Problem] {
        match self {
            Self::Load(problems) | Self::Invalid(problems) => problems,
        }
    }
}

struct Lines<'a>(&'a [Problem]);

impl fmt::Display for Lines<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}
