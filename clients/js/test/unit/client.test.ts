import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { ConnectError, TRANSITIONS, type SocketState } from "../../src/index.js";
import { FakeSocket, fakeApi, makeClient, ready, settle } from "./fakes.js";

beforeEach(() => {
  vi.useFakeTimers();
  vi.setSystemTime(new Date("2026-01-01T00:00:00Z"));
});
afterEach(() => {
  vi.useRealTimers();
  vi.restoreAllMocks();
});

/** Log in and open the socket; returns the client with its first socket open. */
async function opened(options = {}, api = fakeApi()) {
  const made = makeClient(options, api);
  await made.client.login("a@b.c", "pw");
  const connected = made.client.connect();
  await settle();
  FakeSocket.last.receive(ready());
  await connected;
  return { ...made, socket: FakeSocket.last };
}

function allowed(states: string[]): void {
  for (const step of states) {
    const [from, to] = step.split(">") as [SocketState, SocketState];
    if (from !== to) expect(TRANSITIONS[from] as readonly string[], step).toContain(to);
  }
}

describe("connect", () => {
  it("opens with the subprotocols and session, and resolves with session.ready", async () => {
    const { client, states, socket } = await opened();
    expect(socket.url).toBe("ws://gateway.test/api/runtime/agent?session_id=s1");
    expect(socket.protocols).toEqual(["symphainy.v1", "bearer.a1"]);
    expect(socket.options).toBeUndefined(); // a browser's WebSocket takes no third argument
    expect(client.state).toBe("open");
    expect(states).toEqual(["idle>connecting", "connecting>open"]);
  });

  it("passes origin and headers to the constructor (Node)", async () => {
    const { socket } = await opened({ origin: "http://app.test", headers: { "X-Trace": "1" } });
    expect(socket.options).toEqual({ headers: { "X-Trace": "1", Origin: "http://app.test" }, origin: "http://app.test" });
  });

  it("hands origin and headers to Node's own WebSocket (the global one) as its init object", async () => {
    vi.stubGlobal("WebSocket", FakeSocket);
    const { socket } = await opened({ WebSocket: undefined, origin: "http://app.test" });
    expect(socket.protocols).toEqual({ protocols: ["symphainy.v1", "bearer.a1"], headers: { Origin: "http://app.test" } });
    expect(socket.options).toBeUndefined();
    vi.unstubAllGlobals();
  });

  it("takes an error that no close follows as a drop (Node 20's WebSocket after a refused handshake)", async () => {
    const { client } = makeClient({ connectTimeoutMs: 10000 });
    await client.login("a@b.c", "pw");
    const outcome = client.connect().catch((e) => e);
    await settle();
    FakeSocket.last.onerror?.({});
    await vi.advanceTimersByTimeAsync(999);
    expect(client.state).toBe("connecting");
    await vi.advanceTimersByTimeAsync(1);
    expect(await outcome).toMatchObject({ name: "ConnectError", code: 1006 });
    expect(client.state).toBe("reconnecting");
    client.disconnect();
  });

  it("an error followed by its close keeps the close's code", async () => {
    const { client, socket } = await opened();
    const closes: number[] = [];
    client.on("close", (info) => closes.push(info.code));
    socket.onerror?.({});
    socket.drop(1011);
    await vi.advanceTimersByTimeAsync(5000);
    expect(closes[0]).toBe(1011);
    expect(closes).not.toContain(1006);
  });

  it("rejects before login, and without a WebSocket", async () => {
    const { client } = makeClient();
    await expect(client.connect()).rejects.toThrow("Not logged in");
    const bare = makeClient({ WebSocket: undefined });
    vi.stubGlobal("WebSocket", undefined);
    await bare.client.login("a@b.c", "pw");
    await expect(bare.client.connect()).rejects.toBeInstanceOf(ConnectError);
    bare.client.disconnect();
    vi.unstubAllGlobals();
  });

  it("rejects when the handshake is refused (closed before session.ready), and keeps trying", async () => {
    const { client, states } = makeClient();
    await client.login("a@b.c", "pw");
    const connected = client.connect();
    await settle();
    FakeSocket.last.drop(1006); // e.g. HTTP 403: no allowed Origin
    const error = await connected.catch((e) => e);
    expect(error).toBeInstanceOf(ConnectError);
    expect(error).toMatchObject({ code: 1006, retry: true });
    expect(client.state).toBe("reconnecting");
    client.disconnect();
    expect(client.state).toBe("idle");
    await vi.advanceTimersByTimeAsync(60000);
    expect(FakeSocket.all).toHaveLength(1); // stopped
    allowed(states);
  });

  it("rejects after connectTimeoutMs without session.ready, drops the socket and retries", async () => {
    const { client } = makeClient({ connectTimeoutMs: 3000 });
    await client.login("a@b.c", "pw");
    const connected = client.connect();
    const outcome = connected.catch((e) => e);
    await settle();
    const first = FakeSocket.last;
    await vi.advanceTimersByTimeAsync(2999);
    expect(client.state).toBe("connecting");
    await vi.advanceTimersByTimeAsync(1);
    expect(await outcome).toMatchObject({ name: "ConnectError", code: 1006, retry: true });
    expect(first.closedWith?.code).toBe(4000);
    expect(client.state).toBe("reconnecting");
    await vi.advanceTimersByTimeAsync(500); // the first retry comes within initialMs
    expect(FakeSocket.all).toHaveLength(2);
    FakeSocket.last.receive(ready());
    expect(client.state).toBe("open");
    first.onclose?.({ code: 1006, reason: "" }); // the abandoned socket's late close changes nothing
    expect(client.state).toBe("open");
  });
});

describe("close codes", () => {
  it.each([1006, 1011, 1012, 1013])("%i: reconnects with backoff and resumes from the last position", async (code) => {
    vi.spyOn(Math, "random").mockReturnValue(0.5);
    const { client, states, socket } = await opened();
    socket.receive({ type: "runtime_event", event_type: "session.state_changed", data: { session_id: "s1", version: 2 }, timestamp: "", seq: 6, epoch: "e1" });
    const closes: any[] = [];
    client.on("close", (info) => closes.push(info));
    socket.drop(code);
    const delay = code === 1013 ? 3750 : 250; // slowDownMs 5000: half kept; else half of initialMs
    expect(closes).toEqual([{ code, reason: "", wasClean: code !== 1006, retry: true, delayMs: delay }]);
    expect(client.state).toBe("reconnecting");
    await vi.advanceTimersByTimeAsync(delay - 1);
    expect(FakeSocket.all).toHaveLength(1);
    await vi.advanceTimersByTimeAsync(1);
    expect(FakeSocket.all).toHaveLength(2);
    expect(FakeSocket.last.query.get("since")).toBe("6");
    expect(FakeSocket.last.query.get("epoch")).toBe("e1");
    FakeSocket.last.receive(ready({ recovered: true, seq: 6 }));
    expect(client.state).toBe("open");
    allowed(states);
  });

  it("grows the delay per attempt, and starts again after session.ready", async () => {
    vi.spyOn(Math, "random").mockReturnValue(0.999999);
    const { client, socket } = await opened();
    const delays: number[] = [];
    client.on("close", (info) => delays.push(info.delayMs ?? -1));
    socket.drop(1012);
    for (let i = 0; i < 8; i += 1) {
      await vi.advanceTimersByTimeAsync(delays[delays.length - 1]);
      FakeSocket.last.drop(1006);
    }
    expect(delays).toEqual([500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]);
    await vi.advanceTimersByTimeAsync(30000);
    FakeSocket.last.receive(ready());
    FakeSocket.last.drop(1012);
    expect(delays[delays.length - 1]).toBe(500);
  });

  it("1012 after a server.restart frame waits the server's reconnect_after_ms instead of the backoff", async () => {
    vi.spyOn(Math, "random").mockReturnValue(0.999999);
    const { client, socket } = await opened();
    const delays: number[] = [];
    client.on("close", (info) => delays.push(info.delayMs ?? -1));
    const restart = vi.fn();
    client.on("server.restart", restart);
    socket.receive({ type: "server.restart", reconnect_after_ms: 137 });
    expect(restart).toHaveBeenCalledWith({ type: "server.restart", reconnect_after_ms: 137 });
    socket.drop(1012);
    expect(delays).toEqual([137]);
    await vi.advanceTimersByTimeAsync(137);
    expect(FakeSocket.all).toHaveLength(2);
    FakeSocket.last.drop(1012); // no hint on this socket: the backoff again
    expect(delays[1]).toBe(1000);
  });

  it("4429: waits at least half of slowDownMs", async () => {
    vi.spyOn(Math, "random").mockReturnValue(0);
    const { client, socket } = await opened();
    const delays: number[] = [];
    client.on("close", (info) => delays.push(info.delayMs ?? -1));
    socket.drop(4429);
    expect(delays).toEqual([2500]);
  });

  it("4409: stops, emits session.ended, forgets the tokens", async () => {
    const { client, states, socket } = await opened();
    const ended = vi.fn();
    client.on("session.ended", ended);
    socket.drop(4409, "session ended");
    expect(ended).toHaveBeenCalledWith({ code: 4409, reason: "session ended", wasClean: true, source: "socket" });
    expect(client.state).toBe("closed");
    expect(client.loggedIn).toBe(false);
    await vi.advanceTimersByTimeAsync(120000);
    expect(FakeSocket.all).toHaveLength(1);
    allowed(states);
  });

  it("4404: stops with session.not_found, and a pending connect() rejects", async () => {
    const { client } = makeClient();
    await client.login("a@b.c", "pw");
    const notFound = vi.fn();
    client.on("session.not_found", notFound);
    const connected = client.connect().catch((e) => e);
    await settle();
    FakeSocket.last.drop(4404);
    expect(await connected).toMatchObject({ message: "session.not_found", code: 4404, retry: false });
    expect(notFound).toHaveBeenCalledOnce();
    expect(client.state).toBe("closed");
  });

  it("4401: refreshes, then reconnects at once with the new token; a second 4401 is final", async () => {
    const { client, api, socket } = await opened();
    const required = vi.fn();
    client.on("auth.required", required);
    socket.drop(4401);
    await settle();
    expect(api.calls.filter((c) => c.path === "/api/auth/refresh").map((c) => c.body)).toEqual([{ refresh_token: "r1" }]);
    expect(FakeSocket.all).toHaveLength(2);
    expect(FakeSocket.last.token).toBe("a2");
    FakeSocket.last.drop(4401);
    expect(required).toHaveBeenCalledOnce();
    expect(client.state).toBe("closed");
  });

  it("a 4401 after a session.ready is refreshed again", async () => {
    const { client, socket } = await opened();
    socket.drop(4401);
    await settle();
    FakeSocket.last.receive(ready());
    FakeSocket.last.drop(4401);
    await settle();
    expect(FakeSocket.last.token).toBe("a3");
    expect(client.state).toBe("connecting");
  });

  it("disconnect() closes with 1000 and ends in idle without reconnecting", async () => {
    const { client, states, socket } = await opened();
    client.disconnect();
    expect(socket.closedWith).toEqual({ code: 1000, reason: "client disconnect" });
    await settle();
    expect(client.state).toBe("idle");
    await vi.advanceTimersByTimeAsync(60000);
    expect(FakeSocket.all).toHaveLength(1);
    expect(states).toEqual(["idle>connecting", "connecting>open", "open>idle"]);
  });
});

describe("tokens", () => {
  it("refreshes a third of the lifetime before expiry at most refreshMarginS, and hands the token to the socket", async () => {
    const { client, api, socket } = await opened({}, fakeApi(900));
    const refreshes = () => api.calls.filter((c) => c.path === "/api/auth/refresh").length;
    await vi.advanceTimersByTimeAsync(839_000);
    expect(refreshes()).toBe(0);
    await vi.advanceTimersByTimeAsync(1_000); // 60 s before expiry
    expect(refreshes()).toBe(1);
    expect(socket.sent).toContainEqual({ type: "auth.refresh", access_token: "a2" });
    socket.receive({ type: "auth.refreshed", token_expires_at: "" });
    await settle();
    expect(client.state).toBe("open");
    expect(Date.parse(client.session!.tokenExpiresAt) - Date.now()).toBe(900_000);
  });

  it("a short-lived token is refreshed when a third of its lifetime is left", async () => {
    const { api } = await opened({}, fakeApi(30));
    await vi.advanceTimersByTimeAsync(19_999);
    expect(api.calls.some((c) => c.path === "/api/auth/refresh")).toBe(false);
    await vi.advanceTimersByTimeAsync(1);
    expect(api.calls.some((c) => c.path === "/api/auth/refresh")).toBe(true);
  });

  it("reopens the socket (4000) when auth.refresh is not acknowledged", async () => {
    const { client, socket } = await opened({ ackTimeoutMs: 1000 });
    void client.refresh();
    await settle();
    await vi.advanceTimersByTimeAsync(1000);
    expect(socket.closedWith?.code).toBe(4000);
  });

  it("after a sleep the wall clock decides: the reconnect refreshes first, never a stale token", async () => {
    const { client, api, socket } = await opened({}, fakeApi(900));
    vi.setSystemTime(Date.now() + 3 * 3600_000); // the laptop slept; no timer ran
    socket.drop(1006);
    await vi.advanceTimersByTimeAsync(500);
    await settle();
    expect(api.calls.filter((c) => c.path === "/api/auth/refresh")).toHaveLength(1);
    expect(FakeSocket.last.token).toBe("a2");
    expect(client.state).toBe("connecting");
  });

  it("an API call after a sleep refreshes first", async () => {
    const { client, api } = await opened({}, fakeApi(900));
    vi.setSystemTime(Date.now() + 3600_000);
    await client.api("GET", "/api/auth/me");
    const me = api.calls[api.calls.length - 1];
    expect(api.calls.map((c) => c.path).slice(-2)).toEqual(["/api/auth/refresh", "/api/auth/me"]);
    expect((me.init.headers as Record<string, string>).Authorization).toBe("Bearer a2");
  });

  it("a 401 on refresh ends the session; a 503 is retried", async () => {
    const { client, api } = await opened();
    const failed = vi.fn();
    client.on("refresh.failed", failed);
    api.next("/api/auth/refresh", 503, { error: "unavailable", message: "down" });
    await expect(client.refresh()).rejects.toMatchObject({ status: 503 });
    expect(failed).toHaveBeenCalledOnce();
    expect(client.loggedIn).toBe(true);
    const ended = vi.fn();
    client.on("session.ended", ended);
    api.next("/api/auth/refresh", 401, { error: "session_ended", message: "ended" });
    await expect(client.refresh()).rejects.toMatchObject({ status: 401 });
    expect(ended).toHaveBeenCalledOnce();
    expect(client.state).toBe("closed");
  });

  it("a session lost over HTTP before any socket ends in closed", async () => {
    const { client, api, states } = makeClient();
    await client.login("a@b.c", "pw");
    api.next("/api/auth/refresh", 401, { error: "session_ended", message: "ended" });
    await expect(client.refresh()).rejects.toMatchObject({ status: 401 });
    expect(states).toEqual(["idle>closed"]);
    allowed(states);
  });

  it("shares one refresh between concurrent callers", async () => {
    const { client, api } = await opened();
    await Promise.all([client.refresh(), client.refresh(), client.refresh()]);
    expect(api.calls.filter((c) => c.path === "/api/auth/refresh")).toHaveLength(1);
  });
});

describe("hints", () => {
  function target() {
    const listeners = new Map<string, () => void>();
    return {
      visibilityState: "visible",
      addEventListener: (type: string, fn: () => void) => listeners.set(type, fn),
      removeEventListener: (type: string) => listeners.delete(type),
      fire: (type: string) => listeners.get(type)?.(),
      listeners,
    };
  }

  it("online reconnects at once instead of waiting for the backoff", async () => {
    vi.spyOn(Math, "random").mockReturnValue(0.999999);
    const window = target();
    const { client, socket } = await opened({ hints: { window, document: null } });
    socket.drop(1006);
    for (let i = 0; i < 5; i += 1) {
      await vi.advanceTimersByTimeAsync(30000);
      FakeSocket.last.drop(1006);
    }
    const before = FakeSocket.all.length;
    window.fire("online");
    await settle();
    expect(FakeSocket.all.length).toBe(before + 1);
    expect(client.state).toBe("connecting");
  });

  it("a page shown again refreshes an expired token at once and probes the socket", async () => {
    const document = target();
    const { api, client, socket } = await opened({ hints: { window: null, document }, ackTimeoutMs: 2000 }, fakeApi(900));
    vi.setSystemTime(Date.now() + 3600_000);
    document.fire("visibilitychange");
    await settle();
    expect(api.calls.filter((c) => c.path === "/api/auth/refresh")).toHaveLength(1);
    expect(socket.sent).toContainEqual({ type: "ping" });
    // The socket died in the sleep: nothing comes back, so it is dropped and reopened.
    await vi.advanceTimersByTimeAsync(2000);
    expect(client.state).toBe("reconnecting");
  });

  it("offline probes the open socket: a pong keeps it, silence drops it for a reconnect", async () => {
    const window = target();
    const { client, socket } = await opened({ hints: { window, document: null }, ackTimeoutMs: 1000 });
    window.fire("offline");
    expect(socket.sent).toContainEqual({ type: "ping" });
    socket.receive({ type: "pong" });
    await vi.advanceTimersByTimeAsync(1000);
    expect(client.state).toBe("open");
    window.fire("offline");
    await vi.advanceTimersByTimeAsync(1000);
    expect(client.state).toBe("reconnecting");
    expect(socket.closedWith?.code).toBe(4000);
  });

  it("a hidden page's visibilitychange does nothing", async () => {
    const document = target();
    document.visibilityState = "hidden";
    const { api, socket } = await opened({ hints: { window: null, document } }, fakeApi(900));
    vi.setSystemTime(Date.now() + 3600_000);
    document.fire("visibilitychange");
    await settle();
    expect(api.calls.filter((c) => c.path === "/api/auth/refresh")).toHaveLength(0);
    expect(socket.sent).not.toContainEqual({ type: "ping" });
  });

  it("binds while a socket is wanted, and unbinds on disconnect", async () => {
    const window = target();
    const { client } = await opened({ hints: { window, document: null } });
    expect([...window.listeners.keys()].sort()).toEqual(["offline", "online"]);
    client.disconnect();
    expect(window.listeners.size).toBe(0);
  });
});

describe("resume", () => {
  it("emits resumed once the replay is in, and resync.required when the server cannot resume", async () => {
    const { client, socket } = await opened();
    const resumed = vi.fn();
    const resync = vi.fn();
    client.on("resumed", resumed);
    client.on("resync.required", resync);
    socket.drop(1006);
    await vi.advanceTimersByTimeAsync(500);
    const second = FakeSocket.last;
    expect(second.query.get("since")).toBe("5");
    second.receive(ready({ recovered: true, seq: 7 }));
    second.receive({ type: "runtime_event", event_type: "agent.started", data: { message_id: "m", conversation_id: "c" }, timestamp: "", seq: 6, epoch: "e1" });
    second.receive({ type: "runtime_event", event_type: "agent.started", data: { message_id: "m", conversation_id: "c" }, timestamp: "", seq: 6, epoch: "e1" }); // a duplicate
    second.receive({ type: "runtime_event", event_type: "session.state_changed", data: { session_id: "s1", version: 3 }, timestamp: "", seq: 7, epoch: "e1" });
    expect(resumed).toHaveBeenCalledWith({ recovered: true, since: 5, seq: 7, replayed: 2 });
    expect(client.position).toEqual({ seq: 7, epoch: "e1" });
    second.drop(1006);
    await vi.advanceTimersByTimeAsync(1000);
    FakeSocket.last.receive(ready({ recovered: false, seq: 40, epoch: "e2" }));
    expect(resync).toHaveBeenCalledWith({ recovered: false, since: 7, seq: 40, epoch: "e2" });
    expect(client.position).toEqual({ seq: 40, epoch: "e2" });
  });

  it("drops a frame at or below the last position before any handler", async () => {
    const { client, socket } = await opened();
    const all = vi.fn();
    client.on("*", all);
    socket.receive({ type: "runtime_event", event_type: "session.state_changed", data: { session_id: "s1", version: 1 }, timestamp: "", seq: 5, epoch: "e1" });
    expect(all).not.toHaveBeenCalled();
  });
});

describe("answers", () => {
  it("stitches snapshot and tokens into answer events; cancelAnswer sends agent.cancel", async () => {
    const { client, socket } = await opened();
    const answers: any[] = [];
    client.on("answer", (answer) => answers.push(answer));
    const data = { message_id: "m1", conversation_id: "c1" };
    const event = (event_type: string, extra: object) => socket.receive({ type: "runtime_event", event_type, data: { ...data, ...extra }, timestamp: "" });
    event("agent.snapshot", { question: "q", text: "Hel", next_index: 3 });
    event("agent.token", { index: 2, token: "l" }); // below next_index: already in the snapshot
    event("agent.token", { index: 3, token: "lo" });
    expect(client.answers).toEqual([{ messageId: "m1", conversationId: "c1", text: "Hello", nextIndex: 4, status: "streaming" }]);
    client.cancelAnswer("m1");
    expect(socket.sent).toContainEqual({ type: "agent.cancel", message_id: "m1" });
    event("agent.cancelled", { text: "Hello" });
    expect(answers.map((a) => [a.text, a.status])).toEqual([["Hel", "streaming"], ["Hello", "streaming"], ["Hello", "cancelled"]]);
    expect(client.answers).toEqual([]);
  });

  it("send() throws when the socket is not open", async () => {
    const { client } = makeClient();
    expect(() => client.sendMessage("hi")).toThrow("not open");
  });
});

describe("register, and the refresh cookie", () => {
  it("register() posts the account and keeps its first session", async () => {
    const { client, api } = makeClient();
    const session = await client.register("new@b.c", "long enough pw", { name: "N", tenantName: "T" });
    expect(api.calls[0]).toMatchObject({ path: "/api/auth/register", body: { email: "new@b.c", password: "long enough pw", name: "N", tenant_name: "T" } });
    expect(session.sessionId).toBe("s1");
    expect(client.loggedIn).toBe(true);
  });

  it("refreshCookie: login asks for the cookie, refreshes go through it with the header", async () => {
    const api = fakeApi();
    const { client } = makeClient({ refreshCookie: true }, api);
    api.next("/api/auth/login", 200, {
      access_token: "a1", token_type: "Bearer", expires_in: 900, session_id: "s1", session_expires_at: "2030-01-01T00:00:00Z",
      user_id: "u1", tenant_id: "t1", roles: [], permissions: [], refresh_cookie: true,
    });
    await client.login("a@b.c", "pw");
    expect(api.calls[0].body).toMatchObject({ refresh_cookie: true });
    expect(api.calls[0].init.credentials).toBe("same-origin");
    api.next("/api/auth/refresh", 200, { access_token: "a9", token_type: "Bearer", expires_in: 900 });
    await client.refresh();
    const refresh = api.calls[1];
    expect(refresh.body).toEqual({});
    expect(refresh.init.credentials).toBe("same-origin");
    expect((refresh.init.headers as Record<string, string>)["X-Symphainy-Refresh"]).toBe("cookie");
  });

  it("restore() takes the session over after a reload, or answers null when there is none", async () => {
    const api = fakeApi();
    const { client } = makeClient({ refreshCookie: true }, api);
    api.next("/api/auth/refresh", 401, { error: "not_authenticated", message: "no cookie" });
    expect(await client.restore()).toBeNull();
    expect(client.loggedIn).toBe(false);
    api.next("/api/auth/refresh", 200, { access_token: "a5", token_type: "Bearer", expires_in: 900 });
    api.next("/api/auth/me", 200, { user_id: "u1", email: "a@b.c", name: "", tenant_id: "t1", tenant_name: "T", roles: ["member"], permissions: ["read"], session_id: "s7" });
    api.next("/api/session/s7", 200, { session_id: "s7", expires_at: "2030-01-02T00:00:00Z" });
    const login = vi.fn();
    client.on("login", login);
    const session = await client.restore();
    expect(session).toMatchObject({ sessionId: "s7", userId: "u1", roles: ["member"], sessionExpiresAt: "2030-01-02T00:00:00Z" });
    expect(login).toHaveBeenCalledOnce();
    const connected = client.connect();
    await settle();
    expect(FakeSocket.last.url).toContain("session_id=s7");
    expect(FakeSocket.last.token).toBe("a5");
    FakeSocket.last.receive(ready({ session_id: "s7" }));
    await connected;
  });

  it("in a browser, restore() asks only after a login here was given the cookie (a note in localStorage)", async () => {
    const store = new Map<string, string>();
    vi.stubGlobal("localStorage", {
      getItem: (k: string) => store.get(k) ?? null,
      setItem: (k: string, v: string) => void store.set(k, v),
      removeItem: (k: string) => void store.delete(k),
    });
    const api = fakeApi();
    const { client } = makeClient({ refreshCookie: true }, api);
    expect(await client.restore()).toBeNull();
    expect(api.calls).toEqual([]); // no note: no request
    api.next("/api/auth/login", 200, {
      access_token: "a1", token_type: "Bearer", expires_in: 900, session_id: "s1", session_expires_at: "2030-01-01T00:00:00Z",
      user_id: "u1", tenant_id: "t1", roles: [], permissions: [], refresh_cookie: true,
    });
    await client.login("a@b.c", "pw");
    expect(store.get("symphainy.refresh-cookie")).toBe("1"); // a flag, never a token
    await client.logout();
    expect(store.has("symphainy.refresh-cookie")).toBe(false);
    await client.login("a@b.c", "pw"); // the server without the cookie: the token in the body
    expect(store.has("symphainy.refresh-cookie")).toBe(false);
    vi.unstubAllGlobals();
  });

  it("without the option restore() refuses, and login keeps today's body", async () => {
    const { client, api } = makeClient();
    await expect(client.restore()).rejects.toThrow("refreshCookie");
    await client.login("a@b.c", "pw");
    expect(api.calls[0].body).toEqual({ email: "a@b.c", password: "pw" });
    expect(api.calls[0].init.credentials).toBe("omit");
  });
});
