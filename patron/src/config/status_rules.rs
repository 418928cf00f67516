//! `PATRON_HTTP_STATUS_ERROR_LOGGING`: which response statuses are logged at
//! ERROR with their body, in Go Patron's syntax.

use http::StatusCode;

/// Which statuses are logged at ERROR level with their body.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatusRules {
    /// Half-open ranges `[from, to)`.
    ranges: Vec<(u16, u16)>,
}

impl StatusRules {
    /// Parses Go Patron's syntax: `;`-separated codes (`404`) and intervals
    /// (`[500,600)`, `(400,410]`). Returns what is wrong on failure.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut ranges = Vec::new();
        for part in text.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let range = if let Some(rest) = part.strip_prefix(['[', '(']) {
                let inclusive_start = part.starts_with('[');
                let (body, inclusive_end) = match (rest.strip_suffix(')'), rest.strip_suffix(']')) {
                    (Some(b), _) => (b, false),
                    (None, Some(b)) => (b, true),
                    _ => return Err(format!("interval {part:?} must end with `)` or `]`")),
                };
                let (a, b) = body
                    .split_once(',')
                    .ok_or_else(|| format!("interval {part:?} needs two bounds, e.g. [500,600)"))?;
                let a = code(a)?;
                let b = code(b)?;
                let from = if inclusive_start { a } else { a + 1 };
                let to = if inclusive_end { b + 1 } else { b };
                if from >= to {
                    return Err(format!("interval {part:?} is empty"));
                }
                (from, to)
            } else {
                let c = code(part)?;
                (c, c + 1)
            };
            ranges.push(range);
        }
        Ok(StatusRules { ranges })
    }

    /// Whether `status` is logged at ERROR level.
    pub fn matches(&self, status: StatusCode) -> bool {
        let s = status.as_u16();
        self.ranges
            .iter()
            .any(|(from, to)| (*from..*to).contains(&s))
    }
}

fn code(text: &str) -> Result<u16, String> {
    let t = text.trim();
    match t.parse::<u16>() {
        Ok(c) if (100..=1000).contains(&c) => Ok(c),
        _ => Err(format!("{t:?} is not an HTTP status code")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_syntax() {
        let r = StatusRules::parse("404;[500,600)").unwrap();
        assert!(r.matches(StatusCode::NOT_FOUND));
        assert!(r.matches(StatusCode::INTERNAL_SERVER_ERROR));
        assert!(r.matches(StatusCode::from_u16(599).unwrap()));
        assert!(!r.matches(StatusCode::OK));
        assert!(!r.matches(StatusCode::BAD_REQUEST));
        let r = StatusRules::parse("(400,403]").unwrap();
        assert!(!r.matches(StatusCode::BAD_REQUEST));
        assert!(r.matches(StatusCode::FORBIDDEN));
        assert_eq!(StatusRules::parse("").unwrap(), StatusRules::default());
    }

    #[test]
    fn rejects_nonsense() {
        assert!(
            StatusRules::parse("[500,600")
                .unwrap_err()
                .contains("must end")
        );
        assert!(
            StatusRules::parse("[600,500)")
                .unwrap_err()
                .contains("empty")
        );
        assert!(
            StatusRules::parse("abc")
                .unwrap_err()
                .contains("not an HTTP status code")
        );
        assert!(
            StatusRules::parse("[500)")
                .unwrap_err()
                .contains("two bounds")
        );
    }
}
