import { afterEach, beforeEach, expect, it, vi } from "vitest";
import { TRANSITIONS, type SocketState } from "../../src/index.js";
import { FakeSocket, fakeApi, makeClient, ready } from "./fakes.js";

beforeEach(() => {
  vi.useFakeTimers();
  vi.setSystemTime(new Date("2026-01-01T00:00:00Z"));
});
afterEach(() => {
  vi.useRealTimers();
});

/** A small seeded generator (mulberry32), so that a failing sequence can be replayed. */
function seeded(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const CODES = [1000, 1006, 1011, 1012, 1013, 4000, 4401, 4404, 4409, 4429];

it.each(Array.from({ length: 60 }, (_, i) => i + 1))("seed %i: any order of calls, closes and time takes allowed transitions only", async (seed) => {
  const random = seeded(seed);
  const pick = <T>(items: T[]): T => items[Math.floor(random() * items.length)];
  const api = fakeApi(60);
  const { client } = makeClient({ connectTimeoutMs: 2000, ackTimeoutMs: 1000, hints: false }, api);
  const errors = vi.spyOn(console, "error").mockImplementation(() => {});
  const steps: string[] = [];
  const bad: string[] = [];
  client.on("state", ({ previous, state }) => {
    if (!(TRANSITIONS[previous] as readonly SocketState[]).includes(state)) bad.push(`${previous}>${state}`);
  });
  const actions: Record<string, () => Promise<unknown> | void> = {
    login: () => client.login("a@b.c", "pw").catch(() => {}),
    connect: () => void client.connect().catch(() => {}),
    disconnect: () => client.disconnect(),
    logout: () => client.logout().catch(() => {}),
    refresh: () => client.refresh().catch(() => {}),
    wake: () => client.wake(),
    ready: () => void (FakeSocket.all.length && FakeSocket.last.receive(ready())),
    drop: () => void (FakeSocket.all.length && FakeSocket.last.drop(pick(CODES))),
    ack: () => void (FakeSocket.all.length && FakeSocket.last.receive({ type: "auth.refreshed", token_expires_at: "" })),
    refused: () => api.next("/api/auth/refresh", pick([401, 503]), { error: "x", message: "x" }),
    time: () => vi.advanceTimersByTimeAsync(Math.floor(random() * 40_000)),
    sleep: () => void vi.setSystemTime(Date.now() + Math.floor(random() * 3600_000)),
  };
  for (let i = 0; i < 80; i += 1) {
    const name = pick(Object.keys(actions));
    steps.push(name);
    await actions[name]();
    await vi.advanceTimersByTimeAsync(0);
  }
  expect(bad, steps.join(" ")).toEqual([]);
  expect(errors, steps.join(" ")).not.toHaveBeenCalled();
  errors.mockRestore();
  // Whatever happened, the client can still be logged out and in, and connected.
  await client.logout().catch(() => {});
  await client.login("a@b.c", "pw");
  const connected = client.connect();
  await vi.advanceTimersByTimeAsync(0);
  FakeSocket.last.receive(ready());
  await expect(connected).resolves.toMatchObject({ type: "session.ready" });
  expect(client.state).toBe("open");
});
