//! Which runtime thread a task runs on, in the thread-per-core model (`runtime.model:
//! thread_per_core`): state that holds sockets (the upstream clients' connection pools, the
//! PostgreSQL pool) is kept once per runtime and picked by this index. A socket is driven by
//! the runtime that registered it, so a connection opened on one core and reused on another
//! would wait for its home thread to poll its driver: busy there, stalled here.

use std::cell::Cell;

thread_local! {
    /// 0 on every thread that never set it: the first runtime, and every worker of a
    /// multi-thread runtime (which keeps one copy of everything).
    static CORE: Cell<usize> = const { Cell::new(0) };
}

/// Marks the calling thread as the runtime `index` of the thread-per-core model.
pub fn enter(index: usize) {
    CORE.with(|c| c.set(index));
}

/// The calling thread's runtime index.
pub fn current() -> usize {
    CORE.with(Cell::get)
}

/// This thread's copy of per-core state; one copy serves every thread.
pub fn pick<T>(copies: &[T]) -> &T {
    &copies[current() % copies.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_thread_picks_its_own_copy_and_one_copy_serves_all() {
        let copies = ["a", "b"];
        assert_eq!(*pick(&copies), "a");
        let other = std::thread::spawn(move || {
            enter(1);
            (*pick(&copies), *pick(&["only"]))
        });
        assert_eq!(other.join().unwrap(), ("b", "only"));
        assert_eq!(current(), 0);
    }
}
