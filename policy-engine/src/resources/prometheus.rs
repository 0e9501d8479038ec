//! The Prometheus HTTP API at the edge: one instant query (`/api/v1/query`) becomes one number
//! or a reason there is none.

use std::collections::BTreeMap;
use std::time::Duration;

use doppel_filter::names::Variant;
use serde::Deserialize;

use super::{NoData, ResourceSample, ResourcesConfig, ResourcesError, VariantResources};

/// Runs a policy's resource queries against one Prometheus server.
pub struct PrometheusSource {
    client: reqwest::Client,
    endpoint: reqwest::Url,
    config: ResourcesConfig,
}

/// The API's envelope.
#[derive(Deserialize)]
struct Envelope {
    status: String,
    data: Option<Data>,
    #[serde(rename = "errorType")]
    error_type: Option<String>,
    error: Option<String>,
}

/// The result of an instant query, by type.
#[derive(Deserialize)]
#[serde(tag = "resultType", content = "result", rename_all = "lowercase")]
enum Data {
    Vector(Vec<Series>),
    Scalar((f64, String)),
    Matrix(Vec<serde::de::IgnoredAny>),
    String((f64, String)),
}

/// One series of an instant vector: its labels and `[timestamp, "value"]`.
#[derive(Deserialize)]
struct Series {
    #[serde(default)]
    metric: BTreeMap<String, String>,
    value: (f64, String),
}

impl PrometheusSource {
    /// Validates `config` and builds the HTTP client.
    pub fn new(config: &ResourcesConfig) -> Result<Self, ResourcesError> {
        config.validate()?;
        let base = reqwest::Url::parse(&config.prometheus)
            .map_err(|e| ResourcesError::Config(format!("resources.prometheus: {e}")))?;
        let endpoint = base
            .join(&format!(
                "{}/api/v1/query",
                base.path().trim_end_matches('/')
            ))
            .map_err(|e| ResourcesError::Config(format!("resources.prometheus: {e}")))?;
        let timeout = Duration::from_millis(config.timeout_ms);
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .user_agent(concat!("doppel/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ResourcesError::Client(e.to_string()))?;
        Ok(Self {
            client,
            endpoint,
            config: config.clone(),
        })
    }

    /// Runs every query for both variants at once. Takes at most about the configured timeout,
    /// whatever Prometheus does; a query without a number is left out of `values` and its
    /// reason put in `missing`.
    pub async fn sample(&self) -> ResourceSample {
        let (primary, shadow) = futures::join!(
            self.sample_variant(Variant::Primary),
            self.sample_variant(Variant::Shadow)
        );
        ResourceSample { primary, shadow }
    }

    /// Runs every query for one variant, concurrently.
    pub async fn sample_variant(&self, variant: Variant) -> VariantResources {
        let queries = self.config.queries_for(variant);
        let results = futures::future::join_all(
            queries
                .iter()
                .map(|(name, query)| async move { (name.clone(), self.query(query).await) }),
        )
        .await;
        let mut resources = VariantResources::default();
        for (name, result) in results {
            match result {
                Ok(value) => {
                    resources.values.insert(name, value);
                }
                Err(reason) => {
                    tracing::debug!(variant = variant.as_str(), query = %name, reason = %reason, "no resource data");
                    resources.missing.insert(name, reason);
                }
            }
        }
        resources
    }

    /// One instant query: a number when the answer is exactly one finite sample.
    pub async fn query(&self, promql: &str) -> Result<f64, NoData> {
        let limit = Duration::from_millis(self.config.timeout_ms);
        // The client's timeout bounds the request; this outer one bounds everything else too.
        match tokio::time::timeout(limit + Duration::from_millis(50), self.run(promql)).await {
            Ok(result) => result,
            Err(_) => Err(NoData::Timeout),
        }
    }

    async fn run(&self, promql: &str) -> Result<f64, NoData> {
        let timeout = format!("{}ms", self.config.timeout_ms);
        let response = self
            .client
            .get(self.endpoint.clone())
            .query(&[("query", promql), ("timeout", timeout.as_str())])
            .send()
            .await
            .map_err(|e| {
                if e.is_timeout() {
                    NoData::Timeout
                } else {
                    NoData::Unreachable(error_chain(e))
                }
            })?;
        let status = response.status();
        let body = response.text().await.map_err(|e| {
            if e.is_timeout() {
                NoData::Timeout
            } else {
                NoData::Unreachable(error_chain(e))
            }
        })?;
        // Prometheus answers errors (400, 422, 503) with the same JSON envelope.
        let envelope: Envelope = serde_json::from_str(&body)
            .map_err(|e| NoData::BadResponse(format!("HTTP {status}, not the API's JSON: {e}")))?;
        if envelope.status != "success" {
            return Err(NoData::QueryError {
                kind: envelope.error_type.unwrap_or_default(),
                message: envelope.error.unwrap_or_else(|| format!("HTTP {status}")),
            });
        }
        let raw = match envelope.data {
            Some(Data::Vector(series)) => match series.as_slice() {
                [] => return Err(NoData::Empty),
                [one] => one.value.1.clone(),
                many => {
                    return Err(NoData::Ambiguous {
                        series: many.len(),
                        example: format!("{:?}", many[0].metric),
                    });
                }
            },
            Some(Data::Scalar((_, value))) => value,
            Some(Data::Matrix(series)) => {
                return Err(NoData::BadResponse(format!(
                    "a range vector of {} series, not an instant value",
                    series.len()
                )));
            }
            Some(Data::String((_, text))) => {
                return Err(NoData::BadResponse(format!(
                    "the string {text:?}, not a number"
                )));
            }
            None => return Err(NoData::BadResponse("success without data".to_owned())),
        };
        let value: f64 = raw
            .parse()
            .map_err(|_| NoData::BadResponse(format!("value {raw:?} is not a number")))?;
        if value.is_finite() {
            Ok(value)
        } else {
            Err(NoData::NotFinite(raw))
        }
    }
}

/// An error with its sources, on one line, without the URL.
fn error_chain(error: reqwest::Error) -> String {
    let error = error.without_url();
    let mut text = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}
