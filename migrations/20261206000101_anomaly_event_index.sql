-- `anomalies` also lists ChargebackOutcomeConflict (a chargeback won after lost, or lost after won) and
-- UnrequestedRefundHeld (a refund the gateway made unasked that no wallet covered): the partial index of the
-- payment workers' listings covers them too, so the listing stays an index scan.
create index events_payment_workers2_idx on ledger.events (ledger_id, event_type, recorded_at)
    where event_type in ('PayoutRequested', 'CardRefundRequested', 'SuspenseRecorded',
                         'LateFailureIgnored', 'SuccessAfterFailure', 'ChargebackOutcomeConflict',
                         'UnrequestedRefundHeld');
drop index ledger.events_payment_workers_idx;
