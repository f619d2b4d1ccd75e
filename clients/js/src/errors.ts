/** An HTTP error answered by the API: `{error, message, details}` with its status. */
export class ApiError extends Error {
  /** HTTP status; 0 when the request never got an answer. */
  readonly status: number;
  /** The machine code, e.g. "session_ended" ("network_error" without an answer). */
  readonly code: string;
  readonly details: Record<string, unknown>;
  /** Seconds to wait, from `Retry-After` (429, 503). */
  retryAfterS?: number;

  constructor(status: number, body: { error?: string; message?: string; details?: unknown } | null) {
    super(body?.message || `HTTP ${status}`);
    this.name = "ApiError";
    this.status = status;
    this.code = body?.error || "http_error";
    this.details = (body?.details as Record<string, unknown>) || {};
  }
}
