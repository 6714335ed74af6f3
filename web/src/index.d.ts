import type { BehaviorSubject, Observable } from "rxjs";

/** Every Herald event, on every transport: the envelope the server publishes. */
export interface HeraldEvent<T = unknown> {
  /** `<ms>-<seq>`: one total order across all topics; null only for a malformed message. */
  id: string | null;
  /** Publish time in milliseconds. */
  ts: number | null;
  /** The topic it was published on (null for a `reset`). */
  topic: string | null;
  /** `notification`, `notification.read`, `job.*`, `reset`, `message`, ... */
  type: string;
  data: T;
}

export type StreamStatus = "connecting" | "open" | "reconnecting" | "closed";

export interface StreamState {
  status: StreamStatus;
  /** After a resume: how many missed events the server replayed. */
  resumed?: number;
  /** After a `reset` event: its reason (refetch your state). */
  reset?: string;
  /** While reconnecting: the attempt number (1 for the first) and its delay in ms. */
  attempt?: number;
  delay?: number;
}

export interface BackoffOptions {
  /** First delay in ms (default 500). */
  initial?: number;
  /** Longest delay in ms (default 30000). */
  max?: number;
  /** Growth per attempt (default 2). */
  factor?: number;
  /** Spread as a fraction of the delay, ±(default 0.2); 0 for none. */
  jitter?: number;
  /** Source of randomness for the jitter (default Math.random). */
  random?: () => number;
}

/** A backoff policy, or a function from the attempt number (0 first) to milliseconds. */
export type Backoff = BackoffOptions | ((attempt: number) => number);

/** The part of the Web Storage API used to remember the last event id. */
export interface StorageLike {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
}

/**
 * Where fresh subscriber tokens come from (your backend's `POST /api/tokens`, say).
 * Called before the current token expires and when the server may have refused it;
 * it must return a newly minted token for the same user.
 */
export type TokenProvider = () => string | Promise<string>;

export interface StreamOptions {
  /** Topics to follow; empty means the token's user's own topic. */
  topics?: string[];
  /**
   * Subscriber token (sent as `?token=`), or a function returning a fresh one (or a
   * promise of one): the stream then outlives its tokens, renewing each min(30 s, 10 %
   * of its lifetime) before it expires and resuming from the last id, with no gap and
   * no duplicate. With a string, the stream ends (a HeraldError `token_expired`) when
   * the token expires. Leave it out to authenticate with the `herald_token` cookie.
   */
  token?: string | TokenProvider;
  /** Resume after this event id (default: the one kept in `storage`). */
  lastEventId?: string | null;
  /** Where the last event id is kept (default `globalThis.localStorage`; null for nowhere). */
  storage?: StorageLike | null;
  /** Reconnection delays (default 0.5 s doubling to 30 s, with jitter). */
  backoff?: Backoff;
}

export interface EventStreamOptions extends StreamOptions {
  /**
   * EventSource constructor (default `globalThis.EventSource`). The stream asks for
   * unnamed events (`named=0`): every event, whatever its type, arrives as a `message`
   * and its type is read from the envelope.
   */
  EventSourceImpl?: new (url: string) => EventSource;
}

export interface WebSocketStreamOptions extends StreamOptions {
  /** WebSocket constructor (default `globalThis.WebSocket`). */
  WebSocketImpl?: new (url: string) => WebSocket;
  /** Milliseconds a request waits for its reply (default 10000). */
  timeout?: number;
}

/** The events of a stream, plus its connection state. */
export interface HeraldEventStream extends Observable<HeraldEvent> {
  state$: BehaviorSubject<StreamState>;
}

/** A successful reply to a WebSocket request. */
export interface HeraldReply {
  reply: string;
  ref: string;
  ok: true;
  [field: string]: unknown;
}

/**
 * A request that failed: an error reply from the server, a timeout (`timeout`), a closed
 * stream (`closed`); or the end of a stream whose string token expired (`token_expired`).
 */
export class HeraldError extends Error {
  constructor(
    message: string,
    options?: { code?: string | null; field?: string | null; reply?: Record<string, unknown> | null },
  );
  code: string | null;
  field: string | null;
  reply: Record<string, unknown> | null;
}

export interface HeraldWebSocket {
  events$: Observable<HeraldEvent>;
  state$: BehaviorSubject<StreamState>;
  /** The topics the next (re)connection asks for. */
  readonly topics: string[];
  subscribe(topics: string | string[]): Promise<HeraldReply>;
  unsubscribe(topics: string | string[]): Promise<HeraldReply>;
  markRead(ids: string | string[] | "all"): Promise<HeraldReply>;
  close(): void;
}

export const DEFAULT_BACKOFF: Readonly<Required<Omit<BackoffOptions, "random">>>;
export const REQUEST_TIMEOUT: number;
/** A token is renewed min(`max` ms, `fraction` of its lifetime) before it expires. */
export const RENEW_AHEAD: Readonly<{ max: number; fraction: number }>;
/** The SSE event and WebSocket reply that end a stream whose token expired. */
export const TOKEN_EXPIRED: "token-expired";
/** The WebSocket close code that follows it. */
export const TOKEN_EXPIRED_CLOSE: 4001;

export function eventStream(url: string, options?: EventStreamOptions): HeraldEventStream;
export function webSocketStream(url: string, options?: WebSocketStreamOptions): HeraldWebSocket;

export function buildUrl(
  base: string,
  path: string,
  options?: {
    topics?: string[];
    /** false adds `named=0`: SSE events without an `event:` line. */
    named?: boolean;
    token?: string;
    lastEventId?: string | null;
  },
): string;
export function toWebSocketUrl(url: string): string;
export function storageKey(url: string, topics?: string[]): string;
export function backoffDelay(attempt: number, options?: BackoffOptions): number;
/** The claims of a JWT, read without verifying it; null when it is not one. */
export function tokenClaims(token: unknown): Record<string, unknown> | null;
/** Milliseconds from `now` until `token`, received at `receivedAt`, should be renewed. */
export function renewDelay(token: string, receivedAt: number, now?: number): number | null;
