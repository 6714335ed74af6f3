// Test doubles for the browser APIs the client uses: EventSource, WebSocket, Storage.

/** A minimal EventTarget with the listener calls the client makes. */
class Target {
  constructor() {
    this.listeners = new Map();
  }

  addEventListener(type, listener) {
    if (!this.listeners.has(type)) this.listeners.set(type, new Set());
    this.listeners.get(type).add(listener);
  }

  removeEventListener(type, listener) {
    this.listeners.get(type)?.delete(listener);
  }

  dispatch(type, event = {}) {
    const full = { type, ...event };
    for (const listener of [...(this.listeners.get(type) ?? [])]) listener(full);
  }

  listening(type) {
    return (this.listeners.get(type)?.size ?? 0) > 0;
  }
}

/** A fresh EventSource class whose instances are recorded in `.instances`. */
export function fakeEventSource() {
  class FakeEventSource extends Target {
    static instances = [];

    static get last() {
      return FakeEventSource.instances.at(-1);
    }

    constructor(url) {
      super();
      this.url = url;
      this.readyState = 0;
      this.closed = false;
      FakeEventSource.instances.push(this);
    }

    close() {
      this.closed = true;
      this.readyState = 2;
    }

    open() {
      this.readyState = 1;
      this.dispatch("open");
    }

    fail() {
      this.readyState = 0; // as a browser does before retrying on its own
      this.dispatch("error");
    }

    /** The server answered other than 200 (a 401, say): the browser gives up. */
    refuse() {
      this.readyState = 2;
      this.dispatch("error");
    }

    /** An SSE message: `event: type`, `id: id`, `data: JSON(data)`. */
    emit(type, data, id) {
      this.dispatch(type, {
        data: typeof data === "string" ? data : JSON.stringify(data),
        lastEventId: id ?? "",
      });
    }

    /**
     * A Herald event, sent as the server does: named by its type (`event: type`),
     * unless the URL asked for unnamed events (`named=0`), which EventSource delivers
     * as `message`. Either way only the listeners of that name receive it.
     */
    event(id, type, data, topic = "user:alice") {
      const name = new URL(this.url).searchParams.get("named") === "0" ? "message" : type;
      this.emit(name, { id, ts: 1700000000000, topic, type, data }, id);
    }
  }
  return FakeEventSource;
}

/** A fresh WebSocket class whose instances are recorded in `.instances`. */
export function fakeWebSocket() {
  class FakeWebSocket extends Target {
    static instances = [];

    static get last() {
      return FakeWebSocket.instances.at(-1);
    }

    constructor(url) {
      super();
      this.url = url;
      this.readyState = 0;
      this.sent = [];
      this.closed = false;
      FakeWebSocket.instances.push(this);
    }

    send(text) {
      if (this.readyState !== 1) throw new Error("InvalidStateError: not open");
      this.sent.push(JSON.parse(text));
    }

    close(code = 1000) {
      this.closed = true;
      this.closeCode = code;
      this.readyState = 3;
    }

    open() {
      this.readyState = 1;
      this.dispatch("open");
    }

    /** The server went away: error then close, as browsers report it. */
    drop(code = 1006) {
      this.readyState = 3;
      this.dispatch("error");
      this.dispatch("close", { code, reason: "", wasClean: false });
    }

    /** The server closed cleanly with `code` (no error event). */
    closedByServer(code, reason = "") {
      this.readyState = 3;
      this.dispatch("close", { code, reason, wasClean: true });
    }

    /** A message from the server. */
    receive(message) {
      this.dispatch("message", { data: JSON.stringify(message) });
    }

    /** The last request sent, parsed. */
    get lastSent() {
      return this.sent.at(-1);
    }
  }
  return FakeWebSocket;
}

/** A Storage whose contents are in `.items`. */
export class MemoryStorage {
  constructor(items = {}) {
    this.items = new Map(Object.entries(items));
  }

  getItem(key) {
    return this.items.has(key) ? this.items.get(key) : null;
  }

  setItem(key, value) {
    this.items.set(key, String(value));
  }

  removeItem(key) {
    this.items.delete(key);
  }
}

/** Collects what an Observable emits. */
export function collect(observable) {
  const values = [];
  const subscription = observable.subscribe((value) => values.push(value));
  return { values, subscription };
}

/** Lets pending promise callbacks run. */
export function flush() {
  return new Promise((resolve) => setImmediate(resolve));
}

/** No jitter, so delays are exact: 500, 1000, 2000, ... */
export const EXACT = { initial: 500, max: 30_000, factor: 2, jitter: 0 };

/** An unsigned JWT-shaped token `{sub, iat, exp, n}` (the client never verifies). */
export function fakeToken({ iat = Math.floor(Date.now() / 1000), ttl = 60, sub = "alice", n = 0 } = {}) {
  const part = (value) => Buffer.from(JSON.stringify(value)).toString("base64url");
  return `${part({ alg: "HS256", typ: "JWT" })}.${part({ sub, iat, exp: iat + ttl, n })}.sig`;
}

/** A token function handing out fresh tokens of `ttl` s; `.calls` counts its calls. */
export function tokenProvider(ttl = 60) {
  const provide = async () => {
    provide.calls += 1;
    provide.last = fakeToken({ ttl, n: provide.calls });
    return provide.last;
  };
  provide.calls = 0;
  provide.last = null;
  return provide;
}
