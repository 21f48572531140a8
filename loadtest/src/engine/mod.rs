//! The load-test suite's own I/O engine: one event loop per thread on `tokio-uring`
//! (io_uring submissions with owned buffers), or on a plain tokio current-thread runtime
//! (epoll) where io_uring is unavailable. It shares no code with the gateway's data plane:
//! its TLS adapter (`tls`), HTTP/1.1 framing (`http`, on `httparse`) and sockets (`net`) are
//! its own, so a bug in the gateway's codec or TLS glue cannot hide itself by being on both
//! sides of a measurement.
//!
//! Both runtimes are tokio current-thread runtimes with a `LocalSet`: tasks are spawned with
//! [`spawn`] (`spawn_local`), timers are tokio's ([`sleep`], [`timeout`]). Only the sockets
//! differ; [`net`] picks the kind the running loop was started with.

pub mod http;
pub mod net;
pub mod tls;

use std::cell::Cell;
use std::future::Future;

use serde::Serialize;

pub use tokio::task::JoinHandle;
pub use tokio::time::{sleep, timeout};

/// Which event loop runs a thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Driver {
    /// tokio-uring: every socket operation is an io_uring submission.
    IoUring,
    /// Plain tokio (epoll readiness, `read(2)`/`write(2)`).
    Tokio,
}

/// The `--driver` option of every load-generating command.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DriverChoice {
    /// io_uring when the kernel allows it, else plain tokio (and says so).
    Auto,
    /// io_uring or fail.
    Uring,
    /// Plain tokio (epoll).
    #[value(alias = "epoll")]
    Tokio,
}

thread_local! {
    /// The driver of the loop running on this thread (set by `Driver::block_on`).
    static CURRENT: Cell<Option<Driver>> = const { Cell::new(None) };
}

/// The driver of the loop running on this thread; `Tokio` outside any loop of ours.
pub(crate) fn current() -> Driver {
    CURRENT.with(Cell::get).unwrap_or(Driver::Tokio)
}

/// Whether this kernel lets a process set up an io_uring (a seccomp profile such as Docker's
/// default, or `kernel.io_uring_disabled`, refuses it).
pub fn uring_available() -> bool {
    tokio_uring::uring_builder().build(8).is_ok()
}

impl DriverChoice {
    pub fn resolve(self) -> Result<Driver, String> {
        let available = uring_available();
        match self {
            DriverChoice::Tokio => Ok(Driver::Tokio),
            DriverChoice::Uring if available => Ok(Driver::IoUring),
            DriverChoice::Uring => {
                Err("--driver uring: io_uring is not available on this machine \
                 (kernel without it, or blocked by a seccomp profile such as Docker's default); \
                 use --driver tokio or auto"
                    .into())
            }
            DriverChoice::Auto if available => Ok(Driver::IoUring),
            DriverChoice::Auto => {
                eprintln!("loadtest: io_uring is not available here; using plain tokio (epoll)");
                Ok(Driver::Tokio)
            }
        }
    }
}

impl Driver {
    pub fn name(self) -> &'static str {
        match self {
            Driver::IoUring => "io_uring (tokio-uring)",
            Driver::Tokio => "epoll (tokio)",
        }
    }

    /// Runs `future` to completion on a new event loop of this driver on the calling
    /// thread; tasks it spawns run on the same thread.
    pub fn block_on<F: Future>(self, future: F) -> std::io::Result<F::Output> {
        struct Reset;
        impl Drop for Reset {
            fn drop(&mut self) {
                CURRENT.with(|c| c.set(None));
            }
        }
        CURRENT.with(|c| c.set(Some(self)));
        let _reset = Reset;
        match self {
            Driver::IoUring => {
                let mut builder = tokio_uring::builder();
                builder.entries(1024);
                let runtime = tokio_uring::Runtime::new(&builder)?;
                Ok(runtime.block_on(future))
            }
            Driver::Tokio => {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                let local = tokio::task::LocalSet::new();
                Ok(local.block_on(&runtime, future))
            }
        }
    }
}

/// Spawns a task on this thread's loop.
pub fn spawn<F: Future + 'static>(future: F) -> JoinHandle<F::Output> {
    tokio::task::spawn_local(future)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn both_drivers_run_tasks_and_timers() {
        let mut drivers = vec![Driver::Tokio];
        if uring_available() {
            drivers.push(Driver::IoUring);
        }
        for driver in drivers {
            let out = driver
                .block_on(async move {
                    assert_eq!(current(), driver);
                    let a = spawn(async {
                        sleep(std::time::Duration::from_millis(5)).await;
                        2
                    });
                    let late = timeout(
                        std::time::Duration::from_millis(5),
                        sleep(std::time::Duration::from_secs(5)),
                    )
                    .await;
                    assert!(late.is_err(), "the timeout must fire");
                    a.await.unwrap() + 1
                })
                .unwrap();
            assert_eq!(out, 3, "{driver:?}");
            assert_eq!(current(), Driver::Tokio, "reset after the loop");
        }
    }
}
