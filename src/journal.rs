//! Upstream order ids the store could not take yet.
//!
//! Once an upstream has answered an `add` with its order id, that id is the only proof the
//! order exists there: losing it leaves the customer's money held on an order the operator
//! must look up by hand. So when the write of "placed, upstream order N" fails (the database
//! is away), the answer is appended to this journal and fsynced before anything else, and
//! the write is retried with backoff until the store takes it; then the entry is retired.
//! A process that dies meanwhile (SIGTERM, `kill -9`) loses nothing: `serve` replays the
//! journal into the store before it takes traffic, and before the start-up recovery that
//! would turn the still-`dispatching` orders into `unknown`.
//!
//! The file is JSON lines: an entry per answer kept, and `{"recorded": ID}` once the store
//! took it. It is emptied whenever nothing is pending. One journal belongs to one process.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::metrics::Metrics;
use crate::store::{Millis, OrderState, Store, StoreError};
use crate::sync::now_ms;

/// The first wait before writing again; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// The file's name beside the SQLite database (`FILE.db` + this), or `panelgate` + this
/// in the config file's folder.
const SUFFIX: &str = "-unrecorded.jsonl";

/// An upstream's answer to an `add`, not yet in the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placed {
    pub order: i64,
    pub upstream: String,
    pub upstream_order: String,
    pub at: Millis,
}

#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum Line {
    Placed(Placed),
    Recorded { recorded: i64 },
}

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error(
        "journal {path}: {source} (it keeps upstream order ids while the database is away: set \
         `journal:` in the config to a writable file)"
    )]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("replaying journal {path}: {source}")]
    Replay { path: PathBuf, source: StoreError },
}

pub struct Journal {
    /// `None`: kept in memory only (a gateway built without a file, as in unit benchmarks).
    path: Option<PathBuf>,
    pending: Mutex<Vec<Placed>>,
}

impl Journal {
    pub fn in_memory() -> Journal {
        Journal {
            path: None,
            pending: Mutex::new(Vec::new()),
        }
    }

    /// Opens (creating if missing) the journal at `path` and reads what it still holds. Fails
    /// when the file cannot be written, so that a misplaced journal stops `serve` at start and
    /// not in the middle of an outage.
    pub fn open(path: &Path) -> Result<Journal, JournalError> {
        let io = |source| JournalError::Io {
            path: path.to_owned(),
            source,
        };
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(path)
            .map_err(io)?;
        let mut pending: Vec<Placed> = Vec::new();
        for line in BufReader::new(&file).lines() {
            // A line cut short by a crash mid-append was never fsynced, so never acted on.
            match serde_json::from_str(&line.map_err(io)?) {
                Ok(Line::Placed(p)) => pending.push(p),
                Ok(Line::Recorded { recorded }) => pending.retain(|p| p.order != recorded),
                Err(e) => {
                    tracing::warn!(journal = %path.display(), error = %e, "unreadable journal line skipped")
                }
            }
        }
        drop(file);
        compact(path, &pending).map_err(io)?;
        Ok(Journal {
            path: Some(path.to_owned()),
            pending: Mutex::new(pending),
        })
    }

    /// The journal `cfg` names, or its default: beside the SQLite database file, else
    /// beside the config file.
    pub fn path_for(cfg: &Config) -> PathBuf {
        if let Some(p) = &cfg.journal {
            return p.clone();
        }
        let beside = |file: &Path| {
            let mut name = file.as_os_str().to_owned();
            name.push(SUFFIX);
            PathBuf::from(name)
        };
        match cfg.database.strip_prefix("sqlite://") {
            Some(file) if !file.is_empty() && !file.contains(":memory:") => {
                beside(Path::new(file.split('?').next().unwrap_or(file)))
            }
            _ => cfg
                .path
                .parent()
                .unwrap_or(Path::new("."))
                .join(format!("panelgate{SUFFIX}")),
        }
    }

    pub fn pending(&self) -> Vec<Placed> {
        self.lock().clone()
    }

    fn is_pending(&self, order: i64) -> bool {
        self.lock().iter().any(|p| p.order == order)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Placed>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Keeps `placed` until [`Journal::retire`]: on disk (fsynced) when this returns `Ok`.
    pub fn keep(&self, placed: &Placed) -> std::io::Result<()> {
        let mut pending = self.lock();
        pending.push(placed.clone());
        self.append(&Line::Placed(placed.clone()))
    }

    /// The store took `order`'s answer: it is no longer pending.
    pub fn retire(&self, order: i64) -> std::io::Result<()> {
        let mut pending = self.lock();
        pending.retain(|p| p.order != order);
        let Some(path) = &self.path else {
            return Ok(());
        };
        if pending.is_empty() {
            let file = OpenOptions::new().write(true).open(path)?;
            file.set_len(0)?;
            return file.sync_data();
        }
        self.append(&Line::Recorded { recorded: order })
    }

    fn append(&self, line: &Line) -> std::io::Result<()> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let mut text = serde_json::to_string(line).map_err(std::io::Error::other)?;
        text.push('\n');
        let mut file: File = OpenOptions::new().create(true).append(true).open(path)?;
        file.write_all(text.as_bytes())?;
        file.sync_data()
    }

    pub fn describe(&self) -> String {
        self.path
            .as_ref()
            .map_or_else(|| "(memory)".to_owned(), |p| p.display().to_string())
    }
}

/// Rewrites the journal with only what is `pending` (atomically: a new file renamed over it),
/// so that it does not grow across restarts and a line cut short by a crash is gone before
/// anything is appended after it.
fn compact(path: &Path, pending: &[Placed]) -> std::io::Result<()> {
    let mut text = String::new();
    for p in pending {
        text.push_str(
            &serde_json::to_string(&Line::Placed(p.clone())).map_err(std::io::Error::other)?,
        );
        text.push('\n');
    }
    let mut fresh = path.as_os_str().to_owned();
    fresh.push(".new");
    let fresh = PathBuf::from(fresh);
    let mut file = File::create(&fresh)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&fresh, path)?;
    // The rename itself is durable once the folder is synced (not possible everywhere).
    if let Some(dir) = path.parent().and_then(|d| File::open(d).ok()) {
        let _ = dir.sync_all();
    }
    Ok(())
}

/// Writes every answer the journal holds into the store (at start, before traffic and
/// before dispatching orders are recovered as `unknown`). Returns how many it held.
pub async fn replay(journal: &Journal, store: &dyn Store) -> Result<usize, JournalError> {
    let pending = journal.pending();
    for p in &pending {
        record(store, p)
            .await
            .map_err(|source| JournalError::Replay {
                path: journal.path.clone().unwrap_or_default(),
                source,
            })?;
        journal.retire(p.order).map_err(|source| JournalError::Io {
            path: journal.path.clone().unwrap_or_default(),
            source,
        })?;
        tracing::info!(order = p.order, upstream = %p.upstream, upstream_order = %p.upstream_order, "journaled upstream order recorded");
    }
    Ok(pending.len())
}

/// Records `p` as placed, once: an order already placed with that upstream order is fine,
/// and one the start-up recovery already made `unknown` is resolved to placed. An error is
/// the store's (worth retrying); an order in any other state is left for the operator, and
/// so is an upstream order id that another order already holds.
pub async fn record(store: &dyn Store, p: &Placed) -> Result<(), StoreError> {
    match store
        .mark_placed(p.order, &p.upstream_order, now_ms())
        .await
    {
        Err(StoreError::Conflict(_) | StoreError::NotFound) => {}
        Err(StoreError::Duplicate(_)) => return held_by_another(store, p).await,
        other => return other,
    }
    let order = store.order(p.order).await?;
    let resolved = match &order {
        Some(o) if o.upstream_order.as_deref() == Some(&p.upstream_order) => return Ok(()),
        Some(o) if o.state == OrderState::Unknown => {
            store
                .resolve_placed(p.order, &p.upstream_order, now_ms())
                .await
        }
        _ => Err(StoreError::Conflict("not dispatching".into())),
    };
    match resolved {
        Err(StoreError::Conflict(why)) => {
            tracing::error!(order = p.order, upstream = %p.upstream, upstream_order = %p.upstream_order, state = order.map(|o| o.state.as_str()), %why, "upstream order could not be recorded on its order; resolve it with `panelgate order resolve`");
            Ok(())
        }
        other => other,
    }
}

/// The upstream answered with an order id another local order holds: it reused its ids (a
/// panel restored from a backup, or started anew). No write will ever take the id as it is,
/// so it is not retried (nor kept, nor replayed at every start): the order becomes `unknown`
/// for the operator, its funds held, with the upstream's answer in its note.
async fn held_by_another(store: &dyn Store, p: &Placed) -> Result<(), StoreError> {
    let note = format!(
        "{} answered upstream order {}, which another order already holds (the upstream may \
         have reused its order ids): look this order up there by its link, then resolve it",
        p.upstream, p.upstream_order
    );
    tracing::error!(order = p.order, upstream = %p.upstream, upstream_order = %p.upstream_order, "the upstream answered an order id another order holds; the order is left unknown for the operator");
    match store.mark_unknown(p.order, &note, now_ms()).await {
        // No longer dispatching: whatever moved it is the operator's to see.
        Err(StoreError::Conflict(_) | StoreError::NotFound) => Ok(()),
        other => other,
    }
}

/// Records "placed, upstream order N" without ever losing N: on the first failure the answer
/// goes to the journal (fsynced), and a task of its own writes it again with backoff until the
/// store takes it. Returns at once either way: the order is placed upstream, whatever the
/// store says now.
pub async fn record_placed_durably(
    store: Arc<dyn Store>,
    journal: Arc<Journal>,
    metrics: Arc<Metrics>,
    p: Placed,
) {
    let e = match record(store.as_ref(), &p).await {
        Ok(()) => return,
        Err(e) => e,
    };
    metrics.store_failed("mark_placed", &e);
    match journal.keep(&p) {
        Ok(()) => {
            tracing::warn!(order = p.order, upstream = %p.upstream, upstream_order = %p.upstream_order, journal = %journal.describe(), error = %e, "placed upstream, not yet recorded: journaled, writing it again until the database takes it")
        }
        Err(io) => {
            tracing::error!(order = p.order, upstream = %p.upstream, upstream_order = %p.upstream_order, journal = %journal.describe(), error = %e, journal_error = %io, "placed upstream, not recorded, and the journal cannot be written: retrying in memory; if the process stops first, resolve it with `panelgate order resolve`")
        }
    }
    tokio::spawn(retry(store, journal, metrics, p));
}

async fn retry(store: Arc<dyn Store>, journal: Arc<Journal>, metrics: Arc<Metrics>, p: Placed) {
    let mut wait = FIRST_BACKOFF;
    loop {
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(MAX_BACKOFF);
        // Another start replayed it (an in-process restart, as in tests): nothing left to do.
        if journal.path.is_some() && !journal.is_pending(p.order) {
            return;
        }
        match record(store.as_ref(), &p).await {
            Ok(()) => break,
            Err(e) => metrics.store_failed("mark_placed", &e),
        }
    }
    metrics.store_answered();
    if let Err(e) = journal.retire(p.order) {
        tracing::warn!(journal = %journal.describe(), error = %e, "journal entry not retired (replaying it is harmless)");
    }
    tracing::info!(order = p.order, upstream = %p.upstream, upstream_order = %p.upstream_order, "journaled upstream order recorded");
}

#[cfg(test)]
mod tests {
    use super::{Journal, Placed};

    fn placed(order: i64) -> Placed {
        Placed {
            order,
            upstream: "alpha".into(),
            upstream_order: format!("u{order}"),
            at: 1,
        }
    }

    #[test]
    fn what_is_kept_survives_a_restart_until_it_is_retired() {
        let dir = std::env::temp_dir().join(format!("panelgate-journal-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("j.jsonl");
        let _ = std::fs::remove_file(&path);

        let journal = Journal::open(&path).unwrap();
        journal.keep(&placed(1)).unwrap();
        journal.keep(&placed(2)).unwrap();
        journal.retire(1).unwrap();
        // A line cut short by a crash mid-append is skipped.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .and_then(|mut f| std::io::Write::write_all(&mut f, b"{\"order\":3,\"upstr"))
            .unwrap();
        assert_eq!(Journal::open(&path).unwrap().pending(), vec![placed(2)]);

        journal.retire(2).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0, "emptied");
        assert!(Journal::open(&path).unwrap().pending().is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_unwritable_journal_is_refused_naming_the_config_key() {
        let err = Journal::open(std::path::Path::new("/proc/panelgate/j.jsonl"))
            .err()
            .expect("refused");
        assert!(err.to_string().contains("`journal:`"), "{err}");
    }
}
