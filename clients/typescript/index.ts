// The types of escrow-ledger for TypeScript apps: `Database` (schema `escrow` for supabase-js) and serve's API.
export type { Database, Json } from "./generated/database";
export type {
  Actor,
  Command,
  CommandOutcome,
  CommandRequest,
  Error as ApiError,
  EventsPage,
  Items,
  Money,
  PublicEvent,
} from "./generated/api";
