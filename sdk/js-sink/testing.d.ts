import type { Event, Request } from "./index.js";

/** A Pusher event as an app sends it (`user_id`, …), any other fields allowed. */
export type PusherEvent = { name: string; channel: string } & Record<string, unknown>;

export function toEvent(pusher: PusherEvent): Event;
export function sign(secret: string, body: string): string;
export function request<Config = unknown>(options?: {
  events?: PusherEvent[];
  config?: Config;
  appId?: string;
  key?: string;
  secret?: string;
  webhookId?: string;
  batchId?: string;
  attempt?: number;
  timeMs?: number;
  timeoutMs?: number;
  headers?: Record<string, string>;
}): Request<Config>;
export function withAllowedHosts<T>(origins: string[], body: () => Promise<T>): Promise<T>;

export interface Received {
  method: string;
  path: string;
  headers: Record<string, string>;
  body: string;
}

export type Answer = number | { status: number; headers?: Record<string, string>; body?: string };

export class Receiver {
  static start(): Promise<Receiver>;
  requests: Received[];
  url(path?: string): string;
  readonly origin: string;
  script(...answers: Answer[]): void;
  close(): Promise<void>;
}
