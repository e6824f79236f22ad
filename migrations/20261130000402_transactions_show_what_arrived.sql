-- escrow.transactions shows what a deposit received and the gateway fee paid on it (it showed the amount
-- asked for and a fee of 0, so an underpaid deposit read "completed 200.00" when 180.00 arrived). The
-- payments projection is folded again from the log: its rows and checkpoint are removed here and the
-- workers (or `projections rebuild`) write them again. As the projector: RLS is forced on these tables,
-- for their owner too.
set local role escrow_projector;
delete from escrow.transactions;
delete from escrow.projection_checkpoints where projection = 'payments';
reset role;
