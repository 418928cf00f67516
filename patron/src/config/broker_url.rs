//! [`BrokerUrl`]: a broker URL whose password never reaches a log line.

/// A broker URL that may hold credentials: `Display` and `Debug` show it
/// with the password replaced by `***`.
///
/// ```
/// use patron::config::BrokerUrl;
///
/// let url = BrokerUrl::new("amqp://user:secret@mq:5672/%2f");
/// assert_eq!(url.to_string(), "amqp://user:***@mq:5672/%2f");
/// assert_eq!(url.expose(), "amqp://user:secret@mq:5672/%2f");
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct BrokerUrl(String);

impl BrokerUrl {
    /// Wraps a URL.
    pub fn new(url: impl Into<String>) -> Self {
        BrokerUrl(url.into())
    }

    /// The URL with its password, for the client library only.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL with any password replaced by `***`.
    pub fn redacted(&self) -> String {
        redact(&self.0)
    }
}

/// `scheme://user:password@host…` → `scheme://user:***@host…`.
pub(crate) fn redact(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_string();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let Some(at) = authority.rfind('@') else {
        return url.to_string();
    };
    let userinfo = &authority[..at];
    let user = userinfo.split(':').next().unwrap_or_default();
    let hidden = if userinfo.contains(':') {
        format!("{user}:***")
    } else {
        user.to_string()
    };
    format!("{}{}{}", &url[..scheme_end + 3], hidden, &rest[at..])
}

impl std::fmt::Display for BrokerUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl std::fmt::Debug for BrokerUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BrokerUrl({:?})", self.redacted())
    }
}
