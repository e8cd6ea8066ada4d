// Types of the WIT world `hookline:sink/sink` (wit/sink.wit) as a
// JavaScript sink sees it. Integers (u32, u64) are plain numbers.

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

/** One attempt at delivering one batch. */
export interface Request<Config = unknown> {
  appId: string;
  /** The webhook's id (its `id`, or by default the sink's `wasm` path). */
  webhookId: string;
  /** The same on every attempt, so a receiver can dedupe. */
  batchId: string;
  /** 1 on the first attempt, then 2, 3, … */
  attempt: number;
  /** The signed body's `time_ms`: when this attempt was rendered, in milliseconds since the Unix epoch. */
  timeMs: number;
  /** How long this attempt may take; outgoing requests are cut there. */
  timeoutMs: number;
  events: Event[];
  /** The exact body Hookline signed: `{"time_ms":…,"events":[…]}`. */
  body: string;
  /** The same, as bytes. */
  bodyBytes: Uint8Array;
  /**
   * `X-Pusher-Key`, `X-Pusher-Signature`, `X-Hookline-Batch-Id`,
   * `X-Hookline-Batch-Time`, then the webhook's own `headers`.
   */
  headers: Record<string, string>;
  /** The sink's `config` from the app file, parsed (`null` if none). */
  config: Config;
}

export type Outcome =
  | { tag: "delivered" }
  | { tag: "retry"; val: { reason: string; afterMs?: number } }
  | { tag: "reject"; val: string };

export function delivered(): Outcome;
export function retry(reason: string, afterMs?: number): Outcome;
export function reject(reason: string): Outcome;
/** `Retry-After` (seconds or an HTTP date) in milliseconds. */
export function retryAfterMs(value: string | null | undefined): number | undefined;
/** 2xx delivered; 429, 408, 425, 5xx retried (with `Retry-After`); others rejected. */
export function fromResponse(response: Response): Promise<Outcome>;
/** `fromResponse`, or a retry naming the error when no answer came (`TypeError: NetworkError`). */
export function outcomeOf(pending: Promise<Response> | Response | (() => Promise<Response>)): Promise<Outcome>;
/** POSTs the signed body with its headers (and `headers`) to `url`. */
export function forward(url: string, request: Request, headers?: Record<string, string>): Promise<Outcome>;

type LogFn = (...parts: unknown[]) => void;
export const log: { debug: LogFn; info: LogFn; warn: LogFn; error: LogFn };

/**
 * What a sink module exports. `deliver` returns (or resolves to) an
 * outcome; anything it throws is a retry naming it. `validateConfig`
 * throws (or returns a string) to refuse a config when the app file loads.
 */
export interface SinkModule<Config = unknown> {
  deliver(request: Request<Config>): Outcome | Promise<Outcome>;
  validateConfig?(config: Config): void | string;
}
