//! `envoy/ads.yaml` is a configuration Envoy accepts, as shipped and as the tests render it.

use std::process::Command;

use doppel_tests::xds_support::{AdsMode, envoy_bin, render_ads_bootstrap, workspace_root};

fn validate(path: &std::path::Path) -> Result<(), String> {
    let output = Command::new(envoy_bin())
        .args(["--mode", "validate", "-l", "error", "-c"])
        .arg(path)
        .output()
        .map_err(|e| format!("running {}: {e}", envoy_bin().display()))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{} is refused: {}{}",
            path.display(),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

#[test]
fn xds_ads_bootstrap_validates() {
    validate(&workspace_root().join("envoy/ads.yaml")).expect("shipped bootstrap");
    let dir = tempfile::tempdir().expect("tempdir");
    for mode in [AdsMode::Sotw, AdsMode::Delta] {
        let rendered = render_ads_bootstrap(18002, mode).expect("renders");
        assert_eq!(
            rendered.contains("api_type: DELTA_GRPC"),
            mode == AdsMode::Delta,
            "{mode:?}"
        );
        let path = dir.path().join(format!("{mode:?}.yaml"));
        std::fs::write(&path, rendered).expect("written");
        validate(&path).expect("rendered bootstrap");
    }
}

#[test]
fn xds_ads_bootstrap_takes_only_the_engine_clusters_statically() {
    let text = std::fs::read_to_string(workspace_root().join("envoy/ads.yaml")).expect("read");
    // The stat sink and two static clusters: the engine's xDS and its metrics ingest.
    assert_eq!(text.matches("- name:").count(), 3, "{text}");
    assert!(text.contains("- name: doppel_xds"));
    assert!(text.contains("- name: doppel_engine"));
    assert!(text.contains("envoy.stat_sinks.metrics_service"));
    assert!(text.contains("cds_config: { ads: {}"));
    assert!(text.contains("lds_config: { ads: {}"));
    assert!(!text.contains("listeners:"), "no static listeners");
}
