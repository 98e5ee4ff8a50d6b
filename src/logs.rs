//! Log output, gathered in memory and written to stderr in batches.
//!
//! Every API request logs a line. Written one by one, each line is a system call (and a
//! thread wake-up with a channel in between), which under a busy panel cost more than
//! answering a `status` poll from memory. Here a line is appended to a shared buffer, and a
//! writer thread writes whatever has gathered every [`PERIOD`], or sooner once [`SOON`] bytes
//! are waiting. Nothing is dropped: past [`MOST`] bytes a logging thread writes the buffer out
//! itself. [`Flusher`] writes the rest when the program ends.

use std::io::Write;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// How long a line may wait in memory.
const PERIOD: Duration = Duration::from_millis(50);
/// Buffered bytes that wake the writer before its time.
const SOON: usize = 64 * 1024;
/// Buffered bytes past which loggers write it out themselves rather than let it grow.
const MOST: usize = 4 * 1024 * 1024;

#[derive(Default)]
struct Shared {
    buffer: Mutex<Vec<u8>>,
    wake: Condvar,
    closing: Mutex<bool>,
}

impl Shared {
    fn buffer(&self) -> MutexGuard<'_, Vec<u8>> {
        // A panic while holding the lock leaves bytes, not broken invariants: keep logging.
        self.buffer.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn write_out(&self) {
        let batch = std::mem::take(&mut *self.buffer());
        if !batch.is_empty() {
            // Nowhere to report a failed write to stderr.
            let _ = std::io::stderr().lock().write_all(&batch);
        }
    }
}

/// The `tracing` writer: [`batched_stderr`] hands one out.
#[derive(Clone)]
pub struct Batched(Arc<Shared>);

impl Write for Batched {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        let mut buffer = self.0.buffer();
        buffer.extend_from_slice(line);
        if buffer.len() >= MOST {
            let _ = std::io::stderr().lock().write_all(&buffer);
            buffer.clear();
        } else if buffer.len() >= SOON {
            self.0.wake.notify_one();
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Batched {
    type Writer = Batched;

    fn make_writer(&'a self) -> Batched {
        self.clone()
    }
}

/// Writes what is left when dropped, and stops the writer thread.
pub struct Flusher {
    shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Flusher {
    fn drop(&mut self) {
        *self
            .shared
            .closing
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = true;
        self.shared.wake.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        self.shared.write_out();
    }
}

/// A batching stderr writer and the guard that flushes it at exit.
pub fn batched_stderr() -> std::io::Result<(Batched, Flusher)> {
    let shared = Arc::new(Shared::default());
    let worker = shared.clone();
    let thread = std::thread::Builder::new()
        .name("panelgate-log".into())
        .spawn(move || {
            let mut closing = worker.closing.lock().unwrap_or_else(|e| e.into_inner());
            while !*closing {
                closing = match worker.wake.wait_timeout(closing, PERIOD) {
                    Ok((guard, _)) => guard,
                    Err(e) => e.into_inner().0,
                };
                drop(closing);
                worker.write_out();
                closing = worker.closing.lock().unwrap_or_else(|e| e.into_inner());
            }
        })?;
    Ok((
        Batched(shared.clone()),
        Flusher {
            shared,
            thread: Some(thread),
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_kept_in_order_until_written() {
        let shared = Arc::new(Shared::default());
        let mut w = Batched(shared.clone());
        w.write_all(b"one\n").unwrap();
        w.write_all(b"two\n").unwrap();
        assert_eq!(&*shared.buffer(), b"one\ntwo\n");
        shared.write_out();
        assert!(shared.buffer().is_empty());
    }

    #[test]
    fn the_flusher_stops_its_thread_and_empties_the_buffer() {
        let (mut w, flusher) = batched_stderr().unwrap();
        w.write_all(b"panelgate logs test line\n").unwrap();
        let shared = flusher.shared.clone();
        drop(flusher);
        assert!(shared.buffer().is_empty());
    }
}
