/**
 * A browser client for the Symphainy runtime gateway: log in over HTTP, then keep one
 * socket on `/api/runtime/agent` open for the session that login created.
 *
 * A plain ES module with no dependencies and no build step:
 *
 *     import { SymphainyClient } from "/static/console/symphainy-client.js";
 *     const client = new SymphainyClient();
 *     await client.login(email, password);
 *     client.on("agent.token", (data) => output.append(data.token));
 *     await client.connect();
 *     client.sendMessage("hello there");
 *
 * Tokens live in memory only (never in storage or a URL). The access token is refreshed
 * before it expires: over HTTP first (the refresh token rotates), then on the open socket
 * with an `auth.refresh` frame, so the socket stays up. The socket reconnects after a
 * network drop or a server restart (1012) with exponential backoff and full jitter; after
 * 4401 it refreshes the tokens once and reconnects; it never retries 4404 or 4409, nor a
 * 4401 that a refresh did not cure, which need a new login. A reconnect resumes where the last socket stopped (`since` and
 * `epoch` in the socket URL): the server replays what was missed ("resumed"), or says it
 * cannot and the app re-reads its state ("resync.required"). See docs/client.md.
 *
 * @module symphainy-client
 */

/** The close codes of the gateway, and the standard ones the client acts on. */
export const CloseCode = Object.freeze({
  NORMAL: 1000,
  GOING_AWAY: 1001,
  ABNORMAL: 1006,
  MESSAGE_TOO_BIG: 1009,
  SERVER_ERROR: 1011,
  /** The server process is stopping (a deploy): come back after a short random delay. */
  SERVICE_RESTART: 1012,
  TRY_AGAIN_LATER: 1013,
  /** Sent by this client to reopen with a fresh token when `auth.refresh` was not acknowledged. */
  REOPEN: 4000,
  UNAUTHENTICATED: 4401,
  SESSION_NOT_FOUND: 4404,
  SESSION_ENDED: 4409,
  RATE_LIMITED: 4429,
});

/** Close codes after which reconnecting cannot help, and the event each one raises. */
const FINAL_CLOSES = new Map([
  [CloseCode.UNAUTHENTICATED, "auth.required"],
  [CloseCode.SESSION_NOT_FOUND, "session.not_found"],
  [CloseCode.SESSION_ENDED, "session.ended"],
]);
/** Close codes that ask the client to wait longer before it tries again. */
const SLOW_DOWN_CLOSES = new Set([CloseCode.RATE_LIMITED, CloseCode.TRY_AGAIN_LATER]);
/** Error codes with which the server refuses an `auth.refresh` frame. */
const REFRESH_REFUSALS = new Set(["invalid_token", "token_expired", "not_authenticated", "not_found", "session_ended"]);
const SUBPROTOCOL = "symphainy.v1";
/** How long a replay may pause before the client takes it as finished (its last
 * positions may be events the server never sends, such as coalesced progress). */
const REPLAY_QUIET_MS = 500;

/** An HTTP error answered by the API: `{error, message, details}` with its status. */
export class ApiError extends Error {
  /**
   * @param {number} status HTTP status (0 when the request never got an answer)
   * @param {{error?: string, message?: string, details?: object}|null} body
   */
  constructor(status, body) {
    super((body && body.message) || `HTTP ${status}`);
    this.name = "ApiError";
    this.status = status;
    /** @type {string} the machine code, e.g. "session_ended" */
    this.code = (body && body.error) || "http_error";
    this.details = (body && body.details) || {};
  }
}

/**
 * @typedef {object} SessionInfo What login returned, without the tokens.
 * @property {string} sessionId
 * @property {string} userId
 * @property {string} tenantId
 * @property {string[]} roles
 * @property {string[]} permissions
 * @property {string} sessionExpiresAt ISO 8601
 * @property {string} tokenExpiresAt ISO 8601, the current access token's expiry (local clock)
 */

/**
 * @typedef {"idle"|"connecting"|"open"|"reconnecting"|"closed"} SocketState
 * idle: not wanted (never connected, or closed by this client); closed: given up after a
 * final close code.
 */

export class SymphainyClient {
  /**
   * @param {object} [options]
   * @param {string} [options.baseUrl] the service's origin; default: the page's own
   * @param {string} [options.socketPath] default "/api/runtime/agent"
   * @param {{initialMs?: number, maxMs?: number, factor?: number, slowDownMs?: number}} [options.backoff]
   *   reconnect delays: `initialMs * factor^attempt`, capped at `maxMs`, at least
   *   `slowDownMs` after 4429/1013, then half of it kept and half drawn at random
   * @param {number} [options.refreshMarginS] refresh when a third of the token's lifetime
   *   is left, but no earlier than this many seconds before expiry (default 60)
   * @param {number} [options.ackTimeoutMs] how long to wait for `auth.refreshed` (default 10000)
   * @param {typeof fetch} [options.fetch] for tests
   * @param {typeof WebSocket} [options.WebSocket] for tests
   */
  constructor(options = {}) {
    const origin = globalThis.location ? globalThis.location.origin : "";
    this.baseUrl = (options.baseUrl ?? origin).replace(/\/$/, "");
    this.socketPath = options.socketPath ?? "/api/runtime/agent";
    this.backoff = { initialMs: 500, maxMs: 30000, factor: 2, slowDownMs: 5000, ...options.backoff };
    this.refreshMarginS = options.refreshMarginS ?? 60;
    this.ackTimeoutMs = options.ackTimeoutMs ?? 10000;
    this._fetch = options.fetch ?? globalThis.fetch.bind(globalThis);
    this._WebSocket = options.WebSocket ?? globalThis.WebSocket;

    /** @type {Map<string, Set<Function>>} */
    this._handlers = new Map();
    this._tokens = null; // {access, refresh, lifetimeMs, expiresAt}
    this._session = null; // SessionInfo without tokenExpiresAt
    this._ws = null;
    this._state = /** @type {SocketState} */ ("idle");
    this._wanted = false; // the caller asked for an open socket
    this._attempt = 0; // reconnect attempts since the last session.ready
    this._reauthed = false; // a 4401 was answered with a refresh since the last session.ready
    this._ready = null; // the last session.ready frame
    this._waiters = []; // connect() promises waiting for session.ready
    this._refreshing = null; // the one refresh in flight (rotation forbids two)
    this._ack = null; // the pending auth.refresh acknowledgement
    this._position = null; // {seq, epoch}: the last position of the session's event log seen
    this._asked = null; // the position the current socket resumes from, or null (a fresh start)
    this._replay = null; // {since, until, replayed}: the replay after a resumed session.ready
    this._answers = new Map(); // message_id -> the agent answer in flight, as stitched so far
    this._timers = { reconnect: 0, refresh: 0, heartbeat: 0, replay: 0 };
  }

  // --- Reading --------------------------------------------------------------------

  /** @returns {boolean} whether the client holds tokens for a session */
  get loggedIn() {
    return this._tokens !== null;
  }

  /** @returns {SocketState} */
  get state() {
    return this._state;
  }

  /** @returns {SessionInfo|null} the session login created, or null when logged out */
  get session() {
    if (!this._session) return null;
    return { ...this._session, tokenExpiresAt: new Date(this._tokens.expiresAt).toISOString() };
  }

  /** @returns {object|null} the last `session.ready` frame of the current socket */
  get ready() {
    return this._state === "open" ? this._ready : null;
  }

  /**
   * @returns {{seq: number, epoch: string}|null} the last position of the session's event
   * log this client has seen (from `session.ready` and every frame with a `seq`): where the
   * next socket resumes from. Null before the first `session.ready` of a login.
   */
  get position() {
    return this._position ? { ...this._position } : null;
  }

  // --- Events -----------------------------------------------------------------------

  /**
   * Call `fn` for every event of `type`. Server frames arrive by their `type`
   * ("session.ready", "pong", "auth.refreshed", "intent.accepted", "error"), runtime
   * events by their `event_type` ("agent.token", "execution.progress", ...) with their
   * `data` as first argument; "*" gets every frame. The client's own events: "answer" (an
   * agent answer stitched from its snapshot and tokens, at each change: see `answers`), "state",
   * "close", "login", "logout", "tokens", "refresh.failed", after a reconnect "resumed"
   * `{recovered: true, since, seq, replayed}` (the missed events were delivered, `replayed`
   * of them) or "resync.required" `{recovered: false, since, seq, epoch}` (they cannot be:
   * re-read the state over HTTP), and the final ones "auth.required", "session.not_found",
   * "session.ended". A frame whose `seq` is at or below the last one seen is a duplicate
   * and is dropped before any handler.
   *
   * @param {string} type
   * @param {(payload: any, frame?: object) => void} fn
   * @returns {() => void} a function that removes the handler
   */
  on(type, fn) {
    if (!this._handlers.has(type)) this._handlers.set(type, new Set());
    this._handlers.get(type).add(fn);
    return () => this.off(type, fn);
  }

  /** Remove a handler added with `on`. */
  off(type, fn) {
    const handlers = this._handlers.get(type);
    if (handlers) handlers.delete(fn);
  }

  _emit(type, payload, frame) {
    for (const fn of [...(this._handlers.get(type) || [])]) {
      try {
        fn(payload, frame);
      } catch (error) {
        console.error(`symphainy-client: a "${type}" handler failed`, error);
      }
    }
  }

  // --- HTTP -------------------------------------------------------------------------

  /**
   * Log in and keep the tokens and the session login created. Refused while logged in:
   * the client never makes a second session behind the caller's back.
   *
   * @param {string} email
   * @param {string} password
   * @param {{tenantId?: string}} [options]
   * @returns {Promise<SessionInfo>}
   * @throws {ApiError} 401 wrong credentials, 429 throttled (see `error.details`)
   */
  async login(email, password, options = {}) {
    if (this._tokens) throw new Error("Already logged in: call logout() first.");
    const body = { email, password };
    if (options.tenantId) body.tenant_id = options.tenantId;
    const answer = await this._request("POST", "/api/auth/login", body, { auth: false });
    this._position = null; // a new session: its log starts afresh
    this._session = {
      sessionId: answer.session_id,
      userId: answer.user_id,
      tenantId: answer.tenant_id,
      roles: answer.roles,
      permissions: answer.permissions,
      sessionExpiresAt: answer.session_expires_at,
    };
    this._tokensKeep(answer);
    this._emit("login", this.session);
    return this.session;
  }

  /**
   * Call the API with the access token. A 401 `token_expired` is refreshed and retried
   * once; a 401 meaning the session has ended ends the client's session too.
   *
   * @param {string} method
   * @param {string} path e.g. "/api/sessions"
   * @param {object} [body] sent as JSON
   * @param {Record<string, string>} [headers]
   * @returns {Promise<any>} the parsed JSON answer, or null for 204
   * @throws {ApiError}
   */
  api(method, path, body, headers) {
    return this._request(method, path, body, { auth: true, headers });
  }

  async _request(method, path, body, { auth = true, retry = true, headers = {} } = {}) {
    if (auth && !this._tokens) throw new ApiError(401, { error: "not_authenticated", message: "Log in first." });
    const sent = { Accept: "application/json", ...headers };
    if (body !== undefined) sent["Content-Type"] = "application/json";
    if (auth) sent.Authorization = `Bearer ${this._tokens.access}`;
    let response;
    try {
      response = await this._fetch(this.baseUrl + path, {
        method,
        headers: sent,
        body: body === undefined ? undefined : JSON.stringify(body),
        credentials: "omit",
      });
    } catch (error) {
      throw new ApiError(0, { error: "network_error", message: String(error && error.message ? error.message : error) });
    }
    const text = await response.text();
    let answer = null;
    try {
      answer = text ? JSON.parse(text) : null;
    } catch {
      answer = { error: "invalid_response", message: `HTTP ${response.status} without JSON` };
    }
    if (response.ok) return answer;
    const error = new ApiError(response.status, answer);
    const retryAfter = Number(response.headers.get("Retry-After"));
    if (retryAfter > 0) error.retryAfterS = retryAfter;
    if (auth && response.status === 401) {
      if (retry && error.code === "token_expired") {
        await this.refresh();
        return this._request(method, path, body, { auth, headers, retry: false });
      }
      this._lost(error.code === "session_ended" ? "session.ended" : "auth.required", {
        code: 401, reason: error.code, source: "http",
      });
    }
    throw error;
  }

  /**
   * Rotate the tokens now (the client also does this on its own before expiry), then
   * hand the new access token to the open socket. Concurrent calls share one request:
   * presenting a used refresh token twice would end the session.
   *
   * @returns {Promise<SessionInfo>}
   */
  refresh() {
    if (!this._tokens) return Promise.reject(new Error("Not logged in."));
    if (!this._refreshing) {
      this._refreshing = this._refresh().finally(() => {
        this._refreshing = null;
      });
    }
    return this._refreshing;
  }

  async _refresh() {
    clearTimeout(this._timers.refresh);
    let answer;
    try {
      answer = await this._request("POST", "/api/auth/refresh", { refresh_token: this._tokens.refresh }, { auth: false });
    } catch (error) {
      if (error.status === 401) {
        this._lost(error.code === "session_ended" ? "session.ended" : "auth.required", {
          code: 401, reason: error.code, source: "http",
        });
      } else if (this._tokens) {
        // Network, 429 or 5xx: try again shortly while the access token still lasts.
        const waitMs = Math.max(1000, (error.retryAfterS || 0) * 1000, Math.min(5000, this._tokens.lifetimeMs / 10));
        this._timers.refresh = setTimeout(() => this.refresh().catch(() => {}), waitMs);
        this._emit("refresh.failed", { error, retryInMs: waitMs });
      }
      throw error;
    }
    if (!this._tokens) return null; // logged out meanwhile
    this._tokensKeep(answer);
    this._emit("tokens", this.session);
    if (this._state === "open") await this._socketRefresh(this._ws);
    return this.session;
  }

  /** Send the new access token on the open socket; reopen it when that is refused. */
  async _socketRefresh(ws) {
    const acknowledged = new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error("auth.refresh was not acknowledged")), this.ackTimeoutMs);
      this._ack = {
        resolve: (frame) => { clearTimeout(timer); resolve(frame); },
        reject: (error) => { clearTimeout(timer); reject(error); },
      };
    });
    try {
      ws.send(JSON.stringify({ type: "auth.refresh", access_token: this._tokens.access }));
      await acknowledged;
    } catch (error) {
      // The socket still runs on the old token and would close with 4401 at its
      // expiry; reopen it now with the new one instead.
      if (this._ws === ws) ws.close(CloseCode.REOPEN, "token refresh not acknowledged");
    } finally {
      this._ack = null;
    }
  }

  /**
   * End the session (POST /api/auth/logout), close the socket and forget the tokens.
   * The tokens are forgotten even when the request fails.
   *
   * @returns {Promise<void>}
   */
  async logout() {
    if (!this._tokens) return;
    this.disconnect();
    try {
      await this._request("POST", "/api/auth/logout", undefined, { auth: true });
    } catch (error) {
      if (error.status !== 401) throw error;
    } finally {
      this._forget();
      this._emit("logout", {});
    }
  }

  // --- The socket -------------------------------------------------------------------

  /**
   * Open the socket for the login's session, and keep it open until `disconnect()`,
   * `logout()` or a final close code. Refused before login. The first socket of a login
   * starts afresh; every later one (a reconnect, or `connect()` after `disconnect()`)
   * resumes from `position`.
   *
   * @returns {Promise<object>} the `session.ready` frame; rejected on a final close
   */
  connect() {
    if (!this._tokens) return Promise.reject(new Error("Not logged in: call login() first."));
    if (this._state === "open") return Promise.resolve(this._ready);
    const ready = new Promise((resolve, reject) => this._waiters.push({ resolve, reject }));
    if (!this._wanted || this._state === "idle" || this._state === "closed") {
      this._wanted = true;
      this._attempt = 0;
      this._open();
    }
    return ready;
  }

  /** Close the socket and stop reconnecting; the session and its tokens stay. */
  disconnect() {
    this._wanted = false;
    clearTimeout(this._timers.reconnect);
    const ws = this._ws;
    if (ws) {
      ws.close(CloseCode.NORMAL, "client disconnect");
    } else if (this._state !== "idle") {
      this._setState("idle", {});
    }
  }

  /**
   * Send one frame. Throws when the socket is not open (nothing is queued).
   * @param {{type: string}} frame
   */
  send(frame) {
    if (this._state !== "open") throw new Error(`The socket is not open (${this._state}).`);
    this._ws.send(JSON.stringify(frame));
  }

  /**
   * Ask the agent; its reply streams as "agent.started", "agent.token"..., then one of
   * "agent.completed", "agent.failed" or "agent.cancelled"; "answer" gives it stitched
   * (a tab that reconnects mid-answer gets an "agent.snapshot" first).
   * @param {string} text
   * @param {object} [context]
   * @param {string} [conversationId] continue a conversation
   */
  sendMessage(text, context = {}, conversationId = undefined) {
    const payload = { text, context };
    if (conversationId) payload.conversation_id = conversationId;
    this.send({ type: "agent.message", payload });
  }

  /**
   * Stop an answer of the session (any tab's, on any server process); "agent.cancelled"
   * follows, or an "error" `not_found` when it had ended already.
   * @param {string} messageId
   */
  cancelAnswer(messageId) {
    this.send({ type: "agent.cancel", message_id: messageId });
  }

  /**
   * The agent answers in flight, as stitched so far: `{messageId, conversationId, text,
   * nextIndex, status: "streaming"}`.
   * @returns {object[]}
   */
  get answers() {
    return [...this._answers.values()].map((answer) => ({ ...answer }));
  }

  /**
   * Stitch an answer from its events and emit "answer" with it: a snapshot (a tab that
   * opened or came back mid-answer) gives the text so far and the next token's index, each
   * token is appended when its index is the next one (the server sends none twice; one out
   * of order is left to the terminal event, which carries the whole text), and a terminal
   * event ends it with `status` "completed", "failed" or "cancelled".
   */
  _answerTrack(kind, data) {
    const id = data.message_id;
    if (!id) return;
    const known = this._answers.get(id);
    const answer = known || { messageId: id, conversationId: data.conversation_id, text: "", nextIndex: 0, status: "streaming" };
    if (kind === "agent.snapshot") {
      answer.text = data.text;
      answer.nextIndex = data.next_index;
    } else if (kind === "agent.token") {
      if (data.index !== answer.nextIndex) return;
      answer.text += data.token;
      answer.nextIndex += 1;
    } else if (kind === "agent.completed" || kind === "agent.failed" || kind === "agent.cancelled") {
      answer.status = kind.slice("agent.".length);
      if (typeof data.text === "string") answer.text = data.text;
      if (data.reason) answer.reason = data.reason;
      this._answers.delete(id);
      this._emit("answer", { ...answer });
      return;
    } else if (kind !== "agent.started" || known) {
      return;
    }
    this._answers.set(id, answer);
    this._emit("answer", { ...answer });
  }

  /**
   * Submit an intent; answered with "intent.accepted" `{execution_id}`, then the
   * execution's events ("execution.progress", "execution.completed", ...).
   * @param {string} intentType e.g. "batch"
   * @param {object} parameters e.g. {items: [...]}
   * @param {string} [idempotencyKey]
   */
  submitIntent(intentType, parameters, idempotencyKey = undefined) {
    const frame = { type: "intent.submit", intent_type: intentType, parameters };
    if (idempotencyKey) frame.idempotency_key = idempotencyKey;
    this.send(frame);
  }

  _socketUrl() {
    const base = this.baseUrl.replace(/^http/, "ws");
    let url = `${base}${this.socketPath}?session_id=${encodeURIComponent(this._session.sessionId)}`;
    if (this._asked) url += `&since=${this._asked.seq}&epoch=${encodeURIComponent(this._asked.epoch)}`;
    return url;
  }

  async _open() {
    clearTimeout(this._timers.reconnect);
    if (!this._wanted || !this._tokens) return;
    this._setState("connecting", { attempt: this._attempt });
    if (this._tokens.expiresAt - Date.now() < this._marginMs()) {
      try {
        await this.refresh();
      } catch (error) {
        if (!this._tokens || !this._wanted) return; // the session is gone: reported already
        this._retry({ code: CloseCode.ABNORMAL, reason: "token refresh failed" });
        return;
      }
      if (!this._wanted) return;
    }
    let ws;
    this._asked = this._position ? { ...this._position } : null;
    try {
      ws = new this._WebSocket(this._socketUrl(), [SUBPROTOCOL, `bearer.${this._tokens.access}`]);
    } catch (error) {
      this._retry({ code: CloseCode.ABNORMAL, reason: String(error) });
      return;
    }
    this._ws = ws;
    ws.onmessage = (event) => this._onFrame(ws, event.data);
    ws.onclose = (event) => this._onClose(ws, event);
    ws.onerror = () => {}; // a close event always follows, with the code
  }

  _onFrame(ws, data) {
    if (ws !== this._ws) return;
    let frame;
    try {
      frame = JSON.parse(data);
    } catch {
      return;
    }
    if (!frame || typeof frame.type !== "string") return;
    const positioned = frame.type === "runtime_event" && Number.isInteger(frame.seq);
    if (positioned) {
      if (this._duplicate(frame)) return;
      // A position past the replay's end is a live event: the replay is over.
      if (this._replay && frame.seq > this._replay.until) this._replayEnd();
      this._position = { seq: frame.seq, epoch: frame.epoch ?? (this._position ? this._position.epoch : "") };
      if (this._replay) {
        this._replay.replayed += 1;
        this._replayWait();
      }
    } else if (this._replay) {
      this._replayEnd(); // live frames come after the replay
    }
    let resync = null;
    if (frame.type === "session.ready") {
      this._attempt = 0;
      this._reauthed = false;
      this._ready = frame;
      resync = this._positionStart(frame);
      this._setState("open", { ready: frame });
      this._heartbeatStart(frame.heartbeat_s);
      for (const waiter of this._waiters.splice(0)) waiter.resolve(frame);
    } else if (frame.type === "auth.refreshed" && this._ack) {
      this._ack.resolve(frame);
    } else if (frame.type === "error" && this._ack && REFRESH_REFUSALS.has(frame.error)) {
      this._ack.reject(new Error(frame.message || frame.error));
    }
    if (frame.type === "session.ready") this._answers.clear(); // its snapshots say what is in flight
    if (frame.type === "runtime_event") {
      this._emit(frame.event_type, frame.data, frame);
      if (frame.event_type.startsWith("agent.")) this._answerTrack(frame.event_type, frame.data || {});
    } else {
      this._emit(frame.type, frame, frame);
    }
    this._emit("*", frame, frame);
    if (resync) this._emit("resync.required", resync);
    // Up to the position session.ready named (at once when nothing was missed): done.
    if (this._replay && this._position.seq >= this._replay.until) this._replayEnd();
  }

  /** A frame at or below the last position seen (in the same epoch) was delivered already. */
  _duplicate(frame) {
    const position = this._position;
    if (!position) return false;
    if (frame.epoch !== undefined && frame.epoch !== position.epoch) return false; // another log
    return frame.seq <= position.seq;
  }

  /**
   * Take the position of a `session.ready`. Resumed: keep the old one until the replayed
   * events have moved it up to the frame's `seq`. Not resumed: start from the frame's, and
   * return what the "resync.required" event reports.
   */
  _positionStart(frame) {
    const asked = this._asked;
    const known = Number.isInteger(frame.seq) && typeof frame.epoch === "string";
    if (asked && frame.recovered === true && known) {
      this._position = { seq: asked.seq, epoch: frame.epoch };
      this._replay = { since: asked.seq, until: frame.seq, replayed: 0 };
      this._replayWait();
      return null;
    }
    this._position = known ? { seq: frame.seq, epoch: frame.epoch } : null;
    if (asked && frame.recovered === false) {
      return { recovered: false, since: asked.seq, seq: frame.seq, epoch: frame.epoch };
    }
    return null;
  }

  /** (Re)start the wait after which a replay that stopped short counts as finished. */
  _replayWait() {
    clearTimeout(this._timers.replay);
    this._timers.replay = setTimeout(() => this._replayEnd(), REPLAY_QUIET_MS);
  }

  _replayEnd() {
    const replay = this._replay;
    clearTimeout(this._timers.replay);
    if (!replay) return;
    this._replay = null;
    if (this._position && this._position.seq < replay.until) this._position.seq = replay.until;
    this._emit("resumed", { recovered: true, since: replay.since, seq: replay.until, replayed: replay.replayed });
  }

  _onClose(ws, event) {
    if (ws !== this._ws) return;
    this._ws = null;
    clearInterval(this._timers.heartbeat);
    clearTimeout(this._timers.replay);
    this._replay = null; // cut short: the next socket resumes from the last event received
    if (this._ack) this._ack.reject(new Error("socket closed"));
    const info = { code: event.code, reason: event.reason, wasClean: event.wasClean };
    if (!this._wanted) {
      this._emit("close", { ...info, retry: false });
      this._setState("idle", info);
      for (const waiter of this._waiters.splice(0)) waiter.reject(new Error("disconnected"));
      return;
    }
    if (event.code === CloseCode.UNAUTHENTICATED && this._tokens && !this._reauthed) {
      // The access token was refused (it expired while the tab slept, say): refresh it,
      // then reconnect at once; a second 4401 before the next session.ready is final.
      this._reauthed = true;
      this._emit("close", { ...info, retry: true, delayMs: 0 });
      this._setState("reconnecting", { ...info, delayMs: 0, attempt: this._attempt });
      this.refresh().then(
        () => { if (this._wanted && !this._ws) this._open(); },
        () => { if (this._wanted && this._tokens && !this._ws) this._retry(info); },
      );
      return;
    }
    const final = FINAL_CLOSES.get(event.code);
    if (final) {
      this._emit("close", { ...info, retry: false });
      this._lost(final, { ...info, source: "socket" });
      return;
    }
    this._retry(info);
  }

  /**
   * Schedule the next attempt: exponential backoff with full jitter (anywhere from 0 to
   * `initialMs * factor^attempt`, capped at `maxMs`), so that the clients of a restarted
   * server do not all come back in the same instant. After 4429 and 1013 at least
   * `slowDownMs`, half of it kept ("equal jitter"): those ask for a pause.
   */
  _retry(info) {
    const { initialMs, maxMs, factor, slowDownMs } = this.backoff;
    let base = Math.min(maxMs, initialMs * factor ** this._attempt);
    let delayMs;
    if (SLOW_DOWN_CLOSES.has(info.code)) {
      base = Math.max(base, slowDownMs);
      delayMs = Math.round(base / 2 + (Math.random() * base) / 2);
    } else {
      delayMs = Math.round(Math.random() * base);
    }
    this._attempt += 1;
    this._emit("close", { ...info, retry: true, delayMs });
    this._setState("reconnecting", { ...info, delayMs, attempt: this._attempt });
    this._timers.reconnect = setTimeout(() => this._open(), delayMs);
  }

  _heartbeatStart(seconds) {
    clearInterval(this._timers.heartbeat);
    if (!(seconds > 0)) return;
    this._timers.heartbeat = setInterval(() => {
      if (this._state === "open") this._ws.send(JSON.stringify({ type: "ping" }));
    }, seconds * 1000);
  }

  // --- Tokens and the end of a session ---------------------------------------------

  _marginMs() {
    return Math.min(this.refreshMarginS * 1000, this._tokens.lifetimeMs / 3);
  }

  _tokensKeep(answer) {
    const lifetimeMs = Math.max(1, Number(answer.expires_in)) * 1000;
    this._tokens = {
      access: answer.access_token,
      refresh: answer.refresh_token,
      lifetimeMs,
      expiresAt: Date.now() + lifetimeMs,
    };
    clearTimeout(this._timers.refresh);
    const delayMs = Math.max(0, this._tokens.expiresAt - this._marginMs() - Date.now());
    this._timers.refresh = setTimeout(() => this.refresh().catch(() => {}), delayMs);
  }

  /** The session cannot be used any more: stop everything, forget it, tell the caller. */
  _lost(kind, info) {
    if (!this._tokens) return;
    this._wanted = false;
    clearTimeout(this._timers.reconnect);
    const ws = this._ws;
    this._ws = null;
    if (ws) ws.close(CloseCode.NORMAL, kind);
    this._setState("closed", info);
    for (const waiter of this._waiters.splice(0)) waiter.reject(Object.assign(new Error(kind), info));
    this._forget();
    this._emit(kind, info);
  }

  _forget() {
    clearTimeout(this._timers.refresh);
    clearTimeout(this._timers.reconnect);
    clearInterval(this._timers.heartbeat);
    clearTimeout(this._timers.replay);
    this._tokens = null;
    this._session = null;
    this._ready = null;
    this._position = null;
    this._asked = null;
    this._replay = null;
  }

  _setState(state, info) {
    const previous = this._state;
    this._state = state;
    if (previous !== state || state === "reconnecting") this._emit("state", { state, previous, ...info });
  }
}
