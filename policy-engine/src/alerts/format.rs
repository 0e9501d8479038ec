//! The wire formats: what each kind of sink is sent for a trigger or a resolve.

use serde_json::{Map, Value, json};

use super::{Action, Notification};

/// PagerDuty's limit on `payload.summary`.
const PAGERDUTY_SUMMARY_MAX: usize = 1024;
/// PagerDuty's limit on `dedup_key`.
const PAGERDUTY_DEDUP_KEY_MAX: usize = 255;
/// Slack's limit on fields per section block.
const SLACK_FIELDS_MAX: usize = 10;

/// A Slack incoming-webhook message: a `text` fallback and `blocks` with the details as fields.
pub fn slack(n: &Notification) -> Value {
    let (icon, state) = match n.action {
        Action::Trigger => (":rotating_light:", "FIRING"),
        Action::Resolve => (":white_check_mark:", "RESOLVED"),
    };
    let headline = format!(
        "{icon} [{state}] [{}] rollout `{}`, rule `{}`: {}",
        n.severity.as_str(),
        n.key.rollout,
        n.key.rule,
        n.summary
    );
    let mut blocks = vec![json!({
        "type": "section",
        "text": {"type": "mrkdwn", "text": headline},
    })];
    let fields: Vec<Value> = n
        .details
        .iter()
        .map(|(name, value)| {
            json!({"type": "mrkdwn", "text": format!("*{name}*\n{}", detail_text(value))})
        })
        .collect();
    for chunk in fields.chunks(SLACK_FIELDS_MAX) {
        blocks.push(json!({"type": "section", "fields": chunk}));
    }
    blocks.push(json!({
        "type": "context",
        "elements": [{"type": "mrkdwn", "text": format!("doppel · incident `{}`", n.dedup_key)}],
    }));
    json!({"text": headline, "blocks": blocks})
}

/// A PagerDuty Events API v2 event: `trigger` with a payload, or `resolve`, under one
/// `dedup_key` per incident.
pub fn pagerduty(n: &Notification, routing_key: &str, source: &str) -> Value {
    let dedup_key = truncate(&n.dedup_key, PAGERDUTY_DEDUP_KEY_MAX);
    match n.action {
        Action::Trigger => {
            let mut custom = Map::new();
            custom.insert("rollout".into(), n.key.rollout.clone().into());
            custom.insert("rule".into(), n.key.rule.clone().into());
            for (name, value) in &n.details {
                custom.insert(name.clone(), value.clone());
            }
            json!({
                "routing_key": routing_key,
                "event_action": "trigger",
                "dedup_key": dedup_key,
                "client": "doppel",
                "payload": {
                    "summary": truncate(&n.summary, PAGERDUTY_SUMMARY_MAX),
                    "source": source,
                    "severity": n.severity.as_str(),
                    "component": n.key.rollout,
                    "class": n.key.rule,
                    "custom_details": custom,
                },
            })
        }
        Action::Resolve => json!({
            "routing_key": routing_key,
            "event_action": "resolve",
            "dedup_key": dedup_key,
        }),
    }
}

/// doppel's plain JSON: everything in the notification, flat.
pub fn plain(n: &Notification) -> Value {
    json!({
        "status": match n.action { Action::Trigger => "firing", Action::Resolve => "resolved" },
        "rollout": n.key.rollout,
        "rule": n.key.rule,
        "severity": n.severity.as_str(),
        "summary": n.summary,
        "details": n.details,
        "dedup_key": n.dedup_key,
        "at_unix_ms": n.at_unix_ms,
    })
}

/// A detail value as Slack text: strings bare, everything else as JSON.
fn detail_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// At most `max` bytes, cut at a character boundary.
fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::alerts::{AlertKey, Severity};

    fn notification(action: Action, summary: &str) -> Notification {
        Notification {
            action,
            key: AlertKey::new("checkout/v2", "latency"),
            dedup_key: "doppel/checkout/v2/latency".into(),
            severity: Severity::Warning,
            summary: summary.into(),
            details: (0..23)
                .map(|i| (format!("n{i:02}"), Value::from(i)))
                .collect::<BTreeMap<_, _>>(),
            at_unix_ms: 1,
        }
    }

    #[test]
    fn pagerduty_summary_is_cut_at_its_limit_on_a_char_boundary() {
        let long = "é".repeat(700); // 1400 bytes
        let body = pagerduty(&notification(Action::Trigger, &long), "key", "doppel");
        let summary = body["payload"]["summary"].as_str().expect("summary");
        assert!(
            summary.len() <= PAGERDUTY_SUMMARY_MAX && summary.len() >= PAGERDUTY_SUMMARY_MAX - 1
        );
        assert!(summary.chars().all(|c| c == 'é'));
        assert_eq!(body["payload"]["custom_details"]["n22"], 22);
    }

    #[test]
    fn slack_fields_are_split_into_sections_of_ten() {
        let body = slack(&notification(Action::Resolve, "ok"));
        let blocks = body["blocks"].as_array().expect("blocks");
        // headline, 10 + 10 + 3 fields, context
        assert_eq!(blocks.len(), 5);
        assert_eq!(blocks[3]["fields"].as_array().map(Vec::len), Some(3));
        assert!(
            body["text"]
                .as_str()
                .is_some_and(|t| t.contains("RESOLVED"))
        );
    }

    #[test]
    fn plain_json_carries_everything() {
        let body = plain(&notification(Action::Trigger, "slow"));
        assert_eq!(body["status"], "firing");
        assert_eq!(body["severity"], "warning");
        assert_eq!(body["details"]["n03"], 3);
        assert_eq!(body["dedup_key"], "doppel/checkout/v2/latency");
    }
}
