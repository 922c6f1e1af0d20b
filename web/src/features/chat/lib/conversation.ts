import type { ErrorBody, Schemas } from "@/lib/api";

export type Message = Schemas["Message"];
export type ChatEvent = Schemas["ChatEvent"];

/** The answer being written in a chat, as the socket tells it. */
export type LiveAnswer = {
  /** The stored pending answer, once the server has said which it is. */
  messageId: string | null;
  phase: "sending" | "waiting" | "queued" | "streaming";
  /** Place in the model's queue, 1 = next. */
  queuePosition: number | null;
  text: string;
};

/** What the page shows of one chat: stored messages plus the live answer. */
export type Conversation = {
  messages: Message[];
  live: LiveAnswer | null;
  /** A message sent but not yet confirmed as stored. */
  pendingUser: string | null;
  /** A message the server refused before storing it: back into the composer. */
  restoreDraft: string | null;
  /** Why the last request went wrong, when no stored answer carries it. */
  failure: ErrorBody | null;
  /** Error bodies of answers that failed while this page watched, by message id. */
  answerErrors: Record<string, ErrorBody>;
  /** The id of the last answer that finished while this page watched. */
  finished: string | null;
};

export type ConversationAction =
  | { type: "loaded"; messages: Message[] }
  | { type: "sending"; content: string }
  | { type: "regenerating" }
  | { type: "event"; event: ChatEvent }
  | { type: "disconnected" }
  | { type: "draft-restored" }
  | { type: "failure-dismissed" };

export const emptyConversation: Conversation = {
  messages: [],
  live: null,
  pendingUser: null,
  restoreDraft: null,
  failure: null,
  answerErrors: {},
  finished: null,
};

function upsert(messages: Message[], message: Message): Message[] {
  const index = messages.findIndex((m) => m.id === message.id);
  if (index === -1) return [...messages, message];
  const next = messages.slice();
  next[index] = message;
  return next;
}

/** The pending answer a delta belongs to when the page joined mid-answer. */
function lastPending(messages: Message[]): string | null {
  for (let i = messages.length - 1; i >= 0; i--) {
    if (messages[i].role === "assistant" && messages[i].status === "pending") return messages[i].id;
  }
  return null;
}

/** Applies one thing that happened to a chat. Pure: tests feed it events. */
export function conversationReducer(state: Conversation, action: ConversationAction): Conversation {
  switch (action.type) {
    case "loaded": {
      let live = state.live;
      if (live?.messageId) {
        const stored = action.messages.find((m) => m.id === live!.messageId);
        if (stored && stored.status !== "pending") live = null;
        else if (stored && stored.content.length > live.text.length) live = { ...live, text: stored.content };
      }
      // Messages that arrived over the socket after the list was read stay.
      const known = new Set(action.messages.map((m) => m.id));
      const newest = action.messages.at(-1)?.created_at;
      const extra = state.messages.filter((m) => !known.has(m.id) && (!newest || m.created_at >= newest));
      return { ...state, messages: [...action.messages, ...extra], live };
    }
    case "sending":
      return {
        ...state,
        pendingUser: action.content,
        live: { messageId: null, phase: "sending", queuePosition: null, text: "" },
        failure: null,
        restoreDraft: null,
      };
    case "regenerating":
      return {
        ...state,
        live: { messageId: null, phase: "sending", queuePosition: null, text: "" },
        failure: null,
      };
    case "disconnected": {
      // A closed socket stops its answers; the stored chat says how they ended.
      if (!state.live && state.pendingUser === null) return state;
      return {
        ...state,
        live: null,
        pendingUser: null,
        restoreDraft: state.pendingUser ?? state.restoreDraft,
      };
    }
    case "draft-restored":
      return { ...state, restoreDraft: null };
    case "failure-dismissed":
      return { ...state, failure: null };
    case "event":
      return applyEvent(state, action.event);
  }
}

function applyEvent(state: Conversation, event: ChatEvent): Conversation {
  switch (event.type) {
    case "user_message":
      return { ...state, messages: upsert(state.messages, event.message), pendingUser: null };
    case "assistant_message":
      return {
        ...state,
        messages: upsert(state.messages, event.message),
        live: { messageId: event.message.id, phase: "waiting", queuePosition: null, text: event.message.content },
        finished: null,
      };
    case "queued": {
      const live = state.live ?? { messageId: lastPending(state.messages), phase: "queued", queuePosition: null, text: "" };
      return { ...state, live: { ...live, phase: "queued", queuePosition: event.position } };
    }
    case "started": {
      const live = state.live ?? { messageId: lastPending(state.messages), phase: "waiting", queuePosition: null, text: "" };
      return { ...state, live: { ...live, phase: "waiting", queuePosition: null } };
    }
    case "delta": {
      const live = state.live ?? { messageId: lastPending(state.messages), phase: "streaming", queuePosition: null, text: "" };
      return { ...state, live: { ...live, phase: "streaming", queuePosition: null, text: live.text + event.text } };
    }
    case "done":
      return {
        ...state,
        messages: upsert(state.messages, event.message),
        live: null,
        pendingUser: null,
        finished: event.message.id,
      };
    case "error": {
      if (event.message) {
        return {
          ...state,
          messages: upsert(state.messages, event.message),
          live: null,
          pendingUser: null,
          answerErrors: { ...state.answerErrors, [event.message.id]: event.error },
          finished: null,
        };
      }
      // Refused before anything was stored: the typed text goes back.
      return {
        ...state,
        live: null,
        pendingUser: null,
        restoreDraft: state.pendingUser ?? state.restoreDraft,
        failure: event.error,
      };
    }
  }
}

/** The messages as shown: the live answer's text in place of its stored one. */
export function visibleMessages(state: Conversation): Message[] {
  const live = state.live;
  if (!live?.messageId) return state.messages;
  return state.messages.map((m) => (m.id === live.messageId ? { ...m, content: live.text, status: "pending" } : m));
}

/** Whether an answer is being asked for or written in this chat. */
export function isAnswering(state: Conversation): boolean {
  return state.live !== null;
}
