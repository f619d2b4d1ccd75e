/**
 * The socket's states and the only transitions between them.
 * - idle: no socket wanted (never connected, or closed by this client);
 * - connecting: a socket is being opened (or the tokens refreshed first);
 * - open: `session.ready` arrived;
 * - reconnecting: waiting before the next attempt (or refreshing after 4401);
 * - closed: given up after a final close code, or the session was lost over HTTP; the
 *   tokens are forgotten (log in again).
 */
export type SocketState = "idle" | "connecting" | "open" | "reconnecting" | "closed";

export const TRANSITIONS = {
  idle: ["connecting", "closed"],
  connecting: ["open", "reconnecting", "closed", "idle"],
  open: ["reconnecting", "closed", "idle"],
  reconnecting: ["connecting", "reconnecting", "closed", "idle"],
  closed: ["connecting", "idle"],
} as const satisfies Record<SocketState, readonly SocketState[]>;

/** The states `from` may move to. */
export type NextState<From extends SocketState> = (typeof TRANSITIONS)[From][number];

export function transitionAllowed(from: SocketState, to: SocketState): boolean {
  return (TRANSITIONS[from] as readonly SocketState[]).includes(to);
}
