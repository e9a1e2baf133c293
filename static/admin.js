// The admin page: live tables of connections and rooms; disconnect, revoke and kick from a room
// with a confirm step. Rows are updated in place (keyed by connection id, room name, user) so a
// refresh never steals keyboard focus. Room rows carry data-room and data-kind; their members
// data-user.

import { AuthChat } from "./authchat.js";
import { $, bindSignIn, capitalize, el, formatAge, formatClock, hueClass, offerSignIn, syncChildren, timeElement } from "./ui.js";

const chat = new AuthChat();

/** How often the table is fetched again while "Refresh every 2 s" is on. */
const REFRESH_MS = 2000;

/** The last `/admin/connections` answer, re-rendered every second for the live "expires in". */
let connections = [];
/** The last `/admin/rooms` answer. */
let roomRows = [];
let refreshTimer = null;
/** Bumped by each refresh, so a slow answer never overwrites a newer one or doubles the timer. */
let generation = 0;

// ---- signing in ----------------------------------------------------------------------------------

bindSignIn($("signin-form"), $("signin-error"), chat, enter);
$("signout").addEventListener("click", () => chat.logout());
chat.addEventListener("signedout", (e) => {
  const { reason, deliberate } = e.detail;
  showOnly("signin-view", deliberate ? { text: "You signed out." } : { text: `You were signed out: ${reason}.`, alert: true });
});

async function boot() {
  try {
    const me = await chat.resume();
    if (me) return enter();
    showOnly("signin-view");
  } catch (e) {
    showOnly("signin-view", { text: `${capitalize(e.message)}. Reload the page to try again.`, alert: true });
  }
}

/** Shows one of the page's views; the sign-in view may carry a note saying why (`alert`: something went wrong). */
function showOnly(id, note = null) {
  for (const view of ["loading", "signin-view", "not-admin", "admin-view"]) $(view).hidden = view !== id;
  $("account").hidden = id !== "admin-view";
  if (id !== "admin-view") stopRefreshing();
  if (id === "signin-view") {
    $("signin-reason").textContent = note?.text ?? "";
    $("signin-reason").hidden = !note;
    $("signin-reason").classList.toggle("info", !note?.alert);
    offerSignIn(chat);
  }
}

function enter() {
  if (!chat.isAdmin) {
    $("not-admin-user").textContent = chat.user;
    return showOnly("not-admin");
  }
  showOnly("admin-view");
  $("account-user").textContent = chat.user;
  const avatar = $("account-avatar");
  avatar.className = `avatar small ${hueClass(chat.user)}`;
  avatar.textContent = chat.user.slice(0, 1).toUpperCase();
  refresh();
}

// ---- refreshing ------------------------------------------------------------------------------------

$("auto-refresh").addEventListener("change", () => ($("auto-refresh").checked ? refresh() : stopRefreshing()));
$("refresh-now").addEventListener("click", () => refresh());

function stopRefreshing() {
  clearTimeout(refreshTimer);
  refreshTimer = null;
}

/** Fetches connections and stats, renders them, and schedules the next refresh. */
async function refresh() {
  stopRefreshing();
  const mine = ++generation;
  try {
    const [list, stats, roomList] = await Promise.all([
      chat.api("/admin/connections"),
      chat.api("/admin/stats"),
      chat.api("/admin/rooms"),
    ]);
    if (mine !== generation) return;
    connections = list.connections;
    roomRows = roomList.rooms;
    renderStats(stats);
    render();
    renderRooms();
    // Several nodes: one that did not answer in time has sockets this table cannot show.
    const missing = [...new Set([...(list.missing ?? []), ...(roomList.missing ?? [])])];
    $("admin-error").textContent = missing.length ? `Not shown: ${missing.join(", ")} did not answer in time.` : "";
    $("admin-error").hidden = missing.length === 0;
    $("last-updated").textContent = `Updated ${new Date().toLocaleTimeString()}`;
  } catch (e) {
    if (mine !== generation || !chat.user) return; // superseded, or signed out meanwhile
    console.info(`authchat admin: refresh failed: ${e.code}: ${e.detail}`);
    $("admin-error").textContent = `Could not load connections: ${e.message}.`;
    $("admin-error").hidden = false;
  }
  if ($("auto-refresh").checked && !$("admin-view").hidden) refreshTimer = setTimeout(refresh, REFRESH_MS);
}

setInterval(() => connections.length && render(), 1000);

function renderStats(stats) {
  $("stat-connections").textContent = stats.connections;
  $("stat-users").textContent = stats.users;
  $("stat-rooms").textContent = stats.rooms;
  $("stat-in").textContent = stats.messages_in;
  $("stat-out").textContent = stats.messages_out;
  $("stat-uptime").textContent = formatAge(stats.uptime_seconds);
}

// ---- the tables --------------------------------------------------------------------------------------

function render() {
  const rows = [...connections].sort((a, b) => (a.user ?? "").localeCompare(b.user ?? "") || a.conn_id - b.conn_id);
  syncChildren($("connection-rows"), rows, (c) => c.conn_id, createRow, updateRow);

  const users = new Map();
  for (const c of rows) if (c.user) users.set(c.user, (users.get(c.user) ?? 0) + 1);
  syncChildren($("user-list"), [...users], ([user]) => user, createUserCard, updateUserCard);
  $("no-users").hidden = users.size > 0;
}

function createRow(c) {
  // data-label names each cell where the phone layout shows rows as cards, without the header.
  const cell = (name, label) => el("td", { class: name, data: { label } });
  return el(
    "tr",
    { data: { connId: String(c.conn_id), user: c.user ?? "" } },
    cell("col-id", "Conn"),
    cell("col-user", "User"),
    cell("opt col-node", "Node"),
    cell("opt col-auth", "Auth"),
    cell("col-rooms", "Rooms"),
    cell("col-since", "Connected since"),
    cell("col-expires", "Expires in"),
    el(
      "td",
      { class: "col-actions" },
      el("button", {
        type: "button",
        class: "small danger-outline disconnect-conn",
        text: "Disconnect",
        aria: { label: `Disconnect connection ${c.conn_id} of ${c.user ?? "an unauthenticated client"}` },
        on: { click: () => disconnectConnection(c.conn_id, c.user) },
      }),
    ),
  );
}

function updateRow(row, c) {
  const [id, user, node, auth, roomsCell, since, expires] = row.cells;
  id.textContent = `#${c.conn_id}`;
  user.replaceChildren(
    el(
      "span",
      { class: "who" },
      el("span", { class: `avatar small ${hueClass(c.user ?? "?")}`, text: (c.user ?? "?").slice(0, 1).toUpperCase(), aria: { hidden: "true" } }),
      el("span", { text: c.user ?? "(authenticating)" }),
    ),
  );
  node.textContent = c.node;
  auth.textContent = c.auth ?? "–";
  roomsCell.textContent = c.rooms?.length ? c.rooms.map((r) => `#${r}`).join(" ") : "–";
  const connectedFor = Date.now() / 1000 - c.connected_at / 1000;
  since.replaceChildren(timeElement(c.connected_at, { seconds: true }), el("span", { class: "muted", text: ` (${formatAge(connectedFor)})` }));
  if (c.expires_at) {
    const left = c.expires_at - chat.serverNow();
    expires.textContent = formatClock(left);
    expires.classList.toggle("warn", left < 60);
  } else {
    expires.textContent = "–";
  }
}

function createUserCard([user]) {
  return el(
    "li",
    { class: "user-card", data: { user } },
    el("span", { class: `avatar ${hueClass(user)}`, text: user.slice(0, 1).toUpperCase(), aria: { hidden: "true" } }),
    el("div", { class: "user-card-text" }, el("strong", { text: user }), el("span", { class: "muted conn-count" })),
    el(
      "div",
      { class: "user-card-actions" },
      el("button", {
        type: "button",
        class: "small danger-outline disconnect-user",
        text: "Disconnect all",
        aria: { label: `Disconnect all connections of ${user}` },
        on: { click: () => disconnectUser(user) },
      }),
      el("button", {
        type: "button",
        class: "small danger revoke-user",
        text: "Revoke",
        aria: { label: `Revoke ${user}` },
        on: { click: () => revokeUser(user) },
      }),
    ),
  );
}

function updateUserCard(card, [, count]) {
  card.querySelector(".conn-count").textContent = `${count} connection${count === 1 ? "" : "s"}`;
}

// ---- rooms -------------------------------------------------------------------------------------------

/** A room's name for people: a conversation by its two users (its name is a digest). */
function roomLabel(row) {
  return row.kind === "dm" ? `conversation of ${(row.allowed ?? []).join(" and ")}` : `# ${row.room}`;
}

function renderRooms() {
  syncChildren($("room-rows"), roomRows, (r) => r.room, createRoomRow, updateRoomRow);
  $("no-rooms").hidden = roomRows.length > 0;
}

function createRoomRow(r) {
  const cell = (name, label) => el("td", { class: name, data: { label } });
  return el(
    "tr",
    { data: { room: r.room, kind: r.kind } },
    cell("col-room", "Room"),
    cell("col-kind", "Kind"),
    el("td", { class: "col-members", data: { label: "In it now" } }, el("ul", { class: "chips members-chips" })),
    cell("col-messages", "Messages"),
    el("td", { class: "col-kicked", data: { label: "Kept out" } }, el("ul", { class: "chips kicked-chips" })),
  );
}

function updateRoomRow(row, r) {
  const [name, kind, , messages] = row.cells;
  row.dataset.kind = r.kind;
  name.textContent = roomLabel(r);
  name.title = r.room;
  kind.textContent =
    r.kind === "private" ? `private (owner ${r.owner}; ${r.allowed.length} on its list)` : r.kind === "dm" ? "direct conversation" : "public";
  messages.textContent = String(r.messages);
  const label = roomLabel(r);
  syncChildren(row.querySelector(".members-chips"), r.members, (u) => u, (user) =>
    el(
      "li",
      { class: "chip", data: { user } },
      el("span", { text: user }),
      // A private room's owner stays: kicking them is refused.
      user === r.owner
        ? el("span", { class: "muted", text: "(owner)" })
        : el("button", {
            type: "button",
            class: "small danger-outline kick-member",
            text: "Kick",
            aria: { label: `Kick ${user} from ${label}` },
            on: { click: () => kickFromRoom(r, user) },
          }),
    ),
    () => {},
  );
  syncChildren(row.querySelector(".kicked-chips"), r.kicked ?? [], (u) => u, (user) =>
    el(
      "li",
      { class: "chip", data: { user } },
      el("span", { text: user }),
      el("button", {
        type: "button",
        class: "small let-back",
        text: "Let back in",
        aria: { label: `Let ${user} back into ${label}` },
        on: { click: () => letBackIn(r, user) },
      }),
    ),
    () => {},
  );
}

async function kickFromRoom(r, user) {
  const label = roomLabel(r);
  const ok = await confirmAction(
    `Kick ${user} from ${label}?`,
    `${user} leaves ${label} at once, on every node, and cannot rejoin it until let back in.`,
    "Kick",
  );
  const path = `/admin/rooms/${encodeURIComponent(r.room)}/members/${encodeURIComponent(user)}`;
  if (ok) await act("DELETE", path, (a) => `${user} kicked from ${label}: ${a.left} socket${a.left === 1 ? "" : "s"} left.`);
}

async function letBackIn(r, user) {
  const path = `/admin/rooms/${encodeURIComponent(r.room)}/members/${encodeURIComponent(user)}`;
  await act("POST", path, () => `${user} may enter ${roomLabel(r)} again.`);
}

// ---- actions -----------------------------------------------------------------------------------------

async function disconnectConnection(connId, user) {
  const ok = await confirmAction(
    `Disconnect connection #${connId}?`,
    `${user ?? "The client"}'s socket #${connId} is closed with code 4004. Their page will not reconnect by itself.`,
    "Disconnect",
  );
  if (ok) await act(`DELETE`, `/admin/connections/${connId}`, (r) => `Connection #${connId} (${user}) disconnected: ${r.closed} closed.`);
}

async function disconnectUser(user) {
  const ok = await confirmAction(
    `Disconnect ${user}?`,
    `Every socket of ${user}, on every node, is closed with code 4004. ${user} stays signed in: their pages stop and offer to reconnect.`,
    "Disconnect all",
  );
  if (ok) await act("DELETE", `/admin/users/${encodeURIComponent(user)}/connections`, (r) => `${user} disconnected: ${r.closed} connection${r.closed === 1 ? "" : "s"} closed.`);
}

async function revokeUser(user) {
  const ok = await confirmAction(
    `Revoke ${user}?`,
    `Every token ${user} holds now stops working, and their sockets close with code 4003. ${user} must sign in again.`,
    "Revoke",
  );
  if (ok) await act("POST", `/admin/users/${encodeURIComponent(user)}/revoke`, (r) => `${r.user} revoked: ${r.closed} connection${r.closed === 1 ? "" : "s"} closed.`);
}

/** Runs an admin call, shows what came of it, and refreshes the table. */
async function act(method, path, describe) {
  const result = $("admin-result");
  try {
    const answer = await chat.api(path, { method });
    const missing = answer.missing ?? [];
    // Several nodes: sockets on a node that did not answer may still be open.
    const unsure = missing.length ? ` Not answered in time: ${missing.join(", ")}; their sockets may still be open.` : "";
    result.textContent = describe(answer) + unsure;
    result.dataset.outcome = missing.length ? "error" : "ok";
  } catch (e) {
    console.info(`authchat admin: ${method} ${path} failed: ${e.code}: ${e.detail}`);
    result.textContent = `Failed: ${capitalize(e.message)}.`;
    result.dataset.outcome = "error";
  }
  result.hidden = false;
  await refresh();
}

/**
 * Asks before doing something destructive. Cancel has the focus, so a stray Enter is harmless.
 * @returns {Promise<boolean>}
 */
function confirmAction(title, text, confirmLabel) {
  const dialog = $("confirm");
  const opener = document.activeElement;
  $("confirm-title").textContent = title;
  $("confirm-text").textContent = text;
  $("confirm-ok").textContent = confirmLabel;
  return new Promise((resolve) => {
    const finish = (ok) => {
      $("confirm-ok").onclick = $("confirm-cancel").onclick = dialog.onclose = null;
      if (dialog.open) dialog.close();
      if (opener?.isConnected) opener.focus();
      resolve(ok);
    };
    $("confirm-ok").onclick = () => finish(true);
    $("confirm-cancel").onclick = () => finish(false);
    dialog.onclose = () => finish(false); // Escape
    dialog.showModal();
  });
}

boot();
