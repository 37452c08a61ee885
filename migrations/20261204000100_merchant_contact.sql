-- Merchant contact details (MerchantCreated v2, SettingsUpdated v2; docs/decisions/0031-notifications.md) in the
-- merchants' read model (services/projections; rules in docs/decisions/0009-read-models.md).
--
-- Where the merchant's e-mail and SMS notifications go and in which language; NULL: none on file (every merchant
-- created by a version 1 event, until a settings update names them). The notifications service reads them when a
-- request names no destination and no contact override is on file (notification_contacts).
ALTER TABLE proj_merchants
    ADD COLUMN contact_email  text,
    ADD COLUMN contact_phone  text,
    ADD COLUMN contact_locale text;
