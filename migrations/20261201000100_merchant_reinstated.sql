-- MerchantReinstated (docs/decisions/0026-settlement-contracts.md) in the merchants' read model
-- (services/projections; rules in docs/decisions/0009-read-models.md).
--
-- A reinstatement puts the merchant's status back to 'active' and records when, here: the last reinstatement.
-- suspended_at, suspension_reason and suspension_details stay as they were: the history of the last suspension
-- (the merchant is suspended when suspended_at is later than reinstated_at, or reinstated_at is NULL).
ALTER TABLE proj_merchants ADD COLUMN reinstated_at timestamptz;
