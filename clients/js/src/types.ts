/** The public types: frames and REST bodies come from src/generated/ (npm run generate). */
import type { Answer } from "./answers.js";
import type { ApiError } from "./errors.js";
import type { FinalEvent } from "./close.js";
import type { SocketState } from "./state.js";
import type { ClientFrames, RuntimeEvents, ServerFrames } from "./generated/frames.js";
import type { components } from "./generated/rest.js";

export type { ClientFrames, RuntimeEvents, ServerFrames };
/** The REST bodies, by schema name: `Schemas["SessionOutput"]`. */
export type Schemas = components["schemas"];
export type { paths } from "./generated/rest.js";

/** A `runtime_event` frame carrying the event `K`. */
export type RuntimeEventFrame<K extends keyof RuntimeEvents = keyof RuntimeEvents> = {
  [E in K]: { type: "runtime_event"; event_type: E; data: RuntimeEvents[E]; timestamp: string; seq?: number; epoch?: string };
}[K];

/** Any frame the server sends. */
export type ServerFrame = ServerFrames[keyof ServerFrames] | RuntimeEventFrame;
/** Any frame a client may send. */
export type ClientFrame = ClientFrames[keyof ClientFrames];

/** What login returned, without the tokens. */
export interface SessionInfo {
  sessionId: string;
  userId: string;
  tenantId: string;
  roles: string[];
  permissions: string[];
  /** ISO 8601: the session's absolute expiry. */
  sessionExpiresAt: string;
  /** ISO 8601: the current access token's expiry (local clock). */
  tokenExpiresAt: string;
}

export interface CloseInfo {
  code: number;
  reason: string;
  wasClean?: boolean;
}

export interface StateChange extends Partial<CloseInfo> {
  state: SocketState;
  previous: SocketState;
  delayMs?: number;
  attempt?: number;
  ready?: ServerFrames["session.ready"];
}

export interface LostInfo extends CloseInfo {
  source: "socket" | "http";
}

/** The client's own events and their payloads. */
export interface ClientEvents {
  /** An agent answer stitched from its snapshot and tokens, at every change. */
  answer: Answer;
  state: StateChange;
  close: CloseInfo & { retry: boolean; delayMs?: number };
  login: SessionInfo;
  logout: Record<string, never>;
  /** After each refresh. */
  tokens: SessionInfo;
  "refresh.failed": { error: ApiError; retryInMs: number };
  /** After a resumed reconnect, once the replay is in. */
  resumed: { recovered: true; since: number; seq: number; replayed: number };
  /** After a reconnect the server could not resume: re-read what you show. */
  "resync.required": { recovered: false; since: number; seq: number; epoch: string };
  /** Every server frame. */
  "*": ServerFrame;
}

type Final = { [K in FinalEvent]: [info: LostInfo] };

/**
 * Every event `on()` takes, with its handler's arguments: server frames by `type` (the
 * frame), runtime events by `event_type` (`data`, then the frame), the client's own.
 */
export type EventMap = { [K in keyof ServerFrames]: [frame: ServerFrames[K]] } & {
  [K in keyof RuntimeEvents]: [data: RuntimeEvents[K], frame: RuntimeEventFrame<K>];
} & { [K in keyof ClientEvents]: [payload: ClientEvents[K]] } & Final;

export type EventName = keyof EventMap;
/**
 * The handler of event `K`. Written as a conditional type so that `K` is inferred from the
 * event's name only, never from the handler (an annotated handler would otherwise pick the
 * event), while a handler may still take fewer arguments than the event gives.
 */
export type Handler<K extends EventName> = EventMap[K] extends infer A extends unknown[] ? (...args: A) => void : never;
