// The demo chat page, on the JS SDK's browser bundle (the global `Realtime`).
//
// One Client for the page; one chat Subscription at a time (the room shown), with its presence,
// typing, read receipts and history; and one live Subscription (the scoreboard). Everything the
// page shows comes from the hub: sending a message shows nothing until the hub pushes it back.
// Text from other users is only ever set with textContent, never parsed as HTML.
"use strict";

const { Client, ReplyError } = Realtime;

const ROOMS = ["lobby", "random", "help"];
const SCORES = "live:scores";
const TEAMS = ["cats", "dogs"];
const PAGE = 25; // messages per history page
const CONFLICT = 115; // the hub's error code for a receipt that would move backwards

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const user = params.get("user");
let client = null;
let room = null; // the room shown: see enterRoom()
let scores = null; // the scoreboard's Subscription

if (user) {
  start().catch((error) => showError(error.message));
} else {
  const form = $("signin");
  form.user.value = "guest" + Math.floor(Math.random() * 1000);
  form.room.value = params.get("room") ?? "lobby";
  form.hidden = false;
}

// Demo tokens come from the hub itself (GET /demo/token, loopback only). A real app gets them from
// its own backend, which signs them with the hub's token_secret after its own sign-in.
async function fetchToken(signal) {
  const response = await fetch(`/demo/token?user=${encodeURIComponent(user)}`, { signal });
  const body = await response.json();
  if (!response.ok) throw new Error(`demo token refused: ${body.message}`);
  return body.token;
}

async function start() {
  $("me").textContent = `signed in as ${user}`;
  const url = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`;
  // The first token is fetched here so that a refusal shows on the page; getToken is then called by
  // the SDK for a fresh one before this one expires.
  const token = await fetchToken();
  client = new Client(url, { token, getToken: fetchToken });
  client.on("state", ({ state }) => {
    $("status").textContent = state;
    $("status").dataset.state = state;
  });
  client.on("closed", ({ code, reason }) => showError(`The hub closed the connection (${code} ${reason}).`));
  client.on("error", ({ error }) => console.warn("realtime:", error));
  // For trying things from the browser's console: demo.client.publish("chat:lobby", {text: "hi"}).
  window.demo = { client, get room() { return room; }, get scores() { return scores; } };
  await client.connect();

  $("app").hidden = false;
  for (const name of ROOMS) {
    const link = document.createElement("a");
    link.href = `?user=${encodeURIComponent(user)}&room=${name}`;
    link.textContent = "#" + name;
    link.dataset.room = name;
    link.addEventListener("click", (event) => {
      event.preventDefault();
      history.replaceState(null, "", link.href);
      enterRoom(name).catch((error) => showError(error.message));
    });
    const item = document.createElement("li");
    item.append(link);
    $("rooms").append(item);
  }
  $("compose").addEventListener("submit", (event) => {
    event.preventDefault();
    send().catch((error) => showError(error.message));
  });
  $("text").addEventListener("input", onInput);
  $("messages").addEventListener("scroll", onScroll);
  document.addEventListener("visibilitychange", markRead);

  await Promise.all([enterRoom(ROOMS.includes(params.get("room")) ? params.get("room") : "lobby"), startScores()]);
}

// ---- chat -------------------------------------------------------------------------------------

async function enterRoom(name) {
  if (room?.name === name) return;
  const previous = room;
  // One object per visit of a room: handlers check that theirs is still the one shown.
  const here = (room = {
    name, channel: "chat:" + name, sub: null,
    items: new Map(), // offset -> <li>
    oldest: 0, newest: 0, complete: false, loading: false,
    users: new Set(), typing: new Set(), receipts: {},
  });
  if (previous?.sub) await previous.sub.unsubscribe();
  for (const link of $("rooms").querySelectorAll("a")) link.classList.toggle("current", link.dataset.room === name);
  $("room-title").textContent = "#" + name;
  $("message-list").replaceChildren();
  $("history-state").textContent = "";
  renderTyping();

  // Subscribe first, then read presence, receipts and history: nothing that happens in between is lost.
  const sub = await client.subscribe(here.channel);
  here.sub = sub;
  if (room !== here) return sub.unsubscribe(); // another room was chosen meanwhile
  const current = (handler) => (event) => { if (room === here) handler(event); };
  sub.on("publication", current((message) => {
    const following = atBottom(); // a reader scrolled up to older messages is left where they are
    addMessages([message]);
    if (following || message.sender?.user === user) scrollToBottom();
    markRead();
  }));
  sub.on("join", current(({ user: who }) => { here.users.add(who); renderPresence(); }));
  sub.on("leave", current(({ user: who }) => { here.users.delete(who); here.typing.delete(who); renderPresence(); renderTyping(); }));
  sub.on("typing", current(({ user: who, typing }) => {
    if (who === user) return;
    typing ? here.typing.add(who) : here.typing.delete(who);
    renderTyping();
  }));
  sub.on("read", current(({ user: who, offset }) => { here.receipts[who] = offset; renderReceipts(); }));
  // After a reconnect the SDK resubscribes and replays what was missed; presence and receipts are
  // asked again, since joins, leaves and reads may have happened meanwhile. When the SDK cannot
  // replay (the history was too short, or the hub restarted), it says so: the page loads the room
  // afresh.
  sub.on("subscribed", current(() => loadPeople(here).catch((error) => console.warn("presence:", error))));
  sub.on("unrecovered", current(() => loadRoom(here).catch((error) => showError(error.message))));
  await loadRoom(here);
}

// Who is here and who read what, then the newest page of messages.
async function loadRoom(here) {
  here.items.clear();
  here.oldest = here.newest = 0;
  $("message-list").replaceChildren();
  const [page] = await Promise.all([client.history(here.channel, { limit: PAGE }), loadPeople(here)]);
  if (room !== here) return;
  addMessages(page.publications);
  endOfHistory(here, page);
  scrollToBottom();
  await fillView(here);
  markRead();
}

async function loadPeople(here) {
  const [presence, receipts] = await Promise.all([client.presence(here.channel), client.receipts(here.channel)]);
  if (room !== here) return;
  here.users = new Set(Object.values(presence).map((member) => member.user));
  here.receipts = receipts;
  renderPresence();
  renderReceipts();
}

// Messages are kept in offset order; the same offset twice (a publication also in a history page)
// is shown once.
function addMessages(messages) {
  const list = $("message-list");
  for (const message of messages) {
    if (room.items.has(message.offset)) continue;
    const item = renderMessage(message);
    room.items.set(message.offset, item);
    if (message.offset > room.newest) {
      list.append(item);
      room.newest = message.offset;
    } else {
      const after = [...list.children].find((li) => Number(li.dataset.offset) > message.offset);
      list.insertBefore(item, after ?? null);
    }
    if (!room.oldest || message.offset < room.oldest) room.oldest = message.offset;
  }
  renderReceipts();
}

function renderMessage(message) {
  const item = document.createElement("li");
  const sender = message.sender?.user ?? "server";
  item.dataset.offset = String(message.offset);
  if (sender === user) item.className = "mine";
  const time = document.createElement("time");
  if (message.time) time.textContent = new Date(message.time).toLocaleTimeString();
  const text = typeof message.data?.text === "string" ? message.data.text : JSON.stringify(message.data);
  item.append(span("who", sender), time, span("text", text), span("seen", ""));
  return item;
}

function span(className, text) {
  const element = document.createElement("span");
  element.className = className;
  element.textContent = text;
  return element;
}

async function send() {
  const input = $("text");
  const text = input.value.trim();
  if (!text || !room) return;
  input.value = "";
  // The SDK gives each publish an idempotency key and reuses it if it has to send it again
  // (a reconnect before the reply), so a message is never posted twice.
  await client.publish(room.channel, { text });
  await client.typing(room.channel, false);
}

// The SDK sends `typing: true` at most once per the hub's typing_interval, however often it is called.
function onInput() {
  if (!room) return;
  client.typing(room.channel, $("text").value !== "").catch((error) => console.warn("typing:", error));
}

function renderTyping() {
  const names = room ? [...room.typing] : [];
  $("typing").textContent =
    names.length === 0 ? "" : `${names.join(", ")} ${names.length === 1 ? "is" : "are"} typing…`;
}

function renderPresence() {
  const items = [...room.users].sort().map((who) => span("", who === user ? `${who} (you)` : who));
  $("presence").replaceChildren(...items.map((element) => {
    const item = document.createElement("li");
    item.append(element);
    return item;
  }));
}

// "Seen by": under the newest message each other user has read up to.
function renderReceipts() {
  for (const item of room.items.values()) item.querySelector(".seen").textContent = "";
  const seen = new Map(); // <li> -> users
  for (const [who, offset] of Object.entries(room.receipts)) {
    if (who === user) continue;
    let last = null;
    for (const [itemOffset, item] of room.items) {
      if (itemOffset <= offset && (!last || itemOffset > Number(last.dataset.offset))) last = item;
    }
    if (last) seen.set(last, [...(seen.get(last) ?? []), who]);
  }
  for (const [item, users] of seen) item.querySelector(".seen").textContent = `seen by ${users.sort().join(", ")}`;
}

// Tell the room this user has read its newest message, once it is on screen in a visible tab.
// A receipt never moves backwards: the hub answers CONFLICT to one that would (another tab of the
// same user got further), which is fine.
function markRead() {
  if (!room || !room.newest || document.visibilityState !== "visible" || !atBottom()) return;
  if (room.newest <= (room.receipts[user] ?? 0)) return;
  room.receipts[user] = room.newest;
  client.read(room.channel, room.newest).catch((error) => {
    if (!(error instanceof ReplyError && error.code === CONFLICT)) console.warn("read:", error);
  });
}

// ---- history on scroll ------------------------------------------------------------------------

function onScroll() {
  if ($("messages").scrollTop < 40) loadOlder(room).catch((error) => showError(error.message));
  markRead();
}

// One page of older messages, keeping the messages on screen where they are.
async function loadOlder(here) {
  if (!here || here.complete || here.loading || !here.oldest) return;
  here.loading = true;
  $("history-state").textContent = "loading…";
  try {
    const page = await client.history(here.channel, { before: here.oldest, limit: PAGE });
    if (room !== here) return;
    const box = $("messages");
    const fromBottom = box.scrollHeight - box.scrollTop;
    addMessages(page.publications);
    box.scrollTop = box.scrollHeight - fromBottom;
    endOfHistory(here, page);
  } finally {
    here.loading = false;
  }
}

// A page that is neither cut short by the hub's byte budget (truncated) nor full is the last one.
function endOfHistory(here, page) {
  here.complete = page.publications.length === 0 || (!page.truncated && page.publications.length < PAGE);
  $("history-state").textContent = here.complete ? `the start of #${here.name}` : "scroll up for older messages";
}

// A short first page may not fill the box, and then there is no scrolling: load until it does.
async function fillView(here) {
  const box = $("messages");
  for (let pages = 0; pages < 10 && room === here && !here.complete && box.scrollHeight <= box.clientHeight; pages++) {
    await loadOlder(here);
  }
}

function atBottom() {
  const box = $("messages");
  return box.scrollHeight - box.scrollTop - box.clientHeight < 30;
}

function scrollToBottom() {
  const box = $("messages");
  box.scrollTop = box.scrollHeight;
}

// ---- scoreboard -------------------------------------------------------------------------------

// Live state keys are "<team>/<user>": each user writes only their own keys, so two users clicking at
// once never overwrite each other (no read-modify-write race on a shared counter), and a team's
// score is the sum of its keys.
async function startScores() {
  scores = await client.subscribe(SCORES);
  scores.on("state", renderScores); // every change, from this page or any other
  scores.on("subscribed", renderScores); // a resubscribe after a reconnect brings a fresh snapshot
  renderScores();
}

function teamScore(team) {
  let total = 0;
  for (const [key, value] of scores.state) if (key.startsWith(team + "/") && typeof value === "number") total += value;
  return total;
}

async function addPoint(team) {
  const key = `${team}/${user}`;
  const mine = scores.state.get(key);
  await client.stateSet(SCORES, key, (typeof mine === "number" ? mine : 0) + 1);
}

function renderScores() {
  const rows = TEAMS.map((team) => {
    const row = document.createElement("tr");
    row.dataset.team = team;
    const button = document.createElement("button");
    button.textContent = "+1";
    button.addEventListener("click", () => addPoint(team).catch((error) => showError(error.message)));
    const points = span("points", String(teamScore(team)));
    row.append(cell(span("team", team)), cell(points), cell(button));
    return row;
  });
  $("scores").tBodies[0].replaceChildren(...rows);
}

function cell(content) {
  const td = document.createElement("td");
  td.append(content);
  return td;
}

function showError(text) {
  $("error").textContent = text;
  $("error").hidden = false;
}
