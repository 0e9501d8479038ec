//! Issue 2's must-show for config: every kind of invalid document is refused by the real
//! filter's `on_configure` with a log line naming the field, and none makes the VM trap.

use doppel_tests::host::{Host, LogLevel};

/// `(document, field the refusal must name)`.
const INVALID: &[(&str, &str)] = &[
    // not JSON at all
    ("not json", "config"),
    ("", "config"),
    (r#"{"service":"cart","mode":"split","percent":1"#, "config"),
    // wrong types
    (r#"{"service":42,"mode":"split","percent":1}"#, "service"),
    (
        r#"{"service":"cart","mode":"split","percent":"1"}"#,
        "percent",
    ),
    (
        r#"{"service":"cart","mode":"sideways","percent":1}"#,
        "mode",
    ),
    (
        r#"{"service":"cart","mode":"split","percent":1,"match":{}}"#,
        "match",
    ),
    (
        r#"{"service":"cart","mode":"split","percent":1,"custom_metrics":"db"}"#,
        "custom_metrics",
    ),
    (
        r#"{"service":"cart","mode":"split","percent":1,"trusted_control":"yes"}"#,
        "trusted_control",
    ),
    // percent out of range
    (
        r#"{"service":"cart","mode":"split","percent":120}"#,
        "percent",
    ),
    (
        r#"{"service":"cart","mode":"split","percent":-0.5}"#,
        "percent",
    ),
    // unknown fields, at the top and nested
    (
        r#"{"service":"cart","mode":"split","percent":1,"colour":"red"}"#,
        "colour",
    ),
    (
        r#"{"service":"cart","mode":"split","percent":1,"headers":{"varient":"x-v"}}"#,
        "varient",
    ),
    // empty or malformed names
    (r#"{"service":"","mode":"split","percent":1}"#, "service"),
    (
        r#"{"service":"Cart.Shop","mode":"split","percent":1}"#,
        "service",
    ),
    (
        r#"{"service":"cart","mode":"split","percent":1,"headers":{"variant":""}}"#,
        "headers.variant",
    ),
    (
        r#"{"service":"cart","mode":"split","percent":1,"custom_metrics":[""]}"#,
        "custom_metrics",
    ),
    (
        r#"{"service":"cart","mode":"split","percent":1,"match":[{"header":"","equals":"de"}]}"#,
        "match",
    ),
    (
        r#"{"service":"cart","mode":"split","percent":1,"sticky":{"cookie":""}}"#,
        "sticky",
    ),
    // missing required fields and inconsistent ones
    (r#"{"mode":"split","percent":1}"#, "service"),
    (r#"{"service":"cart","percent":1}"#, "mode"),
    (
        r#"{"service":"cart","mode":"mirror","percent":1}"#,
        "mirror",
    ),
    (
        r#"{"service":"cart","mode":"mirror","percent":1,"mirror":{"cluster":""}}"#,
        "mirror.cluster",
    ),
    (
        r#"{"service":"cart","mode":"mirror","percent":1,"mirror":{"cluster":"shadow","timeout_ms":0}}"#,
        "mirror.timeout_ms",
    ),
    (
        r#"{"service":"cart","mode":"split","percent":1,"match":[{"header":"x-geo","equals":"de","prefix":"d"}]}"#,
        "match",
    ),
];

#[test]
fn host_config_refuses_every_invalid_document_naming_the_field() -> anyhow::Result<()> {
    let mut failures = Vec::new();
    for (document, field) in INVALID {
        let mut host = Host::load_filter()?;
        let accepted = host.configure(document)?;
        assert!(
            host.failure().is_none(),
            "{document}: the VM trapped: {:?}",
            host.failure()
        );
        let refusal = host
            .logs()
            .iter()
            .find(|l| l.level >= LogLevel::Warn && l.message.contains("invalid config"));
        match (accepted, refusal) {
            (true, _) => failures.push(format!("{document}: accepted")),
            (false, None) => failures.push(format!(
                "{document}: refused without a warning: {:?}",
                host.logs()
            )),
            (false, Some(line)) if !line.message.contains(field) => failures.push(format!(
                "{document}: the refusal does not name `{field}`: {}",
                line.message
            )),
            _ => {}
        }
        // The VM is still usable: a good document is accepted after a bad one.
        assert!(
            host.configure(r#"{"service":"cart","mode":"split","percent":1}"#)?,
            "{document}"
        );
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    Ok(())
}

#[test]
fn host_config_accepts_the_documented_example() -> anyhow::Result<()> {
    let example = r#"{
      "service": "checkout", "mode": "split", "percent": 0.01,
      "match": [
        { "header": "x-geo", "equals": "de" },
        { "header": "user-agent", "prefix": "Mozilla/" },
        { "header": "x-geo", "one_of": ["de", "fr"] }
      ],
      "sticky": { "header": "x-user-id" },
      "headers": { "variant": "x-doppel-variant", "id": "x-doppel-id", "mirror": "x-doppel-mirror" },
      "custom_metrics": ["db", "cache"],
      "mirror": { "cluster": "shadow", "authority": "shadow.internal", "methods": ["GET", "HEAD", "OPTIONS"],
                  "max_body_bytes": 0, "timeout_ms": 1000, "max_in_flight": 64,
                  "compare_body_bytes": 65536, "latency_tolerance_ms": 250 }
    }"#;
    let mut host = Host::load_filter()?;
    assert!(host.configure(example)?, "logs: {:?}", host.logs());
    assert!(host.failure().is_none());
    Ok(())
}
