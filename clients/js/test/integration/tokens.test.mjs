// Tokens and the session's end, against real servers (see live.mjs): 4401 (the token
// expired unrefreshed) → refresh, then reconnect to the same session; 4409 (the session
// ended elsewhere) → stop for good; a reload keeps the session through the refresh cookie.
import assert from "node:assert/strict";
import { describe, test } from "node:test";

import {
  CloseCode, api, bounded, closeClient, connectedClient, cookieFetch, live, loginAside, makeClient, newUser, serverUrl,
  until,
} from "./live.mjs";

describe("a client in Node", live, () => {
  test("4401: refreshes its tokens, then reconnects to the same session", bounded(), async () => {
    // Access tokens live 3 s on this server. The client's refreshes fail while it is
    // "asleep" (a laptop lid closed: the network is gone), so the server closes the socket
    // with 4401 at the token's expiry; the client wakes with that close.
    let asleep = false;
    const refreshes = [];
    const gatedFetch = (url, init) => {
      if (String(url).endsWith("/api/auth/refresh")) {
        refreshes.push({ asleep });
        if (asleep) return Promise.reject(new TypeError("fetch failed: asleep"));
      }
      return fetch(url, init);
    };
    const made = await connectedClient(serverUrl("short_token"), { fetch: gatedFetch });
    try {
      const first = made.ready;
      made.client.on("close", (close) => {
        if (close.code === CloseCode.UNAUTHENTICATED) asleep = false;
      });
      asleep = true;
      const expired = await until(() => made.closes.find((c) => c.code === CloseCode.UNAUTHENTICATED), "4401",
        { detail: () => JSON.stringify(made.closes) });
      assert.equal(expired.retry, true);
      assert.ok(refreshes.some((r) => r.asleep), "the client tried to refresh before expiry");

      const ready = await until(() => made.frames.filter((f) => f.type === "session.ready")[1], "the second session.ready",
        { detail: () => JSON.stringify({ closes: made.closes, refreshes }) });
      assert.equal(ready.session_id, first.session_id);
      assert.ok(refreshes.some((r) => !r.asleep), "refreshed after the 4401");
      assert.ok(made.events.some((e) => e.type === "tokens"), "new tokens kept");
      assert.equal(made.closes.filter((c) => c.code === CloseCode.UNAUTHENTICATED).length, 1);
      assert.equal(made.events.filter((e) => e.type === "auth.required").length, 0);
      assert.equal(made.client.state, "open");
      assert.equal(made.sockets.length, 2);

      // The new token works on the socket and over HTTP.
      const answered = new Promise((resolve) => made.client.on("agent.completed", resolve));
      made.client.sendMessage("awake again");
      assert.equal((await answered).text, "AWAKE AGAIN");
      const me = await made.client.api("GET", "/api/auth/me");
      assert.equal(me.session_id, first.session_id);
    } finally {
      asleep = false;
      await closeClient(made);
    }
  });

  test("4409: a session ended elsewhere stops the client for good", bounded(), async () => {
    const base = serverUrl();
    // No backoff at all: a reconnect, were there one, would start on the next timer turn.
    const made = await connectedClient(base, { backoff: { initialMs: 0, maxMs: 0, factor: 2, slowDownMs: 0 } });
    try {
      const sessionId = made.ready.session_id;
      const ended = new Promise((resolve) => made.client.on("session.ended", resolve));
      const aside = await loginAside(base, made.user);
      const { status } = await api(base, "DELETE", `/api/session/${sessionId}`, { token: aside.access_token });
      assert.equal(status, 204);

      const info = await ended;
      assert.equal(info.code, CloseCode.SESSION_ENDED);
      assert.deepEqual(made.closes.map((c) => [c.code, c.retry]), [[CloseCode.SESSION_ENDED, false]]);
      assert.equal(made.client.state, "closed");
      assert.equal(made.client.loggedIn, false);
      await assert.rejects(made.client.connect(), /log/i);

      // Until the server has removed the socket's record (and past the turn a reconnect
      // would have taken): still the one socket, and the server sees none on the session.
      await new Promise((resolve) => setTimeout(resolve, 0));
      await until(async () => {
        const { body } = await api(base, "GET", `/api/session/${sessionId}`, { token: aside.access_token });
        assert.equal(body.status, "ended");
        return body.connections === 0;
      }, "the server to count no socket on the session");
      assert.equal(made.sockets.length, 1);
    } finally {
      await closeClient(made);
    }
  });

  test("restore() after a reload takes the same session over through the refresh cookie", bounded(), async () => {
    const base = serverUrl();
    const browser = cookieFetch(); // one browser profile: its cookies outlive the page
    const user = await newUser();
    const before = makeClient(base, { fetch: browser, refreshCookie: true });
    const after = makeClient(base, { fetch: browser, refreshCookie: true });
    try {
      const session = await before.client.login(user.email, user.password);
      assert.ok(browser.jar.size === 1, "the refresh token went into a cookie");
      await before.client.connect();
      // A refresh through the cookie rotates it, and the open socket takes the new access
      // token (auth.refreshed) and stays up.
      await before.client.refresh();
      await until(() => before.frames.find((f) => f.type === "auth.refreshed"), "auth.refreshed");
      assert.equal(before.sockets.length, 1);
      assert.equal(before.client.state, "open");
      // The reload: the page and its client are gone without a logout; a new page's client
      // has nothing in memory.
      before.client.disconnect();
      assert.equal(after.client.loggedIn, false);
      const restored = await after.client.restore();
      assert.equal(restored.sessionId, session.sessionId);
      assert.equal(restored.userId, user.user_id);
      const ready = await after.client.connect();
      assert.equal(ready.session_id, session.sessionId);
      const answered = new Promise((resolve) => after.client.on("agent.completed", resolve));
      after.client.sendMessage("same session");
      assert.equal((await answered).text, "SAME SESSION");

      // After a logout the cookie is gone and there is nothing to restore.
      await after.client.logout();
      const third = makeClient(base, { fetch: browser, refreshCookie: true });
      assert.equal(await third.client.restore(), null);
      assert.equal(third.client.loggedIn, false);
      // Without a cookie at all, neither.
      assert.equal(await makeClient(base, { fetch: cookieFetch(), refreshCookie: true }).client.restore(), null);
    } finally {
      await closeClient(before);
      await closeClient(after);
    }
  });
});
