//! Stratified random selection of shadow hosts, and the report of how well the sample matches
//! the population.

use std::collections::BTreeMap;

use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use serde::Serialize;

use super::apportion::{apportion, quotas};
use super::{Host, HostSelectionConfig, HostsError, Inventory};

/// The chosen hosts and how representative they are.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Selection {
    /// The seed that produced this choice; the same seed and inventory give the same hosts.
    pub seed: u64,
    /// The chosen hosts, sorted by id.
    pub hosts: Vec<Host>,
    /// One entry per stratum (combination of the stratifying labels' values), in label order.
    pub strata: Vec<StratumReport>,
    /// One entry per label found on any host, by label name.
    pub labels: BTreeMap<String, LabelReport>,
}

/// One stratum's population, proportional share and sample.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StratumReport {
    /// The stratifying labels' values, in the order of the config's `strata`.
    pub values: Vec<String>,
    /// Hosts in the inventory in this stratum.
    pub population: usize,
    /// The exact proportional share of the sample (`population * size / total`).
    pub quota: f64,
    /// Hosts chosen from this stratum.
    pub chosen: usize,
}

/// How one label's values are shared in the population and in the sample.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LabelReport {
    /// One row per value; hosts without the label count under `None`.
    pub values: Vec<LabelValueReport>,
    /// The largest absolute share difference over the values.
    pub max_difference: f64,
}

/// One label value's share in the population and in the sample.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LabelValueReport {
    /// The value, or `None` for hosts without the label.
    pub value: Option<String>,
    /// Hosts in the inventory with this value.
    pub population: usize,
    /// `population / inventory size`.
    pub population_share: f64,
    /// Chosen hosts with this value.
    pub sample: usize,
    /// `sample / sample size`.
    pub sample_share: f64,
    /// `|sample_share - population_share|`.
    pub difference: f64,
}

/// Chooses `config.size` hosts at random within the strata formed by `config.strata`, each
/// stratum in proportion to its population (see [`apportion`]), reproducibly from `config.seed`.
///
/// The result depends only on the inventory's contents, the labels, the size and the seed: not
/// on the order of hosts in the file, nor on the machine (ChaCha8 and our own index sampling).
pub fn select(
    inventory: &Inventory,
    config: &HostSelectionConfig,
) -> Result<Selection, HostsError> {
    config.validate()?;
    let mut groups: BTreeMap<Vec<String>, Vec<&Host>> = BTreeMap::new();
    for host in inventory.hosts() {
        let mut key = Vec::with_capacity(config.strata.len());
        for label in &config.strata {
            let value = host.label(label).ok_or_else(|| HostsError::MissingLabel {
                host: host.id.clone(),
                label: label.clone(),
            })?;
            key.push(value.to_owned());
        }
        groups.entry(key).or_default().push(host);
    }
    let populations: Vec<usize> = groups.values().map(Vec::len).collect();
    let seats = apportion(&populations, config.size)?;
    let shares = quotas(&populations, config.size);

    let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
    let mut chosen: Vec<Host> = Vec::with_capacity(config.size);
    let mut strata = Vec::with_capacity(groups.len());
    for (((values, mut members), seats), quota) in groups.into_iter().zip(seats).zip(shares) {
        let population = members.len();
        // Partial Fisher-Yates: the first `seats` members become a uniform random sample.
        for i in 0..seats {
            let j = i + uniform_below(&mut rng, (population - i) as u64) as usize;
            members.swap(i, j);
        }
        chosen.extend(members.iter().take(seats).map(|&h| h.clone()));
        strata.push(StratumReport {
            values,
            population,
            quota,
            chosen: seats,
        });
    }
    chosen.sort();
    let labels = label_reports(inventory.hosts(), &chosen);
    Ok(Selection {
        seed: config.seed,
        hosts: chosen,
        strata,
        labels,
    })
}

/// A uniform integer in `0..n` (`n > 0`) by rejection, so it never depends on a library's
/// sampling algorithm.
fn uniform_below(rng: &mut ChaCha8Rng, n: u64) -> u64 {
    // Reject the lowest `2^64 mod n` values so every residue is equally likely.
    let threshold = n.wrapping_neg() % n;
    loop {
        let x = rng.next_u64();
        if x >= threshold {
            return x % n;
        }
    }
}

/// Population and sample shares of every label value.
fn label_reports(population: &[Host], sample: &[Host]) -> BTreeMap<String, LabelReport> {
    let names: std::collections::BTreeSet<&String> =
        population.iter().flat_map(|h| h.labels.keys()).collect();
    let count = |hosts: &[Host], name: &str| {
        let mut counts: BTreeMap<Option<String>, usize> = BTreeMap::new();
        for host in hosts {
            *counts
                .entry(host.label(name).map(str::to_owned))
                .or_default() += 1;
        }
        counts
    };
    let share = |part: usize, whole: usize| {
        if whole == 0 {
            0.0
        } else {
            part as f64 / whole as f64
        }
    };
    names
        .into_iter()
        .map(|name| {
            let in_population = count(population, name);
            let in_sample = count(sample, name);
            let values: Vec<LabelValueReport> = in_population
                .into_iter()
                .map(|(value, pop)| {
                    let picked = in_sample.get(&value).copied().unwrap_or(0);
                    let population_share = share(pop, population.len());
                    let sample_share = share(picked, sample.len());
                    LabelValueReport {
                        value,
                        population: pop,
                        population_share,
                        sample: picked,
                        sample_share,
                        difference: (sample_share - population_share).abs(),
                    }
                })
                .collect();
            let max_difference = values.iter().map(|v| v.difference).fold(0.0, f64::max);
            (
                name.clone(),
                LabelReport {
                    values,
                    max_difference,
                },
            )
        })
        .collect()
}
