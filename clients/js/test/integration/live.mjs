// What the integration tests share: the servers tests/client_js/test_node_client.py started
// (their URLs and its control server come in the environment), a client made the way a
// Node app makes one, waits for conditions, and a TCP proxy that can cut or hold a
// connection. The client is the committed bundle, console/static/console/symphainy-client.js,
// so these tests need no build and no npm install.
//
// Run through pytest (`.venv/bin/python -m pytest tests/client_js -q`), which starts the
// servers; run alone, these tests skip. Node's runner loads this file as a test file too
// (it is under test/): it defines no test.
import net from "node:net";

import { SymphainyClient } from "../../../../console/static/console/symphainy-client.js";

export {
  ApiError, CloseCode, ConnectError, SymphainyClient,
} from "../../../../console/static/console/symphainy-client.js";

const SERVERS = process.env.SYMPHAINY_TEST_SERVERS ? JSON.parse(process.env.SYMPHAINY_TEST_SERVERS) : null;
const CONTROL = process.env.SYMPHAINY_TEST_CONTROL;

/** Options for `describe()`: skip without the servers pytest starts. */
export const live = {
  skip: SERVERS && CONTROL ? false : "needs the servers of tests/client_js/test_node_client.py (run it through pytest)",
};
/** Options for `test()`: every test has a timeout (a suite's would cover all its tests). */
export const bounded = (timeout = 30_000) => ({ timeout });

/** The base URL of one of the servers: "main", "short_token", "restartable". */
export function serverUrl(name = "main") {
  const url = SERVERS && SERVERS[name];
  if (!url) throw new Error(`no server ${name} in SYMPHAINY_TEST_SERVERS`);
  return url;
}

/** Reconnect quickly: a test waits for the reconnect, not for production's backoff. */
export const FAST_BACKOFF = { initialMs: 50, maxMs: 250, factor: 2, slowDownMs: 250 };

async function control(method, path) {
  const response = await fetch(CONTROL + path, { method });
  const body = await response.json();
  if (!response.ok) throw new Error(`control ${method} ${path}: ${response.status} ${JSON.stringify(body)}`);
  return body;
}

/** A new user (and tenant) made with tests/factories: `{email, password, user_id}`. */
export const newUser = () => control("POST", "/users");

/** The events the server recorded for a session: `[{seq, kind}]`, oldest first. */
export const sessionEvents = (sessionId) => control("GET", `/sessions/${sessionId}/events`);

/** SIGTERM the server `name`, wait for it to exit and start it again on the same port. */
export const serverRestart = (name) => control("POST", `/servers/${name}/restart`);

/**
 * A `fetch` with a cookie jar, which Node's has not: what a browser does with the refresh
 * cookie (kept per name and path, sent back on requests under its path, dropped when the
 * server expires it). The jar is shared by every fetch made with it, like a browser
 * profile's; Secure is not enforced (the test servers speak plain HTTP).
 */
export function cookieFetch() {
  const jar = new Map(); // name -> {value, path}
  const jarFetch = async (url, init = {}) => {
    const path = new URL(url).pathname;
    const cookies = [...jar].filter(([, c]) => path.startsWith(c.path)).map(([name, c]) => `${name}=${c.value}`);
    const headers = { ...init.headers, ...(cookies.length ? { Cookie: cookies.join("; ") } : {}) };
    const response = await fetch(url, { ...init, headers });
    for (const line of response.headers.getSetCookie()) {
      const [pair, ...attributes] = line.split(";").map((part) => part.trim());
      const [name, value] = [pair.slice(0, pair.indexOf("=")), pair.slice(pair.indexOf("=") + 1)];
      const attribute = (key) => attributes.find((a) => a.toLowerCase().startsWith(`${key}=`))?.split("=")[1];
      if (attribute("max-age") === "0" || !value) jar.delete(name);
      else jar.set(name, { value, path: attribute("path") ?? "/" });
    }
    return response;
  };
  jarFetch.jar = jar;
  return jarFetch;
}

/** A plain API call, outside any client: `{status, body}`. */
export async function api(baseUrl, method, path, { token, body, headers = {} } = {}) {
  const sent = { Accept: "application/json", ...headers };
  if (body !== undefined) sent["Content-Type"] = "application/json";
  if (token) sent.Authorization = `Bearer ${token}`;
  const response = await fetch(baseUrl + path, {
    method, headers: sent, body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  return { status: response.status, body: text ? JSON.parse(text) : null };
}

/** Another login of `user` over HTTP: a second session of the same user, for the test's own calls. */
export async function loginAside(baseUrl, user) {
  const { status, body } = await api(baseUrl, "POST", "/api/auth/login", {
    body: { email: user.email, password: user.password },
  });
  if (status !== 200) throw new Error(`login ${status}: ${JSON.stringify(body)}`);
  return body;
}

/**
 * The WebSocket is Node's own (undici; global from Node 22, behind
 * `--experimental-websocket` in 20), which the client uses when none is passed, with its
 * `origin` and `headers` in undici's init object: no `ws` package, so the Python run needs
 * no npm install. It is wrapped once, here, to record every socket opened (its URL and
 * handshake headers); the client still takes its own Node path (no `WebSocket` option).
 */
const OPENED = [];
if (globalThis.WebSocket) {
  globalThis.WebSocket = class RecordedWebSocket extends globalThis.WebSocket {
    constructor(url, init) {
      super(url, init);
      OPENED.push({ url: String(url), headers: (init && init.headers) || null, ws: this });
    }
  };
}

/**
 * A client as a Node app makes one: `baseUrl`, the page's `origin` (`origin: null` sends
 * none), quick reconnects and a connect timeout of 3 s. Everything it does is recorded:
 * `frames` (every server frame), `closes`, `states`, `events` (its own), and `sockets`
 * (`{url, headers, ws}` of each socket opened for its sessions).
 */
export function makeClient(baseUrl, { origin = new URL(baseUrl).origin, ...options } = {}) {
  const client = new SymphainyClient({
    baseUrl, backoff: FAST_BACKOFF, connectTimeoutMs: 3000, ...(origin ? { origin } : {}), ...options,
  });
  const sessions = new Set();
  const record = {
    client, frames: [], closes: [], states: [], events: [],
    get sockets() {
      return OPENED.filter((s) => sessions.has(new URL(s.url).searchParams.get("session_id")));
    },
  };
  client.on("login", (session) => sessions.add(session.sessionId));
  client.on("*", (frame) => record.frames.push(frame));
  client.on("close", (info) => record.closes.push(info));
  client.on("state", (info) => record.states.push(info.state));
  for (const type of ["resumed", "resync.required", "session.ended", "auth.required", "session.not_found", "tokens", "login"]) {
    client.on(type, (payload) => record.events.push({ type, payload }));
  }
  /** The runtime events received, with their `seq`. */
  record.positioned = () => record.frames.filter((f) => f.type === "runtime_event" && Number.isInteger(f.seq));
  return record;
}

/** A new user, a client logged in as them and connected: `makeClient()`'s record with `user` and `ready`. */
export async function connectedClient(baseUrl, options = {}) {
  const user = await newUser();
  const made = makeClient(baseUrl, options);
  await made.client.login(user.email, user.password);
  const ready = await made.client.connect();
  return Object.assign(made, { user, ready }); // not a spread: `sockets` is a getter
}

/** Close the client, whatever state it is in, so that the test's process can end. */
export async function closeClient({ client }) {
  if (client.loggedIn) await client.logout().catch(() => client.disconnect());
  else client.disconnect();
}

/**
 * Wait until `predicate()` returns something truthy, and return it; fail with `what` (and
 * `detail()` when given) after `timeoutMs`. A poll of a condition, never a fixed sleep.
 */
export async function until(predicate, what, { timeoutMs = 15_000, intervalMs = 20, detail } = {}) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await predicate();
    if (value) return value;
    if (Date.now() >= deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${detail ? `\n${detail()}` : ""}`);
    }
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
}

/** Whether `promise` settles before `other` does: "pending" when `other` wins. */
export function settledBefore(promise, other) {
  const pending = Symbol("pending");
  return Promise.race([
    promise.then(() => "resolved", () => "rejected"),
    other.then(() => pending),
  ]).then((outcome) => (outcome === pending ? "pending" : outcome));
}

/**
 * A TCP proxy in front of a server: `hold()` accepts new connections and leaves them
 * unanswered (a listener that never answers) until `release()` pipes them through;
 * `cut()` also drops every connection through it (the client sees 1006, as after a network
 * drop). Its `url` is what the client uses as its base URL, for HTTP and the socket alike.
 * A `rewrite` changes each connection's request on its way (its first chunk).
 */
export class TcpProxy {
  /** `rewrite(head)`: what to send upstream instead of the first chunk of each connection. */
  constructor(targetUrl, { rewrite = null } = {}) {
    this.target = new URL(targetUrl);
    this.rewrite = rewrite;
    this.pairs = new Set();
    this.held = [];
    this.holding = false;
    this.accepted = 0;
    this.sockets = new Set(); // every connection, so that close() ends them all
    this.server = net.createServer((socket) => {
      this.accepted += 1;
      this.sockets.add(socket);
      socket.on("close", () => this.sockets.delete(socket));
      if (this.holding) this.held.push(socket);
      else this._pipe(socket);
    });
  }

  async listen() {
    await new Promise((resolve) => this.server.listen(0, "127.0.0.1", resolve));
    this.url = `http://127.0.0.1:${this.server.address().port}`;
    return this;
  }

  _pipe(socket) {
    const upstream = net.connect(Number(this.target.port), this.target.hostname);
    const pair = { socket, upstream };
    this.pairs.add(pair);
    const end = () => {
      this.pairs.delete(pair);
      socket.destroy();
      upstream.destroy();
    };
    socket.on("error", end).on("close", end);
    upstream.on("error", end).on("close", end);
    upstream.pipe(socket);
    if (!this.rewrite) {
      socket.pipe(upstream);
      return;
    }
    socket.once("data", (first) => { // the request line and headers
      upstream.write(Buffer.from(this.rewrite(first.toString("latin1")), "latin1"));
      socket.pipe(upstream);
    });
  }

  hold() {
    this.holding = true;
  }

  cut() {
    this.hold();
    for (const { socket, upstream } of [...this.pairs]) {
      socket.destroy();
      upstream.destroy();
    }
    this.pairs.clear();
  }

  release() {
    this.holding = false;
    for (const socket of this.held.splice(0)) if (!socket.destroyed) this._pipe(socket);
  }

  async close() {
    this.cut();
    this.held.length = 0;
    for (const socket of this.sockets) socket.destroy();
    await new Promise((resolve) => this.server.close(resolve));
  }
}
