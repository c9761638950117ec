//! Running a whole task on one of the CPU backend's own compute threads.
//!
//! Flex (and our kernels) split work over rayon's global pool, one thread per core. Called
//! from `main`, every parallel op wakes the pool's threads and puts `main` to sleep; between
//! ops the pool's idle threads spin and yield against `main`, which has the serial work to do:
//! on 2 cores, three busy threads. Running the task on a pool thread instead makes that thread
//! the one that does the serial work and takes part in every parallel op: the demo model's
//! block at batch 1 went from 0.31 to 0.22 ms, at batch 64 from 7.3 to 7.2 ms
//! (docs/benchmarks.md). Results are unchanged: no kernel's split depends on which thread
//! calls it.

/// The stack of rayon's threads when [`on_compute_thread`] builds the pool: a main thread's
/// (rayon's default is 2 MiB), since the whole task now runs there.
const STACK_BYTES: usize = 8 << 20;

/// Runs `task` on a thread of rayon's global pool, the calling thread waiting (asleep) for its
/// result; a panic in `task` comes back to the caller as a panic. Builds the pool first (one
/// thread per core, [`STACK_BYTES`] of stack) unless something already did; already on a pool
/// thread, runs `task` in place. What `dmpo`'s `main` does; an app embedding the Flex backend
/// may do the same around its own inference.
pub fn on_compute_thread<R: Send>(task: impl FnOnce() -> R + Send) -> R {
    if rayon::current_thread_index().is_some() {
        return task();
    }
    // An error means the pool exists already (someone used rayon first): use it as it is.
    let _ = rayon::ThreadPoolBuilder::new()
        .stack_size(STACK_BYTES)
        .build_global();
    let mut result = None;
    rayon::scope(|scope| scope.spawn(|_| result = Some(task())));
    result.expect("the scope waits for its task")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_task_runs_on_a_pool_thread_and_its_result_comes_back() {
        let (index, value) = on_compute_thread(|| (rayon::current_thread_index(), 42));
        assert!(index.is_some());
        assert_eq!(value, 42);
        // Nested: runs in place.
        assert_eq!(on_compute_thread(|| on_compute_thread(|| 7)), 7);
    }

    #[test]
    fn a_panic_in_the_task_reaches_the_caller() {
        let caught = std::panic::catch_unwind(|| on_compute_thread(|| panic!("inside")));
        let payload = caught.expect_err("the panic propagates");
        assert_eq!(crate::panics::message(&*payload), "inside");
    }
}
