//! A simulator's settings (a config file's `simulator:` section, or a simulated upstream's
//! `simulate:`) as the [`SimConfig`] it runs with: the one place the two meet, for
//! `panelgate simulate` and the gateway's simulated upstreams alike.

use crate::config::SimulatorSection;

use super::{SimConfig, catalog};

impl SimConfig {
    /// The simulator `settings` describe, answering clients that send `key`; what they leave
    /// out keeps [`SimConfig::new`]'s default. Fails only when a catalog file cannot be read.
    pub fn from_settings(
        key: impl Into<String>,
        settings: &SimulatorSection,
    ) -> Result<SimConfig, String> {
        let s = settings;
        let mut cfg = SimConfig::new(key);
        cfg.seed = s.seed.unwrap_or(cfg.seed);
        cfg.balance = s.balance.unwrap_or(cfg.balance);
        cfg.currency = s.currency.clone().unwrap_or(cfg.currency);
        cfg.speed = s.speed.unwrap_or(cfg.speed);
        cfg.services = match (&s.catalog, s.services) {
            (Some(path), _) => catalog::load(path)?,
            (None, Some(n)) => catalog::generated(n, cfg.seed),
            (None, None) => catalog::builtin(),
        };
        cfg.shares.partial = s.partial_share.unwrap_or(cfg.shares.partial);
        cfg.shares.cancel = s.cancel_share.unwrap_or(cfg.shares.cancel);
        cfg.first_order_id = s.first_order_id.unwrap_or(cfg.first_order_id);
        cfg.journal = s.journal.clone();
        cfg.faults = s.faults.clone().unwrap_or_default();
        cfg.dialect = s.dialect.unwrap_or_default();
        cfg.api_path = s.api_path.clone();
        Ok(cfg)
    }
}
