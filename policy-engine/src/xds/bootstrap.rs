//! Envoy's bootstrap for full ADS (`envoy/ads.yaml`, compiled in) pointed at a running engine:
//! what `doppel demo` starts Envoy with, and what the end-to-end tests use.

/// Envoy's bootstrap for full ADS, as shipped in `envoy/ads.yaml`.
const ADS_BOOTSTRAP: &str = include_str!("../../../envoy/ads.yaml");

/// How Envoy speaks ADS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdsMode {
    /// State of the world (`GRPC`).
    Sotw,
    /// Incremental (`DELTA_GRPC`).
    Delta,
}

/// `envoy/ads.yaml` pointed at the engine's ADS server on `xds_port` and its MetricsService on
/// `metrics_port`, admin on an ephemeral port, speaking ADS in `mode`.
pub fn ads_bootstrap(xds_port: u16, metrics_port: u16, mode: AdsMode) -> Result<String, String> {
    let api_type = match mode {
        AdsMode::Sotw => "api_type: GRPC",
        AdsMode::Delta => "api_type: DELTA_GRPC",
    };
    let mut text = ADS_BOOTSTRAP.to_owned();
    for (from, to) in [
        ("port_value: 18000", format!("port_value: {xds_port}")),
        ("port_value: 18001", format!("port_value: {metrics_port}")),
        ("port_value: 9901", "port_value: 0".to_owned()),
        ("api_type: GRPC", api_type.to_owned()),
    ] {
        if text.matches(from).count() != 1 {
            return Err(format!("envoy/ads.yaml: expected `{from}` exactly once"));
        }
        text = text.replace(from, &to);
    }
    Ok(text)
}
