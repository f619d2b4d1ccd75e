/**
 * The close codes and what the client does on each: the table in docs/protocol.md
 * ("Close codes"), as code. The socket description (schema/asyncapi.json) lists the
 * server's codes with their names and actions: test/types/close-codes.ts fails to compile
 * when one is missing here, and a unit test compares the actions with closeAction().
 */
export const CloseCode = Object.freeze({
  NORMAL: 1000,
  GOING_AWAY: 1001,
  PROTOCOL_ERROR: 1002,
  ABNORMAL: 1006,
  INVALID_PAYLOAD: 1007,
  MESSAGE_TOO_BIG: 1009,
  SERVER_ERROR: 1011,
  /** The server process is stopping (a deploy, a drain): come back after a short random delay. */
  SERVICE_RESTART: 1012,
  TRY_AGAIN_LATER: 1013,
  /** Sent by this client to reopen with a fresh token, or to drop a socket that timed out. */
  REOPEN: 4000,
  /** An operator closed this one socket; the session is still valid: reconnect (backoff) and resume. */
  DISCONNECTED: 4001,
  UNAUTHENTICATED: 4401,
  SESSION_NOT_FOUND: 4404,
  SESSION_ENDED: 4409,
  RATE_LIMITED: 4429,
} as const);

export type CloseCodeValue = (typeof CloseCode)[keyof typeof CloseCode];

/** The events a close after which reconnecting cannot help raises. */
export type FinalEvent = "auth.required" | "session.not_found" | "session.ended";

export type CloseAction =
  /** Reconnect after a backoff delay; `slow`: the server asked for a pause. */
  | { kind: "retry"; slow: boolean }
  /** Refresh the tokens, then reconnect at once. */
  | { kind: "refresh" }
  /** Stop, forget the tokens and emit `event`. */
  | { kind: "final"; event: FinalEvent };

/**
 * What to do after a socket closed with `code`. `reauthed`: a 4401 was already answered
 * with a refresh since the last `session.ready`, so another one is final.
 */
export function closeAction(code: number, reauthed: boolean): CloseAction {
  switch (code) {
    case CloseCode.UNAUTHENTICATED:
      return reauthed ? { kind: "final", event: "auth.required" } : { kind: "refresh" };
    case CloseCode.SESSION_NOT_FOUND:
      return { kind: "final", event: "session.not_found" };
    case CloseCode.SESSION_ENDED:
      return { kind: "final", event: "session.ended" };
    case CloseCode.RATE_LIMITED:
    case CloseCode.TRY_AGAIN_LATER:
      return { kind: "retry", slow: true };
    default:
      // 1006 (a drop, or a handshake refused), 1011, 1012 (drain), 1000, 1001, 4000, 4001, ...
      return { kind: "retry", slow: false };
  }
}
