-- The signature a delivery was authenticated with (`name: value` lines of the gateway's signature header),
-- kept beside its raw body so that `verify --deep --gateway-config` can check every gateway-origin command
-- against its gateway's signature again. Null for rows recorded before (named as not re-verifiable).
alter table ledger.inbox add column signature text;
