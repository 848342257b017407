// commclient.js: the reference client of the Communication Service's REST API and websocket.
// A plain ES module, no dependencies, no build step; works under the service's strict
// Content-Security-Policy (no inline script, no eval, connections to the service itself).
//
//   import { CommClient } from "/static/commclient/commclient.js";
//   const client = new CommClient({ token });
//   client.on("notification.created", (event) => render(event.data));
//   client.on("resync", () => reloadInboxAndConversations());
//   client.connect();

/** A non-2xx answer of the API (`{code, detail, fields}`), or a send refused over the socket. */
export class CommError extends Error {
  /**
   * @param {number} status HTTP status (0 for a websocket error frame)
   * @param {{code?: string, detail?: string, fields?: object}} body the service's error body
   */
  constructor(status, body = {}) {
    super(body.detail || body.code || `HTTP ${status}`);
    this.name = "CommError";
    this.status = status;
    this.code = body.code || "error";
    this.detail = body.detail || "";
    this.fields = body.fields || null;
  }
}

// Close codes after which reconnecting cannot help: a bad or expired token, a refused origin.
const FINAL_CLOSE_CODES = new Set([4401, 4403]);
// How long a hole in the seq numbers may stay open before the client asks for a replay (events
// of one user can reach the socket slightly out of order when several processes publish).
const GAP_WAIT_MS = 1000;

function newClientId() {
  if (globalThis.crypto && crypto.randomUUID) return crypto.randomUUID();
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function query(params) {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params || {})) {
    if (value !== undefined && value !== null && value !== "") search.set(key, String(value));
  }
  const text = search.toString();
  return text ? `?${text}` : "";
}

// A page's `next` link or a bare cursor value: the cursor to pass back.
function cursorOf(cursor) {
  if (cursor && cursor.includes("://")) return new URL(cursor).searchParams.get("cursor");
  return cursor;
}

export class CommClient {
  /**
   * @param {object} options
   * @param {string} options.token a user JWT
   * @param {string} [options.baseUrl] "" for the page's own origin, else e.g. "https://comm.example.com"
   * @param {number} [options.pingInterval] ms between pings; a ping unanswered by the next one
   *   means a dead socket, which is dropped and reconnected
   * @param {{initial: number, max: number}} [options.backoff] reconnect delays in ms:
   *   a random delay in [0, min(max, initial * 2^attempt)] (full jitter)
   */
  constructor({ token, baseUrl = "", pingInterval = 25000, backoff = {} } = {}) {
    if (!token) throw new TypeError("CommClient needs a token");
    this.token = token;
    this.baseUrl = baseUrl.replace(/\/$/, "");
    this.pingInterval = pingInterval;
    this.backoff = { initial: 500, max: 30000, ...backoff };
    /** The last persisted event's seq this client delivered (0 before any). */
    this.lastSeq = 0;
    this._state = "closed";
    this._handlers = new Map();
    this._ws = null;
    this._attempt = 0;
    this._readySeq = null; // the latest ready's seq; null before the first ready
    this._buffer = new Map(); // seq -> event that arrived ahead of a missing one
    this._resuming = false;
    this._pending = new Map(); // client_id -> {frame, resolve, reject}: sends awaiting their ack
    this._timers = { reconnect: null, ping: null, gap: null, resume: null };

    const api = this.api.bind(this);
    this.notifications = {
      /** The inbox, newest first: `{next, previous, results}`; `cursor` a page's `next`. */
      list: ({ cursor, limit, category, unread } = {}) =>
        api("GET", `/notifications/history${query({ cursor: cursorOf(cursor), limit, category, unread })}`),
      /** @returns {Promise<number>} the unread count */
      unreadCount: () => api("GET", "/notifications/unread").then((body) => body.count),
      /** @param {string[]} ids */
      markRead: (ids) => Promise.all(ids.map((id) => api("PUT", `/notifications/${id}/read`))),
      markAllRead: () => api("POST", "/notifications/read-all"),
    };
    this.conversations = {
      list: ({ cursor, limit } = {}) =>
        api("GET", `/conversations${query({ cursor: cursorOf(cursor), limit })}`),
      get: (id) => api("GET", `/conversations/${id}`),
      messages: (id, { before, after, thread, limit } = {}) =>
        api("GET", `/conversations/${id}/messages${query({ before, after, thread, limit })}`),
      /** Moves the read watermark: over the socket when open, else REST. */
      markRead: (id, messageId) =>
        this._frame({ type: "read", conversation_id: id, message_id: messageId })
          ? Promise.resolve()
          : api("POST", `/conversations/${id}/read`, { message_id: messageId }),
      /** Says "typing" in a conversation (renew it every few seconds); nothing when closed. */
      typing: (id) => {
        this._frame({ type: "typing", conversation_id: id });
      },
    };
    this.preferences = {
      get: () => api("GET", "/notifications/preferences"),
      put: (body) => api("PUT", "/notifications/preferences", body),
    };
  }

  /** "connecting" | "open" | "reconnecting" | "closed" */
  get state() {
    return this._state;
  }

  /**
   * Listens to a server event type ("notification.created", "message.created", "typing" …),
   * "*" (every server event) or the client's own "state", "ready", "resync", "error".
   * Persisted events (with a `seq`) reach listeners once each, in seq order.
   * @returns {() => void} a function that removes the listener
   */
  on(type, fn) {
    if (!this._handlers.has(type)) this._handlers.set(type, new Set());
    this._handlers.get(type).add(fn);
    return () => this.off(type, fn);
  }

  off(type, fn) {
    this._handlers.get(type)?.delete(fn);
  }

  _emit(type, payload) {
    for (const fn of this._handlers.get(type) || []) {
      try {
        fn(payload);
      } catch (error) {
        // One listener's bug must not stop the others, nor the socket's processing.
        setTimeout(() => {
          throw error;
        });
      }
    }
  }

  _setState(state) {
    if (state === this._state) return;
    this._state = state;
    this._emit("state", { state, attempt: this._attempt });
  }

  /** Opens the socket (and keeps it open, reconnecting with back-off, until `close()`). */
  connect() {
    if (this._ws) return;
    this._closedByUser = false;
    this._setState(this._readySeq === null ? "connecting" : "reconnecting");
    const origin = this.baseUrl || location.origin;
    const url = new URL(`/ws/v1/?token=${encodeURIComponent(this.token)}`, origin);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    const ws = new WebSocket(url);
    this._ws = ws;
    this._authError = null;
    ws.onmessage = (message) => this._receive(JSON.parse(message.data));
    ws.onclose = (event) => this._closed(ws, event.code);
  }

  /** Closes the socket for good (no reconnect); sends still awaiting their ack are rejected. */
  close() {
    this._closedByUser = true;
    clearTimeout(this._timers.reconnect);
    const ws = this._ws;
    if (ws) {
      this._closed(ws, 1000);
      ws.close(1000);
    } else {
      this._final(1000);
    }
  }

  _closed(ws, code) {
    if (ws !== this._ws) return; // an old socket we already gave up on
    this._ws.onmessage = this._ws.onclose = null;
    this._ws = null;
    clearInterval(this._timers.ping);
    clearTimeout(this._timers.gap);
    clearTimeout(this._timers.resume);
    this._resuming = false;
    if (this._closedByUser || FINAL_CLOSE_CODES.has(code)) return this._final(code);
    const ceiling = Math.min(this.backoff.max, this.backoff.initial * 2 ** this._attempt);
    this._attempt += 1;
    this._setState("reconnecting");
    this._timers.reconnect = setTimeout(() => this.connect(), Math.random() * ceiling);
  }

  _final(code) {
    if (code !== 1000 && !this._authError) {
      this._emit("error", { type: "error", code: "token_invalid", detail: `closed (${code})` });
    }
    for (const { reject } of this._pending.values()) {
      reject(new CommError(0, { code: "closed", detail: "The connection is closed." }));
    }
    this._pending.clear();
    this._setState("closed");
  }

  // Gives up on a socket that stopped answering (no pong): the browser may take minutes to see it.
  _drop() {
    const ws = this._ws;
    this._closed(ws, 1006);
    ws.close();
  }

  _frame(frame) {
    if (this._state !== "open") return false;
    this._ws.send(JSON.stringify(frame));
    return true;
  }

  _receive(frame) {
    switch (frame.type) {
      case "ready":
        return this._ready(frame);
      case "pong":
        this._awaitingPong = null;
        return;
      case "resync_required":
        // What was missed is no longer kept: continue from the ready's seq, the app reloads.
        this._resuming = false;
        this.lastSeq = Math.max(this.lastSeq, this._readySeq);
        this._emit("resync");
        return this._drain();
      case "message.ack":
        return this._settle(frame.client_id, (p) => p.resolve(frame));
      case "error":
        return this._error(frame);
    }
    if (typeof frame.seq === "number") return this._persisted(frame);
    this._deliver(frame); // ephemeral: typing, presence …
  }

  _ready(frame) {
    const first = this._readySeq === null;
    this._readySeq = frame.seq;
    this._attempt = 0;
    this._setState("open");
    if (first && this.lastSeq === 0) {
      // A new client starts from now (the app loads the rest over REST); one that set lastSeq
      // before connect() (kept from an earlier page) resumes from it.
      this.lastSeq = frame.seq;
    } else if (frame.seq !== this.lastSeq) {
      this._resume();
    }
    this._emit("ready", frame);
    for (const { frame: send } of this._pending.values()) this._frame(send); // same client_id
    this._awaitingPong = null;
    clearInterval(this._timers.ping);
    this._timers.ping = setInterval(() => this._ping(), this.pingInterval);
    this._drain();
  }

  _resume() {
    this._resuming = true;
    this._frame({ type: "resume", after_seq: this.lastSeq });
  }

  _ping() {
    if (this._awaitingPong) return this._drop();
    this._awaitingPong = (this._pingId = (this._pingId || 0) + 1);
    this._frame({ type: "ping", id: this._pingId });
  }

  _error(frame) {
    if (frame.code === "token_invalid" || frame.code === "token_expired") this._authError = frame;
    if (frame.code === "rate_limited" && this._resuming && !frame.client_id) {
      this._timers.resume = setTimeout(() => this._resume(), frame.retry_after * 1000);
    } else if (frame.client_id && this._pending.has(frame.client_id)) {
      this._settle(frame.client_id, (p) => p.reject(new CommError(0, frame)));
    }
    this._emit("error", frame);
  }

  _settle(clientId, fn) {
    const pending = this._pending.get(clientId);
    if (!pending) return;
    this._pending.delete(clientId);
    fn(pending);
  }

  _persisted(event) {
    if (event.seq <= this.lastSeq) return; // seen already (a replay overlapping live events)
    this._buffer.set(event.seq, event);
    if (this._state === "open") this._drain();
  }

  // Delivers buffered events while they follow on from lastSeq; a hole left open too long is
  // filled by a resume.
  _drain() {
    for (const seq of this._buffer.keys()) if (seq <= this.lastSeq) this._buffer.delete(seq);
    let next;
    while ((next = this._buffer.get(this.lastSeq + 1))) {
      this._buffer.delete(next.seq);
      this.lastSeq = next.seq;
      this._deliver(next);
    }
    if (this._resuming && this.lastSeq >= this._readySeq) this._resuming = false;
    clearTimeout(this._timers.gap);
    if (this._buffer.size && !this._resuming) {
      this._timers.gap = setTimeout(() => this._resume(), GAP_WAIT_MS);
    }
  }

  _deliver(event) {
    this._emit(event.type, event);
    this._emit("*", event);
  }

  /**
   * Calls the REST API.
   * @param {string} method "GET", "POST" …
   * @param {string} path under /api/v1, e.g. "/notifications/unread"
   * @param {object|FormData} [body] sent as JSON (or multipart for FormData)
   * @returns {Promise<any>} the decoded answer (null for 204); rejects with a CommError
   */
  async api(method, path, body) {
    const headers = { Authorization: `Bearer ${this.token}`, Accept: "application/json" };
    const init = { method, headers };
    if (body instanceof FormData) {
      init.body = body;
    } else if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const response = await fetch(`${this.baseUrl}/api/v1${path}`, init);
    const text = await response.text();
    const data = text ? JSON.parse(text) : null;
    if (!response.ok) throw new CommError(response.status, data || {});
    return data;
  }

  /**
   * Sends a message: over the socket when open (resolves with the `message.ack`:
   * `{id, conversation_id, client_id, replay}`), else through REST (resolves with the message).
   * A socket send not acknowledged before a reconnect is sent again with the same client id,
   * which the service turns into one message.
   * @param {string} conversationId
   * @param {{content: string, parentId?: number, attachments?: string[], clientId?: string}} message
   */
  send(conversationId, { content, parentId, attachments, clientId } = {}) {
    const client_id = clientId || newClientId();
    const body = { content, client_id };
    if (parentId !== undefined && parentId !== null) body.parent_id = parentId;
    if (attachments && attachments.length) body.attachments = attachments;
    if (this._state !== "open") return this.api("POST", `/conversations/${conversationId}/messages`, body);
    const frame = { type: "message.send", conversation_id: conversationId, ...body };
    return new Promise((resolve, reject) => {
      this._pending.set(client_id, { frame, resolve, reject });
      this._frame(frame);
    });
  }

  /**
   * Asks who among `userIds` (contacts: people sharing a conversation; at most 100) is online
   * now: the answers arrive as `presence` events (`{user_id, state, last_seen}`), one per
   * contact, as later changes do. Over the socket only (a `presence.ping` with `user_ids`).
   * @param {string[]} userIds
   * @returns {boolean} false when the socket is not open (ask again on the next "ready")
   */
  presence(userIds) {
    return this._frame({ type: "presence.ping", user_ids: userIds });
  }

  editMessage(messageId, content) {
    return this.api("PUT", `/messages/${messageId}`, { content });
  }

  deleteMessage(messageId) {
    return this.api("DELETE", `/messages/${messageId}`);
  }

  /**
   * Uploads a file (a File or Blob): `{id, content_type, size, url, thumbnail_url}`, whose `id`
   * goes in a send's `attachments`.
   */
  upload(file) {
    const form = new FormData();
    form.append("file", file);
    return this.api("POST", "/attachments", form);
  }
}
