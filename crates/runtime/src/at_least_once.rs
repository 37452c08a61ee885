//! At-least-once: a batch is done when its handlers succeeded and the broker acknowledged their outputs.
//!
//! Guarantees: records' offsets are marked done (and so committed by the poll thread) only after every output
//! record of the batch and every DLQ record was acknowledged (`acks=all`); a crash or an unacknowledged output
//! before that redelivers the records (handlers de-duplicate with [`crate::idempotency`]).

use rdkafka::producer::FutureProducer;

use crate::error::HandlerError;
use crate::handler::Handler;
use crate::lane::{BatchOutcome, Lane};
use crate::produce;
use crate::record::{OutputRecord, Record};

/// Runs the handler over `records` until the first failure, then sends the successful prefix's outputs and
/// awaits their acknowledgements. If an output is not acknowledged, nothing of the batch is done and the
/// failure is reported against its first record (an infrastructure error: the broker).
pub(crate) async fn process<H: Handler>(
    lane: &Lane<H>,
    producer: &FutureProducer,
    records: &[Record],
    attempt: u32,
) -> BatchOutcome {
    let mut outputs = Vec::new();
    let mut done = 0;
    let mut failure = None;
    for record in records {
        let (result, outs) = lane.call(record, attempt, None).await;
        match result {
            Ok(()) => {
                outputs.extend(outs);
                done += 1;
            }
            Err(error) => {
                failure = Some(error);
                break;
            }
        }
    }
    if done > 0 {
        if let Err(error) =
            produce::send_all(producer, &outputs, lane.shared.options.produce_timeout).await
        {
            return BatchOutcome::failed_at_start(error);
        }
        lane.mark_done(&records[..done]);
    }
    BatchOutcome { done, failure }
}

/// Writes `letter` and awaits its acknowledgement, then marks `record` done.
pub(crate) async fn dead_letter<H: Handler>(
    lane: &Lane<H>,
    producer: &FutureProducer,
    record: &Record,
    letter: &OutputRecord,
) -> Result<(), HandlerError> {
    produce::send_all(
        producer,
        std::slice::from_ref(letter),
        lane.shared.options.produce_timeout,
    )
    .await?;
    lane.mark_skipped(record);
    Ok(())
}
