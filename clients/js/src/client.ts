/**
 * The client: log in over HTTP, then keep one socket on `/api/runtime/agent` open for the
 * session that login created. Tokens live in memory only (never in storage or a URL); with
 * `refreshCookie`, the server keeps the refresh token in an HttpOnly cookie so that
 * `restore()` can take the session over after a reload. See docs/client.md.
 */
import { AnswerStitcher, type Answer } from "./answers.js";
import { BACKOFF_DEFAULTS, backoffDelay, type Backoff } from "./backoff.js";
import { CloseCode, closeAction, type FinalEvent } from "./close.js";
import { ApiError } from "./errors.js";
import { transitionAllowed, type SocketState } from "./state.js";
import type {
  ClientFrame, CloseInfo, EventMap, EventName, Handler, LostInfo, RuntimeEventFrame, Schemas, ServerFrame,
  ServerFrames, SessionInfo,
} from "./types.js";

type Ready = ServerFrames["session.ready"];

/** What the client needs of a WebSocket: the browser's, Node's `ws`, or a test's fake. */
export interface SocketLike {
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onmessage: ((event: { data: unknown }) => void) | null;
  onclose: ((event: { code: number; reason: string; wasClean?: boolean }) => void) | null;
  onerror: ((event: unknown) => void) | null;
}
/** `new WebSocket(url, protocols, options?)`; `options` (`{headers, origin}`) is passed only when set. */
export type WebSocketConstructor = new (url: string, protocols: string[] | object, options?: any) => object;

/** Where the online/offline and visibility hints come from (a browser's window and document). */
export interface Hints {
  window?: Pick<EventTarget, "addEventListener" | "removeEventListener"> | null;
  document?: (Pick<EventTarget, "addEventListener" | "removeEventListener"> & { visibilityState?: string }) | null;
}

export interface ClientOptions {
  /** The service's origin; default: the page's own. Required in Node. */
  baseUrl?: string;
  /** Default "/api/runtime/agent". */
  socketPath?: string;
  /** Reconnect delays (ms): full jitter up to `initialMs * factor^attempt`, capped at `maxMs`. */
  backoff?: Partial<Backoff>;
  /** Refresh when a third of the token's lifetime is left, but no earlier than this (s; 60). */
  refreshMarginS?: number;
  /** How long to wait for `auth.refreshed`, or for any frame after a wake-up ping (ms; 10000). */
  ackTimeoutMs?: number;
  /** How long an attempt may take to reach `session.ready` before it is dropped (ms; 10000). */
  connectTimeoutMs?: number;
  /** Keep the refresh token in the server's HttpOnly cookie (opt-in), so `restore()` works after a reload. */
  refreshCookie?: boolean;
  /** Default: the global fetch. */
  fetch?: typeof fetch;
  /** Default: the global WebSocket (Node 20 has none: pass `ws`'s). */
  WebSocket?: WebSocketConstructor;
  /** The Origin header a non-browser socket sends (the server refuses a socket without an allowed one). */
  origin?: string;
  /** More handshake headers for a non-browser socket. */
  headers?: Record<string, string>;
  /** online/offline and visibilitychange hints; default: the global window and document; false: none. */
  hints?: Hints | false;
}

interface Tokens {
  access: string;
  refresh: string | null;
  lifetimeMs: number;
  expiresAt: number;
}

interface Waiter {
  resolve: (frame: Ready) => void;
  reject: (error: Error) => void;
}

/** `connect()` rejected: the attempt closed (or timed out) before `session.ready`. */
export class ConnectError extends Error {
  readonly code: number;
  readonly reason: string;
  /** Whether the client goes on trying by itself (call `disconnect()` to stop it). */
  readonly retry: boolean;

  constructor(message: string, info: CloseInfo & { retry: boolean }) {
    super(message);
    this.name = "ConnectError";
    this.code = info.code;
    this.reason = info.reason;
    this.retry = info.retry;
  }
}

const SUBPROTOCOL = "symphainy.v1";
/** Error codes with which the server refuses an `auth.refresh` frame. */
const REFRESH_REFUSALS = new Set(["invalid_token", "token_expired", "not_authenticated", "not_found", "session_ended"]);
/** How long a replay may pause before it counts as finished (its last positions may be
 * events the server never sends, such as coalesced progress). */
const REPLAY_QUIET_MS = 500;
const REFRESH_COOKIE_HEADER = "X-Symphainy-Refresh";
/**
 * A note in localStorage (no secret: "1") that this browser holds a refresh cookie, so
 * that `restore()` asks the server only then, not on every page load of a site without it.
 */
const COOKIE_NOTE = "symphainy.refresh-cookie";

function cookieNote(value?: boolean): boolean {
  try {
    const store = (globalThis as { localStorage?: Storage }).localStorage;
    if (!store) return true; // nowhere to keep a note (Node): always ask
    if (value === true) store.setItem(COOKIE_NOTE, "1");
    else if (value === false) store.removeItem(COOKIE_NOTE);
    return store.getItem(COOKIE_NOTE) === "1";
  } catch {
    return true; // storage refused (a private window): always ask
  }
}

/** How long a socket's close event may lag behind its error before the client stops waiting. */
const ERROR_CLOSE_GRACE_MS = 1000;

type LoginAnswer = Schemas["LoginOutput"] & { refresh_cookie?: boolean };
type TokenAnswer = Partial<Schemas["LoginOutput"]> & { access_token: string; expires_in: number; refresh_cookie?: boolean };

export class SymphainyClient {
  readonly baseUrl: string;
  readonly socketPath: string;
  readonly backoff: Backoff;
  readonly refreshMarginS: number;
  readonly ackTimeoutMs: number;
  readonly connectTimeoutMs: number;
  readonly refreshCookie: boolean;

  private readonly _fetch: typeof fetch;
  private readonly _WebSocket: WebSocketConstructor | undefined;
  private readonly _socketOptions: { headers: Record<string, string>; origin?: string } | undefined;
  private readonly _hints: Hints | null;
  private readonly _handlers = new Map<string, Set<(...args: any[]) => void>>();
  private readonly _answers = new AnswerStitcher();
  private _tokens: Tokens | null = null;
  private _session: Omit<SessionInfo, "tokenExpiresAt"> | null = null;
  private _ws: SocketLike | null = null;
  private _state: SocketState = "idle";
  /** The caller asked for an open socket. */
  private _wanted = false;
  /** Reconnect attempts since the last session.ready. */
  private _attempt = 0;
  /** A 4401 was answered with a refresh since the last session.ready. */
  private _reauthed = false;
  private _ready: Ready | null = null;
  private _waiters: Waiter[] = [];
  /** The one refresh in flight (rotation forbids two). */
  private _refreshing: Promise<SessionInfo | null> | null = null;
  private _ack: Waiter | null = null;
  /** The last position of the session's event log seen. */
  private _position: { seq: number; epoch: string } | null = null;
  /** The position the current socket resumes from, or null (a fresh start). */
  private _asked: { seq: number; epoch: string } | null = null;
  private _replay: { since: number; until: number; replayed: number } | null = null;
  /** A draining server's `server.restart` hint: when to come back after its 1012. */
  private _restartAfterMs: number | null = null;
  /** Counts the attempts `_open` started, so that one overtaken while it refreshed gives up. */
  private _opening = 0;
  /** Frames received, for the wake-up probe. */
  private _received = 0;
  private _hintsBound = false;
  private _timers: Record<"reconnect" | "refresh" | "heartbeat" | "replay" | "connect" | "probe", ReturnType<typeof setTimeout> | undefined> = {
    reconnect: undefined, refresh: undefined, heartbeat: undefined, replay: undefined, connect: undefined, probe: undefined,
  };

  constructor(options: ClientOptions = {}) {
    const origin = (globalThis as { location?: { origin: string } }).location?.origin ?? "";
    this.baseUrl = (options.baseUrl ?? origin).replace(/\/$/, "");
    this.socketPath = options.socketPath ?? "/api/runtime/agent";
    this.backoff = { ...BACKOFF_DEFAULTS, ...options.backoff };
    this.refreshMarginS = options.refreshMarginS ?? 60;
    this.ackTimeoutMs = options.ackTimeoutMs ?? 10000;
    this.connectTimeoutMs = options.connectTimeoutMs ?? 10000;
    this.refreshCookie = options.refreshCookie ?? false;
    this._fetch = options.fetch ?? ((input, init) => globalThis.fetch(input, init));
    this._WebSocket = options.WebSocket;
    if (options.origin || options.headers) {
      const headers = { ...options.headers };
      if (options.origin) headers.Origin = options.origin;
      this._socketOptions = { headers, ...(options.origin ? { origin: options.origin } : {}) };
    }
    const g = globalThis as { window?: Hints["window"]; document?: Hints["document"] };
    this._hints = options.hints === false ? null : (options.hints ?? { window: g.window, document: g.document });
  }

  // --- Reading --------------------------------------------------------------------

  /** Whether the client holds tokens for a session. */
  get loggedIn(): boolean {
    return this._tokens !== null;
  }

  get state(): SocketState {
    return this._state;
  }

  /** The session login created, or null when logged out. */
  get session(): SessionInfo | null {
    if (!this._session || !this._tokens) return null;
    return { ...this._session, tokenExpiresAt: new Date(this._tokens.expiresAt).toISOString() };
  }

  /** The `session.ready` frame of the open socket. */
  get ready(): Ready | null {
    return this._state === "open" ? this._ready : null;
  }

  /** The last position of the session's event log seen: where the next socket resumes from. */
  get position(): { seq: number; epoch: string } | null {
    return this._position ? { ...this._position } : null;
  }

  /** The agent answers in flight, as stitched so far. */
  get answers(): Answer[] {
    return this._answers.list();
  }

  // --- Events -----------------------------------------------------------------------

  /**
   * Call `fn` for every event `type`: server frames by `type` (the frame), runtime events
   * by `event_type` (`data`, then the frame), "*" every frame, and the client's own
   * (docs/client.md). A frame at or below the last position seen is a duplicate, dropped
   * before any handler. Returns a function that removes the handler.
   */
  on<K extends EventName>(type: K, fn: Handler<K>): () => void {
    let handlers = this._handlers.get(type);
    if (!handlers) this._handlers.set(type, (handlers = new Set()));
    handlers.add(fn as (...args: any[]) => void);
    return () => this.off(type, fn);
  }

  off<K extends EventName>(type: K, fn: Handler<K>): void {
    this._handlers.get(type)?.delete(fn as (...args: any[]) => void);
  }

  private _emit<K extends EventName>(type: K, ...args: EventMap[K]): void;
  private _emit(type: string, ...args: unknown[]): void;
  private _emit(type: string, ...args: unknown[]): void {
    for (const fn of [...(this._handlers.get(type) ?? [])]) {
      try {
        fn(...args);
      } catch (error) {
        console.error(`symphainy-client: a "${type}" handler failed`, error);
      }
    }
  }

  // --- HTTP -------------------------------------------------------------------------

  /**
   * Log in and keep the tokens and the session login created. Refused while logged in:
   * the client never makes a second session behind the caller's back.
   * @throws {ApiError} 401 wrong credentials, 429 throttled
   */
  async login(email: string, password: string, options: { tenantId?: string } = {}): Promise<SessionInfo> {
    this._loggedOutRequired();
    const body: Record<string, unknown> = { email, password };
    if (options.tenantId) body.tenant_id = options.tenantId;
    return this._start(await this._authPost("/api/auth/login", body));
  }

  /**
   * Create an account (and a tenant the user owns), then keep its first session as
   * `login` does. @throws {ApiError} 400 invalid (password rules: `details`), 409 taken
   */
  async register(email: string, password: string, options: { name?: string; tenantName?: string } = {}): Promise<SessionInfo> {
    this._loggedOutRequired();
    const body: Record<string, unknown> = { email, password };
    if (options.name) body.name = options.name;
    if (options.tenantName) body.tenant_name = options.tenantName;
    return this._start(await this._authPost("/api/auth/register", body));
  }

  /**
   * After a page reload, take the session over again through the refresh cookie
   * (`refreshCookie` only). Resolves with the session, or null when there is none to
   * restore (no cookie, or the session has ended); emits "login" when restored.
   */
  async restore(): Promise<SessionInfo | null> {
    if (this._tokens) return this.session;
    if (!this.refreshCookie) throw new Error("restore() needs the refreshCookie option.");
    if (!cookieNote()) return null; // no login here was given a cookie
    let answer: TokenAnswer;
    try {
      answer = await this._cookieRefresh();
    } catch (error) {
      if (error instanceof ApiError && (error.status === 401 || error.status === 400)) return null;
      throw error;
    }
    if (this._tokens) return this.session; // a login won meanwhile
    this._tokensKeep(answer);
    try {
      // The refresh answer may not name the session: /api/auth/me does, and the session its expiry.
      const me = (await this.api("GET", "/api/auth/me")) as Schemas["Me"];
      const session = (await this.api("GET", `/api/session/${me.session_id}`)) as Schemas["SessionOutput"];
      this._session = {
        sessionId: me.session_id, userId: me.user_id, tenantId: me.tenant_id, roles: me.roles,
        permissions: me.permissions, sessionExpiresAt: session.expires_at,
      };
    } catch (error) {
      this._forget();
      throw error;
    }
    this._position = null;
    this._emit("login", this.session as SessionInfo);
    return this.session;
  }

  private _loggedOutRequired(): void {
    if (this._tokens) throw new Error("Already logged in: call logout() first.");
  }

  private _authPost(path: string, body: Record<string, unknown>): Promise<LoginAnswer> {
    if (this.refreshCookie) body.refresh_cookie = true;
    return this._request("POST", path, body, { auth: false, cookie: this.refreshCookie }) as Promise<LoginAnswer>;
  }

  private _start(answer: LoginAnswer): SessionInfo {
    this._loggedOutRequired(); // two logins raced
    this._position = null; // a new session: its log starts afresh
    this._session = {
      sessionId: answer.session_id, userId: answer.user_id, tenantId: answer.tenant_id, roles: answer.roles,
      permissions: answer.permissions, sessionExpiresAt: answer.session_expires_at,
    };
    this._tokensKeep(answer);
    if (this.refreshCookie) cookieNote(answer.refresh_cookie === true);
    const session = this.session as SessionInfo;
    this._emit("login", session);
    return session;
  }

  /**
   * Call the API with the access token (refreshed first when the wall clock says it has
   * expired, as after a sleep). A 401 `token_expired` is refreshed and retried once; a 401
   * meaning the session has ended ends the client's session too. 204 gives null.
   */
  async api<T = any>(method: string, path: string, body?: unknown, headers?: Record<string, string>): Promise<T> {
    if (this._tokens && this._tokens.expiresAt <= Date.now()) await this.refresh().catch(() => {});
    return this._request(method, path, body, { auth: true, headers }) as Promise<T>;
  }

  private async _request(
    method: string, path: string, body: unknown,
    { auth = true, retry = true, cookie = false, headers = {} }: { auth?: boolean; retry?: boolean; cookie?: boolean; headers?: Record<string, string> } = {},
  ): Promise<unknown> {
    if (auth && !this._tokens) throw new ApiError(401, { error: "not_authenticated", message: "Log in first." });
    const sent: Record<string, string> = { Accept: "application/json", ...headers };
    if (body !== undefined) sent["Content-Type"] = "application/json";
    if (auth && this._tokens) sent.Authorization = `Bearer ${this._tokens.access}`;
    let response: Response;
    try {
      response = await this._fetch(this.baseUrl + path, {
        method, headers: sent, body: body === undefined ? undefined : JSON.stringify(body),
        // Cookies only where the refresh cookie is set, used or cleared.
        credentials: cookie ? "same-origin" : "omit",
      });
    } catch (error) {
      throw new ApiError(0, { error: "network_error", message: String((error as Error)?.message ?? error) });
    }
    const text = await response.text();
    let answer: any = null;
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
      this._lost(error.code === "session_ended" ? "session.ended" : "auth.required", { code: 401, reason: error.code, source: "http" });
    }
    throw error;
  }

  /**
   * Rotate the tokens now (the client also does this by itself before expiry); the open
   * socket is then handed the new access token. Concurrent calls share one request:
   * presenting a used refresh token twice would end the session.
   */
  refresh(): Promise<SessionInfo | null> {
    if (!this._tokens) return Promise.reject(new Error("Not logged in."));
    if (!this._refreshing) {
      this._refreshing = this._refresh().finally(() => {
        this._refreshing = null;
      });
    }
    return this._refreshing;
  }

  private _cookieRefresh(): Promise<TokenAnswer> {
    return this._request("POST", "/api/auth/refresh", {}, {
      auth: false, cookie: true, headers: { [REFRESH_COOKIE_HEADER]: "cookie" },
    }) as Promise<TokenAnswer>;
  }

  private async _refresh(): Promise<SessionInfo | null> {
    clearTimeout(this._timers.refresh);
    const tokens = this._tokens as Tokens;
    let answer: TokenAnswer;
    try {
      answer = tokens.refresh === null
        ? await this._cookieRefresh()
        : ((await this._request("POST", "/api/auth/refresh", { refresh_token: tokens.refresh }, { auth: false })) as TokenAnswer);
    } catch (error) {
      const failure = error as ApiError;
      if (failure.status === 401) {
        this._lost(failure.code === "session_ended" ? "session.ended" : "auth.required", { code: 401, reason: failure.code, source: "http" });
      } else if (this._tokens) {
        // Network, 429 or 5xx: try again shortly while the access token still lasts.
        const waitMs = Math.max(1000, (failure.retryAfterS ?? 0) * 1000, Math.min(5000, this._tokens.lifetimeMs / 10));
        this._timers.refresh = setTimeout(() => this.refresh().catch(() => {}), waitMs);
        this._emit("refresh.failed", { error: failure, retryInMs: waitMs });
      }
      throw error;
    }
    if (this._tokens !== tokens) return this.session; // logged out (or in again) meanwhile
    this._tokensKeep(answer);
    this._emit("tokens", this.session as SessionInfo);
    // The open socket gets the token in the background: the caller need not wait for it.
    if (this._state === "open" && this._ws) void this._socketRefresh(this._ws);
    return this.session;
  }

  /** Send the new access token on the open socket; reopen it when that is refused. */
  private async _socketRefresh(ws: SocketLike): Promise<void> {
    const acknowledged = new Promise<unknown>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error("auth.refresh was not acknowledged")), this.ackTimeoutMs);
      this._ack = {
        resolve: (frame) => { clearTimeout(timer); resolve(frame); },
        reject: (error) => { clearTimeout(timer); reject(error); },
      };
    });
    try {
      ws.send(JSON.stringify({ type: "auth.refresh", access_token: (this._tokens as Tokens).access }));
      await acknowledged;
    } catch {
      // Refused or unanswered: reopen the socket with the new token (handshakes check it).
      if (ws === this._ws) ws.close(CloseCode.REOPEN, "token refresh not acknowledged");
    } finally {
      this._ack = null;
    }
  }

  /** End the session (POST /api/auth/logout), close the socket and forget the tokens, also when the request fails. */
  async logout(): Promise<void> {
    if (!this._tokens) return;
    this.disconnect();
    try {
      await this._request("POST", "/api/auth/logout", undefined, { auth: true, cookie: this.refreshCookie });
    } catch (error) {
      if ((error as ApiError).status !== 401) throw error;
    } finally {
      this._forget();
      this._emit("logout", {});
    }
  }

  // --- The socket -------------------------------------------------------------------

  /**
   * Open the socket for the login's session and keep it open until `disconnect()`,
   * `logout()` or a final close code. Resolves with `session.ready`; rejects with a
   * `ConnectError` when this attempt closes or times out before it (the client goes on
   * reconnecting by itself unless the close was final: `error.retry`).
   */
  connect(): Promise<Ready> {
    if (!this._tokens) return Promise.reject(new Error("Not logged in: call login() first."));
    if (this._state === "open" && this._ready) return Promise.resolve(this._ready);
    const ready = new Promise<Ready>((resolve, reject) => this._waiters.push({ resolve, reject }));
    if (!this._wanted || this._state === "idle" || this._state === "closed") {
      this._wanted = true;
      this._attempt = 0;
      this._hintsBind(true);
      void this._open();
    }
    return ready;
  }

  /** Close the socket and stop reconnecting; the session and its tokens stay. */
  disconnect(): void {
    this._wanted = false;
    this._hintsBind(false);
    clearTimeout(this._timers.reconnect);
    const ws = this._ws;
    if (ws) {
      ws.close(CloseCode.NORMAL, "client disconnect");
    } else if (this._state !== "idle") {
      this._setState("idle", {});
      this._waitersReject(new ConnectError("disconnected", { code: CloseCode.NORMAL, reason: "client disconnect", retry: false }));
    }
  }

  /** Send one frame. Throws when the socket is not open (nothing is queued). */
  send(frame: ClientFrame): void {
    if (this._state !== "open" || !this._ws) throw new Error(`The socket is not open (${this._state}).`);
    this._ws.send(JSON.stringify(frame));
  }

  /** Ask the agent; "answer" gives the reply stitched as it streams. */
  sendMessage(text: string, context: Record<string, unknown> = {}, conversationId?: string): void {
    const payload: { text: string; context: Record<string, unknown>; conversation_id?: string } = { text, context };
    if (conversationId) payload.conversation_id = conversationId;
    this.send({ type: "agent.message", payload } as ClientFrame);
  }

  /** Stop an answer of the session (any tab's); "agent.cancelled" follows, or an `error` `not_found`. */
  cancelAnswer(messageId: string): void {
    this.send({ type: "agent.cancel", message_id: messageId } as ClientFrame);
  }

  /** Submit an intent; "intent.accepted" `{execution_id}` answers, then the execution's events. */
  submitIntent(intentType: string, parameters: Record<string, unknown>, idempotencyKey?: string): void {
    const frame: Record<string, unknown> = { type: "intent.submit", intent_type: intentType, parameters };
    if (idempotencyKey) frame.idempotency_key = idempotencyKey;
    this.send(frame as ClientFrame);
  }

  private _socketUrl(): string {
    const base = this.baseUrl.replace(/^http/, "ws");
    let url = `${base}${this.socketPath}?session_id=${encodeURIComponent((this._session as { sessionId: string }).sessionId)}`;
    if (this._asked) url += `&since=${this._asked.seq}&epoch=${encodeURIComponent(this._asked.epoch)}`;
    return url;
  }

  private async _open(): Promise<void> {
    clearTimeout(this._timers.reconnect);
    if (!this._wanted || !this._tokens) return;
    const opening = ++this._opening;
    this._setState("connecting", { attempt: this._attempt });
    if (this._tokens.expiresAt - Date.now() < this._marginMs()) {
      // Never a stale token on a reconnect (after a sleep, say): the wall clock decides.
      try {
        await this.refresh();
      } catch {
        // The session is gone (reported already), or another attempt took over.
        if (!this._tokens || !this._wanted || opening !== this._opening) return;
        this._closed({ code: CloseCode.ABNORMAL, reason: "token refresh failed" });
        return;
      }
      if (!this._wanted || this._ws || this._state !== "connecting" || opening !== this._opening) return;
    }
    this._asked = this._position ? { ...this._position } : null;
    this._restartAfterMs = null;
    const Socket = this._WebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
    let ws: SocketLike;
    try {
      if (!Socket) throw new Error("No WebSocket here: pass the WebSocket option (Node 20: the ws package, or run with --experimental-websocket).");
      const protocols = [SUBPROTOCOL, `bearer.${(this._tokens as Tokens).access}`];
      ws = this._socketNew(Socket, protocols);
    } catch (error) {
      this._closed({ code: CloseCode.ABNORMAL, reason: String((error as Error)?.message ?? error) });
      return;
    }
    this._ws = ws;
    ws.onmessage = (event) => this._onFrame(ws, event.data);
    ws.onclose = (event) => this._onClose(ws, event);
    // A close event follows an error, with the code; Node 20's own WebSocket fires none
    // after a refused handshake, so one that does not come soon is taken as a drop.
    ws.onerror = () => {
      setTimeout(() => {
        if (ws === this._ws) this._abandon(ws, "an error and no close");
      }, ERROR_CLOSE_GRACE_MS);
    };
    clearTimeout(this._timers.connect);
    this._timers.connect = setTimeout(() => {
      if (ws === this._ws && this._state === "connecting") this._abandon(ws, `no session.ready within ${this.connectTimeoutMs} ms`);
    }, this.connectTimeoutMs);
  }

  /**
   * A new socket. `origin` and `headers` go as `ws` takes them (a third argument), or, to
   * Node's own WebSocket (undici: the global one in Node), as its init object.
   */
  private _socketNew(Socket: WebSocketConstructor, protocols: string[]): SocketLike {
    const url = this._socketUrl();
    const options = this._socketOptions;
    if (!options) return new Socket(url, protocols) as SocketLike;
    const node = Boolean((globalThis as { process?: { versions?: { node?: string } } }).process?.versions?.node);
    if (!this._WebSocket && node) return new Socket(url, { protocols, headers: options.headers } as never) as SocketLike;
    return new Socket(url, protocols, options) as SocketLike;
  }

  /** Give up on a socket that does not answer: drop it now rather than wait for its close. */
  private _abandon(ws: SocketLike, reason: string): void {
    this._ws = null;
    try {
      ws.close(CloseCode.REOPEN, reason.slice(0, 120));
    } catch {
      /* already closing */
    }
    this._closed({ code: CloseCode.ABNORMAL, reason });
  }

  private _onFrame(ws: SocketLike, data: unknown): void {
    if (ws !== this._ws) return;
    this._received += 1;
    let frame: ServerFrame;
    try {
      frame = JSON.parse(String(data));
    } catch {
      return;
    }
    if (!frame || typeof frame.type !== "string") return;
    const event = frame.type === "runtime_event" ? (frame as RuntimeEventFrame) : null;
    if (event && Number.isInteger(event.seq)) {
      if (this._duplicate(event)) return;
      // A position past the replay's end is a live event: the replay is over.
      if (this._replay && (event.seq as number) > this._replay.until) this._replayEnd();
      this._position = { seq: event.seq as number, epoch: event.epoch ?? this._position?.epoch ?? "" };
      if (this._replay) {
        this._replay.replayed += 1;
        this._replayWait();
      }
    } else if (this._replay) {
      this._replayEnd(); // live frames come after the replay
    }
    let resync: ReturnType<SymphainyClient["_positionStart"]> = null;
    if (frame.type === "session.ready") {
      const ready = frame as Ready;
      clearTimeout(this._timers.connect);
      this._attempt = 0;
      this._reauthed = false;
      this._ready = ready;
      resync = this._positionStart(ready);
      this._setState("open", { ready });
      this._heartbeatStart(ready.heartbeat_s);
      for (const waiter of this._waiters.splice(0)) waiter.resolve(ready);
      this._answers.clear(); // its snapshots say what is in flight
    } else if (frame.type === "server.restart") {
      const hint = (frame as ServerFrames["server.restart"]).reconnect_after_ms;
      if (Number.isFinite(hint) && hint >= 0) this._restartAfterMs = Math.min(hint, this.backoff.maxMs);
    } else if (frame.type === "auth.refreshed") {
      this._ack?.resolve(frame as never);
    } else if (frame.type === "error" && this._ack && REFRESH_REFUSALS.has((frame as { error: string }).error)) {
      this._ack.reject(new Error((frame as { message?: string }).message || (frame as { error: string }).error));
    }
    if (event) {
      this._emit(event.event_type as string, event.data, event);
      if (event.event_type.startsWith("agent.")) {
        const answer = this._answers.track(event.event_type, event.data as never);
        if (answer) this._emit("answer", answer);
      }
    } else {
      this._emit(frame.type, frame);
    }
    this._emit("*", frame);
    if (resync) this._emit("resync.required", resync);
    // Up to the position session.ready named (at once when nothing was missed): done.
    if (this._replay && this._position && this._position.seq >= this._replay.until) this._replayEnd();
  }

  /** A frame at or below the last position seen (in the same epoch) was delivered already. */
  private _duplicate(frame: RuntimeEventFrame): boolean {
    const position = this._position;
    if (!position) return false;
    if (frame.epoch !== undefined && frame.epoch !== position.epoch) return false; // another log
    return (frame.seq as number) <= position.seq;
  }

  /**
   * Take the position of a `session.ready`. Resumed: keep the old one until the replayed
   * events have moved it up to the frame's `seq`. Not resumed: start from the frame's, and
   * return what "resync.required" reports.
   */
  private _positionStart(frame: Ready): { recovered: false; since: number; seq: number; epoch: string } | null {
    const asked = this._asked;
    const { seq, epoch, recovered } = frame as { seq?: number; epoch?: string; recovered?: boolean };
    const known = Number.isInteger(seq) && typeof epoch === "string";
    if (asked && recovered === true && known) {
      this._position = { seq: asked.seq, epoch: epoch as string };
      this._replay = { since: asked.seq, until: seq as number, replayed: 0 };
      this._replayWait();
      return null;
    }
    this._position = known ? { seq: seq as number, epoch: epoch as string } : null;
    if (asked && recovered === false) return { recovered: false, since: asked.seq, seq: seq as number, epoch: epoch as string };
    return null;
  }

  /** (Re)start the wait after which a replay that stopped short counts as finished. */
  private _replayWait(): void {
    clearTimeout(this._timers.replay);
    this._timers.replay = setTimeout(() => this._replayEnd(), REPLAY_QUIET_MS);
  }

  private _replayEnd(): void {
    const replay = this._replay;
    clearTimeout(this._timers.replay);
    if (!replay) return;
    this._replay = null;
    if (this._position && this._position.seq < replay.until) this._position.seq = replay.until;
    this._emit("resumed", { recovered: true, since: replay.since, seq: replay.until, replayed: replay.replayed });
  }

  private _onClose(ws: SocketLike, event: { code: number; reason: string; wasClean?: boolean }): void {
    if (ws !== this._ws) return;
    this._ws = null;
    this._closed({ code: event.code, reason: event.reason, wasClean: event.wasClean });
  }

  /** The current attempt or socket is over: stop, refresh, or retry, as the close code says. */
  private _closed(info: CloseInfo): void {
    clearTimeout(this._timers.connect);
    clearTimeout(this._timers.heartbeat);
    clearTimeout(this._timers.replay);
    clearTimeout(this._timers.probe);
    this._timers.probe = undefined;
    this._replay = null; // cut short: the next socket resumes from the last event received
    this._ack?.reject(new Error("socket closed"));
    const beforeReady = this._state === "connecting";
    if (!this._wanted) {
      this._emit("close", { ...info, retry: false });
      this._setState("idle", info);
      this._waitersReject(new ConnectError("disconnected", { ...info, retry: false }));
      return;
    }
    const action = closeAction(info.code, this._reauthed || !this._tokens);
    if (action.kind === "refresh") {
      // The token was refused (it expired while the machine slept, say): refresh it, then
      // reconnect at once; a second 4401 before the next session.ready is final.
      this._reauthed = true;
      this._emit("close", { ...info, retry: true, delayMs: 0 });
      this._setState("reconnecting", { ...info, delayMs: 0, attempt: this._attempt });
      this.refresh().then(
        () => { if (this._wanted && !this._ws && this._state === "reconnecting") void this._open(); },
        () => { if (this._wanted && this._tokens && !this._ws) this._retry(info, false); },
      );
      return;
    }
    if (action.kind === "final") {
      this._emit("close", { ...info, retry: false });
      this._lost(action.event, { ...info, source: "socket" });
      return;
    }
    // A draining server spreads its closes itself and says when to come back: that delay
    // replaces the backoff's (docs/protocol.md#frames).
    const hint = info.code === CloseCode.SERVICE_RESTART ? this._restartAfterMs : null;
    this._restartAfterMs = null;
    this._retry(info, action.slow, hint);
    if (beforeReady) {
      this._waitersReject(new ConnectError(`the socket closed before session.ready (${info.code}${info.reason ? ` ${info.reason}` : ""})`, {
        ...info, retry: true,
      }));
    }
  }

  /** Schedule the next attempt after a backoff delay (see backoffDelay), or after `delayMs`. */
  private _retry(info: CloseInfo, slow: boolean, delayMs: number | null = null): void {
    delayMs ??= backoffDelay(this.backoff, this._attempt, slow);
    this._attempt += 1;
    this._emit("close", { ...info, retry: true, delayMs });
    this._setState("reconnecting", { ...info, delayMs, attempt: this._attempt });
    clearTimeout(this._timers.reconnect);
    this._timers.reconnect = setTimeout(() => void this._open(), delayMs);
  }

  private _waitersReject(error: Error): void {
    for (const waiter of this._waiters.splice(0)) waiter.reject(error);
  }

  private _heartbeatStart(seconds: number | undefined): void {
    clearTimeout(this._timers.heartbeat);
    if (!(seconds && seconds > 0)) return;
    const beat = (): void => {
      if (this._state === "open" && this._ws) this._ws.send(JSON.stringify({ type: "ping" }));
      this._timers.heartbeat = setTimeout(beat, seconds * 1000);
    };
    this._timers.heartbeat = setTimeout(beat, seconds * 1000);
  }

  // --- Hints: the network is back, the tab is shown again -----------------------------

  private readonly _onWake = (): void => {
    if (this._hints?.document?.visibilityState === "hidden") return;
    this.wake();
  };

  private readonly _onOffline = (): void => {
    if (this._state === "open") this._probe();
  };

  private _hintsBind(on: boolean): void {
    const hints = this._hints;
    if (!hints || on === this._hintsBound) return;
    this._hintsBound = on;
    const verb = on ? "addEventListener" : "removeEventListener";
    hints.window?.[verb]("online", this._onWake);
    hints.window?.[verb]("offline", this._onOffline);
    hints.document?.[verb]("visibilitychange", this._onWake);
  }

  /**
   * Check the tokens against the wall clock and the socket now (the client calls this when
   * the network comes back or the page is shown again; call it after any other wake-up):
   * refresh an expiring token, reconnect at once when waiting to, probe an open socket.
   */
  wake(): void {
    if (!this._tokens || !this._wanted) return;
    if (this._tokens.expiresAt - Date.now() < this._marginMs()) this.refresh().catch(() => {});
    if (this._state === "reconnecting" && !this._refreshing) void this._open();
    else if (this._state === "open") this._probe();
  }

  /** Ping the open socket; drop it when nothing at all comes back within `ackTimeoutMs`. */
  private _probe(): void {
    const ws = this._ws;
    if (!ws || this._timers.probe !== undefined) return;
    const before = this._received;
    try {
      ws.send(JSON.stringify({ type: "ping" }));
    } catch {
      /* the close event follows */
    }
    this._timers.probe = setTimeout(() => {
      this._timers.probe = undefined;
      if (ws === this._ws && this._received === before) this._abandon(ws, "no answer after a wake-up");
    }, this.ackTimeoutMs);
  }

  // --- Tokens and the end of a session ---------------------------------------------

  private _marginMs(): number {
    return Math.min(this.refreshMarginS * 1000, (this._tokens as Tokens).lifetimeMs / 3);
  }

  private _tokensKeep(answer: TokenAnswer): void {
    const lifetimeMs = Math.max(1, Number(answer.expires_in)) * 1000;
    // With the refresh cookie the server keeps the refresh token; a server without the
    // cookie answers with the token in the body, and the client keeps that instead.
    const refresh = answer.refresh_token ?? (answer.refresh_cookie || this.refreshCookie ? null : this._tokens?.refresh ?? null);
    this._tokens = { access: answer.access_token, refresh, lifetimeMs, expiresAt: Date.now() + lifetimeMs };
    clearTimeout(this._timers.refresh);
    const delayMs = Math.max(0, this._tokens.expiresAt - this._marginMs() - Date.now());
    this._timers.refresh = setTimeout(() => this.refresh().catch(() => {}), delayMs);
  }

  /** The session cannot be used any more: stop everything, forget it, tell the caller. */
  private _lost(kind: FinalEvent, info: LostInfo): void {
    if (!this._tokens) return;
    this._wanted = false;
    this._hintsBind(false);
    clearTimeout(this._timers.reconnect);
    const ws = this._ws;
    this._ws = null;
    if (ws) ws.close(CloseCode.NORMAL, kind);
    this._setState("closed", info);
    this._waitersReject(Object.assign(new ConnectError(kind, { ...info, retry: false }), { source: info.source }));
    this._forget();
    this._emit(kind, info);
  }

  private _forget(): void {
    if (this.refreshCookie) cookieNote(false);
    for (const timer of Object.values(this._timers)) clearTimeout(timer);
    this._timers.probe = undefined;
    this._tokens = null;
    this._session = null;
    this._ready = null;
    this._position = null;
    this._asked = null;
    this._replay = null;
    this._answers.clear();
  }

  private _setState(state: SocketState, info: Omit<Parameters<Handler<"state">>[0], "state" | "previous">): void {
    const previous = this._state;
    if (previous === state && state !== "reconnecting") return;
    // A bug, not the caller's doing: say so, and carry on rather than break the app.
    if (!transitionAllowed(previous, state)) console.error(`symphainy-client: no transition ${previous} → ${state}`);
    this._state = state;
    this._emit("state", { state, previous, ...info });
  }
}
