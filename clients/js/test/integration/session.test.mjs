// Login, the socket's handshake (its Origin), an agent answer and its cancel, against a
// real server (see live.mjs).
import assert from "node:assert/strict";
import { describe, test } from "node:test";

import {
  bounded, ApiError, closeClient, connectedClient, live, makeClient, newUser, serverUrl, until,
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

  test("the server refuses a socket without the page's Origin", bounded(), async () => {
    // Node's WebSocket sends no Origin of its own; `makeClient` gives it the page's, and
    // without it (the only difference from the test above) the handshake is refused.
    const user = await newUser();
    const made = makeClient(serverUrl(), { origin: null });
    try {
      await made.client.login(user.email, user.password);
      const ready = made.client.connect();
      ready.catch(() => {});
      const refused = await until(() => made.closes.find((close) => close.code === 1006), "the refused handshake",
        { detail: () => JSON.stringify(made.closes) });
      assert.equal(refused.retry, true);
      assert.equal(made.frames.filter((f) => f.type === "session.ready").length, 0);
      // (The browser client retries a refused handshake, as a browser cannot tell it from
      // a drop, and its connect() stays pending, even after a disconnect() between two
      // attempts.)
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
