import assert from "node:assert/strict";
import { test } from "node:test";

import { HeraldError, storageKey, webSocketStream } from "../src/index.js";
import { collect, EXACT, fakeWebSocket, flush, MemoryStorage } from "../testing/fakes.mjs";

const URL = "http://127.0.0.1:8001";

function connect(options = {}) {
  const WebSocketImpl = fakeWebSocket();
  const storage = options.storage ?? new MemoryStorage();
  const stream = webSocketStream(options.url ?? URL, {
    topics: ["user:alice"], token: "tok", storage, WebSocketImpl, backoff: EXACT, ...options,
  });
  const events = collect(stream.events$);
  const states = collect(stream.state$);
  return { stream, WebSocketImpl, storage, events, states };
}

/** The outcome of a promise, without waiting for it to settle. */
function track(promise) {
  const outcome = { settled: false };
  promise.then(
    (value) => Object.assign(outcome, { settled: true, value }),
    (error) => Object.assign(outcome, { settled: true, error }),
  );
  return outcome;
}

test("maps http to ws and builds /ws with topics and token", () => {
  const { WebSocketImpl, stream } = connect();
  assert.equal(WebSocketImpl.last.url, "ws://127.0.0.1:8001/ws?topics=user%3Aalice&token=tok");
  stream.close();
});

test("maps https to wss", () => {
  const { WebSocketImpl, stream } = connect({ url: "https://push.example.com/", topics: [] });
  assert.equal(WebSocketImpl.last.url, "wss://push.example.com/ws?token=tok");
  stream.close();
});

test("emits event envelopes and keeps the last id", () => {
  const { WebSocketImpl, stream, events, storage } = connect();
  const ws = WebSocketImpl.last;
  ws.open();
  const envelope = { id: "7-1", ts: 7, topic: "user:alice", type: "notification",
    data: { id: "n_1", title: "Hi" } };
  ws.receive(envelope);
  ws.receive({ reply: "ping", ref: "99", ok: true }); // unknown ref: ignored
  assert.deepEqual(events.values, [envelope]);
  assert.equal(storage.getItem(storageKey(URL, ["user:alice"])), "7-1");
  stream.close();
});

test("replies are matched to their requests by ref", async () => {
  const { WebSocketImpl, stream } = connect();
  const ws = WebSocketImpl.last;
  ws.open();
  const subscribed = track(stream.subscribe(["room:1"]));
  const read = track(stream.markRead(["n_1", "n_2"]));
  const all = track(stream.markRead("all"));
  assert.deepEqual(ws.sent, [
    { op: "subscribe", ref: "1", topics: ["room:1"] },
    { op: "read", ref: "2", ids: ["n_1", "n_2"] },
    { op: "read", ref: "3", all: true },
  ]);
  // answered out of order
  ws.receive({ reply: "read", ref: "3", ok: true, marked: 5, unread: 0 });
  ws.receive({ reply: "subscribe", ref: "1", ok: true, topics: ["user:alice", "room:1"] });
  await flush();
  assert.deepEqual(all.value, { reply: "read", ref: "3", ok: true, marked: 5, unread: 0 });
  assert.equal(subscribed.value.reply, "subscribe");
  assert.equal(read.settled, false);
  ws.receive({ reply: "read", ref: "2", ok: true, marked: 2, unread: 3 });
  await flush();
  assert.equal(read.value.unread, 3);
  assert.deepEqual(stream.topics, ["user:alice", "room:1"]);
  stream.close();
});

test("an error reply rejects with its code, message and field", async () => {
  const { WebSocketImpl, stream } = connect();
  const ws = WebSocketImpl.last;
  ws.open();
  const promise = stream.subscribe("secret:1");
  ws.receive({ reply: "subscribe", ref: ws.lastSent.ref, ok: false,
    error: { code: "forbidden", message: "topics: secret:1 is not granted", field: "topics" } });
  await assert.rejects(promise, (error) => {
    assert.ok(error instanceof HeraldError);
    assert.equal(error.code, "forbidden");
    assert.equal(error.field, "topics");
    assert.equal(error.message, "topics: secret:1 is not granted");
    return true;
  });
  assert.deepEqual(stream.topics, ["user:alice"], "a refused topic is not kept");
  stream.close();
});

test("a request without a reply times out after 10 s", async (t) => {
  t.mock.timers.enable({ apis: ["setTimeout"] });
  const { WebSocketImpl, stream } = connect();
  WebSocketImpl.last.open();
  const outcome = track(stream.unsubscribe(["user:alice"]));
  t.mock.timers.tick(9_999);
  await flush();
  assert.equal(outcome.settled, false);
  t.mock.timers.tick(1);
  await flush();
  assert.equal(outcome.error?.code, "timeout");
  stream.close();
});

test("requests made before the socket opens are sent once it does", async () => {
  const { WebSocketImpl, stream } = connect();
  const ws = WebSocketImpl.last;
  const outcome = track(stream.markRead("n_9"));
  assert.deepEqual(ws.sent, []);
  ws.open();
  assert.deepEqual(ws.sent, [{ op: "read", ref: "1", ids: ["n_9"] }]);
  ws.receive({ reply: "read", ref: "1", ok: true, marked: 1, unread: 0 });
  await flush();
  assert.equal(outcome.value.marked, 1);
  stream.close();
});

test("reconnects with the last id and the current topics, after a doubling backoff",
  async (t) => {
    t.mock.timers.enable({ apis: ["setTimeout"] });
    const { WebSocketImpl, stream, states } = connect();
    const first = WebSocketImpl.last;
    first.open();
    const subscribed = stream.subscribe(["room:1", "room:2"]);
    first.receive({ reply: "subscribe", ref: "1", ok: true });
    await subscribed;
    const unsubscribed = stream.unsubscribe("room:2");
    first.receive({ reply: "unsubscribe", ref: "2", ok: true });
    await unsubscribed;
    first.receive({ id: "50-2", ts: 50, topic: "room:1", type: "message", data: {} });

    first.drop();
    assert.ok(first.closed);
    t.mock.timers.tick(499);
    assert.equal(WebSocketImpl.instances.length, 1);
    t.mock.timers.tick(1);
    assert.equal(WebSocketImpl.instances.length, 2);
    assert.equal(WebSocketImpl.last.url,
      "ws://127.0.0.1:8001/ws?topics=user%3Aalice,room%3A1&token=tok&last_event_id=50-2");

    WebSocketImpl.last.drop();
    t.mock.timers.tick(999);
    assert.equal(WebSocketImpl.instances.length, 2);
    t.mock.timers.tick(1);
    assert.equal(WebSocketImpl.instances.length, 3);
    WebSocketImpl.last.open();
    WebSocketImpl.last.drop();
    t.mock.timers.tick(500);
    assert.equal(WebSocketImpl.instances.length, 4, "backoff starts again after an open");
    assert.deepEqual(states.values.filter((s) => s.status === "reconnecting").map((s) => s.delay),
      [500, 1000, 500]);
    stream.close();
  });

test("a request unanswered when the socket drops is sent again after reconnecting",
  async (t) => {
    t.mock.timers.enable({ apis: ["setTimeout"] });
    const { WebSocketImpl, stream } = connect();
    WebSocketImpl.last.open();
    const outcome = track(stream.subscribe("room:7"));
    assert.equal(WebSocketImpl.last.sent.length, 1);
    WebSocketImpl.last.drop();
    t.mock.timers.tick(500);
    const second = WebSocketImpl.last;
    second.open();
    assert.deepEqual(second.sent, [{ op: "subscribe", ref: "1", topics: ["room:7"] }]);
    second.receive({ reply: "subscribe", ref: "1", ok: true });
    await flush();
    assert.equal(outcome.value.ok, true);
    assert.deepEqual(stream.topics, ["user:alice", "room:7"]);
    stream.close();
  });

test("a reload resumes from the stored id, keyed by the initial topics", () => {
  const storage = new MemoryStorage();
  const before = connect({ storage });
  before.WebSocketImpl.last.open();
  before.WebSocketImpl.last.receive({ id: "77-0", ts: 77, topic: "user:alice",
    type: "notification", data: {} });
  before.stream.close();
  const after = connect({ storage });
  assert.match(after.WebSocketImpl.last.url, /&last_event_id=77-0$/);
  after.stream.close();
});

test("state$: resumed and reset", () => {
  const { WebSocketImpl, stream, states, events } = connect({ lastEventId: "3-0" });
  const ws = WebSocketImpl.last;
  assert.match(ws.url, /last_event_id=3-0/);
  ws.open();
  ws.receive({ reply: "resumed", replayed: 4, from: "3-0" });
  ws.receive({ id: "800-0", ts: 1, topic: null, type: "reset",
    data: { reason: "more than 1000 events were missed on user:alice", last_event_id: "3-0" } });
  assert.deepEqual(states.values, [
    { status: "connecting" },
    { status: "open" },
    { status: "open", resumed: 4 },
    { status: "open", reset: "more than 1000 events were missed on user:alice" },
  ]);
  assert.deepEqual(events.values.map((e) => e.type), ["reset"]);
  stream.close();
  assert.deepEqual(states.values.at(-1), { status: "closed" });
});

test("close() closes the socket, stops reconnecting and rejects pending requests",
  async (t) => {
    t.mock.timers.enable({ apis: ["setTimeout"] });
    const { WebSocketImpl, stream } = connect();
    const ws = WebSocketImpl.last;
    ws.open();
    const pending = stream.markRead("all");
    let completed = false;
    stream.events$.subscribe({ complete: () => { completed = true; } });
    stream.close();
    assert.ok(ws.closed);
    await assert.rejects(pending, (error) => error.code === "closed");
    await assert.rejects(stream.subscribe("x"), (error) => error.code === "closed");
    assert.ok(completed);
    ws.drop(); // a late close event from the old socket
    t.mock.timers.tick(60_000);
    assert.equal(WebSocketImpl.instances.length, 1);
  });

test("close() during the backoff cancels the reconnection", (t) => {
  t.mock.timers.enable({ apis: ["setTimeout"] });
  const { WebSocketImpl, stream } = connect();
  WebSocketImpl.last.drop();
  stream.close();
  t.mock.timers.tick(60_000);
  assert.equal(WebSocketImpl.instances.length, 1);
});

test("the topic list follows the server's reply when it gives one", async () => {
  const { WebSocketImpl, stream } = connect({ topics: [] });
  const ws = WebSocketImpl.last;
  ws.open();
  const subscribed = stream.subscribe("room:1");
  ws.receive({ reply: "subscribe", ref: "1", ok: true, topics: ["user:alice", "room:1"] });
  await subscribed;
  assert.deepEqual(stream.topics, ["user:alice", "room:1"]);
  const unsubscribed = stream.unsubscribe("user:alice");
  ws.receive({ reply: "unsubscribe", ref: "2", ok: true, topics: ["room:1"] });
  await unsubscribed;
  assert.deepEqual(stream.topics, ["room:1"]);
  stream.close();
});

test("a resumed reply carries ok but no ref, and only moves state$", () => {
  const { WebSocketImpl, stream, states, events } = connect({ lastEventId: "1-0" });
  WebSocketImpl.last.open();
  WebSocketImpl.last.receive({ reply: "resumed", ok: true, replayed: 0, from: "1-0" });
  assert.deepEqual(states.values.at(-1), { status: "open", resumed: 0 });
  assert.equal(events.values.length, 0);
  stream.close();
});

test("a ready reply sets the position to resume from, and is no event", () => {
  const { stream, WebSocketImpl, storage, events } = connect();
  const socket = WebSocketImpl.last;
  socket.open();
  socket.receive({ reply: "ready", ok: true, position: "42-7" });
  assert.deepEqual(events.values, []);
  assert.equal(storage.getItem(storageKey(URL, ["user:alice"])), "42-7");
  stream.close();
});
