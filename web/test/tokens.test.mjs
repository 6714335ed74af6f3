// Tokens that expire: a token function, renewal before expiry, the server's
// token-expired, and resuming from the last id on both transports.
import assert from "node:assert/strict";
import { test } from "node:test";

import { eventStream, renewDelay, tokenClaims, webSocketStream } from "../src/index.js";
import {
  collect, EXACT, fakeEventSource, fakeToken, fakeWebSocket, flush, MemoryStorage,
  tokenProvider,
} from "../testing/fakes.mjs";

const URL = "http://127.0.0.1:8001";
const T0 = 1_800_000_000_000; // a whole second, so iat is exact

function clock(t) {
  t.mock.timers.enable({ apis: ["setTimeout", "Date"], now: T0 });
}

function tokenOf(url) {
  return new globalThis.URL(url).searchParams.get("token");
}

function lastIdOf(url) {
  return new globalThis.URL(url).searchParams.get("last_event_id");
}

// ---------------------------------------------------------------------------------------
// Helpers

test("tokenClaims reads a JWT's payload without verifying it; null for anything else", () => {
  const token = fakeToken({ iat: 100, ttl: 5, sub: "zoë" });
  assert.deepEqual(tokenClaims(token), { sub: "zoë", iat: 100, exp: 105, n: 0 });
  assert.equal(tokenClaims("not a token"), null);
  assert.equal(tokenClaims("a.!!!.c"), null);
  assert.equal(tokenClaims(undefined), null);
});

test("renewDelay: min(30 s, 10 %) ahead of a lifetime counted from receipt", () => {
  const at = (ttl) => fakeToken({ iat: T0 / 1000, ttl });
  // 5 s: expires (at the latest) 4 s after receipt (iat is rounded down), renewed 0.5 s before
  assert.equal(renewDelay(at(5), T0, T0), 3500);
  assert.equal(renewDelay(at(3600), T0, T0), 3_569_000); // 30 s ahead at most
  assert.equal(renewDelay(at(3600), T0, T0 + 3_000_000), 569_000);
  assert.equal(renewDelay(at(1), T0, T0), 500, "never sooner than half the lifetime");
  assert.equal(renewDelay(at(60), T0 + 7_000, T0 + 7_000), 53_000,
    "the browser's clock does not matter, only the token's lifetime");
  assert.equal(renewDelay(at(60), T0, T0 + 100_000), 0, "overdue");
  assert.equal(renewDelay("opaque", T0, T0), null);
});

// ---------------------------------------------------------------------------------------
// Server-Sent Events

function sse(t, options = {}) {
  clock(t);
  const EventSourceImpl = fakeEventSource();
  const provide = tokenProvider(options.ttl ?? 60);
  const stream = eventStream(URL, {
    topics: ["user:alice"], token: provide, storage: new MemoryStorage(), EventSourceImpl,
    backoff: EXACT, ...options,
  });
  const events = collect(stream);
  const states = collect(stream.state$);
  return { stream, EventSourceImpl, provide, events, states };
}

test("SSE: a token function is called before connecting, and its token used", async (t) => {
  const { EventSourceImpl, provide, events } = sse(t);
  assert.equal(EventSourceImpl.instances.length, 0, "not before the token came");
  await flush();
  assert.equal(provide.calls, 1);
  assert.equal(tokenOf(EventSourceImpl.last.url), provide.last);
  events.subscription.unsubscribe();
});

test("SSE: renews before expiry and resumes from the last id, no gap, no duplicate",
  async (t) => {
    const { EventSourceImpl, provide, events } = sse(t);
    await flush();
    const first = EventSourceImpl.last;
    first.open();
    first.event("10-0", "message", { n: 1 });
    t.mock.timers.tick(52_999); // 60 s token: 59 s at the latest, renewed 6 s ahead
    await flush();
    assert.equal(provide.calls, 1);
    t.mock.timers.tick(1);
    await flush();
    assert.equal(provide.calls, 2);
    assert.ok(first.closed, "the old EventSource is closed before the new one opens");
    const second = EventSourceImpl.last;
    assert.equal(EventSourceImpl.instances.length, 2);
    assert.equal(tokenOf(second.url), provide.last);
    assert.equal(lastIdOf(second.url), "10-0");
    first.event("11-0", "message", { n: 2 }); // too late: the old one is closed
    second.open();
    second.event("11-0", "message", { n: 2 });
    assert.deepEqual(events.values.map((e) => e.id), ["10-0", "11-0"]);

    t.mock.timers.tick(53_000); // and again for the new token
    await flush();
    assert.equal(provide.calls, 3);
    assert.equal(lastIdOf(EventSourceImpl.last.url), "11-0");
    events.subscription.unsubscribe();
  });

test("SSE: token-expired brings a fresh token and an immediate resume; it is no event",
  async (t) => {
    const { EventSourceImpl, provide, events, states } = sse(t);
    await flush();
    const first = EventSourceImpl.last;
    first.open();
    first.emit("ready", { position: "5-0" }, "5-0");
    first.event("6-0", "message", {});
    first.emit("token-expired", { exp: T0 / 1000 + 60 }); // no id: the position stays
    first.fail(); // the server closes right after
    await flush();
    assert.ok(first.closed);
    assert.equal(provide.calls, 2);
    assert.equal(EventSourceImpl.instances.length, 2, "at once, without a backoff");
    assert.equal(lastIdOf(EventSourceImpl.last.url), "6-0");
    assert.deepEqual(events.values.map((e) => e.type), ["message"]);
    assert.ok(!states.values.some((s) => s.status === "reconnecting"));
    t.mock.timers.tick(60_000);
    assert.equal(EventSourceImpl.instances.length, 2, "the old one's error was ignored");
    events.subscription.unsubscribe();
  });

test("SSE: a refused connection gets a fresh token next time; a network failure does not",
  async (t) => {
    const { EventSourceImpl, provide, events } = sse(t);
    await flush();
    EventSourceImpl.last.fail(); // network: the browser would retry, the token is fine
    t.mock.timers.tick(500);
    await flush();
    assert.equal(provide.calls, 1);
    assert.equal(EventSourceImpl.instances.length, 2);
    EventSourceImpl.last.refuse(); // an HTTP error such as 401
    t.mock.timers.tick(1000);
    await flush();
    assert.equal(provide.calls, 2);
    assert.equal(tokenOf(EventSourceImpl.last.url), provide.last);
    events.subscription.unsubscribe();
  });

test("SSE: a failing token function is retried with the backoff", async (t) => {
  clock(t);
  const EventSourceImpl = fakeEventSource();
  let calls = 0;
  const stream = eventStream(URL, {
    token: () => {
      calls += 1;
      if (calls < 3) throw new Error("backend down");
      return fakeToken();
    },
    storage: null, EventSourceImpl, backoff: EXACT,
  });
  const events = collect(stream);
  const states = collect(stream.state$);
  await flush();
  t.mock.timers.tick(500);
  await flush();
  t.mock.timers.tick(1000);
  await flush();
  assert.equal(calls, 3);
  assert.equal(EventSourceImpl.instances.length, 1);
  assert.deepEqual(states.values.filter((s) => s.status === "reconnecting").map((s) => s.delay),
    [500, 1000]);
  events.subscription.unsubscribe();
});

test("SSE: with a string token, token-expired ends the stream with an error", (t) => {
  clock(t);
  const EventSourceImpl = fakeEventSource();
  const stream = eventStream(URL, { token: fakeToken(), storage: null, EventSourceImpl,
    backoff: EXACT });
  let error = null;
  stream.subscribe({ error: (e) => { error = e; } });
  const source = EventSourceImpl.last;
  source.open();
  source.emit("token-expired", { exp: 1 });
  assert.equal(error?.code, "token_expired");
  assert.ok(source.closed);
  assert.equal(stream.state$.value.status, "closed");
  t.mock.timers.tick(60_000);
  assert.equal(EventSourceImpl.instances.length, 1, "no reconnection with a dead token");
});

// ---------------------------------------------------------------------------------------
// WebSocket

function ws(t, options = {}) {
  clock(t);
  const WebSocketImpl = fakeWebSocket();
  const provide = tokenProvider(options.ttl ?? 60);
  const stream = webSocketStream(URL, {
    topics: ["user:alice"], token: provide, storage: new MemoryStorage(), WebSocketImpl,
    backoff: EXACT, ...options,
  });
  const events = collect(stream.events$);
  return { stream, WebSocketImpl, provide, events };
}

test("WebSocket: renews in band with auth before expiry, on the same socket", async (t) => {
  const { stream, WebSocketImpl, provide, events } = ws(t);
  await flush();
  const socket = WebSocketImpl.last;
  assert.equal(tokenOf(socket.url), provide.last);
  socket.open();
  socket.receive({ id: "1-0", ts: 1, topic: "user:alice", type: "message", data: {} });
  t.mock.timers.tick(53_000);
  await flush();
  assert.equal(provide.calls, 2);
  assert.deepEqual(socket.lastSent, { op: "auth", ref: "1", token: provide.last });
  socket.receive({ reply: "auth", ref: "1", ok: true, exp: T0 / 1000 + 113 });
  await flush();
  socket.receive({ id: "2-0", ts: 2, topic: "user:alice", type: "message", data: {} });
  assert.equal(WebSocketImpl.instances.length, 1, "no reconnection");
  assert.deepEqual(events.values.map((e) => e.id), ["1-0", "2-0"]);
  t.mock.timers.tick(53_000); // the next renewal follows the new token
  await flush();
  assert.equal(provide.calls, 3);
  assert.equal(socket.lastSent.op, "auth");
  stream.close();
});

test("WebSocket: a refused auth reconnects with the fresh token from the last id",
  async (t) => {
    const { stream, WebSocketImpl, provide } = ws(t);
    await flush();
    const socket = WebSocketImpl.last;
    socket.open();
    socket.receive({ id: "7-0", ts: 7, topic: "user:alice", type: "message", data: {} });
    t.mock.timers.tick(53_000);
    await flush();
    socket.receive({ reply: "auth", ref: socket.lastSent.ref, ok: false,
      error: { code: "forbidden", message: "no", field: "token" } });
    await flush();
    assert.ok(socket.closed);
    assert.equal(WebSocketImpl.instances.length, 2);
    assert.equal(tokenOf(WebSocketImpl.last.url), provide.last);
    assert.equal(lastIdOf(WebSocketImpl.last.url), "7-0");
    stream.close();
  });

test("WebSocket: token-expired reconnects at once with a fresh token from the last id",
  async (t) => {
    const { stream, WebSocketImpl, provide, events } = ws(t);
    await flush();
    const socket = WebSocketImpl.last;
    socket.open();
    socket.receive({ reply: "ready", ok: true, position: "3-0" });
    socket.receive({ id: "4-0", ts: 4, topic: "user:alice", type: "message", data: {} });
    socket.receive({ reply: "token-expired", ok: true, exp: T0 / 1000 + 60 });
    socket.closedByServer(4001, "token expired");
    await flush();
    assert.equal(provide.calls, 2);
    assert.equal(WebSocketImpl.instances.length, 2);
    assert.equal(lastIdOf(WebSocketImpl.last.url), "4-0");
    assert.equal(tokenOf(WebSocketImpl.last.url), provide.last);
    assert.deepEqual(events.values.map((e) => e.id), ["4-0"]);
    stream.close();
  });

test("WebSocket: close code 4001 alone is taken as token-expired", async (t) => {
  const { stream, WebSocketImpl, provide } = ws(t);
  await flush();
  WebSocketImpl.last.open();
  WebSocketImpl.last.closedByServer(4001, "token expired");
  await flush();
  assert.equal(provide.calls, 2);
  assert.equal(WebSocketImpl.instances.length, 2, "at once, without a backoff");
  stream.close();
});

test("WebSocket: a failed handshake gets a fresh token for the next attempt", async (t) => {
  const { stream, WebSocketImpl, provide } = ws(t);
  await flush();
  WebSocketImpl.last.drop(); // the browser does not say whether it was a 401
  t.mock.timers.tick(500);
  await flush();
  assert.equal(provide.calls, 2);
  assert.equal(tokenOf(WebSocketImpl.last.url), provide.last);
  WebSocketImpl.last.open();
  WebSocketImpl.last.drop(); // once open, a drop is the network: the token is kept
  t.mock.timers.tick(500);
  await flush();
  assert.equal(provide.calls, 2);
  stream.close();
});

test("WebSocket: an auth in flight is not sent again on a new connection", async (t) => {
  const { stream, WebSocketImpl, provide } = ws(t);
  await flush();
  WebSocketImpl.last.open();
  t.mock.timers.tick(53_000);
  await flush();
  assert.equal(WebSocketImpl.last.lastSent.op, "auth");
  WebSocketImpl.last.drop();
  t.mock.timers.tick(500);
  await flush();
  const second = WebSocketImpl.last;
  assert.equal(tokenOf(second.url), provide.last, "the new connection has the new token");
  second.open();
  await flush();
  assert.deepEqual(second.sent, []);
  assert.equal(WebSocketImpl.instances.length, 2);
  stream.close();
});

test("WebSocket: with a string token, token-expired ends events$ with an error", (t) => {
  clock(t);
  const WebSocketImpl = fakeWebSocket();
  const stream = webSocketStream(URL, { token: fakeToken(), storage: null, WebSocketImpl,
    backoff: EXACT });
  let error = null;
  stream.events$.subscribe({ error: (e) => { error = e; } });
  WebSocketImpl.last.open();
  WebSocketImpl.last.receive({ reply: "token-expired", ok: true, exp: 1 });
  assert.equal(error?.code, "token_expired");
  t.mock.timers.tick(60_000);
  assert.equal(WebSocketImpl.instances.length, 1);
});
