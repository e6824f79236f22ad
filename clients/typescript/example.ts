// A front end reading its balances through PostgREST, and a backend sending a command to `serve`, both typed
// with the generated types (`tsc -p clients/typescript` type-checks this file in CI).
import type { CommandRequest, CommandOutcome, Database } from "./index";

type Balance = Database["escrow"]["Views"]["my_balances"]["Row"];

/** The caller's balances, money as exact strings (cast to text in the select, see database.ts). */
export async function myBalances(supabaseUrl: string, anonKey: string, jwt: string): Promise<Balance[]> {
  const select = "ledger_id,currency,available::text,pending::text,as_of_position";
  const response = await fetch(`${supabaseUrl}/rest/v1/my_balances?select=${select}`, {
    headers: { apikey: anonKey, Authorization: `Bearer ${jwt}`, "Accept-Profile": "escrow" },
  });
  return (await response.json()) as Balance[];
}

export function describe(balance: Balance): string {
  return `${balance.available ?? "0"} ${balance.currency ?? ""} available`;
}

/** Funds milestone 1 of a project for its buyer; a retry with the same key applies once. */
export async function fundMilestone(
  serveUrl: string,
  backendKey: string,
  buyer: string,
  projectId: string,
): Promise<CommandOutcome> {
  const body: CommandRequest = {
    actor: { kind: "user", id: buyer },
    command: { type: "fund_milestone", project_id: projectId, milestone: 1 },
  };
  const response = await fetch(`${serveUrl}/v1/ledgers/default/commands`, {
    method: "POST",
    headers: {
      Authorization: `Bearer ${backendKey}`,
      "Content-Type": "application/json",
      "Idempotency-Key": `fund-${projectId}-1`,
    },
    body: JSON.stringify(body),
  });
  return (await response.json()) as CommandOutcome;
}
