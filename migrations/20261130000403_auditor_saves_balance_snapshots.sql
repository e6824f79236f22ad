-- The reports run as escrow_auditor (read-only); the balance snapshots they pass are a cache that only the
-- definer function writes (and `verify` checks), so the auditor may call it. It still writes no table.
grant execute on function ledger.save_balance_snapshot(text, bigint, jsonb) to escrow_auditor;
