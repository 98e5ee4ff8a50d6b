//! The gateway's background work, each under the config in force: the sync loop, the catalog
//! refresh, the upstream balance poll, and the config file watch.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::app::{Live, check_open_orders};
use crate::config::Config;
use crate::gateway::Gateway;

/// Starts every background task `cfg` asks for; each returns once `stop` changes.
pub fn spawn(live: &Arc<Live>, cfg: &Config, stop: &watch::Receiver<bool>) -> Vec<JoinHandle<()>> {
    let mut tasks = vec![
        tokio::spawn(run_sync(live.clone(), stop.clone())),
        tokio::spawn(refresh_catalog(live.clone(), stop.clone())),
        tokio::spawn(poll_balances(live.clone(), stop.clone())),
    ];
    if let Some(every) = cfg.config_poll {
        tasks.push(tokio::spawn(watch_config(
            live.clone(),
            every,
            stop.clone(),
        )));
    }
    tasks
}

/// Background sync: a pass over every upstream each `sync.interval`, under the config in force.
async fn run_sync(live: Arc<Live>, mut stop: watch::Receiver<bool>) {
    // Weak: an old gateway is not kept alive, and its address cannot be reused meanwhile.
    let mut last = Arc::downgrade(&live.gateway());
    loop {
        let gateway = live.gateway();
        let interval = gateway.cfg.sync_interval;
        gateway.syncer.pass(interval).await;
        let current = Arc::downgrade(&gateway);
        if !std::sync::Weak::ptr_eq(&last, &current) {
            warn_unfollowed(&gateway).await;
        }
        last = current;
        gateway.syncer.mark_stuck(&gateway.catalog.snapshot()).await;
        drop(gateway);
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            _ = stop.changed() => return,
        }
    }
}

/// After a reload: a dispatch the previous config started may have created its order at an
/// upstream the reload then removed (the reload's own check ran a moment before). Nothing
/// follows such an order; say so, once, a sync interval after the reload.
async fn warn_unfollowed(gateway: &Gateway) {
    match check_open_orders(&gateway.cfg, gateway.store.as_ref()).await {
        Ok(()) => {}
        Err(e) => tracing::error!(error = %e, "orders are not being synced"),
    }
}

/// Keeps the catalog warm: lists are re-fetched every TTL even when nobody asks.
async fn refresh_catalog(live: Arc<Live>, mut stop: watch::Receiver<bool>) {
    loop {
        let ttl = live.gateway().cfg.catalog_ttl.max(Duration::from_secs(1));
        tokio::select! {
            () = tokio::time::sleep(ttl) => {}
            _ = stop.changed() => return,
        }
        live.gateway().catalog.get().await;
    }
}

/// Reloads the config when its file changes (checked every `config_poll`).
async fn watch_config(live: Arc<Live>, every: Duration, mut stop: watch::Receiver<bool>) {
    let path = live.gateway().cfg.path.clone();
    let stamp = |p: &std::path::Path| {
        std::fs::metadata(p)
            .ok()
            .map(|m| (m.modified().ok(), m.len()))
    };
    let mut last = stamp(&path);
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            _ = stop.changed() => return,
        }
        let now = stamp(&path);
        if now == last {
            continue;
        }
        last = now;
        match crate::config::load(&path) {
            Ok(cfg) => {
                let result = live.reload(cfg).await;
                live.count_reload(&result);
                if let Err(e) = result {
                    tracing::error!(error = %e, "config not reloaded; the running config stays");
                }
            }
            Err(e) => {
                live.count_reload(&Err(String::new()));
                tracing::error!(error = %e, "config file changed but is invalid; the running config stays")
            }
        }
    }
}

/// Polls each upstream's balance for the metrics, so operators hear of an account running dry
/// before orders start failing.
async fn poll_balances(live: Arc<Live>, mut stop: watch::Receiver<bool>) {
    loop {
        let gateway = live.gateway();
        for u in &gateway.upstreams.0 {
            match u.balance().await {
                Ok(b) => {
                    let currency = if b.currency.is_empty() {
                        "unknown"
                    } else {
                        b.currency.as_str()
                    };
                    gateway
                        .metrics
                        .upstream_balance
                        .with_label_values(&[&u.name, currency])
                        .set(crate::metrics::as_metric(b.balance));
                }
                Err(e) => tracing::warn!(upstream = %u.name, error = %e, "balance poll failed"),
            }
        }
        tokio::select! {
            () = tokio::time::sleep(gateway.cfg.balance_poll) => {}
            _ = stop.changed() => return,
        }
    }
}
