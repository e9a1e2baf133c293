// authchat.js: a dependency-free browser client for authchat (ES module).
//
// It owns the whole credential lifecycle so a page only deals in chat events:
// - signs in (POST /api/login; the refresh token stays in an HttpOnly cookie) or resumes a
//   session from that cookie after a reload; the access token lives in memory only;
// - connects with a one-time ticket (GET /ws?ticket=…), or with the subprotocol bearer when the
//   server has no /api/ticket;
// - answers `expiring` by calling /api/token/refresh and sending `reauth`, so the socket never
//   drops for an expired token;
// - after a network loss reconnects with exponential backoff and jitter, and rejoins its rooms
//   asking only for what it missed (`join` with `since`), or for everything when `welcome`
//   carries a new `boot` id: a restarted server numbers each room's messages from 1 again;
// - after 4001 reconnects only with a fresh token; after 4002, 4003 or 4004 it stops and reports why;
// - paces everything it sends below the server's rate limits (from `/api/config`), queues
//   messages it cannot send yet, and sends each again after a reconnect with the same `ref`,
//   which the server treats as an idempotency key: a message is never lost, never doubled.
//
// In session mode (`/api/config` says `"mode":"session"`) the server authenticates the socket by
// its session cookie: no token, no renewal, and 4002 means the session ended.

/** Close codes after which the client never reconnects by itself. */
const TERMINAL_CODES = new Set([4002, 4003, 4004]);

/** Close codes that also end the sign-in: the credentials are no good any more. */
const SIGN_OUT_CODES = new Set([4002, 4003]);

/** What each close code means, in words a user can act on. */
const CLOSE_REASONS = {
  1000: "the connection was closed",
  1001: "the server is restarting",
  1006: "the connection was lost",
  1008: "the server refused the connection",
  1009: "a message was too big for the server",
  1011: "the server hit an internal error",
  4000: "the server did not accept the sign-in",
  4001: "the sign-in expired",
  4002: "the session ended (signed out here or elsewhere, or it expired)",
  4003: "an operator revoked your access",
  4004: "an operator closed the connection",
  4008: "too many messages too fast",
  4009: "the connection was too slow to keep up",
};

/**
 * Server error codes in words for people; the codes themselves go to the console. A code not
 * listed keeps the server's own message.
 */
const ERROR_TEXT = {
  network_error: "the server could not be reached",
  invalid_credentials: "wrong username or password",
  too_many_attempts: "too many failed sign-ins; wait a few minutes and try again",
  busy: "the server is busy; try again in a moment",
  login_disabled: "this server takes no passwords: it accepts sign-ins from an identity provider",
  missing_credentials: "you are not signed in",
  invalid_token: "your sign-in is not valid here any more",
  token_expired: "your sign-in expired",
  token_revoked: "your sign-in was ended (signed out, or revoked by an operator)",
  invalid_refresh_token: "your sign-in is no longer known to the server",
  refresh_token_reused: "your sign-in was used from two places at once and was ended to be safe",
  invalid_session: "your session ended",
  session_store_unavailable: "the server cannot check sign-ins right now; try again shortly",
  invalid_ticket: "the connection could not be opened; trying again",
  origin_not_allowed: "this page's address is not allowed to use the server",
  too_many_connections: "too many connections are open for your account; close a few tabs",
  too_many_handshakes: "too many connections were opened at once; trying again shortly",
  server_full: "the server is full; trying again shortly",
  shutting_down: "the server is restarting",
  invalid_room: "room names are 1-64 letters, digits, '.', '_' or '-'",
  not_member: "you are not in that room",
  text_too_long: "the message is too long",
  empty_text: "the message is empty",
  rate_limited: "too many messages too fast",
  reauth_failed: "the connection could not be renewed",
};

/**
 * A server error in words for people.
 * @param {string} code the server's `error` code
 * @param {string} [message] the server's own message, used when the code has no wording here
 * @returns {string}
 */
export function describeError(code, message) {
  return ERROR_TEXT[code] ?? message ?? code;
}

const ROOM_NAME_CHARS = /^[A-Za-z0-9._-]*$/;

/**
 * Characters in a text as the server counts them (Unicode scalar values, not UTF-16 units:
 * an emoji is one character, not two).
 * @param {string} text
 * @returns {number}
 */
export function charCount(text) {
  let count = 0;
  for (const _ of text) count += 1;
  return count;
}

/**
 * What is wrong with a room name, in words, or null when the server will accept it.
 * @param {string} room
 * @param {number} [max=64] the server's `max_room_name_chars`
 * @returns {string|null}
 */
export function roomNameProblem(room, max = 64) {
  const length = charCount(room);
  if (length === 0) return "Type a room name.";
  if (length > max) return `Room names are at most ${max} characters; this one has ${length}.`;
  if (!ROOM_NAME_CHARS.test(room)) return "Room names may use only letters, digits, '.', '_' and '-'.";
  return null;
}

/** Where the page notes that a sign-in may be resumed (never a credential: just "1"). */
const SIGNED_IN_HINT = "authchat.signed-in";

/** Share of the server's rate limits the client uses, leaving room for other tabs and pongs. */
const PACE_SHARE = 0.5;
/** A send refused as rate limited this many times in a row is given up (and can be retried). */
const MAX_SEND_ATTEMPTS = 8;

/** Error codes that, about a room whose join is unanswered, mean the server refused that join. */
const JOIN_REFUSALS = new Set(["invalid_room", "too_many_rooms", "forbidden", "room_exists"]);

/** A room to be joined, not yet answered. */
function newRoom() {
  return { lastId: null, joined: false, pending: false, restarted: false, members: new Set(), access: null, create: null };
}

/**
 * A human-readable reason for a WebSocket close code.
 * @param {number} code
 * @returns {string}
 */
export function describeClose(code) {
  return CLOSE_REASONS[code] ?? `the connection closed (code ${code})`;
}

/** An HTTP API failure: the status and the server's `{"error","message"}` body. */
export class ApiError extends Error {
  /**
   * @param {number} status HTTP status (0 when the server could not be reached)
   * @param {string} code the server's `error` code, or `network_error`
   * @param {string} message the server's explanation
   */
  constructor(status, code, message) {
    super(describeError(code, message));
    this.name = "ApiError";
    this.status = status;
    this.code = code;
    /** The server's own message (the `message` is in words for people). */
    this.detail = message;
  }
}

/**
 * @typedef {"signed_out"|"idle"|"connecting"|"connected"|"reconnecting"|"disconnected"} ConnectionState
 *
 * @typedef {object} Status
 * @property {ConnectionState} state
 * @property {number|null} connId the server's id for the current socket (when connected)
 * @property {number|null} code the close code that caused this state, if any
 * @property {string|null} reason why the socket is not connected, in words
 * @property {number|null} retryAt when the next attempt starts, `Date.now()` ms (reconnecting only)
 * @property {number} attempt reconnect attempts since the last successful connection
 * @property {boolean} canReconnect whether calling `connect()` again makes sense
 */

/**
 * A chat client for one signed-in user. Events (`CustomEvent`, data in `detail`):
 * - `status` ({@link Status}): connection state changed
 * - `token` ({expiresAt, renewed}): the credential's expiry changed (login, refresh, `reauthed`)
 * - `signedin` ({user, roles}) / `signedout` ({reason})
 * - one event per server message type, with the message as `detail`: `welcome`, `expiring`,
 *   `reauthed`, `joined`, `left`, `message`, `ack`, `presence`, `history`, `error`,
 *   `server_shutdown`. Added to `joined`: `rejoin` (the room was joined before, on an earlier
 *   socket) and `restarted` (a rejoin after the server restarted: its message ids started again
 *   at 1, so `history` is the room's whole kept history and replaces, rather than extends, what
 *   the page kept; on other rejoins `history` holds only messages newer than those seen).
 *   `error` is a refused request (the socket stays open); about a room request it names the
 *   `room` (and a refused `send` echoes its `ref`); `text` says it in words for people. A
 *   refused join also forgets the room. A send refused as rate limited is not reported: it is
 *   sent again after a pause. `left` with a `reason` (`kicked`, `forbidden`) is the server
 *   putting this user out of a room: the room is forgotten (not rejoined). Rooms' access:
 *   `joined.access` and `access` ({kind: "public"|"private"|"dm", owner, allowed}), `invited`
 *   ({room, by, access}: someone let this user into a private room or opened a conversation
 *   with them), `rooms` ({rooms: [{room, access}]}: the answer to `listRooms()`, also asked
 *   after each connect).
 * - `outbox` ({ref, room, text, state, error, id}): a message's way out changed: `queued`
 *   (waiting for the connection or its turn), `sending`, `sent` (acknowledged as `id`; it has
 *   left the outbox), `failed` (refused; `error` says why; `retry(ref)` sends it again).
 *
 * @example
 * const chat = new AuthChat();
 * chat.addEventListener("message", (e) => console.log(e.detail.from, e.detail.text));
 * await chat.login("alice", "alice-password");
 * chat.connect();
 * chat.join("general");
 */
export class AuthChat extends EventTarget {
  /** Where the server lives ("" = this page's origin). */
  #base;
  /** Backoff: first delay, cap (ms). */
  #backoff;
  /** `/api/config`, fetched once. */
  #config = null;

  /** The access token (JWT mode), in memory only, never in storage. */
  #token = null;
  /** The token's `expires_at` (server Unix seconds) and lifetime, for scheduling renewal. */
  #tokenExpiresAt = null;
  #tokenLifetime = 0;
  /** Server clock minus ours, in seconds, estimated from each token response. */
  #skew = 0;
  /** One renewal at a time: the promise of the one in flight. */
  #renewing = null;
  #renewTimer = null;
  /** False once /api/ticket answered 404: connect with the subprotocol bearer instead. */
  #ticketsSupported = true;

  #user = null;
  #roles = [];

  #ws = null;
  /** Whether the page wants a socket open; cleared by `close()`, sign-out and terminal codes. */
  #wantOpen = false;
  #attempt = 0;
  #retryTimer = null;
  #status = { state: "signed_out", connId: null, code: null, reason: null, retryAt: null, attempt: 0, canReconnect: false };
  /** The socket's own expiry (from `welcome` / `reauthed`), server Unix seconds. */
  #socketExpiresAt = null;
  /** What the server said before closing (`server_shutdown`), to explain the close. */
  #closeHint = null;

  /**
   * room -> {lastId, joined, pending, restarted, members:Set, access, create}: rooms to be in,
   * rejoined after each reconnect. `lastId`: the newest message id seen (for `since`); `joined`:
   * the server confirmed a join once; `pending`: a join is on this socket, unanswered;
   * `restarted`: the next `joined` follows a server restart; `access`: who may be in it, as the
   * server last said; `create`: a private room to create rather than join ({invite}).
   */
  #rooms = new Map();
  /** Users a direct conversation was asked for: its `joined` names a room not asked for by name. */
  #pendingDms = new Set();
  /** The `boot` id of the last `welcome` (undefined before the first): a new one means the server restarted. */
  #boot = undefined;
  /** Whether this client saw the server restart (memory stores forget sign-ins then). */
  #restartSeen = false;

  /**
   * Messages not yet acknowledged, oldest first: {ref, room, text, state, error, attempts}.
   * Kept across reconnects (and re-sent with the same `ref`), so nothing typed is lost.
   */
  #outbox = [];
  /**
   * What goes out next, in order: frames (join, leave, history, reauth) and outbox refs. One
   * send is in flight at a time, so a refusal never lets a later message overtake it.
   */
  #queue = [];
  /** The ref of the send awaiting its `ack`. */
  #inFlight = null;
  /** The client's own token bucket, below the server's, and a pause after a refusal. */
  #pace = { tokens: null, updated: 0, pausedUntil: 0, strikes: 0 };
  #pumpTimer = null;
  /** Unique per page load, so refs from two tabs of one user never collide. */
  #refPrefix = randomId();
  #nextRef = 1;

  /**
   * @param {object} [options]
   * @param {string} [options.baseUrl] server origin; defaults to the page's own
   * @param {number} [options.backoffBaseMs=500] first reconnect delay
   * @param {number} [options.backoffMaxMs=30000] longest reconnect delay
   */
  constructor({ baseUrl = "", backoffBaseMs = 500, backoffMaxMs = 30000 } = {}) {
    super();
    this.#base = baseUrl.replace(/\/$/, "");
    this.#backoff = { base: backoffBaseMs, max: backoffMaxMs };
    globalThis.addEventListener?.("online", () => this.#retryNow());
  }

  /** @returns {string|null} the signed-in user */
  get user() { return this.#user; }
  /** @returns {string[]} the user's roles */
  get roles() { return [...this.#roles]; }
  /** @returns {boolean} */
  get isAdmin() { return this.#roles.includes("admin"); }
  /** @returns {Status} */
  get status() { return { ...this.#status }; }
  /** @returns {"jwt"|"session"} */
  get mode() { return this.#config?.mode === "session" ? "session" : "jwt"; }
  /** @returns {object|null} the server's `/api/config` once loaded */
  get config() { return this.#config; }
  /** @returns {string[]} the rooms this client is in (or will rejoin) */
  get rooms() { return [...this.#rooms.keys()]; }
  /** @returns {number} the longest message text the server takes, in characters */
  get maxTextChars() { return this.#config?.max_text_chars ?? 4000; }
  /** @returns {number} the longest room name the server takes */
  get maxRoomNameChars() { return this.#config?.max_room_name_chars ?? 64; }

  /**
   * When the credential in use expires, in server Unix seconds: the socket's expiry while
   * connected (it moves with each `reauthed`), else the access token's. Null in session mode.
   * @returns {number|null}
   */
  get expiresAt() {
    if (this.mode === "session") return null;
    return this.#socketExpiresAt ?? this.#tokenExpiresAt;
  }

  /** @returns {number} the server's clock, Unix seconds (skew-corrected) */
  serverNow() {
    return Date.now() / 1000 + this.#skew;
  }

  /**
   * Members of a room this client has joined, as last reported by the server.
   * @param {string} room
   * @returns {string[]}
   */
  members(room) {
    return [...(this.#rooms.get(room)?.members ?? [])].sort();
  }

  /**
   * Who may be in a room, as the server last said: `{kind, owner, allowed}`, or null before it
   * was joined. `kind` is `public`, `private` (only `owner` and `allowed`) or `dm` (`allowed`
   * holds the two users).
   * @param {string} room
   * @returns {{kind: string, owner?: string, allowed?: string[]}|null}
   */
  access(room) {
    return this.#rooms.get(room)?.access ?? null;
  }

  /**
   * Loads `/api/config` (once). Called by `login` and `resume`.
   * @returns {Promise<object>}
   */
  async loadConfig() {
    this.#config ??= await this.#request("GET", "/api/config");
    return this.#config;
  }

  // ---- signing in and out ----------------------------------------------------------------

  /**
   * Signs in with a name and password.
   * @param {string} username
   * @param {string} password
   * @returns {Promise<{user: string, roles: string[]}>}
   * @throws {ApiError} 401 `invalid_credentials`, or the server is unreachable
   */
  async login(username, password) {
    await this.loadConfig();
    const body = await this.#request("POST", "/api/login", { body: { username, password } });
    if (this.mode === "jwt") this.#setToken(body);
    return this.#whoAmI();
  }

  /**
   * Resumes a sign-in after a page load: from the refresh cookie (JWT mode) or the session
   * cookie (session mode). Resolves to null when there is nothing to resume.
   * @returns {Promise<{user: string, roles: string[]}|null>}
   */
  async resume() {
    await this.loadConfig();
    // Nothing to resume unless this browser signed in before: asking anyway would only log a
    // failed request (401) on every fresh page load.
    if (readHint() === false) return null;
    try {
      if (this.mode === "jwt") this.#setToken(await this.#refreshRequest());
      return await this.#whoAmI();
    } catch (e) {
      if (e instanceof ApiError && e.status !== 0 && e.status < 500) return null;
      throw e;
    }
  }

  /**
   * Signs out: ends the login on the server (its refresh tokens, and its other sockets with
   * 4002), closes the socket and forgets the token.
   * @returns {Promise<void>}
   */
  async logout() {
    this.close();
    try {
      await this.api("/api/logout", { method: "POST", retry: false });
    } catch {
      // Signing out locally must work even when the server is unreachable or too old.
    }
    this.#signedOut("you signed out", true);
  }

  /**
   * Calls the HTTP API as the signed-in user and returns the JSON answer. An expired access
   * token is renewed once and the call retried.
   * @param {string} path e.g. "/admin/connections"
   * @param {object} [options]
   * @param {string} [options.method="GET"]
   * @param {object} [options.body] sent as JSON
   * @param {boolean} [options.retry=true] renew the token and retry once on 401 `token_expired`
   * @returns {Promise<any>}
   * @throws {ApiError}
   */
  async api(path, { method = "GET", body, retry = true } = {}) {
    try {
      return await this.#request(method, path, { body, bearer: this.#token });
    } catch (e) {
      if (retry && this.#token && e instanceof ApiError && e.code === "token_expired" && (await this.renew())) {
        return this.#request(method, path, { body, bearer: this.#token });
      }
      throw e;
    }
  }

  /**
   * Gets a new access token from the refresh cookie and, when a socket is open, hands it to
   * the server in-band (`reauth`). Concurrent calls share one request.
   * @returns {Promise<boolean>} whether a new token was obtained
   */
  renew() {
    if (this.mode !== "jwt") return Promise.resolve(false);
    this.#renewing ??= (async () => {
      try {
        this.#setToken(await this.#refreshRequest());
        if (this.#status.state === "connected") this.#sendFrame({ type: "reauth", token: this.#token }, { first: true });
        return true;
      } catch (e) {
        this.#emit("renewfailed", { code: e.code, message: e.message, status: e.status });
        if (e.status === 401 && this.#user) {
          // The server will not renew this sign-in again: say so once, now, rather than at expiry.
          const reason = this.#restartSeen && e.code === "invalid_refresh_token"
            ? "the server restarted and no longer knows your sign-in"
            : e.message;
          this.#endSignIn(reason);
          return false;
        }
        // A network failure may pass: try again soon, while the token still has time left.
        if (e.status === 0 && this.#secondsLeft() > 2) {
          clearTimeout(this.#renewTimer);
          this.#renewTimer = setTimeout(() => this.renew(), Math.min(10, this.#secondsLeft() / 2) * 1000);
        }
        return false;
      } finally {
        this.#renewing = null;
      }
    })();
    return this.#renewing;
  }

  // ---- the socket ------------------------------------------------------------------------

  /** Opens the socket (and keeps it open: reconnects until `close()`). */
  connect() {
    if (!this.#user) throw new Error("sign in before connecting");
    if (this.#wantOpen) return;
    this.#wantOpen = true;
    this.#attempt = 0;
    this.#open();
  }

  /** Closes the socket and stops reconnecting. Rooms are kept for a later `connect()`. */
  close() {
    this.#wantOpen = false;
    clearTimeout(this.#retryTimer);
    const ws = this.#ws;
    this.#ws = null;
    ws?.close(1000, "client closed");
    this.#forgetSocket();
    this.#setStatus({ state: this.#user ? "idle" : "signed_out", reason: null, code: null, canReconnect: !!this.#user });
  }

  /**
   * Joins a room (or rejoins it after a reconnect). While disconnected the room is joined as
   * soon as the socket opens.
   * @param {string} room 1-64 of `[A-Za-z0-9._-]`
   */
  join(room) {
    const problem = roomNameProblem(room, this.maxRoomNameChars);
    if (problem) throw new Error(problem);
    if (this.#rooms.has(room)) return;
    this.#rooms.set(room, newRoom());
    if (this.#status.state === "connected") this.#sendJoin(room);
  }

  /**
   * Creates a private room owned by this user, and joins it (while disconnected, as soon as
   * the socket opens). Only the owner and the users it lets in may join; a name another room
   * has is refused (`error` with code `room_exists`, and the room is forgotten).
   * @param {string} room
   * @param {{invite?: string[]}} [options] users let in from the start
   */
  create(room, { invite = [] } = {}) {
    const problem = roomNameProblem(room, this.maxRoomNameChars);
    if (problem) throw new Error(problem);
    if (this.#rooms.has(room)) throw new Error(`you are in # ${room} already`);
    this.#rooms.set(room, { ...newRoom(), create: { invite } });
    if (this.#status.state === "connected") this.#sendJoin(room);
  }

  /**
   * Opens the direct conversation with `user` (the first time, they are told) and joins it;
   * its `joined` names the conversation's room (`dm.` and a digest), with `access.kind` `dm`.
   * @param {string} user
   */
  dm(user) {
    this.#requireConnection("open a conversation");
    this.#pendingDms.add(user);
    this.#sendFrame({ type: "dm", user });
  }

  /**
   * A private room's owner lets users in (they are told with `invited`). Answered with
   * `access`, or an `error`.
   * @param {string} room
   * @param {string[]} users
   */
  invite(room, users) {
    this.#requireConnection("invite");
    this.#sendFrame({ type: "invite", room, users });
  }

  /**
   * A private room's owner puts a user out and keeps them out (until invited again). Answered
   * with `access`, or an `error`.
   * @param {string} room
   * @param {string} user
   */
  kick(room, user) {
    this.#requireConnection("kick");
    this.#sendFrame({ type: "kick", room, user });
  }

  /** Asks for the private rooms and conversations this user may join (answered with `rooms`). */
  listRooms() {
    this.#requireConnection("list rooms");
    this.#sendFrame({ type: "rooms" });
  }

  #requireConnection(what) {
    if (this.#status.state !== "connected") throw new Error(`cannot ${what} while not connected`);
  }

  /** @param {string} room */
  leave(room) {
    const known = this.#rooms.delete(room);
    if (known && this.#status.state === "connected") this.#sendFrame({ type: "leave", room });
  }

  /**
   * Posts a message to a room. It is queued, and sent when the connection is up and the pace
   * allows; `outbox` events follow it until the server acknowledges it (`ack`, and `outbox`
   * with state `sent`) or refuses it (`failed`). Nothing is cut: a text over the server's
   * limit is refused here, before it is queued.
   * @param {string} room
   * @param {string} text
   * @returns {string} the `ref` the server will echo in its `ack`
   * @throws {Error} with `code` `empty_text` or `text_too_long`
   */
  send(room, text) {
    const length = charCount(text);
    if (!text.trim()) throw Object.assign(new Error("the message is empty"), { code: "empty_text" });
    if (length > this.maxTextChars) {
      const message = `the message has ${length} characters; the limit is ${this.maxTextChars}`;
      throw Object.assign(new Error(message), { code: "text_too_long" });
    }
    const ref = `${this.#refPrefix}-${this.#nextRef++}`;
    const entry = { ref, room, text, state: "queued", error: null, attempts: 0 };
    this.#outbox.push(entry);
    this.#queue.push({ ref });
    this.#outboxChanged(entry);
    this.#pump();
    return ref;
  }

  /**
   * Messages of `room` (or of every room) not yet acknowledged, oldest first.
   * @param {string} [room]
   * @returns {{ref: string, room: string, text: string, state: "queued"|"sending"|"failed", error: ?{code: string, text: string}}[]}
   */
  pending(room) {
    return this.#outbox
      .filter((e) => room === undefined || e.room === room)
      .map(({ ref, room, text, state, error }) => ({ ref, room, text, state, error }));
  }

  /**
   * Sends a failed message again (same `ref`, so it is never posted twice).
   * @param {string} ref
   */
  retry(ref) {
    const entry = this.#outbox.find((e) => e.ref === ref);
    if (!entry || entry.state !== "failed") return;
    Object.assign(entry, { state: "queued", error: null, attempts: 0 });
    this.#queue.push({ ref });
    this.#outboxChanged(entry);
    this.#pump();
  }

  /**
   * Forgets a message that was not sent (it stays unsent); answers its text.
   * @param {string} ref
   * @returns {string|null}
   */
  discard(ref) {
    const index = this.#outbox.findIndex((e) => e.ref === ref && e.state !== "sending");
    if (index < 0) return null;
    const [entry] = this.#outbox.splice(index, 1);
    this.#queue = this.#queue.filter((item) => item.ref !== ref);
    this.#emit("outbox", { ...publicEntry(entry), state: "discarded" });
    return entry.text;
  }

  /**
   * Asks for older messages; the answer arrives as a `history` event.
   * @param {string} room
   * @param {{before?: number, limit?: number}} [page]
   */
  history(room, { before, limit } = {}) {
    if (this.#status.state !== "connected") throw new Error("not connected");
    this.#sendFrame({ type: "history", room, before, limit });
  }

  async #open() {
    clearTimeout(this.#retryTimer);
    if (!this.#wantOpen) return;
    this.#setStatus({ state: this.#attempt === 0 ? "connecting" : "reconnecting", retryAt: null });
    let target;
    try {
      target = await this.#socketTarget();
    } catch (e) {
      if (!this.#wantOpen) return; // signed out meanwhile, with its own reason
      if (e instanceof ApiError && e.status === 401) return this.#stop(null, `${e.message}: sign in again`, true);
      return this.#scheduleReconnect(null, e.message);
    }
    if (!this.#wantOpen) return;
    const ws = new WebSocket(target.url, target.protocols);
    this.#ws = ws;
    this.#closeHint = null;
    ws.onmessage = (event) => ws === this.#ws && this.#onFrame(event.data);
    ws.onclose = (event) => ws === this.#ws && this.#onClose(event);
  }

  /**
   * The URL and subprotocols for the next socket: a one-time ticket, else the subprotocol
   * bearer, or (session mode) nothing, as the cookie authenticates. Renews the token first if
   * it is about to run out, and fails with 401 when the credentials are no good.
   */
  async #socketTarget() {
    const url = new URL("/ws", this.#base || globalThis.location.href);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    const protocols = ["authchat.v1"];
    if (this.mode === "session") return { url: url.href, protocols };
    if (!this.#token || this.#secondsLeft() < 5) {
      if (!(await this.renew())) throw new ApiError(401, "token_expired", "the access token expired and could not be renewed");
    }
    if (this.#ticketsSupported) {
      try {
        const { ticket } = await this.api("/api/ticket", { method: "POST" });
        url.searchParams.set("ticket", ticket);
        return { url: url.href, protocols };
      } catch (e) {
        if (!(e instanceof ApiError && (e.status === 404 || e.status === 405))) throw e;
        this.#ticketsSupported = false;
      }
    }
    // No ticket endpoint: check the token over HTTP first, since a refused upgrade only shows
    // up in the browser as an anonymous close 1006.
    await this.api("/api/me");
    return { url: url.href, protocols: [...protocols, "authchat.bearer." + this.#token] };
  }

  #onFrame(data) {
    let msg;
    try {
      msg = JSON.parse(data);
    } catch {
      return;
    }
    switch (msg.type) {
      case "welcome":
        this.#attempt = 0;
        this.#checkBoot(msg.boot ?? null);
        this.#socketExpiresAt = this.mode === "jwt" ? msg.expires_at : null;
        this.#setStatus({ state: "connected", connId: msg.conn_id, code: null, reason: null, retryAt: null, canReconnect: false });
        this.#emit("welcome", msg);
        // In order on the new socket: a token renewed while it was opening, the rooms, then
        // every message still unacknowledged, with its old `ref`.
        this.#queue = [];
        if (this.#tokenExpiresAt > msg.expires_at) this.#sendFrame({ type: "reauth", token: this.#token });
        for (const room of this.#rooms.keys()) this.#sendJoin(room);
        // Private rooms and conversations opened for this user while away.
        this.#sendFrame({ type: "rooms" });
        for (const entry of this.#outbox) if (entry.state === "queued") this.#queue.push({ ref: entry.ref });
        this.#pump();
        this.#emit("token", { expiresAt: this.expiresAt, renewed: false });
        return;
      case "expiring":
        // Renew unless a newer token is already on its way to the server.
        if (!this.#tokenExpiresAt || this.#tokenExpiresAt <= msg.expires_at) this.#scheduleRenewal(msg.seconds_left);
        break;
      case "reauthed":
        this.#socketExpiresAt = msg.expires_at;
        this.#emit("token", { expiresAt: msg.expires_at, renewed: true });
        break;
      case "joined": {
        // A conversation asked for by user: its room is named only now.
        const peer = msg.access?.kind === "dm" ? msg.access.allowed?.find((u) => u !== this.#user) : null;
        if (!this.#rooms.has(msg.room) && peer != null && this.#pendingDms.delete(peer)) this.#rooms.set(msg.room, newRoom());
        const room = this.#rooms.get(msg.room);
        if (!room) return; // left again before the answer came
        const { joined: rejoin } = room;
        // A new epoch means the room's ids started again (Redis lost the room): as after a restart.
        const renumbered = rejoin && room.epoch != null && msg.epoch !== room.epoch;
        const restarted = room.restarted || renumbered;
        Object.assign(room, {
          joined: true, pending: false, restarted: false, epoch: msg.epoch, members: new Set(msg.members),
          access: msg.access ?? { kind: "public" }, create: null,
        });
        this.#track(msg.room, msg.history);
        this.#emit("joined", { ...msg, rejoin, restarted });
        return;
      }
      case "message":
        this.#track(msg.room, [msg]);
        break;
      case "ack": {
        const entry = this.#outbox.find((e) => e.ref === msg.ref);
        if (entry) {
          this.#outbox.splice(this.#outbox.indexOf(entry), 1);
          this.#emit("outbox", { ...publicEntry(entry), state: "sent", id: msg.id });
        }
        if (this.#inFlight === msg.ref) this.#sendDone();
        break;
      }
      case "presence": {
        const members = this.#rooms.get(msg.room)?.members;
        if (msg.event === "join") members?.add(msg.user);
        else members?.delete(msg.user);
        break;
      }
      case "left":
        // Put out by the server (kicked, or no longer allowed): not to be rejoined.
        if (msg.reason) this.#rooms.delete(msg.room);
        break;
      case "access": {
        const room = this.#rooms.get(msg.room);
        if (room) room.access = msg.access;
        break;
      }
      case "error": {
        console.info(`authchat: the server refused ${msg.request ?? "a request"}: ${msg.code}: ${msg.message}`);
        if (msg.code === "rate_limited" && this.#retryLater(msg)) return;
        // The server names the room a refused request was about. A refused join is forgotten,
        // so it is not retried after every reconnect.
        if (JOIN_REFUSALS.has(msg.code) && this.#rooms.get(msg.room)?.pending) this.#rooms.delete(msg.room);
        const entry = msg.request === "send" ? this.#outbox.find((e) => e.ref === msg.ref) : null;
        if (entry) {
          Object.assign(entry, { state: "failed", error: { code: msg.code, text: describeError(msg.code, msg.message) } });
          this.#outboxChanged(entry);
          if (this.#inFlight === entry.ref) this.#sendDone();
        }
        this.#emit("error", { ...msg, text: describeError(msg.code, msg.message) });
        return;
      }
      case "server_shutdown":
        this.#closeHint = describeClose(1001);
        this.#restartSeen = true;
        break;
    }
    this.#emit(msg.type, msg);
  }

  #onClose(event) {
    this.#ws = null;
    this.#forgetSocket();
    if (event.code === 1001) this.#restartSeen = true;
    const code = event.code;
    const reason = this.#closeHint ?? CLOSE_REASONS[code] ?? (event.reason || describeClose(code));
    if (!this.#wantOpen) return;
    if (TERMINAL_CODES.has(code)) return this.#stop(code, reason, SIGN_OUT_CODES.has(code));
    if (code === 4001) {
      // Only a fresh token may reconnect; a failed renewal means signing in again.
      this.renew().then((ok) => {
        if (!this.#wantOpen) return;
        if (ok) this.#scheduleReconnect(code, reason, 0);
        else this.#stop(code, `${reason}, and it could not be renewed: sign in again`, true);
      });
      return;
    }
    this.#scheduleReconnect(code, reason);
  }

  /** Stops for good: reports the reason, and forgets the credentials if they are dead. */
  #stop(code, reason, signOut) {
    this.#wantOpen = false;
    clearTimeout(this.#retryTimer);
    this.#setStatus({ state: "disconnected", connId: null, code, reason, retryAt: null, canReconnect: !signOut });
    if (signOut) this.#signedOut(reason);
  }

  /** Full-jitter exponential backoff: somewhere in the upper half of base * 2^attempt, capped. */
  #scheduleReconnect(code, reason, delay) {
    const ceiling = Math.min(this.#backoff.max, this.#backoff.base * 2 ** this.#attempt);
    const ms = delay ?? Math.round(ceiling * (0.5 + Math.random() * 0.5));
    this.#attempt += 1;
    this.#setStatus({ state: "reconnecting", connId: null, code, reason, retryAt: Date.now() + ms, canReconnect: true });
    clearTimeout(this.#retryTimer);
    this.#retryTimer = setTimeout(() => this.#open(), ms);
  }

  #retryNow() {
    if (this.#wantOpen && this.#status.state === "reconnecting" && this.#status.retryAt !== null) this.#open();
  }

  /** A `join`, asking only for what was missed (`since`, in the room's numbering `epoch`) when something was seen. */
  #joinFrame(room) {
    const { lastId: since, epoch } = this.#rooms.get(room);
    if (since == null) return { type: "join", room };
    return epoch == null ? { type: "join", room, since } : { type: "join", room, since, epoch };
  }

  #sendJoin(room) {
    const state = this.#rooms.get(room);
    if (!state) return;
    state.pending = true;
    this.#sendFrame(this.#roomFrame(room));
  }

  /** What enters a room: `create` for a private room not made yet, else `join`. */
  #roomFrame(room) {
    const { create } = this.#rooms.get(room);
    return create ? { type: "create", room, private: true, invite: create.invite } : this.#joinFrame(room);
  }

  /**
   * Called with each `welcome`'s boot id (null from a server that sends none). A new one means
   * the server restarted and numbers each room's messages from 1 again: the ids seen before
   * mean nothing there, so every room is rejoined without `since`, and its `joined` says
   * `restarted` so the page replaces what it kept.
   */
  #checkBoot(boot) {
    if (this.#boot !== undefined && boot !== this.#boot) {
      this.#restartSeen = true;
      for (const room of this.#rooms.values()) Object.assign(room, { lastId: null, epoch: null, restarted: room.joined });
    }
    this.#boot = boot;
  }

  /** Remembers the newest message id per room, for `since` on the next rejoin. */
  #track(room, messages) {
    const state = this.#rooms.get(room);
    // The latest seen, not the largest, should ids ever go back (a restart is caught by `boot`).
    if (state && messages.length) state.lastId = messages[messages.length - 1].id;
  }

  /**
   * The socket is gone: no join on it will be answered, and membership is unknown. What was
   * queued for it is dropped, except messages: those wait for the next socket (the one in
   * flight too, as its `ack` may have been lost; its `ref` keeps it from being posted twice).
   */
  #forgetSocket() {
    this.#socketExpiresAt = null;
    for (const room of this.#rooms.values()) {
      room.pending = false;
      room.members.clear();
    }
    this.#queue = [];
    clearTimeout(this.#pumpTimer);
    if (this.#inFlight) {
      const entry = this.#outbox.find((e) => e.ref === this.#inFlight);
      this.#inFlight = null;
      if (entry) {
        entry.state = "queued";
        this.#outboxChanged(entry);
      }
    }
  }

  /**
   * Queues a frame for the socket; it goes out in turn, within the pace. `first`: ahead of
   * everything queued (a renewal must not wait behind a burst of messages).
   */
  #sendFrame(frame, { first = false } = {}) {
    if (this.#ws?.readyState !== WebSocket.OPEN) return;
    if (first) this.#queue.unshift({ frame });
    else this.#queue.push({ frame });
    this.#pump();
  }

  // ---- pacing ----------------------------------------------------------------------------

  /**
   * Sends what is queued, in order, no faster than the pace allows, and at most one message
   * awaiting its `ack` (a message waits for the one before it; other frames do not).
   */
  #pump() {
    clearTimeout(this.#pumpTimer);
    this.#pumpTimer = null;
    const ws = this.#ws;
    if (ws?.readyState !== WebSocket.OPEN || this.#status.state !== "connected") return;
    while (this.#queue.length) {
      const next = this.#queue[0];
      const entry = next.ref ? this.#outbox.find((e) => e.ref === next.ref) : null;
      if (next.ref && (!entry || entry.state !== "queued")) {
        this.#queue.shift(); // acknowledged, discarded or failed meanwhile
        continue;
      }
      if (entry && this.#inFlight) return; // the ack of the message before it comes first
      const wait = this.#takeToken();
      if (wait > 0) {
        this.#pumpTimer = setTimeout(() => this.#pump(), wait);
        return;
      }
      this.#queue.shift();
      if (entry) {
        entry.state = "sending";
        entry.attempts += 1;
        this.#inFlight = entry.ref;
        this.#outboxChanged(entry);
        ws.send(JSON.stringify({ type: "send", room: entry.room, text: entry.text, ref: entry.ref }));
      } else {
        ws.send(JSON.stringify(next.frame));
      }
    }
  }

  /** The message in flight is answered: the next may go. */
  #sendDone() {
    this.#inFlight = null;
    this.#pump();
  }

  /**
   * Takes one token from the client's bucket (a share of the smaller of the server's socket
   * and user limits, which count every frame); answers 0, or how many ms until one is there.
   */
  #takeToken() {
    const limits = this.#config?.rate_limit ?? {};
    const rate = Math.min(limits.per_second ?? 20, limits.user_per_second ?? 40) * PACE_SHARE;
    const capacity = Math.max(1, Math.floor(Math.min(limits.burst ?? 40, limits.user_burst ?? 80) * PACE_SHARE / 2));
    const pace = this.#pace;
    const now = performance.now();
    if (now < pace.pausedUntil) return Math.ceil(pace.pausedUntil - now);
    pace.tokens = pace.tokens === null ? capacity : Math.min(capacity, pace.tokens + ((now - pace.updated) / 1000) * rate);
    pace.updated = now;
    if (pace.tokens >= 1) {
      pace.tokens -= 1;
      if (pace.tokens >= capacity - 1) pace.strikes = 0; // a full bucket again: the pace held
      return 0;
    }
    return Math.ceil(((1 - pace.tokens) / rate) * 1000);
  }

  /**
   * A request refused as rate limited (another tab of this user may be busy too): a message or
   * a join is put back at the head of the queue and everything pauses, longer each time in a
   * row, so refusals never pile up to the server's disconnect (4008). Answers whether it was
   * taken care of here.
   */
  #retryLater(msg) {
    let item = null;
    if (msg.request === "send") {
      const entry = this.#outbox.find((e) => e.ref === msg.ref);
      if (!entry || entry.attempts >= MAX_SEND_ATTEMPTS) return false;
      entry.state = "queued";
      this.#outboxChanged(entry);
      if (this.#inFlight === entry.ref) this.#inFlight = null;
      item = { ref: entry.ref };
    } else if ((msg.request === "join" || msg.request === "create") && this.#rooms.get(msg.room)?.pending) {
      item = { frame: this.#roomFrame(msg.room) };
    } else {
      return false;
    }
    this.#queue.unshift(item);
    const pace = this.#pace;
    pace.pausedUntil = performance.now() + Math.min(8000, 1000 * 2 ** pace.strikes);
    pace.strikes += 1;
    pace.tokens = 0;
    this.#pump();
    return true;
  }

  #outboxChanged(entry) {
    this.#emit("outbox", publicEntry(entry));
  }

  // ---- tokens ----------------------------------------------------------------------------

  /** Takes a login/refresh answer; schedules the next renewal. */
  #setToken({ access_token, expires_at, expires_in }) {
    this.#token = access_token;
    this.#tokenExpiresAt = expires_at;
    this.#tokenLifetime = expires_in;
    this.#skew = expires_at - expires_in - Date.now() / 1000;
    this.#scheduleRenewal(expires_in);
    if (this.#status.state !== "connected") this.#emit("token", { expiresAt: expires_at, renewed: false });
  }

  /**
   * One timer renews the token: at the server's warning time, but not before half its life, so
   * a token shorter-lived than `warn_before` is not renewed in a loop. Both a new token and an
   * `expiring` message reschedule it.
   */
  #scheduleRenewal(secondsLeft) {
    clearTimeout(this.#renewTimer);
    const warn = this.#config?.warn_before_seconds ?? 60;
    const lead = Math.min(warn, this.#tokenLifetime / 2);
    const delay = Math.max(0, secondsLeft - lead) * 1000;
    // Due now: no timer, which a background tab might delay.
    if (delay === 0) this.renew();
    else this.#renewTimer = setTimeout(() => this.renew(), delay);
  }

  #secondsLeft() {
    return (this.#tokenExpiresAt ?? 0) - this.serverNow();
  }

  /** POST /api/token/refresh, one tab at a time, so two tabs never present the same rotated cookie. */
  #refreshRequest() {
    const refresh = () => this.#request("POST", "/api/token/refresh");
    return globalThis.navigator?.locks ? navigator.locks.request("authchat-token-refresh", refresh) : refresh();
  }

  async #whoAmI() {
    const me = await this.api("/api/me");
    writeHint(true);
    if (this.#user !== me.user) this.#outbox = this.#outbox.filter((e) => e.user === me.user);
    this.#user = me.user;
    this.#roles = me.roles ?? [];
    if (this.#status.state === "signed_out") this.#setStatus({ state: "idle", canReconnect: true });
    this.#emit("signedin", { user: this.#user, roles: this.roles });
    return { user: this.#user, roles: this.roles };
  }

  /** The sign-in is over (the server refused to renew it): close, and say why once. */
  #endSignIn(reason) {
    this.#wantOpen = false;
    clearTimeout(this.#retryTimer);
    const ws = this.#ws;
    this.#ws = null;
    ws?.close(1000, "signed out");
    this.#forgetSocket();
    this.#setStatus({ state: "disconnected", connId: null, code: null, reason, retryAt: null, canReconnect: false });
    this.#signedOut(reason);
  }

  /**
   * Forgets the sign-in. Unsent messages stay in the outbox (marked failed), so signing in
   * again as the same user on this page offers them again; another user's sign-in drops them.
   * `deliberate`: the user signed out here (nothing went wrong).
   */
  #signedOut(reason, deliberate = false) {
    clearTimeout(this.#renewTimer);
    const wasSignedIn = this.#user !== null;
    for (const entry of this.#outbox) {
      entry.user = this.#user;
      if (entry.state !== "failed") {
        Object.assign(entry, { state: "failed", error: { code: "signed_out", text: "you were signed out before it was sent" } });
      }
    }
    this.#queue = [];
    this.#inFlight = null;
    this.#token = this.#tokenExpiresAt = this.#user = null;
    this.#roles = [];
    this.#rooms.clear();
    writeHint(false);
    if (this.#status.state !== "disconnected") this.#setStatus({ state: "signed_out", connId: null, canReconnect: false });
    if (wasSignedIn) this.#emit("signedout", { reason, deliberate });
  }

  // ---- plumbing --------------------------------------------------------------------------

  /** fetch with JSON in and out; errors become {@link ApiError}. Cookies go same-origin only. */
  async #request(method, path, { body, bearer } = {}) {
    const headers = { accept: "application/json" };
    if (body !== undefined) headers["content-type"] = "application/json";
    if (bearer) headers.authorization = `Bearer ${bearer}`;
    let res;
    try {
      res = await fetch(this.#base + path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        credentials: "same-origin",
        cache: "no-store",
      });
    } catch {
      throw new ApiError(0, "network_error", "the server could not be reached");
    }
    const data = await res.json().catch(() => null);
    if (!res.ok) {
      const code = data?.error ?? `http_${res.status}`;
      console.info(`authchat: ${method} ${path}: ${res.status} ${code}: ${data?.message ?? res.statusText}`);
      throw new ApiError(res.status, code, data?.message ?? res.statusText);
    }
    return data;
  }

  #setStatus(change) {
    this.#status = { ...this.#status, ...change, attempt: this.#attempt };
    this.#emit("status", this.status);
  }

  #emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}

/** An outbox entry as events and `pending()` show it. */
function publicEntry({ ref, room, text, state, error }) {
  return { ref, room, text, state, error };
}

/** A short random id (crypto.getRandomValues works on plain http too, unlike randomUUID). */
function randomId() {
  const bytes = crypto.getRandomValues(new Uint8Array(9));
  return Array.from(bytes, (b) => b.toString(36).padStart(2, "0")).join("");
}

/** Whether this browser signed in before: true, false, or null when storage is unavailable. */
function readHint() {
  try {
    return localStorage.getItem(SIGNED_IN_HINT) === "1";
  } catch {
    return null;
  }
}

function writeHint(signedIn) {
  try {
    if (signedIn) localStorage.setItem(SIGNED_IN_HINT, "1");
    else localStorage.removeItem(SIGNED_IN_HINT);
  } catch {
    // Without storage every page load tries to resume, as before.
  }
}
