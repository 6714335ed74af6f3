// The Herald demo page: a user's inbox, live over SSE or WebSocket, plus a form to send
// notifications (over any channels, with a category, critical or not) and a button to
// start a job; the per-channel status of the last notification sent, and the user's
// e-mail as the dev mail sink kept it. Plain DOM and RxJS; served by the API at /demo/,
// which answers GET /demo/config with the URLs and a development API key, and
// GET /demo/mail?user= with the user's newest e-mails.
//
// The stream is given a token function (it mints through the API), so it outlives each
// token: tokens last TOKEN_TTL seconds, or `?ttl=` seconds when the page URL says so.

import { Subscription } from "rxjs";

import { eventStream, webSocketStream } from "../src/index.js";

const USER_PATTERN = /^[a-z0-9][a-z0-9._-]{0,63}$/;
const LOG_LIMIT = 100;
const INBOX_PAGE = 50;
const TOKEN_TTL = 3600;
const JOB = { kind: "demo.countdown", params: { steps: 10, interval: 0.2 } };
const REMEMBERED_USER = "herald-demo:user";
// Delivery status: refreshed every WATCH_EVERY ms until nothing is in progress; a channel
// that has no delivery yet (its dispatch task has not run) is waited for SETTLE_GRACE ms
// (a webhook without endpoints never gets one); WATCH_LIMIT ms at most.
const ACTIVE_STATES = new Set(["queued", "pending", "sending", "retrying"]);
const WATCH_EVERY = 500;
const SETTLE_GRACE = 5000;
const WATCH_LIMIT = 120000;
const MAIL_EVERY = 2000;

const $ = (selector) => {
  const element = document.querySelector(selector);
  if (!element) throw new Error(`demo page: ${selector} is missing`);
  return element;
};

const ui = {
  status: $("#status"),
  connectForm: $("#connect-form"),
  user: $("#user"),
  connect: $("#connect"),
  sessionStatus: $("#session-status"),
  inbox: $("#inbox"),
  unread: $("#unread"),
  markAll: $("#mark-all"),
  sendForm: $("#send-form"),
  sendTo: $("#send-to"),
  sendTitle: $("#send-title"),
  sendBody: $("#send-body"),
  send: $("#send"),
  sendStatus: $("#send-status"),
  sendCategory: $("#send-category"),
  sendCritical: $("#send-critical"),
  profileForm: $("#profile-form"),
  profileEmail: $("#profile-email"),
  profileSave: $("#profile-save"),
  profileStatus: $("#profile-status"),
  deliveryState: $("#delivery-state"),
  deliveryNotification: $("#delivery-notification"),
  deliveries: $("#deliveries tbody"),
  mailRefresh: $("#mail-refresh"),
  mailStatus: $("#mail-status"),
  mail: $("#mail"),
  startJob: $("#start-job"),
  jobProgress: $("#job-progress"),
  jobState: $("#job-state"),
  log: $("#log"),
};

const app = {
  config: null, // {api_url, streamer_url, api_key}
  user: null,
  token: null,
  connection: null, // {kind, events$, state$, markRead, close, subscription}
  attempt: 0, // bumped by every connect, so a slower earlier one gives up
  unread: 0,
  jobId: null,
  profile: null, // the connected user's profile as last read
  watch: 0, // bumped by every send, so an older status refresh stops
  mailTimer: null,
  mailShown: "", // the files shown, to redraw only on a change
};

// ---------------------------------------------------------------------------------------
// Configuration and HTTP

const configReady = loadConfig().then((config) => {
  app.config = config;
  return config;
});

async function loadConfig() {
  const response = await fetch("/demo/config", {
    headers: { Accept: "application/json" },
    cache: "no-store",
  });
  if (!response.ok) throw new Error(`GET /demo/config answered ${response.status}`);
  const config = await response.json();
  if (!config.streamer_url || !config.api_key) {
    throw new Error("GET /demo/config: streamer_url and api_key are required");
  }
  return {
    api_url: sameOriginIfLoopback(trimSlash(config.api_url || window.location.origin)),
    streamer_url: trimSlash(config.streamer_url),
    api_key: config.api_key,
    categories: Array.isArray(config.categories) ? config.categories : ["general"],
  };
}

function trimSlash(url) {
  return String(url).replace(/\/+$/, "");
}

/**
 * The page itself when `url` names the same loopback server under another name
 * (localhost vs 127.0.0.1): the API then stays same-origin and needs no CORS.
 */
function sameOriginIfLoopback(url) {
  const loopback = (host) => ["localhost", "127.0.0.1", "[::1]"].includes(host);
  try {
    const target = new URL(url);
    const page = window.location;
    if (target.protocol === page.protocol && target.port === page.port
        && loopback(target.hostname) && loopback(page.hostname)) {
      return page.origin;
    }
  } catch {
    // not a URL we can read: use it as given
  }
  return url;
}

/** An API call: JSON in and out; an Error with the API's message when it fails. */
async function callApi(path, { method = "GET", credential, body } = {}) {
  const headers = { Accept: "application/json" };
  if (credential) headers.Authorization = `Bearer ${credential}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const config = app.config ?? await configReady;
  let response;
  try {
    response = await fetch(config.api_url + path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (error) {
    throw new Error(`${method} ${path}: ${error.message}`);
  }
  const text = await response.text();
  let answer = null;
  try {
    answer = text ? JSON.parse(text) : null;
  } catch {
    answer = null;
  }
  if (!response.ok) {
    const detail = answer?.error?.message ?? (text.slice(0, 200) || response.statusText);
    const error = new Error(`${response.status}: ${detail}`);
    error.status = response.status;
    error.code = answer?.error?.code ?? null;
    throw error;
  }
  return answer;
}

const userPath = (user) => `/api/users/${encodeURIComponent(user)}/notifications`;

function describe(error) {
  if (error == null) return "unknown error";
  if (typeof error === "string") return error;
  if (error instanceof Error) return error.message;
  return error.message ?? JSON.stringify(error);
}

// ---------------------------------------------------------------------------------------
// Session: token, inbox, stream

function selectedTransport() {
  return document.querySelector('input[name="transport"]:checked')?.value === "ws"
    ? "ws" : "sse";
}

/** Seconds a token lives: `?ttl=` in the page URL, else TOKEN_TTL. */
function tokenTtl() {
  const asked = Number(new URLSearchParams(window.location.search).get("ttl"));
  return Number.isInteger(asked) && asked > 0 ? asked : TOKEN_TTL;
}

/** A freshly minted token for `user`; the stream calls this before each one expires. */
async function mintToken(user) {
  const config = await configReady;
  const minted = await callApi("/api/tokens", {
    method: "POST",
    credential: config.api_key,
    body: { user, ttl: tokenTtl() },
  });
  if (user === app.user) app.token = minted.token; // the API calls use the newest
  const expires = new Date(minted.expires_at);
  addLog("token", `for ${user}, expires ${expires.toLocaleTimeString()}`);
  return minted.token;
}

async function connect() {
  const user = ui.user.value.trim().toLowerCase();
  ui.user.value = user;
  if (!USER_PATTERN.test(user)) {
    ui.user.setAttribute("aria-invalid", "true");
    say(ui.sessionStatus, "error",
      "A user name is 1-64 of a-z, 0-9, '.', '_', '-', starting with a letter or digit.");
    return;
  }
  ui.user.removeAttribute("aria-invalid");
  const attempt = ++app.attempt;
  disconnect();
  app.user = null;
  app.token = null;
  setSignedIn(false);
  say(ui.sessionStatus, "", `Signing in as ${user}…`);
  try {
    const token = await mintToken(user);
    if (attempt !== app.attempt) return;
    app.user = user;
    app.token = token;
    rememberUser(user);
    await loadInbox();
    if (attempt !== app.attempt) return;
    openStream();
    setSignedIn(true);
    say(ui.sessionStatus, "", `Signed in as ${user}.`);
    loadProfile(user).catch((error) => say(ui.profileStatus, "error", describe(error)));
    startMail();
  } catch (error) {
    if (attempt !== app.attempt) return;
    say(ui.sessionStatus, "error", `Could not connect: ${describe(error)}`);
  }
}

function openStream() {
  disconnect();
  const url = app.config.streamer_url;
  const user = app.user;
  const options = { topics: [`user:${user}`], token: () => mintToken(user) };
  let connection;
  if (selectedTransport() === "ws") {
    const socket = webSocketStream(url, options);
    connection = {
      kind: "ws",
      events$: socket.events$,
      state$: socket.state$,
      markRead: (ids) => socket.markRead(ids),
      close: () => socket.close(),
    };
  } else {
    const stream = eventStream(url, options);
    connection = {
      kind: "sse",
      events$: stream,
      state$: stream.state$,
      markRead: null,
      close: () => {}, // unsubscribing closes the EventSource
    };
  }
  connection.subscription = new Subscription();
  connection.subscription.add(connection.state$.subscribe(showState));
  connection.subscription.add(connection.events$.subscribe({
    next: handleEvent,
    error: (error) => say(ui.sessionStatus, "error", `Stream failed: ${describe(error)}`),
  }));
  app.connection = connection;
}

function disconnect() {
  const connection = app.connection;
  if (!connection) return;
  app.connection = null;
  connection.subscription.unsubscribe();
  connection.close();
  showState({ status: "closed" });
}

function setSignedIn(signedIn) {
  ui.markAll.disabled = !signedIn;
  ui.startJob.disabled = !signedIn;
  ui.profileSave.disabled = !signedIn;
  ui.mailRefresh.disabled = !signedIn;
  if (!signedIn) stopMail();
}

function rememberUser(user) {
  try {
    localStorage.setItem(REMEMBERED_USER, user);
  } catch {
    // storage disabled: nothing to prefill next time
  }
}

function prefillUser() {
  try {
    const user = localStorage.getItem(REMEMBERED_USER);
    if (user && !ui.user.value) ui.user.value = user;
  } catch {
    // storage disabled
  }
}

// ---------------------------------------------------------------------------------------
// Connection state

function showState(state) {
  let text;
  switch (state.status) {
    case "open":
      if (state.reset !== undefined) text = "reset";
      else if (state.resumed !== undefined) text = `resumed (${state.resumed} missed events)`;
      else text = "connected";
      break;
    case "connecting":
      text = "connecting";
      break;
    case "reconnecting":
      text = "reconnecting";
      break;
    default:
      text = "closed";
  }
  ui.status.textContent = text;
  ui.status.dataset.status = state.status;
  if (state.status === "reconnecting" && state.delay !== undefined) {
    ui.status.title = `next attempt in ${(state.delay / 1000).toFixed(1)} s`;
  } else {
    ui.status.removeAttribute("title");
  }
  if (state.resumed !== undefined) addLog("resumed", `${state.resumed} replayed`);
}

// ---------------------------------------------------------------------------------------
// Events

function handleEvent(event) {
  addLog(event.type, [event.topic, event.id].filter(Boolean).join(" "));
  const data = event.data && typeof event.data === "object" ? event.data : {};
  switch (event.type) {
    case "notification":
      addNotification(data);
      break;
    case "notification.read":
      applyRead(Array.isArray(data.ids) ? data.ids : [], data.all === true, data.unread);
      break;
    case "reset":
      // history could not cover the gap: what we show may be stale, fetch it again
      loadInbox().catch((error) => say(ui.sessionStatus, "error",
        `Could not reload the inbox: ${describe(error)}`));
      break;
    default:
      if (event.type.startsWith("job.")) showJob(event.type, data);
  }
}

function addLog(type, detail) {
  const item = document.createElement("li");
  item.dataset.type = type;
  const time = document.createElement("time");
  const now = new Date();
  time.dateTime = now.toISOString();
  time.textContent = now.toLocaleTimeString();
  const name = document.createElement("span");
  name.className = "type";
  name.textContent = type;
  const more = document.createElement("span");
  more.className = "detail";
  more.textContent = detail ?? "";
  item.append(time, name, more);
  ui.log.prepend(item);
  while (ui.log.children.length > LOG_LIMIT) ui.log.lastElementChild.remove();
}

// ---------------------------------------------------------------------------------------
// Inbox

async function loadInbox() {
  const user = app.user;
  const answer = await callApi(`${userPath(user)}?limit=${INBOX_PAGE}`, { credential: app.token });
  if (user !== app.user) return;
  const items = Array.isArray(answer?.items) ? answer.items : [];
  ui.inbox.replaceChildren(...items.map(renderNotification));
  setUnread(Number.isFinite(answer?.unread) ? answer.unread
    : items.filter((item) => !item.read).length);
}

function renderNotification(item) {
  const li = document.createElement("li");
  li.className = "notification";
  li.dataset.id = String(item.id);
  const content = document.createElement("div");
  content.className = "content";
  const title = document.createElement("span");
  title.className = "title";
  title.textContent = item.title ?? "";
  const body = document.createElement("p");
  body.className = "body";
  body.textContent = item.body ?? "";
  content.append(title, body);
  if (item.created_at) {
    const time = document.createElement("time");
    time.dateTime = item.created_at;
    const when = new Date(item.created_at);
    time.textContent = Number.isNaN(when.getTime()) ? item.created_at : when.toLocaleString();
    content.append(time);
  }
  const button = document.createElement("button");
  button.type = "button";
  button.className = "mark-read";
  button.textContent = "Mark read";
  li.append(content, button);
  setItemRead(li, Boolean(item.read));
  return li;
}

function findNotification(id) {
  return [...ui.inbox.children].find((li) => li.dataset.id === String(id)) ?? null;
}

function setItemRead(li, read) {
  li.classList.toggle("unread", !read);
  li.querySelector(".mark-read").disabled = read;
}

function addNotification(data) {
  if (data.id == null || findNotification(data.id)) return; // already listed (a replay)
  ui.inbox.prepend(renderNotification({ ...data, read: false }));
  setUnread(app.unread + 1);
}

/** Marks `ids` (or every item, with `all`) read, and sets the count when it is known. */
function applyRead(ids, all, unread) {
  const wanted = new Set(ids.map(String));
  let changed = 0;
  for (const li of ui.inbox.children) {
    if ((all || wanted.has(li.dataset.id)) && li.classList.contains("unread")) {
      setItemRead(li, true);
      changed += 1;
    }
  }
  if (Number.isFinite(unread)) setUnread(unread);
  else setUnread(all ? 0 : app.unread - changed);
}

function setUnread(count) {
  app.unread = Math.max(0, Math.trunc(count));
  ui.unread.textContent = String(app.unread);
}

/** Marks notifications read: over the WebSocket when it is up, else (or if it fails) HTTP. */
async function markRead(ids) {
  const all = ids === "all";
  let answer = null;
  if (app.connection?.markRead) {
    try {
      answer = await app.connection.markRead(ids);
    } catch {
      answer = null; // fall back to the API below
    }
  }
  if (!answer) {
    answer = await callApi(`${userPath(app.user)}/read`, {
      method: "POST",
      credential: app.token,
      body: all ? { all: true } : { ids },
    });
  }
  applyRead(all ? [] : ids, all, answer?.unread);
}

// ---------------------------------------------------------------------------------------
// Sending and jobs

async function sendNotification() {
  const to = ui.sendTo.value.trim().toLowerCase();
  const title = ui.sendTitle.value.trim();
  const body = ui.sendBody.value;
  if (!USER_PATTERN.test(to)) {
    say(ui.sendStatus, "error", "error: the recipient is not a valid user name");
    return;
  }
  if (!title) {
    say(ui.sendStatus, "error", "error: a title is required");
    return;
  }
  const channels = selectedChannels();
  if (channels.length === 0) {
    say(ui.sendStatus, "error", "error: choose at least one channel");
    return;
  }
  ui.send.disabled = true;
  say(ui.sendStatus, "", "sending…");
  try {
    const config = await configReady;
    const answer = await callApi("/api/notifications", {
      method: "POST",
      credential: config.api_key,
      body: notificationBody(to, title, body, channels),
    });
    say(ui.sendStatus, "ok", `sent ${answer?.id ?? ""}`.trim());
    if (answer?.id) {
      watchDeliveries(answer.id, channels).catch((error) => setDeliveryState("error",
        `error: ${describe(error)}`));
    }
  } catch (error) {
    say(ui.sendStatus, "error", `error: ${describe(error)}`);
  } finally {
    ui.send.disabled = false;
  }
}

async function startJob() {
  ui.startJob.disabled = true;
  app.jobId = null;
  ui.jobProgress.value = 0;
  setJobState("starting", "starting");
  try {
    const answer = await callApi("/api/jobs", {
      method: "POST",
      credential: app.config.api_key,
      body: { kind: JOB.kind, owner: app.user, params: JOB.params },
    });
    app.jobId = answer?.id ?? null;
    if (ui.jobState.dataset.state === "starting") setJobState("queued", "queued");
  } catch (error) {
    setJobState("failed", `failed: ${describe(error)}`);
  } finally {
    ui.startJob.disabled = !app.token;
  }
}

function showJob(type, data) {
  // events of another job than the one started last are left out (its id is known
  // once the API answered; earlier ones can only be ours)
  if (app.jobId && data.job_id && data.job_id !== app.jobId) return;
  const done = Number(data.done);
  const total = Number(data.total);
  const counted = Number.isFinite(done) && Number.isFinite(total) && total > 0;
  if (counted) ui.jobProgress.value = Math.min(100, Math.round((100 * done) / total));
  const phase = type.slice("job.".length);
  switch (type) {
    case "job.succeeded":
      ui.jobProgress.value = 100;
      setJobState("succeeded", "succeeded");
      break;
    case "job.failed":
      setJobState("failed", `failed: ${describe(data.error)}`);
      break;
    case "job.retrying":
      setJobState("retrying", `retrying: ${describe(data.error)}`);
      break;
    default: {
      const state = data.state || phase;
      setJobState(phase, counted ? `${state} (${done}/${total})` : state);
    }
  }
}

function setJobState(state, text) {
  ui.jobState.dataset.state = state;
  ui.jobState.textContent = text;
}

/** The POST body: the defaults (in-app, `general`, not critical) left to the API. */
function notificationBody(to, title, body, channels) {
  const notification = { recipients: [to], title, body };
  if (channels.join() !== "inapp") notification.channels = channels;
  if (ui.sendCategory.value && ui.sendCategory.value !== "general") {
    notification.category = ui.sendCategory.value;
  }
  if (ui.sendCritical.checked) notification.critical = true;
  return notification;
}

function selectedChannels() {
  return [...document.querySelectorAll('input[name="channel"]:checked')]
    .map((box) => box.value);
}

function fillCategories(categories) {
  const chosen = ui.sendCategory.value || "general";
  ui.sendCategory.replaceChildren(...categories.map((name) => {
    const option = document.createElement("option");
    option.value = name;
    option.textContent = name;
    option.selected = name === chosen;
    return option;
  }));
}

// ---------------------------------------------------------------------------------------
// Delivery status of the last notification sent

const sleep = (ms) => new Promise((resolve) => { setTimeout(resolve, ms); });

/** Shows GET /api/notifications/<id>'s deliveries until none is in progress. */
async function watchDeliveries(id, channels) {
  const watch = ++app.watch;
  const started = Date.now();
  ui.deliveryNotification.textContent = `notification ${id} (${channels.join(", ")})`;
  ui.deliveries.replaceChildren();
  setDeliveryState("watching", "refreshing…");
  while (watch === app.watch) {
    const record = await callApi(`/api/notifications/${encodeURIComponent(id)}`,
      { credential: app.config.api_key });
    if (watch !== app.watch) return;
    const items = deliveryItems(record);
    renderDeliveries(items);
    const elapsed = Date.now() - started;
    if (settled(items, channels, elapsed)) {
      setDeliveryState("final", "final");
      return;
    }
    if (elapsed > WATCH_LIMIT) {
      setDeliveryState("stopped", "still in progress; refresh stopped");
      return;
    }
    await sleep(WATCH_EVERY);
  }
}

/** The record's deliveries as a list (an API of before the channels kept a map). */
function deliveryItems(record) {
  const deliveries = record?.deliveries;
  if (Array.isArray(deliveries)) return deliveries;
  if (deliveries && typeof deliveries === "object") {
    return Object.entries(deliveries).map(([target, item]) => ({
      channel: "inapp", target, ...(typeof item === "object" ? item : { state: item }),
    }));
  }
  return [];
}

function settled(items, channels, elapsed) {
  if (items.some((item) => ACTIVE_STATES.has(item.state))) return false;
  const seen = new Set(items.map((item) => item.channel));
  return channels.every((channel) => seen.has(channel)) || elapsed > SETTLE_GRACE;
}

function renderDeliveries(items) {
  ui.deliveries.replaceChildren(...items.map((item) => {
    const row = document.createElement("tr");
    row.dataset.channel = String(item.channel ?? "");
    row.dataset.state = String(item.state ?? "");
    const cells = [item.channel, item.target, item.state, item.attempts ?? "", item.error ?? ""];
    for (const [index, value] of cells.entries()) {
      const cell = document.createElement("td");
      cell.className = ["channel", "target", "state", "attempts", "error"][index];
      cell.textContent = value == null ? "" : String(value);
      row.append(cell);
    }
    return row;
  }));
}

function setDeliveryState(state, text) {
  ui.deliveryState.dataset.state = state;
  ui.deliveryState.textContent = text;
}

// ---------------------------------------------------------------------------------------
// Profile and mail (the dev mail sink's .eml files, read by GET /demo/mail)

const profilePath = (user) => `/api/users/${encodeURIComponent(user)}/profile`;

async function loadProfile(user) {
  app.profile = null;
  ui.profileEmail.value = "";
  say(ui.profileStatus, "", "");
  const profile = await callApi(profilePath(user), { credential: app.config.api_key });
  if (user !== app.user) return;
  app.profile = profile ?? {};
  ui.profileEmail.value = app.profile.email ?? "";
}

async function saveProfile() {
  const user = app.user;
  if (!user) return;
  ui.profileSave.disabled = true;
  try {
    const email = ui.profileEmail.value.trim();
    const profile = { ...(app.profile ?? {}), email: email || null };
    app.profile = await callApi(profilePath(user), {
      method: "PUT", credential: app.config.api_key, body: profile,
    });
    say(ui.profileStatus, "ok", email ? `saved: mail for ${user} goes to ${email}`
      : "saved: no address, no mail");
    await loadMail();
  } catch (error) {
    say(ui.profileStatus, "error", `error: ${describe(error)}`);
  } finally {
    ui.profileSave.disabled = !app.user;
  }
}

function startMail() {
  stopMail();
  app.mailShown = "";
  ui.mail.replaceChildren();
  const tick = () => loadMail().catch((error) => say(ui.mailStatus, "error",
    `Could not read the mail: ${describe(error)}`));
  tick();
  app.mailTimer = setInterval(tick, MAIL_EVERY);
}

function stopMail() {
  if (app.mailTimer) clearInterval(app.mailTimer);
  app.mailTimer = null;
}

async function loadMail() {
  const user = app.user;
  if (!user) return;
  const response = await fetch(`/demo/mail?user=${encodeURIComponent(user)}`, {
    headers: { Accept: "application/json" }, cache: "no-store",
  });
  const answer = await response.json().catch(() => null);
  if (!response.ok) throw new Error(answer?.error?.message ?? `${response.status}`);
  if (user !== app.user) return;
  const items = Array.isArray(answer.items) ? answer.items : [];
  say(ui.mailStatus, "", answer.address
    ? `${items.length} newest for ${answer.address}, from ${answer.folder}`
    : `${user} has no e-mail address in their profile: set one above.`);
  const shown = items.map((item) => item.file).join("\n");
  if (shown === app.mailShown) return;
  app.mailShown = shown;
  ui.mail.replaceChildren(...items.map(renderMail));
}

function renderMail(item) {
  const li = document.createElement("li");
  li.className = "mail";
  li.dataset.file = String(item.file ?? "");
  const subject = document.createElement("span");
  subject.className = "subject";
  subject.textContent = item.subject ?? "";
  const meta = document.createElement("span");
  meta.className = "meta";
  const date = item.date ? new Date(item.date).toLocaleString() : "";
  meta.textContent = [`to ${item.to ?? ""}`, item.from ? `from ${item.from}` : "", date]
    .filter(Boolean).join(" · ");
  const text = document.createElement("p");
  text.className = "text";
  text.textContent = item.text ?? "";
  li.append(subject, meta, text);
  if (item.unsubscribe) {
    const link = document.createElement("a");
    link.className = "unsubscribe";
    link.href = item.unsubscribe;
    link.target = "_blank";
    link.rel = "noopener noreferrer";
    link.textContent = item.one_click ? "Unsubscribe (one-click)" : "Unsubscribe";
    li.append(link);
  }
  return li;
}

// ---------------------------------------------------------------------------------------
// Wiring

function say(element, state, text) {
  element.textContent = text;
  if (state) element.dataset.state = state;
  else delete element.dataset.state;
}

function report(action) {
  return (...args) => {
    Promise.resolve(action(...args)).catch((error) => {
      say(ui.sessionStatus, "error", describe(error));
    });
  };
}

ui.connectForm.addEventListener("submit", (event) => {
  event.preventDefault();
  report(connect)();
});

for (const radio of document.querySelectorAll('input[name="transport"]')) {
  radio.addEventListener("change", () => {
    if (app.token) openStream(); // the other transport, resuming from the last id
  });
}

ui.inbox.addEventListener("click", (event) => {
  const button = event.target.closest(".mark-read");
  if (!button || button.disabled) return;
  const li = button.closest("li.notification");
  if (li) report(markRead)([li.dataset.id]);
});

ui.markAll.addEventListener("click", report(() => markRead("all")));

ui.sendForm.addEventListener("submit", (event) => {
  event.preventDefault();
  report(sendNotification)();
});

ui.startJob.addEventListener("click", report(startJob));

ui.profileForm.addEventListener("submit", (event) => {
  event.preventDefault();
  report(saveProfile)();
});

ui.mailRefresh.addEventListener("click", report(loadMail));

// leave no stream behind a page in the back/forward cache, and reopen it on return
window.addEventListener("pagehide", disconnect);
window.addEventListener("pageshow", (event) => {
  if (event.persisted && app.token && !app.connection) openStream();
});

prefillUser();
configReady.then((config) => fillCategories(config.categories)).catch((error) => {
  say(ui.sessionStatus, "error", `Could not load /demo/config: ${describe(error)}`);
});
