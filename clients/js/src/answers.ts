/** An agent answer as stitched so far from its `agent.snapshot` and `agent.token` events. */
export interface Answer {
  messageId: string;
  conversationId?: string;
  /** The text so far (the whole text once ended). */
  text: string;
  /** The index of the next token this answer takes. */
  nextIndex: number;
  status: "streaming" | "completed" | "failed" | "cancelled";
  /** Why it failed (`error`, `interrupted`, `session_ended`). */
  reason?: string;
}

/** The fields of the agent events the stitching reads. */
interface AgentData {
  message_id?: string;
  conversation_id?: string;
  text?: string;
  next_index?: number;
  index?: number;
  token?: string;
  reason?: string;
  [other: string]: unknown;
}

const TERMINAL = new Set(["agent.completed", "agent.failed", "agent.cancelled"]);

/**
 * The answers in flight, keyed by `message_id`. A snapshot (a socket that opened or came
 * back mid-answer) gives the text so far and the next token's index; a token is appended
 * only when its index is the next one, so none is missed silently (a gap is left to the
 * terminal event, which carries the whole text) and none is taken twice; a terminal event
 * ends the answer.
 */
export class AnswerStitcher {
  private readonly inFlight = new Map<string, Answer>();

  /** Take one agent event; returns the answer when it changed, else null. */
  track(kind: string, data: AgentData | null | undefined): Answer | null {
    const id = data?.message_id;
    if (!data || !id) return null;
    const known = this.inFlight.get(id);
    const answer: Answer = known ?? { messageId: id, conversationId: data.conversation_id, text: "", nextIndex: 0, status: "streaming" };
    if (kind === "agent.snapshot") {
      if (typeof data.text !== "string" || !Number.isInteger(data.next_index)) return null;
      answer.text = data.text;
      answer.nextIndex = data.next_index as number;
    } else if (kind === "agent.token") {
      if (data.index !== answer.nextIndex || typeof data.token !== "string") return null; // repeat or gap
      answer.text += data.token;
      answer.nextIndex += 1;
    } else if (TERMINAL.has(kind)) {
      answer.status = kind.slice("agent.".length) as Answer["status"];
      if (typeof data.text === "string") answer.text = data.text;
      if (data.reason) answer.reason = data.reason;
      this.inFlight.delete(id);
      return { ...answer };
    } else if (kind !== "agent.started" || known) {
      return null;
    }
    this.inFlight.set(id, answer);
    return { ...answer };
  }

  /** Forget every answer (a new socket's snapshots say what is in flight). */
  clear(): void {
    this.inFlight.clear();
  }

  list(): Answer[] {
    return [...this.inFlight.values()].map((answer) => ({ ...answer }));
  }
}
