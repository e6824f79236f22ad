-- Issue 19 (finding 1): a balance snapshot's content is never the caller's. `ledger.save_balance_snapshot(
-- ledger, position, balances)` stored whatever balances its caller chose (the "read-only" auditor role saved
-- 700,000.00 of Bank and PlatformFees at position 0, which no check compared, and every report showed it).
-- It is replaced by `ledger.take_balance_snapshot(ledger, position)`, which computes the trial balance at a
-- sequenced position itself, from the log: the latest snapshot it took before (its digest checked) plus the
-- journal entries of the positions after it. The digest binds the snapshot to the chain: sha256(
-- field(ledger) || int8(position) || the chain hash at that position || field(balances jsonb text)), so a
-- re-hashed chain or an edited row is seen. Positions start at 1 (position 0 has nothing to snapshot).
-- Writers (and projectors) may ask for one; the auditor role writes nothing. Existing rows were written by
-- the old function with caller-chosen content: they are deleted (a cache; the writers take new ones).

delete from ledger.balance_snapshots;
drop function ledger.save_balance_snapshot(text, bigint, jsonb);

create function ledger.take_balance_snapshot(p_ledger text, p_position bigint)
returns void
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    v_hash bytea;
    v_base bigint;
    v_base_balances jsonb;
    v_balances jsonb;
begin
    select s.hash into v_hash from ledger.sequence s
     where s.ledger_id = p_ledger and s.position = p_position;
    if p_position < 1 or v_hash is null then
        raise exception 'ledger % has no position %', p_ledger, p_position using errcode = '22023';
    end if;
    -- The latest snapshot at or before it that this function took (its digest and chain hash check).
    select b.position, b.balances into v_base, v_base_balances
      from ledger.balance_snapshots b
      join ledger.sequence s on s.ledger_id = b.ledger_id and s.position = b.position
     where b.ledger_id = p_ledger and b.position <= p_position
       and b.digest = sha256(ledger.chain_field(b.ledger_id) || int8send(b.position) || s.hash
                             || ledger.chain_field(b.balances::text))
     order by b.position desc
     limit 1;
    if v_base = p_position then
        return;
    end if;
    -- Minor units: amounts are exact decimal strings at their currency's exponent ("100.00", "100").
    with movements as (
        select r->>0 as account, r->>1 as currency, (r->>2)::numeric as debit, (r->>3)::numeric as credit
          from jsonb_array_elements(coalesce(v_base_balances, '[]'::jsonb)) r
        union all
        select p->>'account', e.payload->'entry'->>'currency',
               case when p->>'side' = 'debit' then m.minor else 0 end,
               case when p->>'side' = 'credit' then m.minor else 0 end
          from ledger.sequence s
          join ledger.events e on e.ledger_id = s.ledger_id and e.local_id = s.local_id
          cross join lateral jsonb_array_elements(e.payload->'entry'->'postings') p
          cross join lateral (select (p->'amount'->>'amount')::numeric as amount) a
          cross join lateral (select a.amount * (10::numeric ^ scale(a.amount)) as minor) m
         where s.ledger_id = p_ledger and s.position > coalesce(v_base, 0) and s.position <= p_position
           and jsonb_typeof(e.payload->'entry') = 'object'
    ), summed as (
        select account, currency, sum(debit) as debit, sum(credit) as credit
          from movements group by account, currency
    )
    select coalesce(jsonb_agg(jsonb_build_array(account, currency,
                                                debit::numeric(40, 0)::text, credit::numeric(40, 0)::text)
                              order by account, currency), '[]'::jsonb)
      into v_balances from summed;
    insert into ledger.balance_snapshots as b (ledger_id, position, balances, taken_at, digest)
    values (p_ledger, p_position, v_balances, now(),
            sha256(ledger.chain_field(p_ledger) || int8send(p_position) || v_hash
                   || ledger.chain_field(v_balances::text)))
    on conflict (ledger_id, position) do update
       set balances = excluded.balances, taken_at = excluded.taken_at, digest = excluded.digest;
end
$$;

alter function ledger.take_balance_snapshot(text, bigint) owner to escrow_definer;
revoke all on function ledger.take_balance_snapshot(text, bigint) from public;
grant execute on function ledger.take_balance_snapshot(text, bigint) to escrow_writer, escrow_projector;
