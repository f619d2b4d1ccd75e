// Compile-time checks (tsc in npm test): the event map rejects a wrong name or field.
// Each @ts-expect-error must meet an error, or tsc fails on the unused directive.
import { SymphainyClient, type Schemas, type ServerFrame } from "../../src/index.js";

const client = new SymphainyClient({ baseUrl: "http://localhost:8000" });

client.on("agent.token", (data, frame) => {
  const index: number = data.index;
  const token: string = data.token;
  const kind: "agent.token" = frame.event_type;
  void [index, token, kind];
  // @ts-expect-error a field agent.token does not have
  void data.tokn;
});
// A handler may take fewer arguments than the event gives, or none.
client.on("agent.token", (data) => void data.index);
client.on("agent.completed", () => {});
client.on("execution.progress", (data) => void data.execution_id);
// @ts-expect-error a misspelt event name
client.on("agent.tokn", () => {});
// @ts-expect-error a server frame type that does not exist
client.on("session.redy", () => {});

client.on("session.ready", (frame) => {
  const heartbeat: number = frame.heartbeat_s;
  void heartbeat;
  // @ts-expect-error session.ready has no such field
  void frame.heartbeat;
});
client.on("answer", (answer) => {
  const status: "streaming" | "completed" | "failed" | "cancelled" = answer.status;
  void status;
});
client.on("resync.required", ({ since, seq, epoch }) => void [since + seq, epoch.length]);
client.on("session.ended", ({ code, source }) => void [code, source]);
client.on("*", (frame: ServerFrame) => void frame.type);
client.on("state", ({ state }) => {
  // @ts-expect-error not a state of the socket
  if (state === "opened") return;
});

client.send({ type: "ping" });
client.send({ type: "agent.cancel", message_id: "m" });
// @ts-expect-error an unknown client frame
client.send({ type: "agent.cancl", message_id: "m" });

// The REST bodies come from the OpenAPI schema.
const me: Schemas["Me"] = await client.api<Schemas["Me"]>("GET", "/api/auth/me");
// @ts-expect-error Me has no such field
void me.tenant;
