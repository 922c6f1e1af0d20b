import { useSyncExternalStore } from "react";
import {
  conversationReducer,
  emptyConversation,
  type ChatEvent,
  type Conversation,
  type ConversationAction,
} from "./conversation";

// Conversations live outside React so an answer keeps growing while its chat
// is not on screen, and one socket can feed every chat of the page.

const conversations = new Map<string, Conversation>();
// Deltas arrive far faster than a screen refreshes: they are gathered and
// handed to React at most once per animation frame.
const pendingDeltas = new Map<string, string>();
const listeners = new Map<string, Set<() => void>>();

export function getConversation(chatId: string): Conversation {
  return conversations.get(chatId) ?? emptyConversation;
}

export function dispatch(chatId: string, action: ConversationAction): void {
  // Text still waiting for the next frame belongs to the answer that ended:
  // delivered later, it would start a new one.
  if (action.type === "disconnected") pendingDeltas.delete(chatId);
  const before = getConversation(chatId);
  const after = conversationReducer(before, action);
  if (after === before) return;
  conversations.set(chatId, after);
  listeners.get(chatId)?.forEach((l) => l());
}

function subscribe(chatId: string, listener: () => void): () => void {
  let set = listeners.get(chatId);
  if (!set) listeners.set(chatId, (set = new Set()));
  set.add(listener);
  return () => set.delete(listener);
}

export function useConversation(chatId: string | undefined): Conversation {
  return useSyncExternalStore(
    (l) => (chatId ? subscribe(chatId, l) : () => {}),
    () => (chatId ? getConversation(chatId) : emptyConversation),
  );
}

/** Every chat with an answer under way: a closed socket ends them all. */
export function liveChats(): string[] {
  const ids = new Set(pendingDeltas.keys());
  for (const [id, c] of conversations) if (c.live || c.pendingUser !== null) ids.add(id);
  return [...ids];
}

let frame: number | null = null;

const schedule: (fn: () => void) => number =
  typeof requestAnimationFrame === "function"
    ? (fn) => requestAnimationFrame(fn)
    : (fn) => setTimeout(fn, 16) as unknown as number;

function flushDeltas(): void {
  frame = null;
  const batch = [...pendingDeltas];
  pendingDeltas.clear();
  for (const [chatId, text] of batch) {
    dispatch(chatId, { type: "event", event: { type: "delta", chat_id: chatId, text } });
  }
}

function flushChat(chatId: string): void {
  const text = pendingDeltas.get(chatId);
  if (text === undefined) return;
  pendingDeltas.delete(chatId);
  dispatch(chatId, { type: "event", event: { type: "delta", chat_id: chatId, text } });
}

/** Feeds one event from the server into its chat's conversation. */
export function receive(event: ChatEvent): void {
  const chatId = event.chat_id;
  if (!chatId) return;
  if (event.type === "delta") {
    pendingDeltas.set(chatId, (pendingDeltas.get(chatId) ?? "") + event.text);
    if (frame === null) frame = schedule(flushDeltas);
    return;
  }
  // Anything else comes after the text before it.
  flushChat(chatId);
  dispatch(chatId, { type: "event", event });
}

/** Forgets every conversation (on sign-out). */
export function resetConversations(): void {
  conversations.clear();
  pendingDeltas.clear();
}
