//! `checkoutctl events …`: validate events, print their JSON Schemas and examples.
//!
//! Guarantees: `validate` applies exactly the decoders the services use — `events::decode` for domain events,
//! `events::AnalyticsEvent::decode` for a record whose `event_type` is one of the analytics topic's
//! (`CheckoutViewed`, `PaymentMethodChosen`, `CheckoutAbandoned`), `events::IntegrationEvent::decode` for the integration topic's scanner reports — so "valid here" means "accepted by its consumers"; each error is reported with its line number
//! and JSON path, and the exit code is non-zero if any record is invalid or there was none. `schema` and
//! `example` know every contract too. Results go to stdout (canonical records, schemas, examples); diagnostics
//! and summaries to stderr, so output can be piped.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::builder::{PossibleValuesParser, TypedValueParser};
use events::analytics::{self as checkout_page, AnalyticsEvent};
use events::integration::{self, IntegrationEvent};
use events::notification::{
    NOTIFICATION_REQUESTED, NOTIFICATION_REQUESTED_VERSION, NotificationRequested,
};
use events::schema::{combined_schema, event_schema};
use events::{CATALOGUE, EventType, decode, encode, examples};

use crate::{Io, Run, exit};

/// Validate events against the contract, and print their JSON Schemas and examples.
#[derive(Debug, clap::Args)]
pub struct EventsArgs {
    #[command(subcommand)]
    command: EventsCommand,
}

#[derive(Debug, clap::Subcommand)]
enum EventsCommand {
    /// Validate one JSON envelope or an NDJSON stream against the event contract.
    ///
    /// Input is a file, or standard input when FILE is `-` or absent. A pretty-printed document is read as
    /// one envelope; otherwise every non-blank line is one envelope (NDJSON). A record whose event_type is
    /// an analytics record (CheckoutViewed, PaymentMethodChosen, CheckoutAbandoned), NotificationRequested or an integration record (TransactionObserved, ConfirmationsChanged, TransactionDropped) is checked against its topic's contract instead. Each invalid
    /// event is reported on stderr as `line N: <JSON path>: <kind>: <message>`, followed by a summary. Exit
    /// code: 0 if every event is valid, 1 if any is invalid or the input holds none, 2 if the input cannot be
    /// read.
    Validate(ValidateArgs),
    /// Print the JSON Schema (draft 2020-12) of an event type, or of every event.
    ///
    /// Without TYPE, prints the combined schema that accepts any decodable event (`oneOf` every type and
    /// version). With TYPE, prints that type's schema at its current version, or at `--version`. These are
    /// the files committed under crates/events/schemas/.
    Schema(SchemaArgs),
    /// Print a valid example event of TYPE (or a an analytics record (CheckoutViewed, PaymentMethodChosen, CheckoutAbandoned), NotificationRequested or an integration record (TransactionObserved, ConfirmationsChanged, TransactionDropped) record), in canonical form.
    ///
    /// Examples are deterministic and tell one story: the spec's USD 16.49 invoice, paid in USDT on Tron,
    /// settled at 1 %. Feed them to `validate`, or use them as test fixtures.
    Example(ExampleArgs),
}

#[derive(Debug, clap::Args)]
struct ValidateArgs {
    /// JSON or NDJSON file to validate; `-` or nothing reads standard input.
    #[arg(value_name = "FILE|-")]
    input: Option<PathBuf>,
    /// Print every valid event to stdout in canonical form (compact JSON, one per line).
    #[arg(long)]
    canonical: bool,
}

#[derive(Debug, clap::Args)]
struct SchemaArgs {
    /// Event type, an analytics record (CheckoutViewed, PaymentMethodChosen, CheckoutAbandoned), NotificationRequested or an integration record (TransactionObserved, ConfirmationsChanged, TransactionDropped); all domain events when absent.
    #[arg(value_name = "TYPE", value_parser = record_type_parser())]
    event_type: Option<RecordType>,
    /// Schema version (default: the current one). Needs TYPE.
    #[arg(long, requires = "event_type")]
    version: Option<u32>,
    /// List event types with their aggregate, partition key and decodable versions instead.
    #[arg(long, conflicts_with_all = ["event_type", "version"])]
    list: bool,
}

#[derive(Debug, clap::Args)]
struct ExampleArgs {
    /// Event type, an analytics record (CheckoutViewed, PaymentMethodChosen, CheckoutAbandoned), NotificationRequested or an integration record (TransactionObserved, ConfirmationsChanged, TransactionDropped).
    #[arg(value_name = "TYPE", value_parser = record_type_parser())]
    event_type: RecordType,
    /// Indent the JSON for reading (still valid input for `validate`).
    #[arg(long)]
    pretty: bool,
}

/// A record type of the contract: a domain event type, or a record of another topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RecordType {
    Event(EventType),
    /// A record of the analytics topic (the checkout page's), by its index in `analytics::RECORD_TYPES`.
    Analytics(usize),
    NotificationRequested,
    /// A record of the integration topic (a scanner's report), by its index in `integration::RECORD_TYPES`.
    Integration(usize),
}

/// Accepts exactly the catalogue's names and the other topics' record types, and lists them in `--help` and in
/// errors.
fn record_type_parser() -> impl TypedValueParser<Value = RecordType> {
    let names = EventType::ALL
        .iter()
        .map(|t| t.as_str())
        .chain(checkout_page::RECORD_TYPES.iter().map(|(t, _)| *t))
        .chain([NOTIFICATION_REQUESTED])
        .chain(integration::RECORD_TYPES.iter().map(|(t, _)| *t));
    PossibleValuesParser::new(names).map(|name| match name.parse::<EventType>() {
        Ok(event_type) => RecordType::Event(event_type),
        Err(_) if name == NOTIFICATION_REQUESTED => RecordType::NotificationRequested,
        Err(_) if AnalyticsEvent::is_record_type(&name) => RecordType::Analytics(
            checkout_page::RECORD_TYPES
                .iter()
                .position(|(t, _)| *t == name)
                .expect("one of the possible values"),
        ),
        Err(_) => RecordType::Integration(
            integration::RECORD_TYPES
                .iter()
                .position(|(t, _)| *t == name)
                .expect("one of the possible values"),
        ),
    })
}

impl Run for EventsArgs {
    fn run(self, io: &mut Io<'_>) -> anyhow::Result<u8> {
        match self.command {
            EventsCommand::Validate(args) => validate(args, io),
            EventsCommand::Schema(args) => schema(args, io),
            EventsCommand::Example(args) => example(args, io),
        }
    }
}

/// What `validate` found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Valid events.
    pub valid: usize,
    /// Invalid events.
    pub invalid: usize,
}

fn validate(args: ValidateArgs, io: &mut Io<'_>) -> anyhow::Result<u8> {
    let summary = match args.input.as_deref() {
        None => validate_stream(io.stdin, args.canonical, io.stdout, io.stderr)?,
        Some(path) if path.as_os_str() == "-" => {
            validate_stream(io.stdin, args.canonical, io.stdout, io.stderr)?
        }
        Some(path) => {
            let file =
                File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
            validate_stream(
                &mut BufReader::new(file),
                args.canonical,
                io.stdout,
                io.stderr,
            )
            .with_context(|| format!("while reading {}", path.display()))?
        }
    };
    let total = summary.valid + summary.invalid;
    writeln!(
        io.stderr,
        "{total} events: {} valid, {} invalid",
        summary.valid, summary.invalid
    )?;
    if total == 0 {
        writeln!(io.stderr, "error: no event in the input")?;
    }
    Ok(if summary.invalid == 0 && total > 0 {
        exit::OK
    } else {
        exit::INVALID
    })
}

/// Validates a JSON document or an NDJSON stream, reporting errors to `errors` and, with `canonical`,
/// writing valid events to `out`.
pub fn validate_stream(
    input: &mut dyn BufRead,
    canonical: bool,
    out: &mut dyn Write,
    errors: &mut dyn Write,
) -> anyhow::Result<Summary> {
    let mut summary = Summary::default();
    let mut check = |line: usize, bytes: &[u8], summary: &mut Summary| -> anyhow::Result<()> {
        // The canonical encoding of whichever contract the record claims (by its event_type).
        let decoded = match events::peek_event_type(bytes).as_deref() {
            Some(t) if AnalyticsEvent::is_record_type(t) => {
                AnalyticsEvent::decode(bytes).and_then(|record| record.encode())
            }
            Some(NOTIFICATION_REQUESTED) => {
                NotificationRequested::decode(bytes).and_then(|request| request.encode())
            }
            Some(t) if integration::RECORD_TYPES.iter().any(|(r, _)| *r == t) => {
                IntegrationEvent::decode(bytes).and_then(|record| record.encode())
            }
            _ => decode(bytes).and_then(|envelope| encode(&envelope)),
        };
        match decoded {
            Ok(bytes) => {
                summary.valid += 1;
                if canonical {
                    out.write_all(&bytes)?;
                    out.write_all(b"\n")?;
                }
            }
            Err(error) => {
                summary.invalid += 1;
                writeln!(errors, "line {line}: {error}")?;
            }
        }
        Ok(())
    };

    // Skip leading blank lines; the first content line decides between NDJSON and one document.
    let mut line_number = 0;
    let mut first = Vec::new();
    loop {
        first.clear();
        if input
            .read_until(b'\n', &mut first)
            .context("cannot read input")?
            == 0
        {
            return Ok(summary);
        }
        line_number += 1;
        if !is_blank(&first) {
            break;
        }
    }
    let first_is_a_value =
        serde_json::from_slice::<serde::de::IgnoredAny>(trim_newline(&first)).is_ok();
    if !first_is_a_value {
        // A pretty-printed (or broken) document: read it whole and check it as one event.
        let start = line_number;
        input.read_to_end(&mut first).context("cannot read input")?;
        check(start, &first, &mut summary)?;
        return Ok(summary);
    }
    check(line_number, trim_newline(&first), &mut summary)?;
    let mut line = Vec::new();
    loop {
        line.clear();
        if input
            .read_until(b'\n', &mut line)
            .context("cannot read input")?
            == 0
        {
            return Ok(summary);
        }
        line_number += 1;
        if !is_blank(&line) {
            check(line_number, trim_newline(&line), &mut summary)?;
        }
    }
}

fn is_blank(line: &[u8]) -> bool {
    line.iter().all(u8::is_ascii_whitespace)
}

fn trim_newline(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn schema(args: SchemaArgs, io: &mut Io<'_>) -> anyhow::Result<u8> {
    if args.list {
        writeln!(
            io.stdout,
            "{:<20} {:<11} {:<13} versions",
            "event type", "aggregate", "partition key"
        )?;
        for spec in CATALOGUE {
            let key = match spec.aggregate_type.partition_key() {
                events::PartitionKeyField::InvoiceId => "invoice_id",
                events::PartitionKeyField::MerchantId => "merchant_id",
            };
            writeln!(
                io.stdout,
                "{:<20} {:<11} {:<13} {}..={}",
                spec.event_type.as_str(),
                spec.aggregate_type.as_str(),
                key,
                spec.oldest_version,
                spec.current_version
            )?;
        }
        for (record_type, v) in checkout_page::RECORD_TYPES {
            writeln!(
                io.stdout,
                "{:<20} {:<11} {:<13} {v}..={v}  (on {}; the key is the UTC date of occurred_at)",
                record_type,
                events::AggregateType::Invoice.as_str(),
                "date",
                events::topics::ANALYTICS_EVENTS,
            )?;
        }
        writeln!(
            io.stdout,
            "{:<20} {:<11} {:<13} {v}..={v}  (on {})",
            NOTIFICATION_REQUESTED,
            events::notification::AGGREGATE_TYPE,
            "recipient.id",
            events::topics::NOTIFICATION_EVENTS,
            v = NOTIFICATION_REQUESTED_VERSION,
        )?;
        for (record_type, version) in integration::RECORD_TYPES {
            writeln!(
                io.stdout,
                "{:<20} {:<11} {:<13} {version}..={version}  (on {})",
                record_type,
                integration::AGGREGATE_TYPE,
                "source",
                events::topics::INTEGRATION_EVENTS,
            )?;
        }
        return Ok(exit::OK);
    }
    let schema = match (args.event_type, args.version) {
        (None, _) => combined_schema(),
        (Some(RecordType::Analytics(index)), version) => {
            let (record_type, current) = checkout_page::RECORD_TYPES[index];
            match version {
                None => {}
                Some(v) if v == current => {}
                Some(v) => bail!("{record_type} has no version {v}; its only version is {current}"),
            }
            checkout_page::record_schema(record_type).expect("a record type of the topic")
        }
        (Some(RecordType::NotificationRequested), version) => match version {
            None | Some(NOTIFICATION_REQUESTED_VERSION) => {
                events::notification::notification_requested_schema()
            }
            Some(version) => bail!(
                "{NOTIFICATION_REQUESTED} has no version {version}; its only version is {NOTIFICATION_REQUESTED_VERSION}"
            ),
        },
        (Some(RecordType::Integration(index)), version) => {
            let (record_type, current) = integration::RECORD_TYPES[index];
            match version {
                None => {}
                Some(v) if v == current => {}
                Some(v) => bail!("{record_type} has no version {v}; its only version is {current}"),
            }
            integration::record_schema(record_type).expect("a record type of the topic")
        }
        (Some(RecordType::Event(event_type)), version) => {
            let version = version.unwrap_or(event_type.current_version());
            match event_schema(event_type, version) {
                Some(schema) => schema,
                None => bail!(
                    "{event_type} has no version {version}; decodable versions are {}..={}",
                    event_type.oldest_version(),
                    event_type.current_version()
                ),
            }
        }
    };
    serde_json::to_writer_pretty(&mut *io.stdout, &schema)?;
    writeln!(io.stdout)?;
    Ok(exit::OK)
}

fn example(args: ExampleArgs, io: &mut Io<'_>) -> anyhow::Result<u8> {
    match args.event_type {
        RecordType::Event(event_type) => {
            let envelope = examples::example(event_type);
            if args.pretty {
                serde_json::to_writer_pretty(&mut *io.stdout, &envelope)?;
            } else {
                io.stdout.write_all(&encode(&envelope)?)?;
            }
        }
        RecordType::Analytics(index) => {
            let bytes = examples::analytics_events()[index].encode()?;
            if args.pretty {
                let value: serde_json::Value = serde_json::from_slice(&bytes)?;
                serde_json::to_writer_pretty(&mut *io.stdout, &value)?;
            } else {
                io.stdout.write_all(&bytes)?;
            }
        }
        RecordType::Integration(index) => {
            let bytes = examples::integration_events()[index].encode()?;
            if args.pretty {
                let value: serde_json::Value = serde_json::from_slice(&bytes)?;
                serde_json::to_writer_pretty(&mut *io.stdout, &value)?;
            } else {
                io.stdout.write_all(&bytes)?;
            }
        }
        RecordType::NotificationRequested => {
            let request = examples::notification_requested();
            let bytes = request.encode()?;
            if args.pretty {
                let value: serde_json::Value = serde_json::from_slice(&bytes)?;
                serde_json::to_writer_pretty(&mut *io.stdout, &value)?;
            } else {
                io.stdout.write_all(&bytes)?;
            }
        }
    }
    writeln!(io.stdout)?;
    Ok(exit::OK)
}
