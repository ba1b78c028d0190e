//! Waiting for a condition: look at it every [`POLL`] until it holds or the time is up. A look
//! answers a [`Look`]: `true`, `Some(value)` or `Ok(value)` when the condition holds; otherwise
//! `false`, `None` or `Err(state)`, and the state last seen is named when the wait times out:
//!
//! ```text
//! timed out after 10s waiting for the leader to register; last seen: {1: "127.0.0.1:10911"}
//! ```
//!
//! [`until`] and [`until_async`] wait on tokio's clock (so a test with paused time advances it);
//! [`until_blocking`] waits on a thread, for tests that run no runtime.

use std::fmt::Debug;
use std::future::Future;
use std::time::Duration;

/// How often a condition is looked at.
pub const POLL: Duration = Duration::from_millis(10);

/// What one look at a condition found: the value once it holds, else what was seen instead.
pub trait Look {
    /// What the wait returns once the condition holds.
    type Value;
    /// The value, or a description of the state seen.
    fn look(self) -> Result<Self::Value, String>;
}

impl Look for bool {
    type Value = ();
    fn look(self) -> Result<(), String> {
        if self {
            Ok(())
        } else {
            Err("false".to_string())
        }
    }
}

impl<T> Look for Option<T> {
    type Value = T;
    fn look(self) -> Result<T, String> {
        self.ok_or_else(|| "nothing yet".to_string())
    }
}

impl<T, S: Debug> Look for Result<T, S> {
    type Value = T;
    fn look(self) -> Result<T, String> {
        self.map_err(|state| format!("{state:?}"))
    }
}

fn timed_out(what: &str, timeout: Duration, last: &str, report: &str) -> ! {
    panic!("timed out after {timeout:?} waiting for {what}; last seen: {last}{report}")
}

/// Looks at `condition` until it holds and returns its value; panics after `timeout` naming
/// `what` and the state last seen.
pub async fn until<L: Look>(
    what: &str,
    timeout: Duration,
    mut condition: impl FnMut() -> L,
) -> L::Value {
    until_async(what, timeout, || std::future::ready(condition())).await
}

/// As [`until`], for a condition that is looked at asynchronously (a request, say).
pub async fn until_async<L: Look, F: Future<Output = L>>(
    what: &str,
    timeout: Duration,
    mut condition: impl FnMut() -> F,
) -> L::Value {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let last = match condition().await.look() {
            Ok(value) => return value,
            Err(last) => last,
        };
        if tokio::time::Instant::now() >= deadline {
            timed_out(what, timeout, &last, "");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// As [`until`], on a thread that runs no async runtime.
pub fn until_blocking<L: Look>(
    what: &str,
    timeout: Duration,
    condition: impl FnMut() -> L,
) -> L::Value {
    until_blocking_reporting(what, timeout, condition, String::new)
}

/// As [`until_blocking`]; on a timeout, `report` runs first (it may stop what was awaited) and
/// what it returns follows the message (a process's output, say).
pub fn until_blocking_reporting<L: Look>(
    what: &str,
    timeout: Duration,
    mut condition: impl FnMut() -> L,
    report: impl FnOnce() -> String,
) -> L::Value {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let last = match condition().look() {
            Ok(value) => return value,
            Err(last) => last,
        };
        if std::time::Instant::now() >= deadline {
            timed_out(what, timeout, &last, &format!("\n{}", report()));
        }
        std::thread::sleep(POLL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A condition that holds on its third look returns its value; on paused time no wall
    /// time passes.
    #[tokio::test(start_paused = true)]
    async fn returns_once_the_condition_holds() {
        let mut looks = 0;
        let value = until("the third look", Duration::from_secs(1), || {
            looks += 1;
            if looks == 3 {
                Ok(looks * 10)
            } else {
                Err(looks)
            }
        })
        .await;
        assert_eq!((value, looks), (30, 3));
        until("true", Duration::ZERO, || true).await;
        assert_eq!(until("some", Duration::ZERO, || Some(7)).await, 7);
    }

    /// A condition that never holds panics after the timeout, naming what was awaited and the
    /// state last seen.
    #[tokio::test(start_paused = true)]
    async fn a_timeout_names_the_condition_and_the_last_state() {
        let mut n = 0;
        let waited = tokio::spawn(async move {
            until("n to reach 100", Duration::from_millis(50), || {
                n += 1;
                if n >= 100 {
                    Ok(())
                } else {
                    Err(format!("n = {n}"))
                }
            })
            .await
        })
        .await;
        let panic = waited.expect_err("the wait times out");
        let message = panic
            .into_panic()
            .downcast::<String>()
            .expect("a formatted panic message");
        assert!(
            message.contains("waiting for n to reach 100") && message.contains("\"n = 6\""),
            "{message}"
        );
    }

    /// The blocking form waits on the thread and names the condition too.
    #[test]
    fn blocking_form_waits_and_times_out() {
        let start = std::time::Instant::now();
        let mut looks = 0;
        until_blocking("two looks", Duration::from_secs(5), || {
            looks += 1;
            looks == 2
        });
        assert!(start.elapsed() >= POLL);
        let panic = std::panic::catch_unwind(|| {
            until_blocking("never", Duration::from_millis(20), || None::<()>)
        })
        .expect_err("times out");
        let message = panic.downcast::<String>().expect("a message");
        assert!(
            message.contains("never") && message.contains("nothing yet"),
            "{message}"
        );
    }
}
