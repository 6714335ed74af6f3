import assert from "node:assert/strict";
import { test } from "node:test";

import {
  backoffDelay,
  buildUrl,
  storageKey,
  toWebSocketUrl,
} from "../src/index.js";

test("buildUrl: topics joined by commas, token and last_event_id encoded", () => {
  assert.equal(
    buildUrl("http://127.0.0.1:8001", "/events", {
      topics: ["user:alice", "room.42", "broadcast"],
      token: "a.b+c/d=",
      lastEventId: "1700000000000-3",
    }),
    "http://127.0.0.1:8001/events?topics=user%3Aalice,room.42,broadcast"
      + "&token=a.b%2Bc%2Fd%3D&last_event_id=1700000000000-3",
  );
});

test("buildUrl: empty topics and missing values are left out", () => {
  assert.equal(buildUrl("http://h:8001/", "/events", { topics: [], token: "t" }),
    "http://h:8001/events?token=t");
  assert.equal(buildUrl("http://h:8001", "/events", {}), "http://h:8001/events");
  assert.equal(buildUrl("http://h:8001", "/events", { lastEventId: "1-0&x=y" }),
    "http://h:8001/events?last_event_id=1-0%26x%3Dy");
});

test("buildUrl: named false asks for SSE events without an event: line", () => {
  assert.equal(buildUrl("http://h", "/events", { topics: ["a"], named: false, token: "t" }),
    "http://h/events?topics=a&named=0&token=t");
  assert.equal(buildUrl("http://h", "/events", { named: true }), "http://h/events");
});

test("buildUrl: duplicate topics are sent once", () => {
  assert.equal(buildUrl("http://h", "/events", { topics: ["a", "b", "a"] }),
    "http://h/events?topics=a,b");
});

test("toWebSocketUrl maps http to ws and https to wss", () => {
  assert.equal(toWebSocketUrl("http://127.0.0.1:8001"), "ws://127.0.0.1:8001");
  assert.equal(toWebSocketUrl("https://push.example.com/x"), "wss://push.example.com/x");
  assert.equal(toWebSocketUrl("HTTPS://Example.com"), "wss://Example.com");
  assert.equal(toWebSocketUrl("ws://already"), "ws://already");
  assert.equal(toWebSocketUrl("wss://already"), "wss://already");
});

test("storageKey: url and sorted topics", () => {
  assert.equal(storageKey("http://h:8001", ["user:bob", "broadcast"]),
    "herald:last-id:http://h:8001:broadcast,user:bob");
  assert.equal(storageKey("http://h:8001/", []), "herald:last-id:http://h:8001:");
});

test("backoffDelay doubles from 0.5 s up to 30 s", () => {
  const exact = { jitter: 0 };
  assert.deepEqual([0, 1, 2, 3, 4, 5, 6, 7, 8].map((n) => backoffDelay(n, exact)),
    [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]);
  assert.equal(backoffDelay(1000, exact), 30000);
});

test("backoffDelay jitter stays within ±20 % and under the cap", () => {
  assert.equal(backoffDelay(1, { random: () => 0 }), 800);
  assert.equal(backoffDelay(1, { random: () => 1 }), 1200);
  assert.equal(backoffDelay(1, { random: () => 0.5 }), 1000);
  assert.equal(backoffDelay(10, { random: () => 1 }), 30000);
  for (let i = 0; i < 200; i += 1) {
    const delay = backoffDelay(2);
    assert.ok(delay >= 1600 && delay <= 2400, `${delay}`);
  }
});
