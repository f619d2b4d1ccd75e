import { describe, expect, it } from "vitest";
import { AnswerStitcher } from "../../src/answers.js";
import { BACKOFF_DEFAULTS, backoffDelay, CloseCode, closeAction, TRANSITIONS } from "../../src/index.js";
import { CLOSE_CODES } from "../../src/generated/frames.js";

describe("backoff", () => {
  const backoff = { ...BACKOFF_DEFAULTS, initialMs: 500, maxMs: 30000, factor: 2, slowDownMs: 5000 };

  it("draws from the full range 0..initialMs*factor^attempt (full jitter)", () => {
    expect(backoffDelay(backoff, 0, false, () => 0)).toBe(0);
    expect(backoffDelay(backoff, 0, false, () => 0.999999)).toBe(500);
    expect(backoffDelay(backoff, 3, false, () => 0.5)).toBe(2000);
    expect(backoffDelay(backoff, 3, false, () => 0.999999)).toBe(4000);
  });

  it("never exceeds maxMs, however many attempts", () => {
    for (const attempt of [6, 7, 20, 1000, Number.MAX_SAFE_INTEGER]) {
      expect(backoffDelay(backoff, attempt, false, () => 0.999999)).toBe(30000);
      expect(backoffDelay(backoff, attempt, false, () => 0)).toBe(0);
    }
  });

  it("waits longer after 4429 and 1013: at least half of slowDownMs, kept, plus jitter", () => {
    expect(backoffDelay(backoff, 0, true, () => 0)).toBe(2500);
    expect(backoffDelay(backoff, 0, true, () => 0.999999)).toBe(5000);
    expect(backoffDelay(backoff, 10, true, () => 0)).toBe(15000); // the grown ceiling, halved
    expect(backoffDelay(backoff, 10, true, () => 0.999999)).toBe(30000);
  });

  it("spreads the delays over the whole range with the real random", () => {
    const delays = Array.from({ length: 2000 }, () => backoffDelay(backoff, 2, false));
    expect(Math.min(...delays)).toBeGreaterThanOrEqual(0);
    expect(Math.max(...delays)).toBeLessThanOrEqual(2000);
    expect(delays.filter((d) => d < 500).length).toBeGreaterThan(300); // not clustered at the top
    expect(delays.filter((d) => d > 1500).length).toBeGreaterThan(300);
  });
});

describe("close codes", () => {
  it("maps every code of docs/protocol.md's table", () => {
    for (const code of [1000, 1001, 1002, 1006, 1007, 1009, 1011, 1012, 4000]) {
      expect(closeAction(code, false)).toEqual({ kind: "retry", slow: false });
    }
    expect(closeAction(1013, false)).toEqual({ kind: "retry", slow: true });
    expect(closeAction(4429, false)).toEqual({ kind: "retry", slow: true });
    expect(closeAction(4401, false)).toEqual({ kind: "refresh" });
    expect(closeAction(4401, true)).toEqual({ kind: "final", event: "auth.required" });
    expect(closeAction(4404, false)).toEqual({ kind: "final", event: "session.not_found" });
    expect(closeAction(4409, false)).toEqual({ kind: "final", event: "session.ended" });
  });

  it("does on every code of the socket description what its action says", () => {
    expect(CLOSE_CODES.length).toBeGreaterThan(5);
    const expected: Record<string, ReturnType<typeof closeAction>> = {
      backoff: { kind: "retry", slow: false },
      restart: { kind: "retry", slow: false },
      slow: { kind: "retry", slow: true },
      refresh: { kind: "refresh" },
    };
    for (const { code, name, action } of CLOSE_CODES) {
      expect(CloseCode[name], name).toBe(code);
      if (action === "stop") expect(closeAction(code, false).kind, name).toBe("final");
      else expect(closeAction(code, false), name).toEqual(expected[action]);
    }
  });
});

describe("the state machine", () => {
  it("has a way from idle to open and back, and out of closed only by a new connect", () => {
    expect(TRANSITIONS.idle).toContain("connecting");
    expect(TRANSITIONS.connecting).toContain("open");
    expect(TRANSITIONS.open).toEqual(expect.arrayContaining(["reconnecting", "closed", "idle"]));
    expect(TRANSITIONS.closed).not.toContain("open");
    expect(TRANSITIONS.idle).not.toContain("open");
  });
});

describe("answer stitching", () => {
  const ids = { message_id: "m1", conversation_id: "c1" };

  it("appends tokens in index order to the snapshot, no gap and no repeat", () => {
    const stitcher = new AnswerStitcher();
    expect(stitcher.track("agent.snapshot", { ...ids, text: "Hello", next_index: 2 })).toMatchObject({ text: "Hello", nextIndex: 2 });
    expect(stitcher.track("agent.token", { ...ids, index: 1, token: " again" })).toBeNull(); // a repeat
    expect(stitcher.track("agent.token", { ...ids, index: 2, token: " world" })).toMatchObject({ text: "Hello world", nextIndex: 3 });
    expect(stitcher.track("agent.token", { ...ids, index: 2, token: " world" })).toBeNull(); // twice
    expect(stitcher.track("agent.token", { ...ids, index: 4, token: "!" })).toBeNull(); // a gap: index 3 is missing
    expect(stitcher.list()).toEqual([{ messageId: "m1", conversationId: "c1", text: "Hello world", nextIndex: 3, status: "streaming" }]);
    const done = stitcher.track("agent.completed", { ...ids, text: "Hello world, all of it", tokens: 5 });
    expect(done).toMatchObject({ status: "completed", text: "Hello world, all of it" });
    expect(stitcher.list()).toEqual([]);
  });

  it("starts at agent.started, and a snapshot after it resets the text", () => {
    const stitcher = new AnswerStitcher();
    expect(stitcher.track("agent.started", ids)).toMatchObject({ text: "", nextIndex: 0, status: "streaming" });
    expect(stitcher.track("agent.token", { ...ids, index: 0, token: "A" })).toMatchObject({ text: "A", nextIndex: 1 });
    expect(stitcher.track("agent.started", ids)).toBeNull(); // replayed: nothing changes
    expect(stitcher.track("agent.snapshot", { ...ids, text: "AB", next_index: 2 })).toMatchObject({ text: "AB", nextIndex: 2 });
    expect(stitcher.track("agent.token", { ...ids, index: 2, token: "C" })).toMatchObject({ text: "ABC" });
  });

  it("ends with the terminal event's status, text and reason", () => {
    const stitcher = new AnswerStitcher();
    stitcher.track("agent.started", ids);
    expect(stitcher.track("agent.failed", { ...ids, reason: "interrupted" })).toMatchObject({ status: "failed", reason: "interrupted" });
    stitcher.track("agent.started", { message_id: "m2" });
    expect(stitcher.track("agent.cancelled", { message_id: "m2", text: "so far" })).toMatchObject({ status: "cancelled", text: "so far" });
  });
});
