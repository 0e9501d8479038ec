//! The setup most end-to-end tests share: a primary and a shadow demo upstream behind one real
//! Envoy running the doppel filter, all on 127.0.0.1 with ephemeral ports.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::Value;

use crate::envoy::{Envoy, Stats};
use crate::envoy_config::{Upstreams, inline_bootstrap};
use crate::load::HttpClient;
use crate::procs::RunDir;
use crate::upstream::DemoUpstream;

/// How often the filter publishes its counters (its root tick), plus slack.
pub const PUBLISH_WAIT: Duration = Duration::from_millis(1300);

/// Primary (`v1`) and shadow (`v2`) upstreams behind Envoy with the filter.
#[derive(Debug)]
pub struct Stack {
    /// Envoy with the filter (dropped first).
    pub envoy: Envoy,
    /// The primary upstream, labelled `v1`.
    pub primary: DemoUpstream,
    /// The shadow upstream, labelled `v2`.
    pub shadow: DemoUpstream,
    /// Envoy's listener.
    pub front: SocketAddr,
    /// A client for the listener, the admin and the upstreams.
    pub client: HttpClient,
    /// Where everything logs (dropped last, after the processes stop).
    pub dir: RunDir,
}

/// What a [`Stack`] runs.
#[derive(Clone, Debug)]
pub struct StackSpec<'a> {
    /// Names the run directory.
    pub test: &'a str,
    /// `split.yaml` or `mirror.yaml`.
    pub template: &'a str,
    /// The filter's config.
    pub filter_config: Value,
    /// Extra flags of the primary upstream.
    pub primary_args: &'a [&'a str],
    /// Extra flags of the shadow upstream.
    pub shadow_args: &'a [&'a str],
}

impl Stack {
    /// Starts both upstreams, then Envoy, and finds Envoy's listener.
    pub async fn start(spec: StackSpec<'_>) -> Result<Stack> {
        let dir = RunDir::new(spec.test)?;
        let primary = DemoUpstream::start(&dir, "v1", spec.primary_args)?;
        let shadow = DemoUpstream::start(&dir, "v2", spec.shadow_args)?;
        let up = Upstreams {
            primary: primary.port(),
            shadow: shadow.port(),
        };
        let bootstrap = inline_bootstrap(&dir, "main", spec.template, up, &spec.filter_config)?;
        let envoy = Envoy::start(&dir, "main", &bootstrap).await?;
        let front = envoy
            .listener("ingress")
            .await
            .context("finding the listener")?;
        Ok(Stack {
            envoy,
            primary,
            shadow,
            front,
            client: HttpClient::new(),
            dir,
        })
    }
}

/// The filter's stat `stat` of `service` in `scope` as Envoy names it, for example
/// `wasmcustom.doppel.cart.shadow.rq_total`.
pub fn filter_stat(service: &str, scope: &str, stat: &str) -> String {
    format!(
        "{}{}",
        doppel_filter::names::ENVOY_PREFIX,
        format_args!(
            "{}.{service}.{scope}.{stat}",
            doppel_filter::names::NAMESPACE
        )
    )
}

impl Envoy {
    /// The filter's stats of `service`, read once they stop changing: the filter publishes its
    /// counters on a one-second tick, so two reads [`PUBLISH_WAIT`] apart must agree.
    pub async fn settled_filter_stats(&self, service: &str) -> Result<Stats> {
        let filter = format!("doppel\\.{service}\\.");
        let mut last = self.stats(&filter).await?;
        for _ in 0..30 {
            tokio::time::sleep(PUBLISH_WAIT).await;
            let now = self.stats(&filter).await?;
            if now.all() == last.all() {
                return Ok(now);
            }
            last = now;
        }
        Ok(last)
    }
}
