// The chat page: sign-in, rooms, messages, presence and the composer, on top of authchat.js.
// Test hooks live in the DOM: #conn-badge carries data-state, data-conn-id, data-close-code and
// data-connects; #token-countdown carries data-expires-at and data-renewals; messages carry
// data-id and data-from; messages not yet acknowledged are in #pending with data-ref and
// data-state (queued, sending, failed); rooms in #room-list carry data-room and data-kind
// (public, private, dm); #room-kind says who may be in the room on screen.

import { AuthChat, charCount, roomNameProblem } from "./authchat.js";
import { $, bindSignIn, capitalize, el, formatClock, hueClass, offerSignIn, showFormError, syncChildren, timeElement } from "./ui.js";

const chat = new AuthChat();

/** Messages kept per room in the page (the server keeps its own history). */
const MAX_KEPT = 500;
/** Messages asked for per "Load older messages". */
const OLDER_PAGE = 50;
/** Messages from one sender closer than this are grouped under one name. */
const GROUP_MS = 5 * 60 * 1000;
/** How close to the bottom counts as "reading the newest" (then new messages scroll into view). */
const STICKY_PX = 80;

/** room -> {items: [{kind:"message"|"event", …}], unread, joined, access} */
const rooms = new Map();
let activeRoom = null;
/** Rooms the user left here: not joined again when the server lists them as theirs. */
let dismissed = new Set();
/** The user a direct conversation was just asked with: its room is shown once joined. */
let openingDm = null;
let connects = 0;
let renewals = 0;
/** A renewal failed and none has succeeded since: the only time the countdown warns. */
let renewFailing = false;
/** Messages from others that arrived while the reader was scrolled up. */
let unseen = 0;

// ---- sign-in and sign-out --------------------------------------------------------------------

bindSignIn($("signin-form"), $("signin-error"), chat, enterChat);

$("signout").addEventListener("click", () => chat.logout());

chat.addEventListener("signedout", (e) => {
  const { reason, deliberate } = e.detail;
  showSignIn(deliberate ? { text: "You signed out." } : { text: `You were signed out: ${reason}.`, alert: true });
});

async function boot() {
  try {
    const me = await chat.resume();
    if (me) return enterChat();
    showSignIn(null);
  } catch (e) {
    showSignIn({ text: `${capitalize(e.message)}. Reload the page to try again.`, alert: true });
  }
}

/** The sign-in view, with a note saying why (`alert`: something went wrong), if any. */
function showSignIn(note) {
  $("loading").hidden = true;
  $("chat-view").hidden = true;
  $("account").hidden = true;
  // The sign-in note says why; the badge would only say it a second time.
  $("connection").hidden = true;
  rooms.clear();
  activeRoom = null;
  const box = $("signin-reason");
  box.textContent = note?.text ?? "";
  box.hidden = !note;
  box.classList.toggle("info", !note?.alert);
  $("signin-view").hidden = false;
  offerSignIn(chat);
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
  renewFailing = false;

  const saved = loadSavedRooms();
  dismissed = new Set(saved.left ?? []);
  for (const room of saved.rooms) {
    try {
      joinRoom(room);
    } catch {
      // A saved name the server would refuse (saved by an older page) is dropped.
    }
  }
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
  if (e.detail.renewed || chat.status.state !== "connected") renewFailing = false;
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

chat.addEventListener("renewfailed", (e) => {
  renewFailing = true;
  renderCountdown();
  // A refusal signs out at once and the sign-in form says why; other failures are retried.
  if (e.detail.status !== 401) notice(`Your sign-in could not be renewed yet (${e.detail.message}). Trying again.`, e.detail.code);
});

function renderCountdown() {
  const expiresAt = chat.expiresAt;
  if (expiresAt == null) return;
  const left = expiresAt - chat.serverNow();
  $("token-left").textContent = formatClock(left);
  // Renewal is automatic: the countdown warns only when it is failing.
  $("token-countdown").classList.toggle("warn", renewFailing);
  $("token-countdown").setAttribute(
    "aria-label",
    `Access token expires in ${formatClock(left)}${renewFailing ? "; renewing it is failing" : "; it is renewed automatically"}`,
  );
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

/** The name typed in the join form, as the user means it ("#general" is general). */
const typedRoom = () => $("join-input").value.trim().replace(/^#/, "");

/** Says what is wrong with the typed name (or nothing); answers whether something is. */
function checkJoinInput({ empty = false } = {}) {
  const room = typedRoom();
  const problem = room || empty ? roomNameProblem(room, chat.maxRoomNameChars) : null;
  showFormError($("join-error"), problem);
  if (problem) $("join-input").setAttribute("aria-invalid", "true");
  else $("join-input").removeAttribute("aria-invalid");
  return !!problem;
}

$("join-input").addEventListener("input", () => checkJoinInput());

$("join-form").addEventListener("submit", (event) => {
  event.preventDefault();
  // A bad name is refused with the reason and left as typed: never cut to fit.
  if (checkJoinInput({ empty: true })) return;
  const room = typedRoom();
  if ($("join-private").checked) {
    try {
      chat.create(room); // a private room: only its owner and the people they invite
    } catch (e) {
      return showFormError($("join-error"), `${capitalize(e.message)}.`);
    }
    addRoom(room);
    $("join-private").checked = false;
  } else {
    joinRoom(room);
  }
  $("join-input").value = "";
  selectRoom(room);
  $("composer-input").focus();
});

function joinRoom(room) {
  chat.join(room); // throws on a bad name, before the page shows anything
  addRoom(room);
}

/** Lists a room the client is entering (joining, creating, or a conversation taken up). */
function addRoom(room) {
  if (!rooms.has(room)) rooms.set(room, { items: [], unread: 0, joined: false, access: null });
  dismissed.delete(room);
  saveRooms();
  renderRooms();
}

/** Drops a room from the page (the client is no longer in it), choosing another to show. */
function dropRoom(room) {
  rooms.delete(room);
  saveRooms();
  if (activeRoom === room) selectRoom(rooms.keys().next().value ?? null);
  renderRooms();
}

/** Who may be in a room, as the server last said (or as an invitation said, before joining). */
const accessOf = (room) => chat.access(room) ?? rooms.get(room)?.access ?? null;
/** The other user of a direct conversation. */
const peerOf = (access) => access.allowed?.find((u) => u !== chat.user) ?? "?";

/** How the page names a room: "@ bob" for a conversation with bob, "# name" otherwise. */
function roomLabel(room) {
  const access = accessOf(room);
  return access?.kind === "dm" ? `@ ${peerOf(access)}` : `# ${room}`;
}

function leaveRoom(room) {
  // Where the focus goes when it was on the room's item: the room that takes its place in the
  // list, else the one before it, else the join form.
  const item = $("room-list").querySelector(`li[data-room="${CSS.escape(room)}"]`);
  const hadFocus = item?.contains(document.activeElement);
  const neighbour = (item?.nextElementSibling ?? item?.previousElementSibling)?.dataset.room;
  chat.leave(room);
  dismissed.add(room);
  dropRoom(room);
  if (hadFocus) {
    const next = neighbour && $("room-list").querySelector(`li[data-room="${CSS.escape(neighbour)}"] .room-button`);
    (next ?? $("join-input")).focus();
  }
}

function selectRoom(room) {
  activeRoom = room;
  const state = rooms.get(room);
  if (state) state.unread = 0;
  $("composer-input").disabled = !room;
  $("send").disabled = !room;
  saveRooms();
  renderHeader();
  renderRooms();
  renderMessages();
  renderMembers();
}

/** The room on screen's name, and who may be in it. */
function renderHeader() {
  const room = activeRoom;
  const label = room ? roomLabel(room) : null;
  $("room-title").textContent = label ?? "No room";
  $("composer-label").textContent = label ? `Message ${label}` : "Message";
  $("composer-input").placeholder = label ? `Message ${label}` : "Join a room to chat";
  $("messages").setAttribute("aria-label", label ? `Messages in ${label}` : "Messages");
  const access = room ? accessOf(room) : null;
  const line = $("room-kind");
  line.dataset.kind = access?.kind ?? "";
  line.hidden = !access || access.kind === "public";
  if (access?.kind === "private") {
    const owner = access.owner === chat.user ? "you" : access.owner;
    const count = access.allowed?.length ?? 0;
    line.textContent = `Private room of ${owner}: only the ${count} ${count === 1 ? "person" : "people"} on its list can join or read it`;
  } else if (access?.kind === "dm") {
    line.textContent = `Direct conversation with ${peerOf(access)}: only the two of you can read it`;
  }
}

/** The room list, updated in place (keyed by name), so a button keeps the focus it has. */
function renderRooms() {
  syncChildren($("room-list"), [...rooms], ([name]) => name, createRoomItem, updateRoomItem);
}

function createRoomItem([name]) {
  return el(
    "li",
    { class: "room", data: { room: name } },
    el(
      "button",
      { type: "button", class: "room-button", title: `# ${name}`, on: { click: () => selectRoom(name) } },
      el("span", { class: "hash", text: "#", aria: { hidden: "true" } }),
      el("span", { class: "room-name", text: name }),
      el("span", { class: "unread", hidden: true }),
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
}

function updateRoomItem(item, [name, state]) {
  const current = name === activeRoom;
  item.className = `room${current ? " current" : ""}${state.joined ? "" : " pending"}`;
  const access = accessOf(name);
  const kind = access?.kind ?? "public";
  item.dataset.kind = kind;
  item.querySelector(".hash").textContent = kind === "dm" ? "@" : kind === "private" ? "🔒" : "#";
  item.querySelector(".room-name").textContent = kind === "dm" ? peerOf(access) : name;
  const label = roomLabel(name) + (kind === "private" ? " (private)" : "");
  const leave = item.querySelector(".leave-button");
  leave.title = `Leave ${label}`;
  leave.setAttribute("aria-label", `Leave ${label}`);
  const button = item.querySelector(".room-button");
  button.title = label;
  if (current) button.setAttribute("aria-current", "true");
  else button.removeAttribute("aria-current");
  const unread = item.querySelector(".unread");
  unread.hidden = !state.unread;
  unread.textContent = String(state.unread);
  unread.setAttribute("aria-label", `${state.unread} unread`);
}

chat.addEventListener("joined", (e) => {
  const { room, history, rejoin, restarted, access } = e.detail;
  // A conversation asked for by user is named by the server only now.
  if (!rooms.has(room) && chat.rooms.includes(room)) addRoom(room);
  const state = rooms.get(room);
  if (!state) return;
  state.joined = true;
  state.access = access;
  if (openingDm && access?.kind === "dm" && peerOf(access) === openingDm) {
    openingDm = null;
    selectRoom(room);
  }
  const fresh = history.map((m) => ({ kind: "message", ...m }));
  if (rejoin && !restarted) {
    // A rejoin brings what was missed while away; anything already on the page is not shown twice.
    const shown = new Set(state.items.filter((i) => i.kind === "message").map((i) => i.id));
    const missed = fresh.filter((m) => !shown.has(m.id));
    const last = lastMessageId(state);
    // More was posted while away than the server keeps: say that the gap is gone for good.
    const lost = missed.length && last !== null ? missed[0].id - last - 1 : 0;
    const gap = lost > 0 ? [eventItem(`${lost} message${lost === 1 ? "" : "s"} from while you were away ${lost === 1 ? "is" : "are"} no longer kept.`)] : [];
    state.items = [...state.items, ...gap, ...missed];
  } else if (restarted) {
    // The server restarted and numbers messages from 1 again: what the page kept from before
    // cannot be matched to its history, and goes; the page says so.
    state.items = [eventItem("The server restarted; earlier messages of this room are gone."), ...fresh];
  } else {
    state.items = fresh;
  }
  if (room === activeRoom) {
    renderHeader();
    renderMessages();
    renderMembers();
  }
  renderRooms();
});

chat.addEventListener("left", (e) => {
  const { room, reason } = e.detail;
  // Put out by the server: the room goes from the page, and the page says why.
  if (reason && rooms.has(room)) {
    const label = roomLabel(room);
    dropRoom(room);
    notice(
      reason === "kicked"
        ? `You were removed from ${label}, and cannot rejoin it unless let back in.`
        : `You may no longer be in ${label}: what your account is allowed changed.`,
      reason,
    );
  }
  renderRooms();
});

chat.addEventListener("access", (e) => {
  const { room, access } = e.detail;
  const state = rooms.get(room);
  if (state) state.access = access;
  renderRooms();
  if (room === activeRoom) {
    renderHeader();
    renderMembers();
  }
});

chat.addEventListener("invited", (e) => {
  const { room, by, access } = e.detail;
  joinRoom(room);
  rooms.get(room).access = access;
  renderRooms();
  notice(access.kind === "dm" ? `${by} started a direct conversation with you.` : `${by} invited you to # ${room}.`, "invited");
});

// After each connect: private rooms and conversations opened for this user while away.
chat.addEventListener("rooms", (e) => {
  for (const { room, access } of e.detail.rooms) {
    if (rooms.has(room) || dismissed.has(room)) continue;
    joinRoom(room);
    rooms.get(room).access = access;
  }
  renderRooms();
});

chat.addEventListener("presence", (e) => {
  const { room, user, event } = e.detail;
  addItem(room, eventItem(`${user} ${event === "join" ? "joined" : "left"}`));
  if (room === activeRoom) renderMembers();
});

chat.addEventListener("status", () => {
  // Members are unknown while disconnected; rejoining lists them again.
  if (chat.status.state !== "connected") renderMembers();
  schedulePending(); // "Sending…" or "Waiting for the connection…"
});

function eventItem(text) {
  return { kind: "event", text, ts: Date.now() };
}

// ---- messages --------------------------------------------------------------------------------

chat.addEventListener("message", (e) => addItem(e.detail.room, { kind: "message", ...e.detail }));

chat.addEventListener("history", (e) => {
  const { room, messages } = e.detail;
  const state = rooms.get(room);
  if (!state) return;
  const first = firstMessageId(state);
  const older = messages.filter((m) => first === null || m.id < first);
  state.items = [...older.map((m) => ({ kind: "message", ...m })), ...state.items];
  // Asked for more than came: the server keeps nothing older.
  if (older.length < state.asked) state.serverHasNoOlder = true;
  if (room !== activeRoom) return;
  // Keep the reader's place: older messages go above what is on screen.
  const scroller = $("scroller");
  const fromBottom = scroller.scrollHeight - scroller.scrollTop;
  renderMessages({ stick: false });
  scroller.scrollTop = scroller.scrollHeight - fromBottom;
});

$("load-older").addEventListener("click", () => {
  const state = rooms.get(activeRoom);
  if (!state) return;
  state.asked = OLDER_PAGE;
  try {
    chat.history(activeRoom, { before: firstMessageId(state) ?? undefined, limit: OLDER_PAGE });
  } catch (e) {
    notice(`Older messages cannot be loaded while ${e.message}.`);
  }
});

const firstMessageId = (state) => state.items.find((i) => i.kind === "message")?.id ?? null;
const lastMessageId = (state) => state.items.findLast((i) => i.kind === "message")?.id ?? null;

/**
 * Whether the server still keeps messages older than the first on the page: it keeps the last
 * `history_size` of each room, and join brings all of them, so there is more only when the page
 * let some go (it keeps at most MAX_KEPT) that the server still has.
 */
function hasOlder(state) {
  const first = firstMessageId(state);
  if (first === null || first <= 1 || state.serverHasNoOlder) return false;
  const oldestKept = lastMessageId(state) - (chat.config?.history_size ?? 100) + 1;
  return first > Math.max(1, oldestKept);
}

/** "Load older messages" when there is more; else, if the room has older messages, that they are gone. */
function renderHistoryControls(state) {
  const more = !!state && hasOlder(state);
  $("load-older").hidden = !more;
  const gone = !!state && !more && (firstMessageId(state) ?? 1) > 1;
  $("history-note").hidden = !gone;
  const kept = chat.config?.history_size ?? 100;
  $("history-note").textContent = `Older messages in this room are no longer kept (the server keeps the last ${kept}).`;
}

// Whether the reader is at the newest message; if so, new messages and resizes keep them there.
let atBottom = true;
let scrollerSize = "";
const sizeOf = (node) => `${node.clientWidth}x${node.clientHeight}`;
$("scroller").addEventListener("scroll", () => {
  const scroller = $("scroller");
  // A scroll caused by a resize says nothing about where the reader wants to be.
  if (sizeOf(scroller) !== scrollerSize) return;
  atBottom = scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < STICKY_PX;
  if (atBottom) showUnseen(0);
});

/** "N new messages" while the reader is scrolled up; it takes them to the newest. */
function showUnseen(count) {
  unseen = count;
  const button = $("new-messages");
  button.hidden = count === 0;
  button.textContent = `${count} new message${count === 1 ? "" : "s"} ↓`;
}
$("new-messages").addEventListener("click", () => {
  scrollToNewest();
  showUnseen(0);
  $("composer-input").focus(); // the button hides itself, so focus needs a new home
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
  const dropped = trimItems(state);
  if (room !== activeRoom) {
    if (item.kind === "message") state.unread += 1;
    return renderRooms();
  }
  if (dropped) {
    for (let i = 0; i < dropped; i += 1) $("messages").firstElementChild?.remove();
    renderHistoryControls(state);
  }
  const previous = state.items[state.items.length - 2];
  $("messages").append(renderItem(item, previous));
  $("empty-room").hidden = true;
  if (atBottom || item.from === chat.user) scrollToNewest();
  else if (item.kind === "message") showUnseen(unseen + 1);
}

/** Keeps the newest MAX_KEPT messages (and the events among them); answers how many items went. */
function trimItems(state) {
  let messages = 0;
  let cut = 0;
  for (let i = state.items.length - 1; i >= 0; i -= 1) {
    if (state.items[i].kind === "message" && ++messages > MAX_KEPT) {
      cut = i + 1;
      break;
    }
  }
  state.items.splice(0, cut);
  if (cut) state.serverHasNoOlder = false; // the page let go of messages the server may keep
  return cut;
}

function renderMessages({ stick = true } = {}) {
  const state = rooms.get(activeRoom);
  const items = state?.items ?? [];
  $("messages").replaceChildren(...items.map((item, i) => renderItem(item, items[i - 1])));
  renderHistoryControls(state);
  renderPending();
  if (stick) {
    scrollToNewest();
    showUnseen(0);
  }
}

/** Whether the room shows nothing but its "empty" line. */
function renderEmpty() {
  const state = rooms.get(activeRoom);
  const hasContent = state?.items.some((i) => i.kind === "message") || $("pending").children.length > 0;
  $("empty-room").hidden = !state || hasContent;
  $("empty-room").textContent = state ? "No messages yet. Say hello!" : "Join a room to start chatting.";
}

// ---- messages on their way out ------------------------------------------------------------------

chat.addEventListener("outbox", schedulePending);

let pendingTimer = null;
/** Many outbox changes come at once (a burst of messages): render them together. */
function schedulePending() {
  pendingTimer ??= setTimeout(renderPending, 0);
}

/** The active room's messages not yet acknowledged, below the others, each with its state. */
function renderPending() {
  clearTimeout(pendingTimer);
  pendingTimer = null;
  const entries = activeRoom ? chat.pending(activeRoom) : [];
  syncChildren($("pending"), entries, (entry) => entry.ref, createPendingItem, updatePendingItem);
  renderEmpty();
  if (atBottom) scrollToNewest();
}

function createPendingItem(entry) {
  const retry = () => chat.retry(entry.ref);
  const edit = () => {
    const text = chat.discard(entry.ref);
    if (text === null) return;
    input.value = input.value.trim() ? `${input.value}\n${text}` : text;
    composerChanged();
    input.focus();
  };
  return el(
    "li",
    { class: "message mine pending", data: { ref: entry.ref } },
    el(
      "div",
      { class: "bubble" },
      el("p", { class: "text", text: entry.text }),
      el(
        "p",
        { class: "pending-status" },
        el("span", { class: "pending-text" }),
        el("button", { type: "button", class: "small retry", text: "Retry", on: { click: retry } }),
        el("button", { type: "button", class: "small edit", text: "Edit", on: { click: edit } }),
      ),
    ),
  );
}

function updatePendingItem(item, entry) {
  item.dataset.state = entry.state;
  const failed = entry.state === "failed";
  const waiting = chat.status.state !== "connected";
  item.querySelector(".pending-text").textContent = failed
    ? `Not sent: ${entry.error?.text ?? "the server refused it"}.`
    : waiting
      ? "Waiting for the connection…"
      : "Sending…";
  for (const button of item.querySelectorAll("button")) {
    button.hidden = !failed;
    button.setAttribute("aria-label", `${button.textContent} the message “${entry.text.slice(0, 40)}”`);
  }
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
  const access = activeRoom ? accessOf(activeRoom) : null;
  // The owner of a private room invites and kicks; anyone may write to someone directly.
  const owns = connected && access?.kind === "private" && access.owner === chat.user;
  // On a private room's list but not here now.
  const absent = access?.kind === "private" ? (access.allowed ?? []).filter((u) => !members.includes(u)) : [];
  $("member-count").textContent = members.length ? `(${members.length})` : "";
  $("members-toggle").textContent = members.length ? `People (${members.length})` : "People";
  const actions = (name) =>
    name === chat.user
      ? null
      : el(
          "span",
          { class: "member-actions" },
          connected && access?.kind !== "dm" && el("button", {
            type: "button",
            class: "small dm-button",
            text: "Message",
            aria: { label: `Write to ${name} directly` },
            on: { click: () => startDm(name) },
          }),
          owns && name !== access.owner && el("button", {
            type: "button",
            class: "small danger-outline kick-button",
            text: "Kick",
            aria: { label: `Kick ${name} from ${roomLabel(activeRoom)}` },
            on: { click: () => kick(name) },
          }),
        );
  $("member-list").replaceChildren(
    ...members.map((name) =>
      el(
        "li",
        { class: "member", data: { user: name } },
        el("span", { class: `avatar small ${hueClass(name)}`, text: name.slice(0, 1).toUpperCase(), aria: { hidden: "true" } }),
        el("span", { class: "member-name", text: name === chat.user ? `${name} (you)` : name }),
        el("span", { class: "online-dot", title: "online", aria: { label: "online" } }),
        actions(name),
      ),
    ),
    ...absent.map((name) =>
      el(
        "li",
        { class: "member absent", data: { user: name, absent: "true" } },
        el("span", { class: `avatar small ${hueClass(name)}`, text: name.slice(0, 1).toUpperCase(), aria: { hidden: "true" } }),
        el("span", { class: "member-name", text: `${name} (invited, not here)` }),
        owns && actions(name),
      ),
    ),
  );
  $("invite-form").hidden = !owns;
  if (!members.length && !absent.length) {
    const text = !activeRoom ? "No room selected." : connected ? "Nobody here yet." : "Unknown while offline.";
    $("member-list").append(el("li", { class: "muted", text }));
  }
}

/** Opens (or goes to) the direct conversation with `name`. */
function startDm(name) {
  try {
    openingDm = name;
    chat.dm(name);
  } catch (e) {
    openingDm = null;
    notice(`Could not open a conversation with ${name}: ${e.message}.`);
  }
}

/** The owner puts `name` out of the private room on screen (answered with `access`). */
function kick(name) {
  try {
    chat.kick(activeRoom, name);
  } catch (e) {
    notice(`Could not kick ${name}: ${e.message}.`);
  }
}

$("invite-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const name = $("invite-input").value.trim();
  if (!name || !activeRoom) return;
  try {
    chat.invite(activeRoom, [name]);
    $("invite-input").value = "";
  } catch (e) {
    notice(`Could not invite ${name}: ${e.message}.`);
  }
});

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

input.addEventListener("input", composerChanged);

function composerChanged() {
  fitComposer();
  checkComposer();
}

/**
 * Says when the text is over the server's limit, counted as the server counts (characters,
 * not UTF-16 units), and answers whether it is. The text is never cut.
 */
function checkComposer() {
  const length = charCount(input.value.trim());
  const max = chat.maxTextChars;
  const over = length > max;
  const problem = over
    ? `This message has ${length.toLocaleString()} characters; the limit is ${max.toLocaleString()}. Shorten it (or split it) to send it.`
    : null;
  showFormError($("composer-error"), problem);
  if (over) input.setAttribute("aria-invalid", "true");
  else input.removeAttribute("aria-invalid");
  return over;
}

$("composer").addEventListener("submit", (event) => {
  event.preventDefault();
  const text = input.value.trim();
  if (!text || !activeRoom || checkComposer()) return;
  // Queued, and sent as soon as the connection and the pace allow; it shows below until then.
  chat.send(activeRoom, text);
  input.value = "";
  composerChanged();
  scrollToNewest();
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

/** What a refused room request was, in words (the server's message says why). */
const REQUEST_TEXT = {
  join: "Could not join",
  create: "Could not create",
  invite: "Could not invite to",
  kick: "Could not kick from",
  dm: "Could not open the conversation",
};

chat.addEventListener("error", (e) => {
  const { code, text: message, room, ref, request } = e.detail;
  // A refused message says so in its own bubble, with a Retry button.
  if (request === "send" && chat.pending().some((p) => p.ref === ref)) return;
  if (request === "dm") openingDm = null;
  // An error about a room names it (a conversation by its other user, not its digest).
  const where = room && request !== "dm" ? roomLabel(room) : null;
  if (room && rooms.has(room) && !chat.rooms.includes(room)) {
    // The join was refused: the room is not kept.
    dropRoom(room);
  }
  // A refused message echoes the `ref` its send was given.
  const prefix = ref != null && request === "send" ? "Not sent" : (REQUEST_TEXT[request] ?? ERROR_TEXT[code]);
  const what = [prefix, where].filter(Boolean).join(" ");
  notice(what ? `${what}: ${message}.` : `${capitalize(message)}.`, code);
});

/**
 * Shows a dismissable notice above the messages; the newest four are kept, and one that says
 * the same as an earlier one replaces it (with a count), so repeats never push others out.
 * The code is for the console and the tests (`data-code`), not for the reader.
 */
function notice(text, code = "") {
  const list = $("notices");
  const same = [...list.children].find((n) => n.dataset.text === text);
  const repeats = same ? Number(same.dataset.repeats) + 1 : 1;
  same?.remove();
  const item = el(
    "li",
    { class: "notice", data: { code, text, repeats: String(repeats) } },
    el("span", { class: "notice-text", text: repeats > 1 ? `${text} (${repeats} times)` : text }),
    el("button", { type: "button", class: "dismiss", text: "×", aria: { label: "Dismiss" }, on: { click: () => dismiss(item) } }),
  );
  list.append(item);
  while (list.children.length > 4) list.firstElementChild.remove();
}

/** Removes a notice; the focus goes to the next one, or to the message box. */
function dismiss(item) {
  const next = item.nextElementSibling ?? item.previousElementSibling;
  item.remove();
  (next?.querySelector(".dismiss") ?? $("composer-input")).focus();
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
  return { rooms: ["general"], active: "general", left: [] };
}

function saveRooms() {
  if (!chat.user) return;
  const saved = { rooms: [...rooms.keys()], active: activeRoom, left: [...dismissed].slice(-200) };
  localStorage.setItem(storageKey(), JSON.stringify(saved));
}

boot();
