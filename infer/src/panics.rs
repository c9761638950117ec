//! Backends that panic where a library would return an error (a missing GPU driver, GPU memory
//! running out), turned into one line for the user.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex};

/// A panic's whole message.
pub fn text(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".to_string()
    }
}

/// A panic's message, first line.
pub fn message(payload: &(dyn std::any::Any + Send)) -> String {
    let text = text(payload);
    text.lines().next().unwrap_or_default().trim().to_string()
}

/// Runs `f`; a panic in it comes back as a message, and prints nothing. When the panic came
/// from a worker thread `f` waited on (wgpu starts its device on one), that thread's message,
/// the root cause, is the one returned.
pub fn quietly<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    // The panic hook is process-wide: two overlapping calls would restore each other's hook
    // and lose a worker thread's message. One at a time.
    static HOOK: Mutex<()> = Mutex::new(());
    let _one_at_a_time = HOOK.lock().unwrap_or_else(|e| e.into_inner());
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let previous = std::panic::take_hook();
    let record = Arc::clone(&seen);
    std::panic::set_hook(Box::new(move |info| {
        if let Ok(mut seen) = record.lock() {
            seen.push(message(info.payload()));
        }
    }));
    let result = catch_unwind(AssertUnwindSafe(f));
    std::panic::set_hook(previous);
    result.map_err(|payload| {
        let first = seen.lock().ok().and_then(|s| s.first().cloned());
        first.unwrap_or_else(|| message(payload.as_ref()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_comes_back_as_its_first_line() {
        let r: Result<(), String> = quietly(|| panic!("No adapter\nbacktrace follows"));
        assert_eq!(r.unwrap_err(), "No adapter");
        assert_eq!(quietly(|| 3).unwrap(), 3);
    }

    #[test]
    fn a_worker_threads_panic_is_the_reason_given() {
        let r: Result<(), String> = quietly(|| {
            let (tx, rx) = std::sync::mpsc::channel::<()>();
            std::thread::spawn(move || {
                let _tx = tx;
                panic!("No possible adapter available");
            });
            rx.recv().unwrap()
        });
        assert_eq!(r.unwrap_err(), "No possible adapter available");
    }
}
