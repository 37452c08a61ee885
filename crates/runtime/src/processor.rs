//! How the runtime calls a service's logic: one trait, [`Processor`], with the two shapes of
//! [`crate::handler`] behind it — [`Batched`] (a [`BatchHandler`]: the batch as one unit) and [`PerRecord`] (a
//! [`Handler`]: one record per call).
//!
//! Guarantees: a run reports exactly one [`Run`]: everything succeeded, or how many leading records were kept
//! (their effects and their outputs stand: per-record handlers only), which record failed when that is known,
//! and why. A panicking handler is a failed run with a business error (a bug: retried per the policy, then
//! dead-lettered), never a crash of the consumer; for a batch the panic blames no record, so the lane bisects.

use std::future::Future;
use std::panic::AssertUnwindSafe;

use futures_util::FutureExt;

use crate::error::HandlerError;
use crate::handler::{BatchHandler, Handler, HandlerCtx};
use crate::record::Record;

/// The outcome of running a processor over some records.
#[derive(Debug)]
pub(crate) enum Run {
    Ok,
    Failed {
        /// Leading records whose effects (and outputs queued in the context before the failure) stand.
        kept: usize,
        /// The record that failed, when known (`≥ kept`).
        index: Option<usize>,
        error: HandlerError,
    },
}

/// A service's logic as the runtime calls it. Implemented by [`Batched`] and [`PerRecord`].
pub trait Processor: Send + Sync + 'static {
    #[doc(hidden)]
    fn run<'a>(
        &'a self,
        records: &'a [Record],
        ctx: &'a mut HandlerCtx<'_>,
    ) -> impl Future<Output = RunOutcome> + Send + 'a;

    /// The handler's [`BatchHandler::shares_transactions`] / [`Handler::shares_transactions`].
    #[doc(hidden)]
    fn shares_transactions(&self) -> bool;
}

/// The outcome of a run; opaque outside the runtime.
#[doc(hidden)]
pub struct RunOutcome(pub(crate) Run);

/// A [`BatchHandler`], run one batch per call.
pub struct Batched<B>(pub B);

/// A [`Handler`], run one record per call.
pub struct PerRecord<H>(pub H);

impl<B: BatchHandler> Processor for Batched<B> {
    fn shares_transactions(&self) -> bool {
        self.0.shares_transactions()
    }

    async fn run<'a>(&'a self, records: &'a [Record], ctx: &'a mut HandlerCtx<'_>) -> RunOutcome {
        let called = AssertUnwindSafe(self.0.handle_batch(records, ctx))
            .catch_unwind()
            .await;
        RunOutcome(match called {
            Ok(Ok(())) => Run::Ok,
            Ok(Err(failure)) => Run::Failed {
                kept: 0,
                index: failure.index.filter(|i| *i < records.len()),
                error: failure.error,
            },
            Err(panic) => Run::Failed {
                kept: 0,
                index: (records.len() == 1).then_some(0),
                error: panicked(&panic),
            },
        })
    }
}

impl<H: Handler> Processor for PerRecord<H> {
    fn shares_transactions(&self) -> bool {
        self.0.shares_transactions()
    }

    async fn run<'a>(&'a self, records: &'a [Record], ctx: &'a mut HandlerCtx<'_>) -> RunOutcome {
        for (index, record) in records.iter().enumerate() {
            let called = AssertUnwindSafe(self.0.handle(record, ctx))
                .catch_unwind()
                .await;
            let error = match called {
                Ok(Ok(())) => {
                    ctx.keep();
                    continue;
                }
                Ok(Err(error)) => error,
                Err(panic) => panicked(&panic),
            };
            return RunOutcome(Run::Failed {
                kept: index,
                index: Some(index),
                error,
            });
        }
        RunOutcome(Run::Ok)
    }
}

fn panicked(panic: &Box<dyn std::any::Any + Send>) -> HandlerError {
    let message = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".into());
    HandlerError::business(format!("handler panicked: {message}"))
}
