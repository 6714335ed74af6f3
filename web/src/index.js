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

import { BehaviorSubject, Observable, Subject, share } from "rxjs";

/** SSE named events only reach listeners added for their type: these are listened to. */
export const DEFAULT_TYPES = Object.freeze([
  "notification",
  "notification.read",
  "job.queued",
  "job.started",
  "job.progress",
  "job.succeeded",
  "job.failed",
  "job.retrying",
  "reset",
  "message",
]);

/** 0.5 s, doubling, at most 30 s, ±20 % jitter. */
export const DEFAULT_BACKOFF = Object.freeze({
  initial: 500,
  max: 30_000,
  factor: 2,
  jitter: 0.2,
});

/** Milliseconds a WebSocket request waits for its reply. */
export const REQUEST_TIMEOUT = 10_000;

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
 * `${base}${path}?topics=a,b&token=...&last_event_id=...`: `topics` is left out when
 * empty, and so are `token` and `last_event_id` when not given.
 */
export function buildUrl(base, path, { topics = [], token, lastEventId } = {}) {
  const params = [];
  const names = topicList(topics);
  if (names.length) params.push(`topics=${names.map(encodeURIComponent).join(",")}`);
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

// ---------------------------------------------------------------------------------------
// Server-Sent Events

/**
 * Herald events from `${url}/events` over EventSource, as an Observable with a `state$`.
 *
 * Subscribing connects (one EventSource shared by every subscriber); unsubscribing the
 * last subscriber closes it and cancels any pending reconnection.
 */
export function eventStream(url, options = {}) {
  const {
    topics = [],
    token,
    lastEventId,
    storage = defaultStorage(),
    EventSourceImpl = globalThis.EventSource,
    backoff,
    types = DEFAULT_TYPES,
  } = options;
  const names = topicList(topics);
  const kept = memory(storage, storageKey(url, names));
  const listened = [...new Set(["message", ...types])].filter(
    (t) => t !== "resumed" && t !== "ready");
  const state$ = new BehaviorSubject({ status: "closed" });
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

    const loop = new Reconnector({
      backoff,
      state$,
      connect: ({ opened, failed, live }) => {
        const source = new EventSourceImpl(
          buildUrl(url, "/events", { topics: names, token, lastEventId: lastId }));
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
        const onError = (event) => {
          // a Herald event named "error" would arrive here as a MessageEvent: not a failure
          if (typeof event?.data === "string") return;
          failed();
        };
        source.addEventListener("open", opened);
        source.addEventListener("error", onError);
        source.addEventListener("resumed", onResumed);
        source.addEventListener("ready", onReady);
        for (const type of listened) source.addEventListener(type, onEvent);
        return () => {
          source.removeEventListener?.("open", opened);
          source.removeEventListener?.("error", onError);
          source.removeEventListener?.("resumed", onResumed);
          source.removeEventListener?.("ready", onReady);
          for (const type of listened) source.removeEventListener?.(type, onEvent);
          source.close();
        };
      },
    });
    loop.start();
    return () => loop.stop();
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

  const loop = new Reconnector({
    backoff,
    state$,
    connect: ({ opened, failed, live }) => {
      const ws = new WebSocketImpl(
        buildUrl(wsBase, "/ws", { topics, token, lastEventId: lastId }));
      const onOpen = () => {
        if (!live()) return;
        socket = ws;
        opened();
        // requests made while disconnected, or unanswered by the previous socket
        for (const entry of pending.values()) transmit(entry);
      };
      const onMessage = (message) => {
        if (live() && typeof message.data === "string") receive(message.data);
      };
      const onClose = () => {
        if (socket === ws) socket = null;
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
    },
  });

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
      if (closed) return;
      closed = true;
      loop.stop();
      for (const [ref, entry] of pending) {
        pending.delete(ref);
        clearTimeout(entry.timer);
        entry.reject(new HeraldError("the stream is closed", { code: "closed" }));
      }
      events.complete();
      state$.complete();
    },
  };

  loop.start();
  return handle;
}
