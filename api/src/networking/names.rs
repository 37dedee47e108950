//! DNS names as Istio 1.4 checks them: RFC 1123 labels, and domains whose
//! first label may be a wildcard (`*`, `*.example.com`, `*-api.example.com`).

/// The longest label DNS allows.
pub const MAX_LABEL: usize = 63;
/// The longest name DNS allows.
pub const MAX_NAME: usize = 255;

/// `[a-zA-Z0-9]([-a-zA-Z0-9]*[a-zA-Z0-9])?`, at most 63 characters: a
/// namespace, a Gateway's name, one label of a host.
pub fn is_dns1123_label(s: &str) -> bool {
    let ends_ok = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    s.len() <= MAX_LABEL
        && ends_ok(s.chars().next())
        && ends_ok(s.chars().last())
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}

/// `*`, or a label with an optional `*` or `*-` in front of it.
fn is_wildcard_label(s: &str) -> bool {
    if s == "*" {
        return true;
    }
    let rest = s
        .strip_prefix("*-")
        .or_else(|| s.strip_prefix('*'))
        .unwrap_or(s);
    s.len() <= MAX_LABEL && is_dns1123_label(rest)
}

/// A domain whose first label may be a wildcard; a trailing dot is allowed
/// and the top-level label may not be all digits.
pub fn check_wildcard_domain(domain: &str) -> Result<(), String> {
    if domain.is_empty() {
        return Err("host must not be empty".into());
    }
    if domain.len() > MAX_NAME {
        return Err(format!(
            "host {domain:?} is longer than {MAX_NAME} characters"
        ));
    }
    let (first, rest) = match domain.split_once('.') {
        Some((first, rest)) => (first, Some(rest)),
        None => (domain, None),
    };
    if !is_wildcard_label(first) {
        return Err(invalid_label(domain, first));
    }
    let Some(rest) = rest else {
        return Ok(());
    };
    let labels: Vec<&str> = rest.split('.').collect();
    let last = labels.len() - 1;
    if labels[last].parse::<u64>().is_ok() {
        return Err(format!(
            "invalid host {domain:?}: the top-level label {:?} is all digits",
            labels[last]
        ));
    }
    for (i, label) in labels.iter().enumerate() {
        // `istio.io.` names the same host as `istio.io`.
        let trailing_dot = i == last && label.is_empty();
        if !trailing_dot && !is_dns1123_label(label) {
            return Err(invalid_label(domain, label));
        }
    }
    Ok(())
}

fn invalid_label(domain: &str, label: &str) -> String {
    format!("invalid host {domain:?}: {label:?} is not a DNS-1123 label")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_wildcards() {
        for good in ["a", "a-b", "A9", &"x".repeat(63)] {
            assert!(is_dns1123_label(good), "{good}");
        }
        for bad in ["", "-a", "a-", "a_b", "a.b", &"x".repeat(64)] {
            assert!(!is_dns1123_label(bad), "{bad}");
        }
        for good in [
            "*",
            "*.example.com",
            "*-api.example.com",
            "*api.example.com",
            "example.com.",
        ] {
            assert_eq!(check_wildcard_domain(good), Ok(()), "{good}");
        }
        for bad in ["", "a.*.com", "a..b", "example.123", "a_b.com", "**.a"] {
            assert!(check_wildcard_domain(bad).is_err(), "{bad}");
        }
    }
}
