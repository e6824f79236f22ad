-- Read-only streams are locked, not re-read (write skew). A decision that only READ a stream (the ledger's
-- closed periods, a policy, a guard) is checked at append by comparing the version it saw with the head. Under
-- READ COMMITTED a concurrent writer of that stream whose transaction has not committed yet is invisible to
-- that check: a late posting and a period close could both commit, each on a state without the other.
--
-- Every append transaction therefore takes, before it reads any version, a transaction-scoped advisory lock
-- per stream it names: EXCLUSIVE for a stream it writes, SHARED for one it only read. A writer of a stream
-- waits for the readers that checked it (and they for it), so the later one reads the committed head and its
-- check fails (the executor reloads and decides again). All of a transaction's locks are taken by one call,
-- in key order, so that two appends never wait on each other in a cycle through these locks.
--
-- Keys: the two-int4 form (class, hash), whose key space does not overlap the single-bigint locks of the
-- sequencer and of `citus::distribute`.
create function ledger.lock_streams(p_ledger text, p_streams text[], p_exclusive boolean[])
returns void
language plpgsql as $$
declare
    v_key int;
    v_exclusive boolean;
begin
    if cardinality(p_streams) is distinct from cardinality(p_exclusive) then
        raise exception 'lock_streams: % streams but % lock modes',
            cardinality(p_streams), cardinality(p_exclusive) using errcode = '22023';
    end if;
    for v_key, v_exclusive in
        select hashtext(p_ledger || chr(31) || s.stream_id), bool_or(s.exclusive)
          from unnest(p_streams, p_exclusive) as s(stream_id, exclusive)
         group by 1
         order by 1
    loop
        if v_exclusive then
            perform pg_advisory_xact_lock(1917, v_key);
        else
            perform pg_advisory_xact_lock_shared(1917, v_key);
        end if;
    end loop;
end
$$;

revoke all on function ledger.lock_streams(text, text[], boolean[]) from public;
grant execute on function ledger.lock_streams(text, text[], boolean[]) to escrow_writer;
