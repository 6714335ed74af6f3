import assert from "node:assert/strict";
import { test } from "node:test";

import { eventStream, storageKey } from "../src/index.js";
import { collect, EXACT, fakeEventSource, MemoryStorage } from "../testing/fakes.mjs";

const URL = "http://127.0.0.1:8001";

function open(options = {}) {
  const EventSourceImpl = fakeEventSource();
  const storage = options.storage ?? new MemoryStorage();
  const stream = eventStream(URL, {
    topics: ["user:alice"], token: "tok", storage, EventSourceImpl, backoff: EXACT, ...options,
  });
  const states = collect(stream.state$);
  const events = collect(stream);
  return { stream, EventSourceImpl, storage, events, states };
}

test("connects to /events with topics and token, no last_event_id at first", () => {
  const { EventSourceImpl, events } = open({ topics: ["user:alice", "broadcast"] });
  assert.equal(EventSourceImpl.instances.length, 1);
  assert.equal(EventSourceImpl.last.url,
    `${URL}/events?topics=user%3Aalice,broadcast&named=0&token=tok`);
  events.subscription.unsubscribe();
});

test("leaves topics out when there are none", () => {
  const { EventSourceImpl, events } = open({ topics: [] });
  assert.equal(EventSourceImpl.last.url, `${URL}/events?named=0&token=tok`);
  events.subscription.unsubscribe();
});

test("does not connect before a subscription", () => {
  const EventSourceImpl = fakeEventSource();
  const stream = eventStream(URL, { EventSourceImpl, storage: null });
  assert.equal(EventSourceImpl.instances.length, 0);
  assert.deepEqual(stream.state$.value, { status: "closed" });
});

test("every event reaches the stream, whatever its type (chat.message too)", () => {
  const { EventSourceImpl, events } = open();
  const source = EventSourceImpl.last;
  source.open();
  source.event("1-0", "notification", { id: "n_1", title: "Hi", body: "there" });
  source.event("2-0", "job.progress", { job_id: "j_1", done: 3, total: 10 });
  source.event("3-0", "message", { hello: "world" }, "broadcast");
  source.event("4-0", "chat.message", { text: "yo" }, "room:42");
  source.event("5-0", "Anything_else:v2", 7);
  assert.deepEqual(events.values, [
    { id: "1-0", ts: 1700000000000, topic: "user:alice", type: "notification",
      data: { id: "n_1", title: "Hi", body: "there" } },
    { id: "2-0", ts: 1700000000000, topic: "user:alice", type: "job.progress",
      data: { job_id: "j_1", done: 3, total: 10 } },
    { id: "3-0", ts: 1700000000000, topic: "broadcast", type: "message",
      data: { hello: "world" } },
    { id: "4-0", ts: 1700000000000, topic: "room:42", type: "chat.message",
      data: { text: "yo" } },
    { id: "5-0", ts: 1700000000000, topic: "user:alice", type: "Anything_else:v2", data: 7 },
  ]);
  events.subscription.unsubscribe();
});

test("events are asked for unnamed: the type is read from the envelope", () => {
  const { EventSourceImpl, events } = open();
  const source = EventSourceImpl.last;
  assert.match(source.url, /[?&]named=0(&|$)/);
  assert.ok(source.listening("message"));
  source.open();
  // Published events whose types are the names of the server's own messages are
  // events like any other: they neither end the stream nor move its position.
  source.event("6-0", "token-expired", { exp: 1 });
  source.event("7-0", "resumed", { replayed: 99 });
  source.event("8-0", "ready", { position: "999-0" });
  assert.deepEqual(events.values.map((e) => [e.id, e.type]),
    [["6-0", "token-expired"], ["7-0", "resumed"], ["8-0", "ready"]]);
  assert.equal(source.closed, false, "still open: no token-expired from a published event");
  events.subscription.unsubscribe();
});

test("a message that is not an envelope is wrapped, not dropped", () => {
  const { EventSourceImpl, events } = open();
  EventSourceImpl.last.open();
  EventSourceImpl.last.emit("message", "plain text", "9-1");
  assert.deepEqual(events.values, [
    { id: "9-1", ts: null, topic: null, type: "message", data: "plain text" },
  ]);
  events.subscription.unsubscribe();
});

test("stores the last id and resumes with it after an error", (t) => {
  t.mock.timers.enable({ apis: ["setTimeout"] });
  const { EventSourceImpl, storage, events } = open();
  const first = EventSourceImpl.last;
  first.open();
  first.event("1700000000000-0", "notification", { id: "n_1" });
  first.event("1700000000001-4", "notification", { id: "n_2" });
  const key = storageKey(URL, ["user:alice"]);
  assert.equal(storage.getItem(key), "1700000000001-4");

  first.fail();
  assert.ok(first.closed, "the failed EventSource is closed, not left to retry");
  t.mock.timers.tick(500);
  assert.equal(EventSourceImpl.instances.length, 2);
  assert.equal(EventSourceImpl.last.url,
    `${URL}/events?topics=user%3Aalice&named=0&token=tok&last_event_id=1700000000001-4`);
  events.subscription.unsubscribe();
});

test("a reload (a new stream on the same storage) resumes from the stored id", () => {
  const storage = new MemoryStorage();
  const before = open({ storage });
  before.EventSourceImpl.last.open();
  before.EventSourceImpl.last.event("42-7", "notification", { id: "n_1" });
  before.events.subscription.unsubscribe();

  const after = open({ storage });
  assert.equal(after.EventSourceImpl.last.url,
    `${URL}/events?topics=user%3Aalice&named=0&token=tok&last_event_id=42-7`);
  after.events.subscription.unsubscribe();

  const otherTopics = open({ storage, topics: ["broadcast"] });
  assert.ok(!otherTopics.EventSourceImpl.last.url.includes("last_event_id"),
    "the id is kept per topic set");
  otherTopics.events.subscription.unsubscribe();
});

test("an explicit lastEventId wins over the stored one", () => {
  const storage = new MemoryStorage({ [storageKey(URL, ["user:alice"])]: "1-1" });
  const { EventSourceImpl, events } = open({ storage, lastEventId: "5-5" });
  assert.match(EventSourceImpl.last.url, /last_event_id=5-5$/);
  events.subscription.unsubscribe();
});

test("backoff doubles while connections fail and starts again after an open", (t) => {
  t.mock.timers.enable({ apis: ["setTimeout"] });
  const { EventSourceImpl, events, states } = open();
  const waitFor = (ms) => {
    const before = EventSourceImpl.instances.length;
    t.mock.timers.tick(ms - 1);
    assert.equal(EventSourceImpl.instances.length, before, `not before ${ms} ms`);
    t.mock.timers.tick(1);
    assert.equal(EventSourceImpl.instances.length, before + 1, `after ${ms} ms`);
  };
  EventSourceImpl.last.fail();
  waitFor(500);
  EventSourceImpl.last.fail();
  waitFor(1000);
  EventSourceImpl.last.fail();
  waitFor(2000);
  EventSourceImpl.last.fail();
  waitFor(4000);
  EventSourceImpl.last.open();
  EventSourceImpl.last.fail();
  waitFor(500);
  EventSourceImpl.last.fail();
  waitFor(1000);

  const statuses = states.values.map((s) => s.status);
  assert.deepEqual(statuses.slice(0, 3), ["closed", "connecting", "reconnecting"]);
  assert.ok(statuses.includes("open"));
  assert.deepEqual(states.values.filter((s) => s.status === "reconnecting").map((s) => s.delay),
    [500, 1000, 2000, 4000, 500, 1000]);
  events.subscription.unsubscribe();
});

test("backoff is capped at its max", (t) => {
  t.mock.timers.enable({ apis: ["setTimeout"] });
  const { EventSourceImpl, events, states } = open({
    backoff: { initial: 500, max: 3000, jitter: 0 },
  });
  for (let i = 0; i < 6; i += 1) {
    EventSourceImpl.last.fail();
    t.mock.timers.tick(3000);
  }
  assert.deepEqual(states.values.filter((s) => s.status === "reconnecting").map((s) => s.delay),
    [500, 1000, 2000, 3000, 3000, 3000]);
  events.subscription.unsubscribe();
});

test("repeated errors from one EventSource schedule one reconnection", (t) => {
  t.mock.timers.enable({ apis: ["setTimeout"] });
  const { EventSourceImpl, events } = open();
  EventSourceImpl.last.fail();
  EventSourceImpl.last.fail();
  t.mock.timers.tick(500);
  assert.equal(EventSourceImpl.instances.length, 2);
  t.mock.timers.tick(60_000);
  assert.equal(EventSourceImpl.instances.length, 2);
  events.subscription.unsubscribe();
});

test("unsubscribing closes the EventSource and cancels the pending reconnection", (t) => {
  t.mock.timers.enable({ apis: ["setTimeout"] });
  const { EventSourceImpl, stream, events } = open();
  const first = EventSourceImpl.last;
  first.open();
  events.subscription.unsubscribe();
  assert.ok(first.closed);
  assert.equal(stream.state$.value.status, "closed");

  const again = collect(stream);
  const second = EventSourceImpl.last;
  assert.equal(EventSourceImpl.instances.length, 2);
  second.fail();
  again.subscription.unsubscribe();
  t.mock.timers.tick(60_000);
  assert.equal(EventSourceImpl.instances.length, 2, "no reconnection after unsubscribe");
  assert.ok(second.closed);
});

test("subscribers share one EventSource", () => {
  const { EventSourceImpl, stream, events } = open();
  const other = collect(stream);
  assert.equal(EventSourceImpl.instances.length, 1);
  EventSourceImpl.last.open();
  EventSourceImpl.last.event("1-0", "notification", {});
  assert.equal(events.values.length, 1);
  assert.equal(other.values.length, 1);
  events.subscription.unsubscribe();
  assert.ok(!EventSourceImpl.last.closed, "still one subscriber");
  other.subscription.unsubscribe();
  assert.ok(EventSourceImpl.last.closed);
});

test("state$: connecting, open, resumed with its count", () => {
  const { EventSourceImpl, events, states, storage } = open({ lastEventId: "10-0" });
  const source = EventSourceImpl.last;
  source.open();
  source.emit("resumed", { replayed: 3, from: "10-0" });
  source.event("11-0", "notification", {});
  assert.deepEqual(states.values, [
    { status: "closed" },
    { status: "connecting" },
    { status: "open" },
    { status: "open", resumed: 3 },
  ]);
  assert.deepEqual(events.values.map((e) => e.type), ["notification"], "resumed is no event");
  assert.equal(storage.getItem(storageKey(URL, ["user:alice"])), "11-0",
    "resumed, which has no id, does not move the position");
  events.subscription.unsubscribe();
  assert.deepEqual(states.values.at(-1), { status: "closed" });
});

test("state$: a reset is reported, emitted, and its id kept as the position", (t) => {
  t.mock.timers.enable({ apis: ["setTimeout"] });
  const { EventSourceImpl, events, states } = open({ lastEventId: "1-0" });
  const source = EventSourceImpl.last;
  source.open();
  source.event("900-0", "reset",
    { reason: "history of user:alice no longer reaches back", last_event_id: "1-0" }, null);
  assert.deepEqual(states.values.at(-1),
    { status: "open", reset: "history of user:alice no longer reaches back" });
  assert.equal(events.values[0].type, "reset");
  assert.equal(events.values[0].data.last_event_id, "1-0");
  source.fail();
  t.mock.timers.tick(500);
  assert.match(EventSourceImpl.last.url, /last_event_id=900-0$/);
  events.subscription.unsubscribe();
});

test("works without storage", () => {
  const { EventSourceImpl, events } = open({ storage: null });
  EventSourceImpl.last.open();
  EventSourceImpl.last.event("1-0", "notification", {});
  assert.equal(events.values.length, 1);
  events.subscription.unsubscribe();
});

test("a storage that throws does not break the stream", () => {
  const storage = {
    getItem() { throw new Error("denied"); },
    setItem() { throw new Error("quota"); },
  };
  const { EventSourceImpl, events } = open({ storage });
  EventSourceImpl.last.open();
  EventSourceImpl.last.event("1-0", "notification", {});
  assert.equal(events.values.length, 1);
  events.subscription.unsubscribe();
});

test("errors the Observable when there is no EventSource at all", () => {
  const stream = eventStream(URL, { EventSourceImpl: null, storage: null });
  let error = null;
  stream.subscribe({ error: (e) => { error = e; } });
  assert.match(String(error), /EventSource/);
});

test("a ready event sets the position to resume from, and is no event", () => {
  const { EventSourceImpl, storage, events } = open();
  const source = EventSourceImpl.last;
  source.open();
  source.emit("ready", { position: "42-7" }, "42-7");
  assert.deepEqual(events.values, [], "ready is no event");
  source.fail();
  assert.equal(storage.getItem(storageKey(URL, ["user:alice"])), "42-7");
  events.subscription.unsubscribe();
});
