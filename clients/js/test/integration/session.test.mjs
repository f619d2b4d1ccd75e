// Login and register, the socket's handshake (its Origin, its timeout), an agent answer and
// its cancel, against a real server (see live.mjs).
import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { randomBytes, randomUUID } from "node:crypto";

import {
  ApiError, ConnectError, TcpProxy, bounded, closeClient, connectedClient, live, makeClient, newUser, serverUrl, until,
} from "./live.mjs";

describe("a client in Node", live, () => {
  test("logs in and opens the login's session", bounded(), async () => {
    const base = serverUrl();
    const user = await newUser();
    const made = makeClient(base);
    try {
      const session = await made.client.login(user.email, user.password);
      assert.equal(session.userId, user.user_id);
      assert.match(session.sessionId, /^[0-9a-f-]{36}$/);
      assert.ok(made.client.loggedIn);

      const ready = await made.client.connect();
      assert.equal(ready.type, "session.ready");
      assert.equal(ready.session_id, session.sessionId);
      assert.equal(made.client.state, "open");
      assert.equal(made.sockets.length, 1);
      const url = new URL(made.sockets[0].url);
      assert.equal(url.searchParams.get("session_id"), session.sessionId);
      assert.ok(!made.sockets[0].url.includes("token"), "no token in the socket's URL");
      assert.equal(made.sockets[0].ws.protocol, "symphainy.v1");
      assert.equal(made.sockets[0].headers.Origin, new URL(base).origin, "the origin option, sent");

      // The API with the client's token: the same session.
      const me = await made.client.api("GET", "/api/auth/me");
      assert.equal(me.session_id, session.sessionId);
    } finally {
      await closeClient(made);
    }
    assert.equal(made.client.loggedIn, false);
  });

  test("a wrong password is an ApiError 401, and the client stays logged out", bounded(), async () => {
    const user = await newUser();
    const made = makeClient(serverUrl());
    await assert.rejects(made.client.login(user.email, "not the password"), (error) => {
      assert.ok(error instanceof ApiError, String(error));
      assert.equal(error.status, 401);
      return true;
    });
    assert.equal(made.client.loggedIn, false);
    await assert.rejects(made.client.connect(), /log/i);
  });

  test("without the page's Origin the handshake is refused: connect() rejects, it does not hang", bounded(), async () => {
    // Node's WebSocket sends no Origin of its own: the `origin` option is the only
    // difference from the first test.
    const user = await newUser();
    // A connect timeout past the test's own: the refusal itself must reject connect()
    // (Node 20's WebSocket reports it with an error and no close).
    const made = makeClient(serverUrl(), { origin: null, connectTimeoutMs: 120_000 });
    try {
      await made.client.login(user.email, user.password);
      await assert.rejects(made.client.connect(), (error) => {
        assert.ok(error instanceof ConnectError, String(error));
        assert.equal(error.retry, true); // a browser cannot tell a refusal from a drop
        return true;
      });
      assert.ok(!made.sockets[0].headers?.Origin, "no Origin sent");
      assert.equal(made.frames.filter((f) => f.type === "session.ready").length, 0);
      made.client.disconnect();
      assert.equal(made.client.state, "idle");
    } finally {
      await closeClient(made);
    }
  });

  test("connect() rejects after connectTimeoutMs against a listener that never answers", bounded(), async () => {
    const proxy = await new TcpProxy(serverUrl()).listen();
    const user = await newUser();
    const made = makeClient(proxy.url, { connectTimeoutMs: 500 });
    try {
      await made.client.login(user.email, user.password); // through the proxy, answered
      proxy.hold(); // from now on it accepts connections and never answers them
      const accepted = proxy.accepted;
      const started = Date.now();
      await assert.rejects(made.client.connect(), (error) => {
        assert.ok(error instanceof ConnectError, String(error));
        assert.equal(error.retry, true);
        return true;
      });
      assert.ok(Date.now() - started >= 500, "not before the timeout");
      assert.ok(proxy.accepted > accepted, "the socket reached the listener");
      assert.ok(["reconnecting", "connecting"].includes(made.client.state), made.client.state);
      // Once the listener answers, the client's own retries get in.
      proxy.release();
      const ready = await until(() => made.frames.find((f) => f.type === "session.ready"), "the retry's session.ready");
      assert.equal(ready.session_id, made.client.session.sessionId);
    } finally {
      proxy.release(); // the logout goes through it
      await closeClient(made);
      await proxy.close();
    }
  });

  test("register() creates an account and opens its first session", bounded(), async () => {
    // Letters the email does not have: Django's similarity rule compares the two (lower-cased).
    const password = () => Array.from(randomBytes(16), (b) => "ghijkqrstuvwyz"[b % 14]).join("");
    const made = makeClient(serverUrl());
    try {
      const email = `node-${randomUUID()}@example.com`;
      const session = await made.client.register(email, password(), { name: "Node", tenantName: "Node's" });
      assert.match(session.sessionId, /^[0-9a-f-]{36}$/);
      assert.ok(session.roles.includes("owner"), JSON.stringify(session.roles));
      const ready = await made.client.connect();
      assert.equal(ready.session_id, session.sessionId);
      const me = await made.client.api("GET", "/api/auth/me");
      assert.equal(me.email, email);
      assert.equal(me.tenant_name, "Node's");
      // Taken: 409, and the client stays as it was.
      const other = makeClient(serverUrl());
      await assert.rejects(other.client.register(email, password()), (error) => {
        assert.ok(error instanceof ApiError, String(error));
        assert.equal(error.status, 409);
        return true;
      });
      assert.equal(other.client.loggedIn, false);
    } finally {
      await closeClient(made);
    }
  });

  test("streams an agent's answer, stitched", bounded(), async () => {
    const made = await connectedClient(serverUrl());
    try {
      const answers = [];
      made.client.on("answer", (answer) => answers.push(answer));
      made.client.sendMessage("hello there node");
      const done = await until(() => answers.find((a) => a.status === "completed"), "the completed answer");
      assert.equal(done.text, "HELLO THERE NODE");
      const streamed = answers.filter((a) => a.messageId === done.messageId && a.status === "streaming");
      assert.ok(streamed.length >= 2, "the answer grew token by token");
      assert.deepEqual(made.client.answers, []);
    } finally {
      await closeClient(made);
    }
  });

  test("cancelAnswer stops an answer midway: agent.cancelled, never agent.completed", bounded(), async () => {
    const made = await connectedClient(serverUrl());
    try {
      const words = Array.from({ length: 200 }, (_, n) => `word${n}`);
      const whole = words.join(" ").toUpperCase();
      const answers = [];
      made.client.on("answer", (answer) => answers.push(answer));
      made.client.sendMessage(words.join(" "));
      const started = await until(() => answers.find((a) => a.status === "streaming" && a.text), "the first token");
      made.client.cancelAnswer(started.messageId);

      const cancelled = await until(() => answers.find((a) => a.status === "cancelled"), "the cancelled answer");
      assert.equal(cancelled.messageId, started.messageId);
      assert.ok(whole.startsWith(cancelled.text) && cancelled.text.length < whole.length, cancelled.text);
      const ofIt = made.frames.filter((f) => f.type === "runtime_event" && f.data?.message_id === started.messageId);
      assert.equal(ofIt.filter((f) => f.event_type === "agent.cancelled").length, 1);
      assert.equal(ofIt.filter((f) => f.event_type === "agent.completed").length, 0);
      // The socket goes on: the next answer arrives whole.
      made.client.sendMessage("after the cancel");
      const next = await until(() => answers.find((a) => a.status === "completed"), "the next answer");
      assert.equal(next.text, "AFTER THE CANCEL");
    } finally {
      await closeClient(made);
    }
  });
});
