// @herald/client: Herald's event streams in the browser, as RxJS Observables.
//
// Two transports share one behaviour:
// - eventStream(url, options): Server-Sent Events (EventSource) from `${url}/events`;
// - webSocketStream(url, options): a WebSocket to `${url}/ws` (http→ws, https→wss),
//   which can also change its topics and mark notifications read.
//
// Both reconnect on their own after a capped, jittered backoff, resume from the last
// event id they saw (kept in `storage`, so a reloaded page resumes too), and report
// their connection state on `state$`.
//
// Tokens expire, and the server ends a stream at its token's `exp` (`token-expired`).
// `token` may therefore be a function returning a fresh token (or a promise of one):
// it is called before the current one expires (min(30 s, 10 % of its lifetime) ahead)
// and whenever the server may have refused it, and the stream carries on with the new
// token from its last event id (SSE: a new EventSource; WebSocket: the `auth` command,
// without reconnecting): no event is missed or repeated.

import { BehaviorSubject, Observable, Subject, share } from "rxjs";

/** 0.5 s, doubling, at most 30 s, ±20 % jitter. */
export const DEFAULT_BACKOFF = Object.freeze({
  initial: 500,
  max: 30_000,
  factor: 2,
  jitter: 0.2,
});

/** The SSE event and WebSocket reply that end a stream whose token expired. */
export const TOKEN_EXPIRED = "token-expired";

/** Milliseconds a WebSocket request waits for its reply. */
export const REQUEST_TIMEOUT = 10_000;

/** A token is renewed min(`max` ms, `fraction` of its lifetime) before it expires. */
export const RENEW_AHEAD = Object.freeze({ max: 30_000, fraction: 0.1 });

/** WebSocket close code of a stream whose token expired. */
export const TOKEN_EXPIRED_CLOSE = 4001;

const STORAGE_PREFIX = "herald:last-id:";

// ---------------------------------------------------------------------------------------
// Small pure helpers (exported for tests and for callers that want them)

/** `url` without trailing slashes. */
function trimBase(url) {
  return String(url).replace(/\/+$/, "");
}

/** An array of unique, non-empty topic names from a string or an iterable. */
function topicList(topics) {
  if (topics == null) return [];
  const list = typeof topics === "string" ? topics.split(",") : [...topics];
  return [...new Set(list.map((t) => String(t).trim()).filter(Boolean))];
}

/**
 * `${base}${path}?topics=a,b&named=0&token=...&last_event_id=...`: `topics` is left out
 * when empty, `named=0` is added only when `named` is false, and `token` and
 * `last_event_id` are left out when not given.
 */
export function buildUrl(base, path, { topics = [], named, token, lastEventId } = {}) {
  const params = [];
  const names = topicList(topics);
  if (names.length) params.push(`topics=${names.map(encodeURIComponent).join(",")}`);
  if (named === false) params.push("named=0");
  if (token) params.push(`token=${encodeURIComponent(token)}`);
  if (lastEventId) params.push(`last_event_id=${encodeURIComponent(lastEventId)}`);
  const target = trimBase(base) + path;
  if (!params.length) return target;
  return target + (target.includes("?") ? "&" : "?") + params.join("&");
}

/** The WebSocket URL of an HTTP one: http→ws, https→wss (ws and wss are kept). */
export function toWebSocketUrl(url) {
  const text = String(url);
  if (/^https:/i.test(text)) return "wss:" + text.slice(6);
  if (/^http:/i.test(text)) return "ws:" + text.slice(5);
  return text;
}

/** Where the last event id of a stream is kept: `herald:last-id:<url>:<sorted topics>`. */
export function storageKey(url, topics = []) {
  return `${STORAGE_PREFIX}${trimBase(url)}:${topicList(topics).sort().join(",")}`;
}

/**
 * Milliseconds to wait before reconnection attempt `attempt` (0 for the first):
 * `initial * factor^attempt`, capped at `max`, spread by ±`jitter` (a fraction).
 */
export function backoffDelay(attempt, options = {}) {
  const { initial, max, factor, jitter } = { ...DEFAULT_BACKOFF, ...options };
  const random = options.random ?? Math.random;
  const base = Math.min(max, initial * factor ** Math.max(0, attempt));
  const spread = base * jitter * (2 * random() - 1);
  return Math.max(0, Math.min(max, Math.round(base + spread)));
}

/** A function of the attempt number from the `backoff` option (object or function). */
function backoffFunction(backoff) {
  if (typeof backoff === "function") return backoff;
  return (attempt) => backoffDelay(attempt, backoff ?? {});
}

function defaultStorage() {
  try {
    return globalThis.localStorage ?? null;
  } catch {
    return null; // access denied (sandboxed frame, disabled storage)
  }
}

/** get/set on a Storage-like object, never throwing. */
function memory(storage, key) {
  return {
    read() {
      if (!storage) return null;
      try {
        return storage.getItem(key) || null;
      } catch {
        return null;
      }
    },
    write(id) {
      if (!storage) return;
      try {
        storage.setItem(key, id);
      } catch {
        // quota exceeded or storage disabled: resuming after a reload is lost, no more
      }
    },
  };
}

/**
 * A Herald event from a transport message: the JSON envelope `{id, ts, topic, type,
 * data}` when it is one, or else an envelope built around whatever was sent.
 */
function toEvent(raw, fallbackType, fallbackId) {
  let parsed = raw;
  if (typeof raw === "string") {
    try {
      parsed = JSON.parse(raw);
    } catch {
      parsed = raw;
    }
  }
  if (parsed && typeof parsed === "object" && !Array.isArray(parsed) && "type" in parsed
      && "data" in parsed) {
    return {
      id: parsed.id ?? fallbackId ?? null,
      ts: parsed.ts ?? null,
      topic: parsed.topic ?? null,
      type: parsed.type ?? fallbackType,
      data: parsed.data,
    };
  }
  return { id: fallbackId ?? null, ts: null, topic: null, type: fallbackType, data: parsed };
}

/** The body of a control message, whether sent bare or wrapped in an envelope. */
function controlBody(raw) {
  let parsed = raw;
  if (typeof raw === "string") {
    try {
      parsed = JSON.parse(raw);
    } catch {
      return {};
    }
  }
  if (!parsed || typeof parsed !== "object") return {};
  if (parsed.data && typeof parsed.data === "object" && !("replayed" in parsed)
      && !("reason" in parsed)) {
    return parsed.data;
  }
  return parsed;
}

/** The claims of a JWT, read without verifying it; null when `token` is not one. */
export function tokenClaims(token) {
  if (typeof token !== "string") return null;
  const parts = token.split(".");
  if (parts.length !== 3) return null;
  try {
    const base64 = parts[1].replace(/-/g, "+").replace(/_/g, "/");
    const padded = base64 + "=".repeat((4 - (base64.length % 4)) % 4);
    const bytes = Uint8Array.from(atob(padded), (c) => c.charCodeAt(0));
    const claims = JSON.parse(new TextDecoder().decode(bytes));
    return claims && typeof claims === "object" && !Array.isArray(claims) ? claims : null;
  } catch {
    return null;
  }
}

/**
 * Milliseconds from `now` until `token`, received at `receivedAt` (ms), should be
 * renewed; null when it has no `exp`. With an `iat`, the lifetime `exp - iat` is counted
 * from `receivedAt`, less a second (`iat` is rounded down), so the browser's clock need
 * not agree with the server's; without one, `exp` is read on the local clock. Renewal is
 * min(30 s, 10 % of the lifetime) ahead of expiry, and never sooner than half the
 * lifetime, so a provider of short-lived tokens is not called in a loop.
 */
export function renewDelay(token, receivedAt, now = Date.now()) {
  const claims = tokenClaims(token);
  const exp = Number(claims?.exp);
  if (!Number.isFinite(exp)) return null;
  const iat = Number(claims.iat);
  const lifetime = Number.isFinite(iat) && iat < exp
    ? (exp - iat) * 1000 : Math.max(0, exp * 1000 - receivedAt);
  const expiresAt = Number.isFinite(iat) && iat < exp
    ? receivedAt + lifetime - 1000 : exp * 1000;
  const ahead = Math.min(RENEW_AHEAD.max, RENEW_AHEAD.fraction * lifetime);
  const renewAt = Math.max(receivedAt + lifetime / 2, expiresAt - ahead);
  return Math.max(0, Math.round(renewAt - now));
}

/**
 * The `token` option: a string (or nothing, for the cookie), or a function returning a
 * token or a promise of one, called for a fresh token when needed.
 */
class Tokens {
  constructor(option) {
    this.provider = typeof option === "function" ? option : null;
    this.value = this.provider ? null : (option || null);
    this.receivedAt = Date.now();
    this.stale = this.provider !== null; // nothing fetched yet
    this.fetching = null;
  }

  /** True when new tokens can be had (`token` is a function). */
  get renewable() {
    return this.provider !== null;
  }

  /** True when a fresh token must be fetched before connecting. */
  needsFresh() {
    if (!this.renewable) return false;
    return this.stale || this.value === null || this.delay() === 0;
  }

  /** Milliseconds until the current token should be renewed; null for never. */
  delay() {
    if (!this.renewable || this.value === null) return null;
    return renewDelay(this.value, this.receivedAt);
  }

  /** The current one may have been refused: fetch another before the next connection. */
  markStale() {
    this.stale = true;
  }

  /** A promise of a fresh token (one call to the provider for concurrent callers). */
  fetch() {
    if (!this.renewable) return Promise.resolve(this.value);
    if (!this.fetching) {
      this.fetching = Promise.resolve()
        .then(() => this.provider())
        .then((token) => {
          if (typeof token !== "string" || !token) {
            throw new TypeError("herald: the token function returned no token");
          }
          this.value = token;
          this.receivedAt = Date.now();
          this.stale = false;
          return token;
        })
        .finally(() => {
          this.fetching = null;
        });
    }
    return this.fetching;
  }

  /** Calls `use(token)` at once when the token is usable, else once a fresh one came. */
  withToken(live, use, fail) {
    if (!this.needsFresh()) {
      use(this.value ?? undefined);
      return;
    }
    this.fetch().then((token) => {
      if (!live()) return;
      try {
        use(token);
      } catch {
        fail(); // the constructor refused (say, a malformed URL): try again later
      }
    }, () => {
      if (live()) fail();
    });
  }
}

/** Runs `renew` when the current token is due for renewal (one timer per stream). */
class Renewal {
  constructor(tokens, renew) {
    this.tokens = tokens;
    this.renew = renew;
    this.timer = null;
  }

  schedule() {
    this.cancel();
    const delay = this.tokens.delay();
    if (delay === null) return;
    this.timer = setTimeout(() => {
      this.timer = null;
      this.renew();
    }, delay);
  }

  cancel() {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
  }
}

function resumedState(body) {
  const replayed = Number(body.replayed);
  return { status: "open", resumed: Number.isFinite(replayed) ? replayed : 0 };
}

function resetState(event) {
  const reason = event?.data?.reason;
  return { status: "open", reset: typeof reason === "string" ? reason : "reset" };
}

// ---------------------------------------------------------------------------------------
// Reconnection: one connection at a time, a backoff between failed ones

class Reconnector {
  /**
   * @param connect ({opened, failed, live}) => teardown: opens one connection and
   *   calls `opened()` once it is up and `failed()` when it breaks.
   */
  constructor({ connect, backoff, state$ }) {
    this.connect = connect;
    this.delay = backoffFunction(backoff);
    this.state$ = state$;
    this.running = false;
    this.attempt = 0;
    this.generation = 0;
    this.timer = null;
    this.teardown = null;
  }

  start() {
    if (this.running) return;
    this.running = true;
    this.attempt = 0;
    this.state$.next({ status: "connecting" });
    this.open();
  }

  open() {
    this.timer = null;
    const generation = ++this.generation;
    const live = () => this.running && generation === this.generation;
    try {
      this.teardown = this.connect({
        live,
        opened: () => {
          if (!live()) return;
          this.attempt = 0; // a good connection: the next failure starts the backoff again
          this.state$.next({ status: "open" });
        },
        failed: () => {
          if (live()) this.retry();
        },
      });
    } catch {
      // the constructor refused (say, a malformed URL): try again later all the same
      if (live()) this.retry();
    }
  }

  /** Replaces the current connection with a new one at once (no backoff). */
  restart() {
    if (!this.running) return;
    this.generation += 1;
    if (this.timer !== null) clearTimeout(this.timer);
    this.closeCurrent();
    this.open();
  }

  retry() {
    this.generation += 1; // the broken connection's callbacks are ignored from now on
    this.closeCurrent();
    const delay = this.delay(this.attempt);
    this.attempt += 1;
    this.state$.next({ status: "reconnecting", attempt: this.attempt, delay });
    this.timer = setTimeout(() => this.open(), delay);
  }

  closeCurrent() {
    const teardown = this.teardown;
    this.teardown = null;
    if (teardown) {
      try {
        teardown();
      } catch {
        // closing a broken connection may throw; it is gone either way
      }
    }
  }

  stop() {
    if (!this.running) return;
    this.running = false;
    this.generation += 1;
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    this.closeCurrent();
    this.state$.next({ status: "closed" });
  }
}

/**
 * A Reconnector whose every connection is opened with a current token:
 * `listen(token, {opened, failed, live})` opens one and returns its teardown (it is
 * called only once a connection is wanted, so it may be defined after the loop).
 */
function tokenReconnector({ backoff, state$, tokens, listen }) {
  return new Reconnector({
    backoff,
    state$,
    connect: ({ opened, failed, live }) => {
      let teardown = null;
      tokens.withToken(live, (current) => {
        teardown = listen(current, { opened, failed, live });
      }, failed);
      return () => teardown?.();
    },
  });
}

// ---------------------------------------------------------------------------------------
// Server-Sent Events

/**
 * Herald events from `${url}/events` over EventSource, as an Observable with a `state$`.
 *
 * EventSource hands a named SSE event (`event: type`) only to listeners added for that
 * name, so the stream asks the server for unnamed events (`named=0`): every event, of
 * any type, arrives as a `message`, and its type is read from its envelope. The
 * server's own messages (`ready`, `resumed`, `token-expired`) stay named, so a
 * published event can never pass for one of them.
 *
 * Subscribing connects (one EventSource shared by every subscriber); unsubscribing the
 * last subscriber closes it and cancels any pending reconnection. With a token
 * function, the EventSource is replaced by one with a fresh token (resuming from the
 * last id) before the token expires, when the server says it has (`token-expired`),
 * and after the server refused a connection. With a string token, `token-expired`
 * errors the Observable (a HeraldError with code `token_expired`).
 */
export function eventStream(url, options = {}) {
  const {
    topics = [],
    token,
    lastEventId,
    storage = defaultStorage(),
    EventSourceImpl = globalThis.EventSource,
    backoff,
  } = options;
  const names = topicList(topics);
  const kept = memory(storage, storageKey(url, names));
  const state$ = new BehaviorSubject({ status: "closed" });
  const tokens = new Tokens(token);
  let lastId = lastEventId || null;

  const events$ = new Observable((subscriber) => {
    if (typeof EventSourceImpl !== "function") {
      subscriber.error(new Error("herald: no EventSource here; pass EventSourceImpl"));
      return undefined;
    }
    if (!lastId) lastId = kept.read();

    const remember = (id) => {
      if (!id) return;
      lastId = String(id);
      kept.write(lastId);
    };

    // Before the token expires: fetch a fresh one, then swap connections (an
    // EventSource cannot change its URL). A failed fetch changes nothing: the server's
    // token-expired then brings a retry with backoff.
    const renewal = new Renewal(tokens, () => {
      tokens.fetch().then(() => {
        if (state$.value.status === "open") loop.restart();
      }, () => {});
    });

    const loop = tokenReconnector({ backoff, state$, tokens, listen: (...a) => listen(...a) });

    const expired = () => {
      renewal.cancel();
      if (tokens.renewable) {
        tokens.markStale();
        loop.restart();
        return;
      }
      loop.stop();
      subscriber.error(new HeraldError("token expired", { code: "token_expired" }));
    };

    const listen = (current, { opened, failed, live }) => {
      const source = new EventSourceImpl(buildUrl(url, "/events", {
        topics: names, named: false, token: current, lastEventId: lastId,
      }));
      const onOpen = () => {
        if (!live()) return;
        opened();
        renewal.schedule();
      };
      const onEvent = (message) => {
        if (!live()) return;
        const event = toEvent(message.data, message.type, message.lastEventId || null);
        remember(event.id);
        if (event.type === "reset") state$.next(resetState(event));
        subscriber.next(event);
      };
      const onResumed = (message) => {
        if (live()) state$.next(resumedState(controlBody(message.data)));
      };
      // "ready" carries the stream's starting position: resuming from it after a
      // reconnection loses nothing, even before the first event came.
      const onReady = (message) => {
        if (live()) remember(message.lastEventId || controlBody(message.data).position);
      };
      // The server's last words before it closes at the token's expiry (no id: the
      // position is the last event's).
      const onExpired = () => {
        if (live()) expired();
      };
      const onError = (event) => {
        // a server message named "error" would arrive here as a MessageEvent: no failure
        if (typeof event?.data === "string") return;
        // CLOSED (not CONNECTING): the server answered other than 200, maybe a 401
        if (source.readyState === 2) tokens.markStale();
        failed();
      };
      const handlers = [["open", onOpen], ["error", onError], ["message", onEvent],
        ["resumed", onResumed], ["ready", onReady], [TOKEN_EXPIRED, onExpired]];
      for (const [type, handler] of handlers) source.addEventListener(type, handler);
      return () => {
        for (const [type, handler] of handlers) source.removeEventListener?.(type, handler);
        source.close();
      };
    };

    loop.start();
    return () => {
      renewal.cancel();
      loop.stop();
    };
  }).pipe(share());

  events$.state$ = state$;
  return events$;
}

// ---------------------------------------------------------------------------------------
// WebSocket

/** A failed WebSocket request: an error reply (`code`, `field`) or a timeout. */
export class HeraldError extends Error {
  constructor(message, { code = null, field = null, reply = null } = {}) {
    super(message);
    this.name = "HeraldError";
    this.code = code;
    this.field = field;
    this.reply = reply;
  }
}

/**
 * A WebSocket to `${url}/ws` (http→ws, https→wss): events on `events$`, the connection
 * on `state$`, and requests (`subscribe`, `unsubscribe`, `markRead`) answered by the
 * server's replies. It connects at once; `close()` ends it.
 *
 * With a token function, a fresh token is sent with the `auth` command before the
 * current one expires (the connection stays up); when that is refused, when the server
 * says the token expired, or after a failed handshake, it reconnects with a fresh token
 * from the last id. With a string token, expiry ends the stream: `events$` errors with
 * a HeraldError of code `token_expired`.
 */
export function webSocketStream(url, options = {}) {
  const {
    topics: initialTopics = [],
    token,
    lastEventId,
    storage = defaultStorage(),
    WebSocketImpl = globalThis.WebSocket,
    backoff,
    timeout = REQUEST_TIMEOUT,
  } = options;
  if (typeof WebSocketImpl !== "function") {
    throw new Error("herald: no WebSocket here; pass WebSocketImpl");
  }
  // The key is the one of the topics the stream was made with, so a reloaded page
  // (which starts from those) finds it whatever was subscribed since.
  const kept = memory(storage, storageKey(url, initialTopics));
  const wsBase = toWebSocketUrl(url);
  const events = new Subject();
  const state$ = new BehaviorSubject({ status: "closed" });
  const pending = new Map(); // ref -> {message, resolve, reject, timer, sentOn}
  const tokens = new Tokens(token);
  let topics = topicList(initialTopics);
  let lastId = lastEventId || kept.read();
  let socket = null; // the open WebSocket, when there is one
  let nextRef = 1;
  let closed = false;

  const remember = (id) => {
    if (!id) return;
    lastId = String(id);
    kept.write(lastId);
  };

  const transmit = (entry) => {
    if (!socket || entry.sentOn === socket) return;
    try {
      socket.send(JSON.stringify(entry.message));
      entry.sentOn = socket;
    } catch {
      // the socket is going away: sent again after the reconnection
    }
  };

  const settle = (reply) => {
    const ref = String(reply.ref);
    const entry = pending.get(ref);
    if (!entry) return;
    pending.delete(ref);
    clearTimeout(entry.timer);
    if (reply.ok === false) {
      const error = reply.error ?? {};
      entry.reject(new HeraldError(error.message ?? `${reply.reply} failed`, {
        code: error.code ?? null, field: error.field ?? null, reply,
      }));
    } else {
      entry.resolve(reply);
    }
  };

  const receive = (text) => {
    let message;
    try {
      message = JSON.parse(text);
    } catch {
      return; // not JSON: not ours
    }
    if (!message || typeof message !== "object") return;
    if ("reply" in message) {
      if (message.reply === "resumed") state$.next(resumedState(message));
      else if (message.reply === "ready") remember(message.position);
      else if (message.reply === TOKEN_EXPIRED) expired();
      else if (message.ref != null) settle(message);
      return;
    }
    if ("id" in message && "type" in message) {
      const event = toEvent(message, message.type, message.id);
      remember(event.id);
      if (event.type === "reset") state$.next(resetState(event));
      events.next(event);
    }
  };

  const listen = (current, { opened, failed, live }) => {
    const ws = new WebSocketImpl(
      buildUrl(wsBase, "/ws", { topics, token: current, lastEventId: lastId }));
    let wasOpen = false;
    const onOpen = () => {
      if (!live()) return;
      socket = ws;
      wasOpen = true;
      opened();
      renewal.schedule();
      // requests made while disconnected, or unanswered by the previous socket; an
      // `auth` is not: this connection was made with the newest token already
      for (const [ref, entry] of pending) {
        if (entry.message.op !== "auth") {
          transmit(entry);
          continue;
        }
        pending.delete(ref);
        clearTimeout(entry.timer);
        entry.reject(new HeraldError("the connection was replaced", { code: "superseded" }));
      }
    };
    const onMessage = (message) => {
      if (live() && typeof message.data === "string") receive(message.data);
    };
    const onClose = (event) => {
      if (socket === ws) socket = null;
      if (!live()) return;
      if (event?.code === TOKEN_EXPIRED_CLOSE) {
        expired();
        return;
      }
      // a refused handshake looks like any failure here: it may have been a 401
      if (!wasOpen) tokens.markStale();
      failed();
    };
    ws.addEventListener("open", onOpen);
    ws.addEventListener("message", onMessage);
    ws.addEventListener("close", onClose);
    ws.addEventListener("error", onClose);
    return () => {
      if (socket === ws) socket = null;
      ws.removeEventListener?.("open", onOpen);
      ws.removeEventListener?.("message", onMessage);
      ws.removeEventListener?.("close", onClose);
      ws.removeEventListener?.("error", onClose);
      ws.close(1000);
    };
  };

  const loop = tokenReconnector({ backoff, state$, tokens, listen: (...a) => listen(...a) });

  const request = (op, fields) => {
    if (closed) return Promise.reject(new HeraldError("the stream is closed", { code: "closed" }));
    const ref = String(nextRef++);
    return new Promise((resolve, reject) => {
      const entry = { message: { op, ref, ...fields }, resolve, reject, sentOn: null };
      entry.timer = setTimeout(() => {
        pending.delete(ref);
        reject(new HeraldError(`no reply to ${op} within ${timeout} ms`, { code: "timeout" }));
      }, timeout);
      pending.set(ref, entry);
      transmit(entry);
    });
  };

  // Before the token expires: send a fresh one in band. Refused (or unanswered), the
  // connection is replaced by one made with the fresh token. While disconnected, the
  // next connection is made with the fresh token. Without a fresh token (the function
  // failed), nothing changes: the server's token-expired brings a retry with backoff.
  const renewal = new Renewal(tokens, () => {
    tokens.fetch().then((fresh) => {
      if (closed || !socket) return;
      request("auth", { token: fresh }).then(() => renewal.schedule(), (error) => {
        if (!closed && socket && error.code !== "superseded") loop.restart();
      });
    }, () => {});
  });

  /** The server ended the stream at the token's expiry. */
  const expired = () => {
    renewal.cancel();
    if (tokens.renewable) {
      tokens.markStale();
      loop.restart();
      return;
    }
    end(new HeraldError("token expired", { code: "token_expired" }));
  };

  /** The topic list after a subscribe/unsubscribe: the server's, when its reply has it. */
  const adopt = (reply, fallback) => {
    const listed = Array.isArray(reply?.topics) ? topicList(reply.topics) : null;
    topics = listed && listed.length ? listed : fallback;
  };

  const handle = {
    events$: events.asObservable(),
    state$,

    /** Adds topics (kept for reconnections); resolves with the server's reply. */
    async subscribe(more) {
      const names = topicList(more);
      const reply = await request("subscribe", { topics: names });
      adopt(reply, [...new Set([...topics, ...names])]);
      return reply;
    },

    /** Removes topics; resolves with the server's reply. */
    async unsubscribe(fewer) {
      const names = topicList(fewer);
      const reply = await request("unsubscribe", { topics: names });
      adopt(reply, topics.filter((t) => !names.includes(t)));
      return reply;
    },

    /** Marks notifications read: ids (one or several) or "all". */
    markRead(ids) {
      if (ids === "all") return request("read", { all: true });
      const list = (Array.isArray(ids) ? ids : [ids]).filter((id) => id != null).map(String);
      return request("read", { ids: list });
    },

    /** The topics the next (re)connection asks for. */
    get topics() {
      return [...topics];
    },

    /** Closes the socket for good: no reconnection, pending requests rejected. */
    close() {
      end(null);
    },
  };

  /** Stops for good; `events$` completes, or errors with `error`. */
  function end(error) {
    if (closed) return;
    closed = true;
    renewal.cancel();
    loop.stop();
    for (const [ref, entry] of pending) {
      pending.delete(ref);
      clearTimeout(entry.timer);
      entry.reject(new HeraldError("the stream is closed", { code: "closed" }));
    }
    if (error) events.error(error);
    else events.complete();
    state$.complete();
  }

  loop.start();
  return handle;
}
