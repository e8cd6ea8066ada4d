// Types of the WIT world `hookline:filter/filter` (wit/filter.wit) as a
// JavaScript filter sees them. Integers (u64) are plain numbers.

/** One Pusher webhook event. Missing optional fields are `null`. */
export interface Event {
  /** `channel_occupied`, `member_added`, `client_event`, … */
  name: string;
  channel: string;
  userId: string | null;
  socketId: string | null;
  /** client_event: the client event's own name. */
  event: string | null;
  /** client_event: the data, when it is a JSON string. */
  data: string | null;
  subscriptionCount: number | null;
  /** Every other field (and a non-string `data`), parsed. */
  extra: Record<string, unknown> | null;
}

export interface Batch {
  timeMs: number;
  events: Event[];
}

/** Where the batch is going. */
export interface Context<Config = unknown> {
  appId: string;
  /** The webhook's id (by default its url or lambda_function). */
  webhook: string;
  /** The filter's `config` from the app file, parsed (`null` if none). */
  config: Config;
}

/** An event a `replace` delivers: at least `name` and `channel`. */
export type NewEvent = Partial<Event> & { name: string; channel: string };

export type Verdict =
  | { tag: "keep" }
  | { tag: "drop"; val: string }
  | { tag: "select"; val: number[] }
  | { tag: "replace"; val: { events: NewEvent[]; timeMs?: number } };

export function keep(): Verdict;
export function drop(reason: string): Verdict;
export function select(indices: Iterable<number>): Verdict;
export function replace(events: Iterable<NewEvent>, timeMs?: number): Verdict;
export function retain(batch: Batch, keep: (event: Event, index: number) => boolean): Verdict;

type LogFn = (...parts: unknown[]) => void;
export const log: { debug: LogFn; info: LogFn; warn: LogFn; error: LogFn };

/**
 * What a filter module exports. `filter` returns a verdict (`undefined`
 * keeps the batch); anything it throws becomes the call's `err`, handled by
 * the webhook's `on_error`. `validateConfig` throws (or returns a string)
 * to refuse a config when the app file loads.
 */
export interface FilterModule<Config = unknown> {
  filter(ctx: Context<Config>, batch: Batch): Verdict | undefined;
  validateConfig?(config: Config): void | string;
}
