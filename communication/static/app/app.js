/* The reference web client (/app/): sign-in, the notification bell, conversations, preferences
 * and Web Push, all through commclient.js. No framework: each part is a few functions over the
 * DOM of templates/app/index.html. Every listener is attached here (the Content-Security-Policy
 * refuses inline handlers). */
import { CommClient } from "/static/commclient/commclient.js";

const TOKEN_KEY = "commclient.token";
const $ = (id) => document.getElementById(id);
const el = (tag, attrs = {}, ...children) => {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  node.append(...children.filter((c) => c !== null && c !== undefined));
  return node;
};
const time = (iso) => (iso ? new Date(iso).toLocaleString() : "");

let client = null;
let me = null;
const presence = new Map(); // user_id -> "online" | "offline"
const conversations = new Map(); // id -> conversation as listed
let current = null; // the open conversation
let replyTo = null;
let threadOf = null; // the message whose thread is shown, or null for the whole conversation
let notificationsCursor = null;
let typingSentAt = 0;
const typingTimers = new Map();

// ------------------------------------------------------------------------------------ sign-in

function showSignedIn(signedIn) {
  $("signin").hidden = signedIn;
  $("top-actions").hidden = !signedIn;
  $("chat").hidden = !signedIn;
  if (!signedIn) {
    $("inbox").hidden = true;
    $("prefs").hidden = true;
  }
}

async function showSignIn(message = "") {
  showSignedIn(false);
  $("signin-error").textContent = message;
  $("conn").textContent = "";
  try {
    const response = await fetch("/app/demo-users", { headers: { Accept: "application/json" } });
    if (response.status !== 200) return;
    const users = await response.json();
    const list = $("demo-users");
    list.replaceChildren(
      ...users.map((user) =>
        el("li", {}, el("button", { type: "button", onclick: () => signIn(user.token) },
          `${user.name || user.user_id} (${user.user_id})`)),
      ),
    );
    $("demo").hidden = users.length === 0;
  } catch {
    // No demo users (production, or the endpoint is absent): a token is pasted instead.
  }
}

async function signIn(token) {
  const candidate = new CommClient({ token });
  try {
    await candidate.notifications.unreadCount();
  } catch (error) {
    sessionStorage.removeItem(TOKEN_KEY);
    await showSignIn(error.status === 401 ? "This token is not valid (or has expired)." : String(error.message || error));
    return;
  }
  sessionStorage.setItem(TOKEN_KEY, token);
  client = candidate;
  wireEvents(client);
  showSignedIn(true);
  $("main").focus();
  client.connect();
  await Promise.all([loadInbox(), loadConversations(), refreshBadge()]);
}

function signOut() {
  sessionStorage.removeItem(TOKEN_KEY);
  if (client) client.close();
  client = null;
  me = null;
  current = null;
  conversations.clear();
  presence.clear();
  $("messages").replaceChildren();
  $("conversation-list").replaceChildren();
  $("notifications").replaceChildren();
  $("composer").hidden = true;
  $("conversation-title").textContent = "Pick a conversation";
  showSignIn();
}

function wireEvents(c) {
  c.on("state", ({ state }) => {
    const labels = { connecting: "Connecting…", open: "Online", reconnecting: "Reconnecting…", closed: "Offline" };
    $("conn").textContent = labels[state] || state;
    $("conn").dataset.state = state;
  });
  c.on("ready", (frame) => {
    me = frame.user_id;
    $("who").textContent = me;
    if (typeof frame.unread === "number") setBadge(frame.unread);
    askPresence();
  });
  c.on("error", (frame) => {
    if (frame.code === "token_invalid") signOut();
  });
  c.on("resync", () => {
    loadInbox();
    loadConversations();
    refreshBadge();
    if (current) openConversation(current.id);
  });
  c.on("notification.created", (frame) => {
    $("notifications").prepend(notificationItem({ ...frame.data, read: false }));
    if (typeof frame.data.unread === "number") setBadge(frame.data.unread);
  });
  for (const type of ["notification.read", "notification.unread", "notification.dismissed"]) {
    c.on(type, (frame) => {
      for (const id of frame.data.ids || []) {
        const item = $("notifications").querySelector(`[data-id="${id}"]`);
        if (!item) continue;
        if (type === "notification.dismissed") item.remove();
        else item.classList.toggle("unread", type === "notification.unread");
      }
      if (typeof frame.data.unread === "number") setBadge(frame.data.unread);
    });
  }
  c.on("message.created", (frame) => onMessage(frame.data, true));
  c.on("message.updated", (frame) => onMessage(frame.data, false));
  c.on("message.deleted", (frame) => onMessage(frame.data, false));
  c.on("receipt", (frame) => onReceipt(frame.data));
  c.on("typing", (frame) => onTyping(frame.data));
  c.on("presence", (frame) => {
    presence.set(frame.data.user_id, frame.data.state);
    renderConversationList();
  });
  c.on("participant.added", () => loadConversations());
  c.on("participant.removed", () => loadConversations());
}

// ------------------------------------------------------------------------- notification bell

function setBadge(count) {
  const badge = $("badge");
  badge.textContent = String(count);
  badge.hidden = count === 0;
  $("bell").setAttribute("aria-label", `Notifications, ${count} unread`);
}

async function refreshBadge() {
  const unread = await client.notifications.unreadCount();
  setBadge(typeof unread === "number" ? unread : unread.count);
}

function notificationItem(n) {
  return el(
    "li",
    { class: n.read ? "notification" : "notification unread", dataset: { id: n.id } },
    el("strong", {}, n.title || n.category),
    el("span", { class: "body" }, n.body || ""),
    el("time", { datetime: n.created_at || "" }, time(n.created_at)),
    el("button", {
      type: "button",
      class: "mark-read",
      "aria-label": `Mark "${n.title || n.category}" read`,
      onclick: () => client.notifications.markRead([n.id]).then(refreshBadge),
    }, "Mark read"),
  );
}

function cursorOf(next) {
  return next ? new URL(next, location.href).searchParams.get("cursor") : null;
}

async function loadInbox(more = false) {
  const page = await client.notifications.list({ cursor: more ? notificationsCursor : undefined, limit: 20 });
  const items = page.results.map(notificationItem);
  if (more) $("notifications").append(...items);
  else $("notifications").replaceChildren(...items);
  notificationsCursor = cursorOf(page.next);
  $("more-notifications").hidden = !notificationsCursor;
}

function togglePanel(id, button, open) {
  const panel = $(id);
  panel.hidden = open === undefined ? !panel.hidden : !open;
  if (button) button.setAttribute("aria-expanded", String(!panel.hidden));
  if (!panel.hidden) {
    const heading = panel.querySelector("h2");
    heading.setAttribute("tabindex", "-1");
    heading.focus();
  } else if (button) button.focus();
}

// ------------------------------------------------------------------------------ conversations

function otherMembers(conversation) {
  return (conversation.participants || []).filter((p) => p.user_id !== me);
}

function conversationName(conversation) {
  if (conversation.title) return conversation.title;
  const names = otherMembers(conversation).map((p) => p.name || p.user_id);
  return names.join(", ") || "Just me";
}

async function loadConversations() {
  const page = await client.conversations.list({});
  conversations.clear();
  for (const c of page.results) conversations.set(c.id, c);
  renderConversationList();
  askPresence();
}

// Contacts who came online before this page connected announced it before we listened: ask.
// (presence.ping with user_ids; used only where commclient.js offers it.)
function askPresence() {
  if (!client || typeof client.presence !== "function" || client.state !== "open") return;
  const ids = new Set();
  for (const c of conversations.values()) for (const p of otherMembers(c)) ids.add(p.user_id);
  if (ids.size) client.presence([...ids].slice(0, 100));
}

function renderConversationList() {
  const items = [...conversations.values()].map((c) => {
    const online = otherMembers(c).some((p) => presence.get(p.user_id) === "online");
    return el(
      "li",
      { dataset: { id: c.id } },
      el(
        "button",
        {
          type: "button",
          class: current && current.id === c.id ? "conversation-item active" : "conversation-item",
          "aria-current": current && current.id === c.id ? "true" : "false",
          onclick: () => openConversation(c.id),
        },
        el("span", { class: online ? "dot online" : "dot", title: online ? "online" : "offline" },
          el("span", { class: "visually-hidden" }, online ? "online" : "offline")),
        el("span", { class: "name" }, conversationName(c)),
        el("span", { class: "preview" }, c.last_message ? c.last_message.preview : ""),
        c.unread ? el("span", { class: "unread-count", "aria-label": `${c.unread} unread` }, String(c.unread)) : null,
      ),
    );
  });
  $("conversation-list").replaceChildren(...items);
}

async function openConversation(id) {
  const [detail, page] = await Promise.all([
    client.conversations.get(id),
    client.conversations.messages(id, { limit: 30 }),
  ]);
  current = { ...detail, oldest: page.results.length ? page.results[0].id : null };
  replyTo = null;
  threadOf = null;
  $("thread-bar").hidden = true;
  $("replying").hidden = true;
  $("conversation-title").textContent = conversationName(detail);
  $("messages").replaceChildren(...page.results.map(messageItem));
  $("older").hidden = !page.has_more;
  scrollToEnd();
  $("typing").textContent = "";
  $("composer").hidden = false;
  const listed = conversations.get(id);
  if (listed) listed.unread = 0;
  renderConversationList();
  showReceipt();
  markReadLatest();
  $("content").focus();
}

async function loadOlder() {
  const page = await client.conversations.messages(current.id, { before: current.oldest, limit: 30 });
  $("messages").prepend(...page.results.map(messageItem));
  if (page.results.length) current.oldest = page.results[0].id;
  $("older").hidden = !page.has_more;
}

function attachmentView(a) {
  const label = `${a.content_type}, ${Math.ceil(a.size / 1024)} kB`;
  if (a.thumbnail_url) {
    return el("a", { class: "attachment", href: a.url, download: "" },
      el("img", { src: a.thumbnail_url, alt: `Image attachment (${label})`, class: "thumbnail" }));
  }
  return el("a", { class: "attachment", href: a.url, download: "" }, `Download (${label})`);
}

// The name a participant of the open conversation goes by (their id when unknown).
function displayName(userId) {
  const who = (current?.participants || []).find((p) => p.user_id === userId);
  return who?.name || userId || "system";
}

function messageBody(m) {
  if (m.deleted_at) return el("p", { class: "text" }, "This message was deleted.");
  if (m.encrypted) return el("p", { class: "text" }, "End-to-end encrypted: open it in a client that holds your keys.");
  if (!m.html) return el("p", { class: "text" }, m.content);
  // The service renders a message's Markdown to HTML sanitised by an allow-list (nh3): shown as
  // it is given, under the page's policy that runs no inline script.
  const body = el("div", { class: "text" });
  body.innerHTML = m.html;
  return body;
}

function messageItem(m) {
  const mine = m.sender === me;
  const item = el("li", {
    class: ["message", mine ? "mine" : "", m.parent_id ? "reply" : "", m.deleted_at ? "deleted" : ""].join(" ").trim(),
    dataset: { id: m.id },
  });
  const meta = el("p", { class: "meta" },
    el("span", { class: "sender" }, displayName(m.sender)),
    " ",
    el("time", { datetime: m.sent_at || "" }, time(m.sent_at)),
    m.edited_at ? " (edited)" : null,
    m.parent_id ? el("span", { class: "in-thread" }, ` in reply to #${m.parent_id}`) : null,
  );
  item.append(meta, messageBody(m));
  if (!m.deleted_at) {
    if ((m.attachments || []).length) item.append(el("div", { class: "attachments" }, ...m.attachments.map(attachmentView)));
    const actions = el("div", { class: "actions" },
      el("button", { type: "button", onclick: () => startReply(m) }, "Reply"));
    if (!m.parent_id && !threadOf) {
      actions.append(el("button", { type: "button", onclick: () => openThread(m) }, "Thread"));
    }
    if (mine) {
      actions.append(
        el("button", { type: "button", onclick: () => startEdit(item, m) }, "Edit"),
        el("button", { type: "button", onclick: () => removeMessage(m) }, "Delete"),
      );
    }
    item.append(actions);
  }
  return item;
}

function onMessage(message, created) {
  if (!current || message.conversation_id !== current.id) {
    const listed = conversations.get(message.conversation_id);
    if (!listed) return loadConversations();
    if (created) {
      if (message.sender !== me) listed.unread = (listed.unread || 0) + 1;
      listed.last_message = { preview: message.content, sender: message.sender };
      renderConversationList();
    }
    return;
  }
  const existing = $("messages").querySelector(`[data-id="${message.id}"]`);
  const item = messageItem(message);
  if (existing) existing.replaceWith(item);
  else if (created && (!threadOf || message.parent_id === threadOf)) {
    $("messages").append(item);
    scrollToEnd();
  }
  if (created && message.sender !== me) {
    clearTyping(message.sender);
    markReadLatest();
  }
  showReceipt();
}

function scrollToEnd() {
  const list = $("messages");
  list.scrollTop = list.scrollHeight;
}

function latestId(fromOthers) {
  const items = [...$("messages").querySelectorAll(fromOthers ? ".message:not(.mine)" : ".message.mine")];
  return items.length ? Number(items[items.length - 1].dataset.id) : null;
}

function markReadLatest() {
  const id = latestId(true);
  if (id && current && document.visibilityState === "visible") client.conversations.markRead(current.id, id);
}

function onReceipt(data) {
  if (!current || data.conversation_id !== current.id) return;
  const member = current.participants.find((p) => p.user_id === data.user_id);
  if (member) {
    member.read_up_to = data.read_up_to;
    member.delivered_up_to = data.delivered_up_to;
  }
  showReceipt();
}

function showReceipt() {
  const mine = latestId(false);
  if (!mine || !current) return ($("receipt").textContent = "");
  const readers = otherMembers(current).filter((p) => (p.read_up_to || 0) >= mine);
  const delivered = otherMembers(current).filter((p) => (p.delivered_up_to || 0) >= mine);
  $("receipt").textContent = readers.length
    ? `Read by ${readers.map((p) => p.name || p.user_id).join(", ")}`
    : delivered.length ? "Delivered" : "Sent";
}

function clearTyping(userId) {
  clearTimeout(typingTimers.get(userId));
  typingTimers.delete(userId);
  renderTyping();
}

function renderTyping() {
  const names = [...typingTimers.keys()];
  $("typing").textContent = names.length ? `${names.join(", ")} ${names.length > 1 ? "are" : "is"} typing…` : "";
}

function onTyping(data) {
  if (!current || data.conversation_id !== current.id || data.user_id === me) return;
  if (data.state === "stopped") return clearTyping(data.user_id);
  clearTimeout(typingTimers.get(data.user_id));
  // The server says "stopped" 5 s after the last renewal; this timer covers a lost frame.
  typingTimers.set(data.user_id, setTimeout(() => clearTyping(data.user_id), 7000));
  renderTyping();
}

async function openThread(message) {
  const page = await client.conversations.messages(current.id, { thread: message.id, limit: 200 });
  threadOf = message.id;
  $("thread-title").textContent = `Thread: ${displayName(message.sender)}, "${message.content.slice(0, 40)}"`;
  $("thread-bar").hidden = false;
  $("older").hidden = true;
  $("messages").replaceChildren(messageItem(message), ...page.results.map(messageItem));
  startReply(message);
}

function startReply(message) {
  // Threads are one level deep: answering a reply answers its thread.
  replyTo = message.parent_id || message.id;
  $("replying-text").textContent = `Replying to ${displayName(message.sender)}: ${message.content.slice(0, 60)}`;
  $("replying").hidden = false;
  $("content").focus();
}

function startEdit(item, message) {
  const input = el("textarea", { rows: "2", "aria-label": "Edit message" });
  input.value = message.content;
  const form = el("form", { class: "edit" }, input,
    el("button", { type: "submit" }, "Save"),
    el("button", { type: "button", onclick: () => item.replaceWith(messageItem(message)) }, "Cancel"));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      item.replaceWith(messageItem(await client.editMessage(message.id, input.value)));
    } catch (error) {
      $("send-error").textContent = error.detail || error.message;
    }
  });
  item.querySelector(".text").replaceWith(form);
  input.focus();
}

async function removeMessage(message) {
  if (!window.confirm("Delete this message?")) return;
  try {
    await client.deleteMessage(message.id);
  } catch (error) {
    $("send-error").textContent = error.detail || error.message;
  }
}

async function sendMessage(event) {
  event.preventDefault();
  const content = $("content").value.trim();
  const file = $("file").files[0];
  if (!current || (!content && !file)) return;
  $("send-error").textContent = "";
  try {
    const attachments = file ? [(await client.upload(file)).id] : [];
    const message = await client.send(current.id, { content, parentId: replyTo || undefined, attachments });
    $("content").value = "";
    $("file").value = "";
    // In a thread view the next message answers the thread too.
    replyTo = threadOf;
    $("replying").hidden = !threadOf;
    // Over the socket the ack carries only ids: the message itself arrives as message.created.
    if (message && message.sent_at) onMessage(message, true);
  } catch (error) {
    $("send-error").textContent = error.detail || error.message || String(error);
  }
  $("content").focus();
}

function onComposerInput() {
  const now = Date.now();
  // The server keeps "started" for 5 s after each renewal: one frame every 2 s is enough.
  if (current && now - typingSentAt > 2000) {
    typingSentAt = now;
    client.conversations.typing(current.id);
  }
}

// ------------------------------------------------------------------------------- preferences

const CHANNELS = ["email", "sms", "push", "in_app"];

async function loadPreferences() {
  const prefs = await client.preferences.get();
  $("prefs-head").replaceChildren(el("tr", {}, el("th", { scope: "col" }, "Category"),
    ...CHANNELS.map((ch) => el("th", { scope: "col" }, ch.replace("_", "-")))));
  $("prefs-body").replaceChildren(...prefs.categories.map((cat) => el("tr", {},
    el("th", { scope: "row" }, cat.name || cat.key, cat.mandatory ? el("small", {}, " (required)") : null),
    ...CHANNELS.map((ch) => {
      const box = el("input", {
        type: "checkbox",
        "aria-label": `${cat.name || cat.key}: ${ch}`,
        dataset: { category: cat.key, channel: ch },
      });
      box.checked = Boolean(cat.channels[ch]);
      box.disabled = Boolean(cat.mandatory);
      return el("td", {}, box);
    }))));
  const quiet = prefs.quiet_hours || { start: "22:00", end: "07:00", enabled: false };
  $("quiet-enabled").checked = Boolean(prefs.quiet_hours && quiet.enabled);
  $("quiet-start").value = (quiet.start || "").slice(0, 5);
  $("quiet-end").value = (quiet.end || "").slice(0, 5);
  $("timezone").textContent = prefs.timezone || "not set";
}

async function savePreferences(event) {
  event.preventDefault();
  const preferences = [...$("prefs-body").querySelectorAll("input:not(:disabled)")].map((box) => ({
    category: box.dataset.category, channel: box.dataset.channel, enabled: box.checked,
  }));
  const body = { preferences };
  if ($("quiet-start").value && $("quiet-end").value) {
    body.quiet_hours = { start: $("quiet-start").value, end: $("quiet-end").value, enabled: $("quiet-enabled").checked };
  }
  try {
    await client.preferences.put(body);
    $("prefs-status").textContent = "Saved.";
  } catch (error) {
    $("prefs-status").textContent = `Not saved: ${error.detail || error.message}`;
  }
}

// ---------------------------------------------------------------------------------- Web Push

function loadPushScript() {
  if (window.CommunicationPush) return Promise.resolve(window.CommunicationPush);
  return new Promise((resolve, reject) => {
    const script = el("script", { src: "/static/notifications/push/push.js" });
    script.addEventListener("load", () => resolve(window.CommunicationPush));
    script.addEventListener("error", () => reject(new Error("push.js did not load")));
    document.head.append(script);
  });
}

async function enablePush() {
  $("push-status").textContent = "Working…";
  try {
    const push = await loadPushScript();
    await push.register({
      apiBase: "/api/v1",
      token: sessionStorage.getItem(TOKEN_KEY),
      serviceWorker: "/static/notifications/push/sw.js",
    });
    $("push-status").textContent = "This browser will receive notifications.";
  } catch (error) {
    $("push-status").textContent = error.message || String(error);
  }
}

// ------------------------------------------------------------------------------------- start

function start() {
  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    signIn($("token").value.trim());
  });
  $("sign-out").addEventListener("click", signOut);
  $("bell").addEventListener("click", () => togglePanel("inbox", $("bell")));
  $("close-inbox").addEventListener("click", () => togglePanel("inbox", $("bell"), false));
  $("read-all").addEventListener("click", () => client.notifications.markAllRead().then(() => loadInbox()).then(refreshBadge));
  $("more-notifications").addEventListener("click", () => loadInbox(true));
  $("open-prefs").addEventListener("click", () => {
    togglePanel("prefs", $("open-prefs"), true);
    loadPreferences();
  });
  $("close-prefs").addEventListener("click", () => togglePanel("prefs", $("open-prefs"), false));
  $("prefs-form").addEventListener("submit", savePreferences);
  $("push-enable").addEventListener("click", enablePush);
  $("older").addEventListener("click", loadOlder);
  $("close-thread").addEventListener("click", () => openConversation(current.id));
  $("composer").addEventListener("submit", sendMessage);
  $("content").addEventListener("input", onComposerInput);
  $("content").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey) {
      event.preventDefault();
      $("composer").requestSubmit();
    }
  });
  $("cancel-reply").addEventListener("click", () => {
    replyTo = null;
    $("replying").hidden = true;
    $("content").focus();
  });
  document.addEventListener("keydown", (event) => {
    if (event.key !== "Escape") return;
    if (!$("inbox").hidden) togglePanel("inbox", $("bell"), false);
    if (!$("prefs").hidden) togglePanel("prefs", $("open-prefs"), false);
  });
  document.addEventListener("visibilitychange", () => current && markReadLatest());
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) signIn(token);
  else showSignIn();
}

start();
