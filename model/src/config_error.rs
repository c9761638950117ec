/// A configuration that cannot build a model (exits that do not fit the backbone, a width of
/// zero, ...), with a message a user can act on. A type of its own so that an app can tell it
/// from its other errors and convert it with `?`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

impl From<String> for ConfigError {
    fn from(reason: String) -> Self {
        Self(reason)
    }
}
