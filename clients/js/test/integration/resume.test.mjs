// The socket comes back and resumes where it was, with no event lost: after a dropped TCP
// connection (a proxy cuts it), and after a server restart in place (SIGTERM: the drain
// closes the socket with 1012), against real servers (see live.mjs).
import assert from "node:assert/strict";
import { describe, test } from "node:test";

import {
  CloseCode, FAST_BACKOFF, TcpProxy, api, bounded, closeClient, connectedClient, live, loginAside, serverRestart,
  serverUrl, sessionEvents, until,
} from "./live.mjs";

/** Merge `data` into the session's state over HTTP; the new version. */
async function stateWrite(base, sessionId, token, data) {
  const path = `/api/session/${sessionId}/state`;
  const read = await api(base, "GET", path, { token });
  assert.equal(read.status, 200, JSON.stringify(read.body));
  const written = await api(base, "PATCH", path, {
    token, body: { data }, headers: { "If-Match": String(read.body.version) },
  });
  assert.equal(written.status, 200, JSON.stringify(written.body));
  return written.body.version;
}

/** Every event the server recorded for the session reached the client, each once
 * (progress aside: a replay coalesces it to its latest). */
async function assertNothingLost(made, sessionId) {
  const logged = (await sessionEvents(sessionId)).filter((e) => e.kind !== "execution.progress");
  const received = made.positioned().map((f) => f.seq);
  assert.equal(new Set(received).size, received.length, `an event delivered twice: ${received}`);
  const missing = logged.filter((e) => !received.includes(e.seq));
  assert.deepEqual(missing, [], `events lost; received ${received}`);
  return logged;
}

const stateVersion = (made, version) => made.frames.find(
  (f) => f.event_type === "session.state_changed" && f.data.version === version);

describe("a client in Node resumes", live, () => {
  test("after a dropped connection: recovered, nothing missed lost", bounded(), async () => {
    const proxy = await new TcpProxy(serverUrl()).listen();
    const made = await connectedClient(proxy.url); // HTTP and the socket through the proxy
    try {
      const sessionId = made.ready.session_id;
      const aside = await loginAside(serverUrl(), made.user); // the same user's second session
      await stateWrite(serverUrl(), sessionId, aside.access_token, { before: "drop" });
      const before = await until(() => stateVersion(made, 1), "the first state change");

      proxy.cut();
      await until(() => made.closes.find((c) => c.code === CloseCode.ABNORMAL && c.retry), "the drop (1006)");
      // While the client is away (its next socket is held at the proxy): a state change and
      // a whole batch.
      await stateWrite(serverUrl(), sessionId, aside.access_token, { while: "away" });
      const submitted = await api(serverUrl(), "POST", "/api/intent/submit", {
        token: aside.access_token,
        body: { session_id: sessionId, intent_type: "batch", parameters: { items: ["a", "b", "c"], delay_s: 0.05 } },
      });
      assert.equal(submitted.status, 202, JSON.stringify(submitted.body));
      const executionId = submitted.body.execution_id;
      await until(async () => {
        const { body } = await api(serverUrl(), "GET", `/api/execution/${executionId}/status`, { token: aside.access_token });
        return body.status === "completed";
      }, "the batch to complete");
      assert.ok(made.sockets.length >= 2, "the client is trying again");
      assert.ok(!stateVersion(made, 2), "nothing reached the client while it was away");

      proxy.release();
      const resumed = await until(() => made.events.find((e) => e.type === "resumed"), "resumed",
        { detail: () => JSON.stringify(made.frames.slice(-5)) });
      assert.equal(resumed.payload.recovered, true);
      assert.equal(resumed.payload.since, before.seq);
      const url = new URL(made.sockets.at(-1).url);
      assert.equal(url.searchParams.get("since"), String(before.seq));
      assert.equal(url.searchParams.get("epoch"), before.epoch);
      const ready = made.frames.filter((f) => f.type === "session.ready");
      assert.equal(ready.length, 2);
      assert.equal(ready[1].recovered, true);
      assert.equal(made.client.state, "open");

      assert.ok(stateVersion(made, 2), "the state change made while away");
      assert.ok(made.frames.find((f) => f.event_type === "execution.completed" && f.data.execution_id === executionId),
        "the batch's completion");
      await assertNothingLost(made, sessionId);
      const replayed = made.positioned().filter((f) => f.seq > before.seq && f.seq <= ready[1].seq);
      assert.equal(resumed.payload.replayed, replayed.length);
      assert.ok(replayed.length >= 5, `the replay: ${replayed.map((f) => f.event_type)}`);
      assert.equal(made.events.filter((e) => e.type === "resync.required").length, 0);
    } finally {
      proxy.release(); // the logout goes through it
      await closeClient(made);
      await proxy.close();
    }
  });

  test("a reconnect the server cannot resume: resync.required, nothing replayed", bounded(), async () => {
    // The proxy names another log's epoch in every resume (a restored database, say): the
    // server cannot tell what the client missed.
    const proxy = await new TcpProxy(serverUrl(), {
      rewrite: (head) => head.replace(/^(GET [^ ]*[?&]epoch=)[^& ]*/, "$1not-this-log"),
    }).listen();
    const made = await connectedClient(proxy.url);
    try {
      const sessionId = made.ready.session_id;
      const aside = await loginAside(serverUrl(), made.user);
      await stateWrite(serverUrl(), sessionId, aside.access_token, { before: "drop" });
      const before = await until(() => stateVersion(made, 1), "the first state change");

      proxy.cut();
      await until(() => made.closes.find((c) => c.code === CloseCode.ABNORMAL && c.retry), "the drop (1006)");
      await stateWrite(serverUrl(), sessionId, aside.access_token, { while: "away" });
      proxy.release();

      const resync = await until(() => made.events.find((e) => e.type === "resync.required"), "resync.required",
        { detail: () => JSON.stringify(made.frames.slice(-5)) });
      const ready = made.frames.filter((f) => f.type === "session.ready").at(-1);
      assert.equal(ready.recovered, false);
      assert.deepEqual(resync.payload, { recovered: false, since: before.seq, seq: ready.seq, epoch: ready.epoch });
      assert.ok(ready.seq > before.seq, "the log went on meanwhile");
      assert.ok(!stateVersion(made, 2), "nothing old is replayed: the app re-reads its state");
      assert.equal(made.events.filter((e) => e.type === "resumed").length, 0);
      assert.deepEqual(made.client.position, { seq: ready.seq, epoch: ready.epoch });
      // Live events go on from there.
      await stateWrite(serverUrl(), sessionId, aside.access_token, { after: "resync" });
      await until(() => stateVersion(made, 3), "the next state change");
    } finally {
      proxy.release();
      await closeClient(made);
      await proxy.close();
    }
  });

  test("after a server restart: 1012, back on the restarted process, nothing lost", bounded(60_000), async () => {
    const base = serverUrl("restartable");
    // A ceiling above the drain's hints (at most 1 s), which the client caps at it.
    const made = await connectedClient(base, { backoff: { ...FAST_BACKOFF, maxMs: 1000 } });
    try {
      const sessionId = made.ready.session_id;
      // A batch of ~1.5 s: still running when the drain closes the socket, so its last
      // events are recorded while the client is away; the stopping process finishes it
      // (it gives work in flight 5 s here), and the restarted one replays what was missed.
      // (A batch handed over to the next process is the drain's own test's, and
      // tests/browser/test_restart.py's.)
      const accepted = new Promise((resolve) => made.client.on("intent.accepted", resolve));
      made.client.submitIntent("batch", { items: Array.from({ length: 15 }, (_, n) => n), delay_s: 0.1 });
      const { execution_id: executionId } = await accepted;
      await until(() => made.frames.find((f) => f.event_type === "execution.progress"), "the batch's progress");

      let lastBeforeClose = null;
      made.client.on("close", () => { lastBeforeClose ??= made.positioned().at(-1).seq; });
      const restarted = serverRestart("restartable");
      restarted.catch(() => {});
      const closed = await until(() => made.closes[0], "the socket to close");
      assert.equal(closed.code, CloseCode.SERVICE_RESTART, JSON.stringify(closed));
      assert.equal(closed.retry, true);
      // The drain said when to come back, and the client waited that instead of its backoff.
      const hint = made.frames.find((f) => f.type === "server.restart");
      assert.ok(hint, "a server.restart frame before the 1012");
      assert.equal(closed.delayMs, hint.reconnect_after_ms);
      await restarted;

      const resumed = await until(() => made.events.find((e) => e.type === "resumed"), "resumed on the restarted server",
        { timeoutMs: 30_000, detail: () => JSON.stringify(made.closes) });
      assert.equal(resumed.payload.recovered, true);
      assert.equal(made.client.state, "open");
      const ready = made.frames.filter((f) => f.type === "session.ready");
      assert.equal(ready.at(-1).session_id, sessionId);
      assert.equal(ready.at(-1).recovered, true);
      await until(() => made.frames.find((f) => f.event_type === "execution.completed" && f.data.execution_id === executionId),
        "the batch's completion", { timeoutMs: 30_000 }).catch(async (error) => {
        const status = await made.client.api("GET", `/api/execution/${executionId}/status`).catch((e) => e);
        const kinds = made.positioned().map((f) => `${f.seq} ${f.event_type}`);
        throw new Error(`${error.message}\nthe execution: ${JSON.stringify(status)}\nreceived: ${kinds}`);
      });
      await assertNothingLost(made, sessionId);
      const missed = made.positioned().filter((f) => f.seq > lastBeforeClose && f.seq <= ready.at(-1).seq);
      assert.ok(missed.some((f) => f.event_type === "execution.completed"), "the batch's end, replayed");
      assert.equal(made.events.filter((e) => e.type === "resync.required").length, 0);
      // The restarted process serves the socket: an answer over it.
      const answered = new Promise((resolve) => made.client.on("agent.completed", resolve));
      made.client.sendMessage("still there");
      assert.equal((await answered).text, "STILL THERE");
    } finally {
      await closeClient(made);
    }
  });
});
