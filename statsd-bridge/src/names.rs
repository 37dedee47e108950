//! Prometheus names from statsd names, the way statsd_exporter makes them,
//! and the escaping the text exposition needs.

use std::borrow::Cow;

/// statsd_exporter's default naming, for metric names and tag names: every
/// character but `[A-Za-z0-9_]` becomes `_` (a run of `-` becomes one), and a
/// leading digit gets a `_` in front. `envoy.cluster.upstream_rq_200` becomes
/// `envoy_cluster_upstream_rq_200`; no type suffix such as `_total` is added
/// (statsd_exporter stopped adding suffixes in 0.5.0).
pub fn escape_metric_name(name: &str) -> Cow<'_, str> {
    let valid = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let leading_digit = name.starts_with(|c: char| c.is_ascii_digit());
    if !leading_digit && name.chars().all(valid) {
        return Cow::Borrowed(name);
    }
    let mut out = String::with_capacity(name.len() + 1);
    if leading_digit {
        out.push('_');
    }
    let mut previous = None;
    for c in name.chars() {
        if valid(c) {
            out.push(c);
        } else if !(c == '-' && previous == Some('-')) {
            out.push('_');
        }
        previous = Some(c);
    }
    Cow::Owned(out)
}

/// Whether `name` may be a Prometheus label name a mapping writes.
pub fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with("__")
}

/// Appends `value` escaped for a label value in the text exposition.
pub fn push_label_value(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// Appends `help` escaped for a `# HELP` line.
pub fn push_help(out: &mut String, help: &str) {
    for c in help.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// Appends a sample value as the text exposition writes it (`+Inf`, `NaN`).
pub fn push_value(out: &mut String, v: f64) {
    use std::fmt::Write;
    if v.is_nan() {
        out.push_str("NaN");
    } else if v.is_infinite() {
        out.push_str(if v > 0.0 { "+Inf" } else { "-Inf" });
    } else {
        let _ = write!(out, "{v}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_names_as_statsd_exporter_makes_them() {
        assert_eq!(
            escape_metric_name("envoy.cluster.upstream_rq_200"),
            "envoy_cluster_upstream_rq_200"
        );
        assert!(matches!(
            escape_metric_name("already_fine_9"),
            Cow::Borrowed(_)
        ));
        assert_eq!(
            escape_metric_name("test.web-server.foo.bar"),
            "test_web_server_foo_bar"
        );
        assert_eq!(escape_metric_name("a--b---c"), "a_b_c");
        assert_eq!(escape_metric_name("9lives"), "_9lives");
        assert_eq!(
            escape_metric_name("outbound|9080||reviews"),
            "outbound_9080__reviews"
        );
        assert_eq!(escape_metric_name("a:b"), "a_b");
        // One '_' per character, not per byte.
        assert_eq!(escape_metric_name("café.ö"), "caf___");
        assert_eq!(escape_metric_name(""), "");
    }

    #[test]
    fn label_names() {
        assert!(is_label_name("code"));
        assert!(is_label_name("_x9"));
        assert!(is_label_name("a"));
        assert!(!is_label_name("9a"));
        assert!(!is_label_name("a-b"));
        assert!(!is_label_name("__name__"));
        assert!(!is_label_name(""));
    }

    #[test]
    fn escaping_for_the_exposition() {
        let mut s = String::new();
        push_label_value(&mut s, "a\"b\\c\nd");
        assert_eq!(s, r#"a\"b\\c\nd"#);
        let mut s = String::new();
        for v in [
            1.0,
            0.005,
            -2.5,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::NAN,
            1e21,
        ] {
            push_value(&mut s, v);
            s.push(' ');
        }
        assert_eq!(s, "1 0.005 -2.5 +Inf -Inf NaN 1000000000000000000000 ");
    }
}
