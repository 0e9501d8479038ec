//! The desired traffic state of one service: what its rollout's phase means for Envoy.
//!
//! Two ways to steer ([`Steering`]):
//! - full ADS: doppel owns the routes. The step's weight goes to the weighted clusters (primary
//!   `100 - w`, shadow `w`); the filter keeps the policy's own share and mode for its split
//!   sample (routed to the shadow by the variant-header route).
//! - filter-only: another control plane owns the routes; the step's weight is the filter's share.
//!
//! A mirror policy never serves users from the shadow before promotion: under either steering
//! its steps grow the share of requests the filter copies, and the route keeps everything on
//! the primary.
//!
//! Pending and rolled back: shadow weight 0, filter off (no split, no mirroring), in one push.
//! Rolled back with a previous stable version named: the primary's traffic goes to it.
//! Promoted: the shadow takes all traffic (full ADS: by the route, filter off; filter-only:
//! the filter splits 100%).

use serde::{Deserialize, Serialize};

use super::machine::{Phase, Rollout};
use crate::policy::{Mode, Policy};

/// The filter's mode as the rollout sets it (the policy's [`Mode`], storable).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FilterMode {
    /// The shadow serves the chosen requests.
    Split,
    /// Chosen requests are copied to the shadow.
    Mirror,
    /// Nobody is chosen.
    Off,
}

impl From<Mode> for FilterMode {
    fn from(mode: Mode) -> FilterMode {
        match mode {
            Mode::Split => FilterMode::Split,
            Mode::Mirror => FilterMode::Mirror,
            Mode::Off => FilterMode::Off,
        }
    }
}

impl FilterMode {
    /// The name in the filter's config.
    pub fn as_str(self) -> &'static str {
        match self {
            FilterMode::Split => "split",
            FilterMode::Mirror => "mirror",
            FilterMode::Off => "off",
        }
    }
}

/// Who owns Envoy's routes and clusters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Steering {
    /// doppel serves listeners, routes, clusters, endpoints and the filter config.
    #[default]
    FullAds,
    /// doppel serves only the filter config (ECDS); routes come from elsewhere.
    FilterOnly,
}

/// What Envoy should do for one service.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrafficState {
    /// The service.
    pub service: String,
    /// The cluster taking the primary's share.
    pub primary_cluster: String,
    /// The shadow's cluster.
    pub shadow_cluster: String,
    /// The shadow's share of the weighted route, in percent (full ADS only).
    pub route_weight: f64,
    /// The filter's mode.
    pub filter_mode: FilterMode,
    /// The filter's share of matching requests, in percent.
    pub filter_percent: f64,
}

impl TrafficState {
    /// Whether requests are copied to the shadow.
    pub fn mirroring(&self) -> bool {
        self.filter_mode == FilterMode::Mirror && self.filter_percent > 0.0
    }

    /// The state `rollout` asks for under `policy`, steered `steering`.
    pub fn desired(rollout: &Rollout, policy: &Policy, steering: Steering) -> TrafficState {
        let off = |primary: &str| TrafficState {
            service: policy.service.clone(),
            primary_cluster: primary.to_owned(),
            shadow_cluster: policy.shadow_cluster.clone(),
            route_weight: 0.0,
            filter_mode: FilterMode::Off,
            filter_percent: 0.0,
        };
        match &rollout.phase {
            Phase::Pending => off(&policy.primary.cluster),
            Phase::RolledBack { .. } => off(policy
                .primary
                .previous
                .as_deref()
                .unwrap_or(&policy.primary.cluster)),
            Phase::Promoted { .. } => match steering {
                Steering::FullAds => TrafficState {
                    route_weight: 100.0,
                    ..off(&policy.primary.cluster)
                },
                // The mesh's routes stay; the filter sends every matching request over.
                Steering::FilterOnly => TrafficState {
                    filter_mode: FilterMode::Split,
                    filter_percent: 100.0,
                    ..off(&policy.primary.cluster)
                },
            },
            Phase::Shadowing { .. } | Phase::Paused { .. } => {
                let weight = rollout.current_step().map_or(0.0, |s| s.weight);
                let (route_weight, filter_percent) = match (steering, policy.traffic.mode) {
                    (_, Mode::Mirror) | (Steering::FilterOnly, _) => (0.0, weight),
                    (Steering::FullAds, _) => (weight, policy.traffic.percent.get()),
                };
                TrafficState {
                    route_weight,
                    filter_mode: policy.traffic.mode.into(),
                    filter_percent,
                    ..off(&policy.primary.cluster)
                }
            }
        }
    }
}
