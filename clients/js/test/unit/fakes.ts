/** A fake WebSocket and a fake API for the unit tests (no network, fake timers). */
import { vi } from "vitest";
import { SymphainyClient, type ClientOptions } from "../../src/index.js";

export class FakeSocket {
  static all: FakeSocket[] = [];
  sent: any[] = [];
  closedWith: { code?: number; reason?: string } | null = null;
  onmessage: ((event: { data: unknown }) => void) | null = null;
  onclose: ((event: { code: number; reason: string; wasClean?: boolean }) => void) | null = null;
  onerror: ((event: unknown) => void) | null = null;

  constructor(readonly url: string, readonly protocols: any, readonly options?: any) {
    FakeSocket.all.push(this);
  }

  static get last(): FakeSocket {
    return FakeSocket.all[FakeSocket.all.length - 1];
  }

  send(data: string): void {
    this.sent.push(JSON.parse(data));
  }

  /** The client closes: the close event follows, as in a browser, a moment later. */
  close(code?: number, reason?: string): void {
    this.closedWith = { code, reason };
    queueMicrotask(() => this.onclose?.({ code: code ?? 1005, reason: reason ?? "", wasClean: true }));
  }

  receive(frame: object): void {
    this.onmessage?.({ data: JSON.stringify(frame) });
  }

  /** The server (or the network) closes the socket. */
  drop(code: number, reason = ""): void {
    this.onclose?.({ code, reason, wasClean: code !== 1006 });
  }

  get token(): string {
    return this.protocols[1].slice("bearer.".length);
  }

  get query(): URLSearchParams {
    return new URL(this.url).searchParams;
  }
}

export function ready(extra: object = {}): object {
  return {
    type: "session.ready", session_id: "s1", user_id: "u1", tenant_id: "t1", expires_at: "2030-01-01T00:00:00Z",
    token_expires_at: "2030-01-01T00:00:00Z", heartbeat_s: 20, seq: 5, epoch: "e1", ...extra,
  };
}

export interface FakeApi {
  calls: { path: string; init: RequestInit; body: any }[];
  fetch: typeof fetch;
  /** Answer the next request to `path` with this status and body. */
  next(path: string, status: number, body: object | null): void;
}

/** The API: login and register give tokens "a1"/"r1", each refresh the next pair. */
export function fakeApi(expiresIn = 900): FakeApi {
  let issued = 1;
  const queued = new Map<string, { status: number; body: object | null }[]>();
  const calls: FakeApi["calls"] = [];
  const login = () => ({
    access_token: `a${issued}`, refresh_token: `r${issued}`, token_type: "Bearer", expires_in: expiresIn, session_id: "s1",
    session_expires_at: "2030-01-01T00:00:00Z", user_id: "u1", tenant_id: "t1", roles: ["member"], permissions: ["read", "write"],
  });
  const fetcher = vi.fn(async (url: string, init: RequestInit = {}) => {
    const path = new URL(url).pathname;
    const body = init.body ? JSON.parse(String(init.body)) : undefined;
    calls.push({ path, init, body });
    const answer = queued.get(path)?.shift();
    let status = 200;
    let json: object | null = null;
    if (answer) ({ status, body: json } = answer);
    else if (path === "/api/auth/login" || path === "/api/auth/register") json = login();
    else if (path === "/api/auth/refresh") {
      issued += 1;
      json = { access_token: `a${issued}`, refresh_token: `r${issued}`, token_type: "Bearer", expires_in: expiresIn };
    } else if (path === "/api/auth/logout") status = 204;
    else json = { path };
    return new Response(json === null ? null : JSON.stringify(json), { status, headers: { "Content-Type": "application/json" } });
  }) as unknown as typeof fetch;
  return { calls, fetch: fetcher, next: (path, status, body) => queued.set(path, [...(queued.get(path) ?? []), { status, body }]) };
}

export function makeClient(options: ClientOptions = {}, api = fakeApi()) {
  FakeSocket.all = [];
  const client = new SymphainyClient({ baseUrl: "http://gateway.test", fetch: api.fetch, WebSocket: FakeSocket, hints: false, ...options });
  const states: string[] = [];
  client.on("state", ({ previous, state }) => states.push(`${previous}>${state}`));
  return { client, api, states };
}

/** Let pending promises (fetch answers, close events) settle. */
export async function settle(): Promise<void> {
  for (let i = 0; i < 10; i += 1) await Promise.resolve();
  await vi.advanceTimersByTimeAsync(0);
}
