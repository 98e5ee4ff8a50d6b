//! The YAML configuration file. For now it holds the `simulator:` section that
//! `panelgate simulate` reads; the gateway's keys join it with `panelgate serve`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use rust_decimal::Decimal;
use serde::Deserialize;

use crate::sim::{Chance, Faults};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// The parts of the file this build reads. Sections of later features are left alone.
#[derive(Debug, Default, Deserialize)]
pub struct File {
    #[serde(default)]
    pub simulator: Option<SimulatorSection>,
}

/// `simulator:`, a simulated upstream panel for the demo. Every key is optional; command-line
/// flags override it.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimulatorSection {
    pub listen: Option<SocketAddr>,
    pub key: Option<String>,
    pub seed: Option<u64>,
    pub balance: Option<Decimal>,
    pub currency: Option<String>,
    pub speed: Option<f64>,
    pub services: Option<usize>,
    pub catalog: Option<PathBuf>,
    pub journal: Option<PathBuf>,
    pub first_order_id: Option<u64>,
    pub partial_share: Option<Chance>,
    pub cancel_share: Option<Chance>,
    pub faults: Option<Faults>,
}

/// Reads `path`; relative paths inside it resolve against its folder.
pub fn load(path: &Path) -> Result<File, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    let mut file: File = serde_yaml_ng::from_str(&text).map_err(|e| ConfigError::Invalid {
        path: path.to_owned(),
        message: e.to_string(),
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    if let Some(sim) = &mut file.simulator {
        for p in [&mut sim.catalog, &mut sim.journal].into_iter().flatten() {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
    }
    Ok(file)
}
