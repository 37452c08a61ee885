//! `checkoutctl` entry point: parse arguments, dispatch, exit. Everything else lives in the library.

use clap::Parser;

checkoutctl::subcommands! {
    Events(checkoutctl::events_cmd::EventsArgs),
    Topics(checkoutctl::topics_cmd::TopicsArgs),
    Outbox(checkoutctl::outbox_cmd::OutboxArgs),
    Db(checkoutctl::db_cmd::DbArgs),
    Invoice(checkoutctl::invoice_cmd::InvoiceArgs),
    Merchant(checkoutctl::merchant_cmd::MerchantArgs),
    Settlement(checkoutctl::settlement_cmd::SettlementArgs),
    Analytics(checkoutctl::analytics_cmd::AnalyticsArgs),
    Projections(checkoutctl::projections_cmd::ProjectionsArgs),
    Audit(checkoutctl::audit_cmd::AuditArgs),
    Verify(checkoutctl::verify_cmd::VerifyArgs),
    Webhooks(checkoutctl::webhooks_cmd::WebhooksArgs),
    Notifications(checkoutctl::notifications_cmd::NotificationsArgs),
    Groups(checkoutctl::groups_cmd::GroupsArgs),
    Dlq(checkoutctl::dlq_cmd::DlqArgs),
    Scanner(checkoutctl::scanner_cmd::ScannerArgs),
    Status(checkoutctl::status_cmd::StatusArgs),
    Console(checkoutctl::console_cmd::ConsoleArgs),
    Simulate(checkoutctl::simulate_cmd::SimulateArgs),
    Dr(checkoutctl::dr_cmd::DrArgs),
}

fn main() -> std::process::ExitCode {
    checkoutctl::run_main(Cli::parse().command)
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// clap checks argument definitions only when a command is built; this builds all of them.
    #[test]
    fn command_definitions_are_consistent() {
        super::Cli::command().debug_assert();
    }
}
