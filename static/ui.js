// Helpers shared by the chat page and the admin page: building DOM, formatting times, the
// sign-in form, and keyed list updates that keep keyboard focus where it was.

/** The element with this id (the pages' markup guarantees it exists). */
export const $ = (id) => document.getElementById(id);

/**
 * Creates an element. `props`: `class`, `text`, `data` (dataset), `aria` (aria-* attributes),
 * `on` (event listeners); anything else is set as a property (`type`, `hidden`, `title`…).
 * @returns {HTMLElement}
 */
export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key === "data") Object.assign(node.dataset, value);
    else if (key === "aria") for (const [name, v] of Object.entries(value)) node.setAttribute(`aria-${name}`, v);
    else if (key === "on") for (const [type, fn] of Object.entries(value)) node.addEventListener(type, fn);
    else node[key] = value;
  }
  node.append(...children.filter((c) => c !== null && c !== undefined && c !== false));
  return node;
}

/** `m:ss` (or `h:mm:ss`) for a number of seconds; never negative. */
export function formatClock(seconds) {
  const s = Math.max(0, Math.floor(seconds));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const ss = String(s % 60).padStart(2, "0");
  return h ? `${h}:${String(m).padStart(2, "0")}:${ss}` : `${m}:${ss}`;
}

/** "3 s", "5 min", "2 h": a short duration for "connected for". */
export function formatAge(seconds) {
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}

const clockFormat = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });
const secondsFormat = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit", second: "2-digit" });
const fullFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "medium" });

/** A `<time>` element for Unix milliseconds, showing the clock time, full date on hover. */
export function timeElement(ms, { seconds = false } = {}) {
  const date = new Date(ms);
  return el("time", {
    dateTime: date.toISOString(),
    title: fullFormat.format(date),
    text: (seconds ? secondsFormat : clockFormat).format(date),
  });
}

/** One of eight avatar colours (CSS classes `hue-0`…`hue-7`), stable per name. */
export function hueClass(name) {
  let hash = 0;
  for (const ch of name) hash = (hash * 31 + ch.codePointAt(0)) >>> 0;
  return `hue-${hash % 8}`;
}

/**
 * Wires a sign-in form: submits name and password through `chat.login`, shows failures in
 * `errorBox`, and calls `onSignedIn` after success.
 * @param {HTMLFormElement} form with inputs named `username` and `password`
 * @param {HTMLElement} errorBox
 * @param {import("./authchat.js").AuthChat} chat
 * @param {(me: {user: string, roles: string[]}) => void} onSignedIn
 */
export function bindSignIn(form, errorBox, chat, onSignedIn) {
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const button = form.querySelector("button[type=submit]");
    const { username, password } = form.elements;
    showFormError(errorBox, null);
    button.disabled = true;
    try {
      const me = await chat.login(username.value.trim(), password.value);
      password.value = "";
      onSignedIn(me);
    } catch (e) {
      // The library words the server's codes for people; the code is in the console.
      showFormError(errorBox, `${capitalize(e.message)}.`);
      password.select();
    } finally {
      button.disabled = false;
    }
  });
}

/**
 * Shows the sign-in form's fields, or, when the server takes no passwords (verify-only mode,
 * `/api/config` says `login: false`), where to sign in instead.
 * @param {import("./authchat.js").AuthChat} chat with its config loaded
 */
export function offerSignIn(chat) {
  const passwords = chat.config?.login !== false;
  $("signin-fields").hidden = !passwords;
  $("signin-elsewhere").hidden = passwords;
  if (passwords) $("signin-user").focus();
}

/** The text with its first letter in capitals. */
export const capitalize = (text) => text.charAt(0).toUpperCase() + text.slice(1);

/** Shows (or with `null` hides) an error message under a form. */
export function showFormError(box, text) {
  box.textContent = text ?? "";
  box.hidden = !text;
}

/**
 * Makes `container`'s children match `items`, one element per key, reusing existing elements
 * so that focus and selection inside them survive a refresh.
 * @template T
 * @param {HTMLElement} container
 * @param {T[]} items in display order
 * @param {(item: T) => string} keyOf
 * @param {(item: T) => HTMLElement} create
 * @param {(node: HTMLElement, item: T) => void} update
 */
export function syncChildren(container, items, keyOf, create, update) {
  const existing = new Map([...container.children].map((node) => [node.dataset.key, node]));
  items.forEach((item, index) => {
    const key = String(keyOf(item));
    let node = existing.get(key);
    existing.delete(key);
    if (!node) {
      node = create(item);
      node.dataset.key = key;
    }
    update(node, item);
    // Only move what is out of place: moving a node that holds focus would drop the focus.
    if (container.children[index] !== node) container.insertBefore(node, container.children[index] ?? null);
  });
  for (const stale of existing.values()) stale.remove();
}
