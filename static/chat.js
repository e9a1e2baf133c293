// The chat page: sign-in, rooms, messages, presence and the composer, on top of authchat.js.
// Test hooks live in the DOM: #conn-badge carries data-state, data-conn-id, data-close-code and
// data-connects; #token-countdown carries data-expires-at and data-renewals; messages carry
// data-id and data-from.

import { AuthChat } from "./authchat.js";
import { $, bindSignIn, el, formatClock, hueClass, showFormError, timeElement } from "./ui.js";

const chat = new AuthChat();

/** Messages kept per room in the page (the server keeps its own history). */
const MAX_KEPT = 500;
/** Messages from one sender closer than this are grouped under one name. */
const GROUP_MS = 5 * 60 * 1000;
/** How close to the bottom counts as "reading the newest" (then new messages scroll into view). */
const STICKY_PX = 80;

/** room -> {items: [{kind:"message"|"event", …}], unread} */
const rooms = new Map();
let activeRoom = null;
let connects = 0;
let renewals = 0;

// ---- sign-in and sign-out --------------------------------------------------------------------

bindSignIn($("signin-form"), $("signin-error"), chat, enterChat);

$("signout").addEventListener("click", () => chat.logout());

chat.addEventListener("signedout", (e) => showSignIn(`You were signed out: ${e.detail.reason}.`));

async function boot() {
  try {
    const me = await chat.resume();
    if (me) return enterChat();
    showSignIn(null);
  } catch (e) {
    showSignIn(`The server could not be reached (${e.message}). Reload to try again.`);
  }
}

function showSignIn(reason) {
  $("loading").hidden = true;
  $("chat-view").hidden = true;
  $("account").hidden = true;
  // The badge stays visible after a forced sign-out, so the reason is still on screen.
  $("connection").hidden = chat.status.state !== "disconnected";
  $("token-countdown").hidden = true;
  rooms.clear();
  activeRoom = null;
  const note = $("signin-reason");
  note.textContent = reason ?? "";
  note.hidden = !reason;
  $("signin-view").hidden = false;
  $("signin-user").focus();
}

function enterChat() {
  $("loading").hidden = true;
  $("signin-view").hidden = true;
  $("chat-view").hidden = false;
  $("connection").hidden = false;
  $("account").hidden = false;
  $("account-user").textContent = chat.user;
  const avatar = $("account-avatar");
  avatar.className = `avatar small ${hueClass(chat.user)}`;
  avatar.textContent = chat.user.slice(0, 1).toUpperCase();
  $("admin-link").hidden = !chat.isAdmin;
  $("composer-input").maxLength = chat.config?.max_text_chars ?? 4000;

  const saved = loadSavedRooms();
  for (const room of saved.rooms) joinRoom(room);
  selectRoom(saved.active && rooms.has(saved.active) ? saved.active : saved.rooms[0] ?? null);
  chat.connect();
  $("composer-input").focus();
}

// ---- connection badge and token countdown ----------------------------------------------------

const STATE_TEXT = {
  idle: "Offline",
  signed_out: "Signed out",
  connecting: "Connecting…",
  connected: "Connected",
  reconnecting: "Reconnecting",
  disconnected: "Disconnected",
};

chat.addEventListener("welcome", () => {
  connects += 1;
  $("conn-badge").dataset.connects = String(connects);
});

chat.addEventListener("status", (e) => {
  const status = e.detail;
  const badge = $("conn-badge");
  badge.dataset.state = status.state;
  badge.dataset.connId = status.connId ?? "";
  badge.dataset.closeCode = status.code ?? "";
  const reason = status.state === "connected" ? null : status.reason;
  $("conn-text").textContent = STATE_TEXT[status.state] + (reason ? `: ${reason}` : "");
  badge.title = status.connId ? `Connection #${status.connId}` : "";
  $("reconnect").hidden = !(status.state === "disconnected" && status.canReconnect);
  renderRetry();
});

$("reconnect").addEventListener("click", () => {
  chat.connect();
  $("composer-input").focus(); // the button hides itself, so focus needs a new home
});

chat.addEventListener("token", (e) => {
  if (e.detail.renewed) renewals += 1;
  const countdown = $("token-countdown");
  countdown.dataset.renewals = String(renewals);
  countdown.dataset.expiresAt = e.detail.expiresAt ?? "";
  countdown.hidden = e.detail.expiresAt == null;
  if (e.detail.renewed) {
    // Restart the flash animation that shows the renewal.
    countdown.classList.remove("renewed");
    void countdown.offsetWidth;
    countdown.classList.add("renewed");
  }
  renderCountdown();
});

chat.addEventListener("renewfailed", (e) =>
  notice(`The access token could not be renewed: ${e.detail.message}`, e.detail.code),
);

function renderCountdown() {
  const expiresAt = chat.expiresAt;
  if (expiresAt == null) return;
  const left = expiresAt - chat.serverNow();
  $("token-left").textContent = formatClock(left);
  $("token-countdown").classList.toggle("warn", left < 15);
  $("token-countdown").setAttribute("aria-label", `Access token expires in ${formatClock(left)}`);
}

function renderRetry() {
  const { state, retryAt } = chat.status;
  const seconds = state === "reconnecting" && retryAt ? Math.ceil((retryAt - Date.now()) / 1000) : null;
  $("retry-in").textContent = seconds > 0 ? `in ${seconds} s` : "";
}

setInterval(() => {
  renderCountdown();
  renderRetry();
}, 1000);

// ---- rooms ---------------------------------------------------------------------------------

$("join-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const input = $("join-input");
  const room = input.value.trim().replace(/^#/, "");
  try {
    joinRoom(room);
  } catch (e) {
    showFormError($("join-error"), e.message);
    input.setAttribute("aria-invalid", "true");
    return;
  }
  showFormError($("join-error"), null);
  input.removeAttribute("aria-invalid");
  input.value = "";
  selectRoom(room);
  $("composer-input").focus();
});

function joinRoom(room) {
  chat.join(room); // throws on a bad name, before the page shows anything
  if (!rooms.has(room)) rooms.set(room, { items: [], unread: 0, joined: false });
  saveRooms();
  renderRooms();
}

function leaveRoom(room) {
  chat.leave(room);
  rooms.delete(room);
  saveRooms();
  if (activeRoom === room) selectRoom(rooms.keys().next().value ?? null);
  renderRooms();
}

function selectRoom(room) {
  activeRoom = room;
  const state = rooms.get(room);
  if (state) state.unread = 0;
  $("room-title").textContent = room ? `# ${room}` : "No room";
  $("composer-label").textContent = room ? `Message # ${room}` : "Message";
  $("composer-input").placeholder = room ? `Message # ${room}` : "Join a room to chat";
  $("composer-input").disabled = !room;
  $("send").disabled = !room;
  $("messages").setAttribute("aria-label", room ? `Messages in # ${room}` : "Messages");
  saveRooms();
  renderRooms();
  renderMessages();
  renderMembers();
}

function renderRooms() {
  const list = $("room-list");
  list.replaceChildren(
    ...[...rooms].map(([name, state]) => {
      const current = name === activeRoom;
      const unread = state.unread ? el("span", { class: "unread", text: String(state.unread), aria: { label: `${state.unread} unread` } }) : null;
      return el(
        "li",
        { class: `room${current ? " current" : ""}${state.joined ? "" : " pending"}`, data: { room: name } },
        el(
          "button",
          { type: "button", class: "room-button", aria: current ? { current: "true" } : {}, on: { click: () => selectRoom(name) } },
          el("span", { class: "hash", text: "#", aria: { hidden: "true" } }),
          el("span", { class: "room-name", text: name }),
          unread,
        ),
        el("button", {
          type: "button",
          class: "leave-button",
          text: "×",
          title: `Leave # ${name}`,
          aria: { label: `Leave # ${name}` },
          on: { click: () => leaveRoom(name) },
        }),
      );
    }),
  );
}

chat.addEventListener("joined", (e) => {
  const { room, history, rejoin, restarted } = e.detail;
  const state = rooms.get(room);
  if (!state) return;
  state.joined = true;
  const fresh = history.map((m) => ({ kind: "message", ...m }));
  if (rejoin && !restarted) {
    // A rejoin brings what was missed while away; anything already on the page is not shown twice.
    const shown = new Set(state.items.filter((i) => i.kind === "message").map((i) => i.id));
    state.items = [...state.items, ...fresh.filter((m) => !shown.has(m.id))];
  } else {
    // A first join brings the room's history. So does a rejoin after the server restarted, whose
    // ids start again at 1: what the page kept from before cannot be matched to it, and goes.
    state.items = fresh;
    state.hasOlder = history.length > 0 && history[0].id > 1;
  }
  if (room === activeRoom) {
    renderMessages();
    renderMembers();
  }
  renderRooms();
});

chat.addEventListener("left", () => renderRooms());

chat.addEventListener("presence", (e) => {
  const { room, user, event } = e.detail;
  addItem(room, { kind: "event", text: `${user} ${event === "join" ? "joined" : "left"}`, ts: Date.now() });
  if (room === activeRoom) renderMembers();
});

chat.addEventListener("status", () => {
  // Members are unknown while disconnected; rejoining lists them again.
  if (chat.status.state !== "connected") renderMembers();
});

// ---- messages --------------------------------------------------------------------------------

chat.addEventListener("message", (e) => addItem(e.detail.room, { kind: "message", ...e.detail }));

chat.addEventListener("history", (e) => {
  const { room, messages } = e.detail;
  const state = rooms.get(room);
  if (!state) return;
  state.items = [...messages.map((m) => ({ kind: "message", ...m })), ...state.items];
  state.hasOlder = messages.length > 0 && messages[0].id > 1;
  if (room !== activeRoom) return;
  // Keep the reader's place: older messages go above what is on screen.
  const scroller = $("scroller");
  const fromBottom = scroller.scrollHeight - scroller.scrollTop;
  renderMessages({ stick: false });
  scroller.scrollTop = scroller.scrollHeight - fromBottom;
});

$("load-older").addEventListener("click", () => {
  const first = rooms.get(activeRoom)?.items.find((i) => i.kind === "message");
  try {
    chat.history(activeRoom, { before: first?.id, limit: 50 });
  } catch (e) {
    notice(e.message);
  }
});

// Whether the reader is at the newest message; if so, new messages and resizes keep them there.
let atBottom = true;
let scrollerSize = "";
const sizeOf = (node) => `${node.clientWidth}x${node.clientHeight}`;
$("scroller").addEventListener("scroll", () => {
  const scroller = $("scroller");
  // A scroll caused by a resize says nothing about where the reader wants to be.
  if (sizeOf(scroller) !== scrollerSize) return;
  atBottom = scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < STICKY_PX;
});
new ResizeObserver(() => {
  scrollerSize = sizeOf($("scroller"));
  if (atBottom) scrollToNewest();
}).observe($("scroller"));

function scrollToNewest() {
  $("scroller").scrollTop = $("scroller").scrollHeight;
}

function addItem(room, item) {
  const state = rooms.get(room);
  if (!state) return;
  state.items.push(item);
  if (state.items.length > MAX_KEPT) state.items.splice(0, state.items.length - MAX_KEPT);
  if (room !== activeRoom) {
    if (item.kind === "message") state.unread += 1;
    return renderRooms();
  }
  const previous = state.items[state.items.length - 2];
  $("messages").append(renderItem(item, previous));
  $("empty-room").hidden = true;
  if (atBottom || item.from === chat.user) scrollToNewest();
}

function renderMessages({ stick = true } = {}) {
  const state = rooms.get(activeRoom);
  const items = state?.items ?? [];
  $("messages").replaceChildren(...items.map((item, i) => renderItem(item, items[i - 1])));
  $("empty-room").hidden = !state || items.some((i) => i.kind === "message");
  $("empty-room").textContent = state ? "No messages yet. Say hello!" : "Join a room to start chatting.";
  $("load-older").hidden = !state?.hasOlder;
  if (stick) scrollToNewest();
}

function renderItem(item, previous) {
  if (item.kind === "event") return el("li", { class: "event", text: item.text });
  const mine = item.from === chat.user;
  // Consecutive messages from one sender share the name and avatar; the name stays for screen readers.
  const continued = previous?.kind === "message" && previous.from === item.from && item.ts - previous.ts < GROUP_MS;
  return el(
    "li",
    { class: `message${mine ? " mine" : ""}${continued ? " continued" : ""}`, data: { id: String(item.id), from: item.from } },
    el("span", { class: `avatar ${hueClass(item.from)}`, text: item.from.slice(0, 1).toUpperCase(), aria: { hidden: "true" } }),
    el(
      "div",
      { class: "bubble" },
      el("p", { class: "meta" }, el("span", { class: "from", text: mine ? `${item.from} (you)` : item.from }), " ", timeElement(item.ts)),
      el("p", { class: "text", text: item.text }),
    ),
  );
}

function renderMembers() {
  const connected = chat.status.state === "connected";
  const members = activeRoom && connected ? chat.members(activeRoom) : [];
  $("member-count").textContent = members.length ? `(${members.length})` : "";
  $("members-toggle").textContent = members.length ? `People (${members.length})` : "People";
  $("member-list").replaceChildren(
    ...members.map((name) =>
      el(
        "li",
        { class: "member", data: { user: name } },
        el("span", { class: `avatar small ${hueClass(name)}`, text: name.slice(0, 1).toUpperCase(), aria: { hidden: "true" } }),
        el("span", { class: "member-name", text: name === chat.user ? `${name} (you)` : name }),
        el("span", { class: "online-dot", title: "online", aria: { label: "online" } }),
      ),
    ),
  );
  if (!members.length) {
    const text = !activeRoom ? "No room selected." : connected ? "Nobody here yet." : "Unknown while offline.";
    $("member-list").append(el("li", { class: "muted", text }));
  }
}

// At phone width the member list is a panel over the messages, opened and closed by buttons.
function showMembersPanel(open) {
  $("chat-view").classList.toggle("show-members", open);
  $("members-toggle").setAttribute("aria-expanded", String(open));
  (open ? $("members-close") : $("members-toggle")).focus();
}
$("members-toggle").addEventListener("click", () => showMembersPanel(true));
$("members-close").addEventListener("click", () => showMembersPanel(false));
$("members").addEventListener("keydown", (event) => event.key === "Escape" && showMembersPanel(false));

// ---- composer ----------------------------------------------------------------------------------

const input = $("composer-input");

input.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    $("composer").requestSubmit();
  }
});

input.addEventListener("input", fitComposer);

$("composer").addEventListener("submit", (event) => {
  event.preventDefault();
  const text = input.value.trim();
  if (!text || !activeRoom) return;
  try {
    chat.send(activeRoom, text);
  } catch (e) {
    return notice(`${e.message}. It is still in the message box.`, "not_connected");
  }
  input.value = "";
  fitComposer();
});

/** Grows the message box with its text, up to a limit (element.style is allowed by the CSP). */
function fitComposer() {
  input.style.height = "auto";
  input.style.height = `${Math.min(input.scrollHeight, 160)}px`;
  input.style.overflowY = input.scrollHeight > 160 ? "auto" : "hidden";
}

// ---- errors from the server ----------------------------------------------------------------------

const ERROR_TEXT = {
  too_many_rooms: "Could not join",
  invalid_room: "Could not join",
  rate_limited: "Slow down",
  reauth_failed: "Token renewal refused",
};

chat.addEventListener("error", (e) => {
  const { code, message, room, ref } = e.detail;
  if (room && rooms.has(room) && !chat.rooms.includes(room)) {
    // The join was refused: the room is not kept.
    rooms.delete(room);
    saveRooms();
    if (activeRoom === room) selectRoom(rooms.keys().next().value ?? null);
    renderRooms();
  }
  // An error about a room names it; a refused message echoes the `ref` its send was given.
  const what = [ref != null ? "Not sent" : ERROR_TEXT[code], room && `# ${room}`].filter(Boolean).join(" ");
  notice(what ? `${what}: ${message}` : message, code);
});

/** Shows a dismissable notice above the messages; the newest four are kept. */
function notice(text, code = "") {
  const list = $("notices");
  const item = el(
    "li",
    { class: "notice", data: { code } },
    el("span", { class: "notice-text", text }),
    code ? el("code", { class: "notice-code", text: code }) : null,
    el("button", { type: "button", class: "dismiss", text: "×", aria: { label: "Dismiss" }, on: { click: () => item.remove() } }),
  );
  list.append(item);
  while (list.children.length > 4) list.firstElementChild.remove();
}

// ---- remembering rooms (names only; never credentials) -----------------------------------------------

function storageKey() {
  return `authchat.rooms.${chat.user}`;
}

function loadSavedRooms() {
  try {
    const saved = JSON.parse(localStorage.getItem(storageKey()));
    if (Array.isArray(saved?.rooms)) return saved;
  } catch {
    // Nothing usable saved: start with the default room.
  }
  return { rooms: ["general"], active: "general" };
}

function saveRooms() {
  if (!chat.user) return;
  localStorage.setItem(storageKey(), JSON.stringify({ rooms: [...rooms.keys()], active: activeRoom }));
}

boot();
