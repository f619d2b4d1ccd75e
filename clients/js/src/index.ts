/** @symphainy/client: a typed client of the Symphainy runtime gateway (docs/client.md). */
export { SymphainyClient, ConnectError } from "./client.js";
export type { ClientOptions, Hints, SocketLike, WebSocketConstructor } from "./client.js";
export { ApiError } from "./errors.js";
export { CloseCode, closeAction } from "./close.js";
export type { CloseAction, CloseCodeValue, FinalEvent } from "./close.js";
export { backoffDelay, BACKOFF_DEFAULTS } from "./backoff.js";
export type { Backoff } from "./backoff.js";
export { TRANSITIONS } from "./state.js";
export type { NextState, SocketState } from "./state.js";
export type { Answer } from "./answers.js";
export type * from "./types.js";
