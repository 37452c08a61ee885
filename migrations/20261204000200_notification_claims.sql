-- Claims per notification (services/notifications; docs/decisions/0031-notifications.md): how often a dispatcher
-- leased the row to send it. Every settled attempt also counts in `attempts`, so `claims - attempts` is the number
-- of attempts that were interrupted before their outcome was written (a process killed mid-send, a lease lost) or
-- released unsent (a channel outage) — the only ways a provider can see a notification more than once.
ALTER TABLE notification_deliveries ADD COLUMN claims int NOT NULL DEFAULT 0 CHECK (claims >= 0);
