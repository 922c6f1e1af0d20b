import { describe, expect, it } from "vitest";
import { render, screen, within } from "@testing-library/react";
import { QueryClient, QueryClientProvider } from "@tanstack/react-query";
import type { ReactNode } from "react";
import {
  conversationReducer,
  emptyConversation,
  type ChatEvent,
  type Conversation,
  type ConversationAction,
  type Message,
} from "../lib/conversation";
import { MessageList } from "./MessageList";

const chat_id = "c1";
const at = (s: number) => new Date(Date.UTC(2026, 0, 1, 0, 0, s)).toISOString();

const user: Message = { id: "m1", chat_id, role: "user", content: "Hi there", status: "complete", created_at: at(1), annotations: [] };
const pending: Message = { id: "m2", chat_id, role: "assistant", content: "", status: "pending", created_at: at(2), model: "gemma", annotations: [] };

function wrapper({ children }: { children: ReactNode }) {
  return <QueryClientProvider client={new QueryClient()}>{children}</QueryClientProvider>;
}

function show(state: Conversation) {
  return render(<MessageList conversation={state} onRegenerate={() => undefined} />, { wrapper });
}

const ev = (event: ChatEvent): ConversationAction => ({ type: "event", event });

describe("conversation events in the message list", () => {
  it("shows the queue position, then the growing text, then the usage", () => {
    let state = conversationReducer(emptyConversation, { type: "sending", content: "Hi there" });
    const view = show(state);
    expect(screen.getByText("Hi there")).toBeInTheDocument();

    for (const action of [
      ev({ type: "user_message", chat_id, message: user }),
      ev({ type: "assistant_message", chat_id, message: pending }),
      ev({ type: "queued", chat_id, position: 3 }),
    ]) {
      state = conversationReducer(state, action);
    }
    view.rerender(<MessageList conversation={state} onRegenerate={() => undefined} />);
    expect(screen.getByText("Waiting — 2 ahead of you")).toBeInTheDocument();
    expect(screen.getAllByText("Hi there")).toHaveLength(1);

    state = conversationReducer(state, ev({ type: "queued", chat_id, position: 1 }));
    view.rerender(<MessageList conversation={state} onRegenerate={() => undefined} />);
    expect(screen.getByText("Waiting — you are next")).toBeInTheDocument();

    state = conversationReducer(state, ev({ type: "started", chat_id, prompt_tokens: 9 }));
    state = conversationReducer(state, ev({ type: "delta", chat_id, text: "Hello " }));
    state = conversationReducer(state, ev({ type: "delta", chat_id, text: "**world**" }));
    view.rerender(<MessageList conversation={state} onRegenerate={() => undefined} />);
    expect(screen.queryByText(/Waiting/)).not.toBeInTheDocument();
    expect(screen.getByText("world").tagName).toBe("STRONG");
    const log = screen.getByRole("log", { name: "Conversation" });
    expect(log).toHaveAttribute("aria-live", "off");
    expect(screen.queryByRole("button", { name: "Regenerate" })).not.toBeInTheDocument();

    const done: Message = {
      ...pending,
      content: "Hello **world**",
      status: "complete",
      usage: { prompt_tokens: 9, cached_tokens: 0, completion_tokens: 12, tokens_per_second: 41.26, time_to_first_token_ms: 350 },
    };
    state = conversationReducer(state, ev({ type: "done", chat_id, message: done }));
    view.rerender(<MessageList conversation={state} onRegenerate={() => undefined} />);
    expect(screen.getByText("12 tokens")).toBeInTheDocument();
    expect(screen.getByText("41.3 tokens/s")).toBeInTheDocument();
    expect(screen.getByText("first token in 350 ms")).toBeInTheDocument();
    expect(screen.queryByText(/from cache/)).not.toBeInTheDocument();
    expect(screen.getByRole("button", { name: "Regenerate" })).toBeInTheDocument();
    expect(log).toHaveAttribute("aria-live", "polite");
    expect(screen.getByRole("status")).toHaveTextContent("The answer is complete.");
  });

  it("says how much of the prompt came from the cache", () => {
    const answer: Message = {
      ...pending,
      content: "Again",
      status: "complete",
      usage: { prompt_tokens: 1412, cached_tokens: 1398, completion_tokens: 5, tokens_per_second: 30, time_to_first_token_ms: 40 },
    };
    show(conversationReducer(emptyConversation, { type: "loaded", messages: [user, answer] }));
    expect(screen.getByText("1,398 of 1,412 prompt tokens from cache")).toBeInTheDocument();
  });

  it("marks a stopped answer and explains a failed one", () => {
    let state = conversationReducer(emptyConversation, { type: "loaded", messages: [user, pending] });
    state = conversationReducer(state, ev({ type: "delta", chat_id, text: "Partial" }));
    state = conversationReducer(state, ev({ type: "done", chat_id, message: { ...pending, content: "Partial", status: "cancelled" } }));
    const view = show(state);
    expect(screen.getByText("Stopped")).toBeInTheDocument();
    expect(screen.getByText("Partial")).toBeInTheDocument();

    state = conversationReducer(state, { type: "regenerating" });
    state = conversationReducer(state, ev({ type: "assistant_message", chat_id, message: pending }));
    state = conversationReducer(
      state,
      ev({
        type: "error",
        chat_id,
        error: { code: "unavailable", message: "the model failed to load" },
        message: { ...pending, status: "failed", error: "the model failed to load" },
      }),
    );
    view.rerender(<MessageList conversation={state} onRegenerate={() => undefined} />);
    expect(screen.getByRole("alert")).toHaveTextContent("The model could not answer: the model failed to load");
  });

  it("shows the notes plugins stored under the answer, each with its plugin", () => {
    const answer: Message = {
      ...pending,
      content: "Paris is the capital.",
      status: "complete",
      annotations: [
        { plugin: "rag-docs", text: "Sources: france.md, cities.md" },
        { plugin: "pii-redact", text: "2 e-mail addresses were masked" },
      ],
    };
    show(conversationReducer(emptyConversation, { type: "loaded", messages: [user, answer] }));
    const notes = screen.getByRole("list", { name: "Notes from plugins" });
    const items = within(notes).getAllByRole("listitem");
    expect(items).toHaveLength(2);
    expect(items[0]).toHaveTextContent("Note from rag-docs:");
    expect(items[0]).toHaveTextContent("Sources: france.md, cities.md");
    expect(items[1]).toHaveTextContent("Note from pii-redact:");
    expect(items[1]).toHaveTextContent("2 e-mail addresses were masked");
  });

  it("shows no notes while the answer streams, nor for answers without any", () => {
    const annotated: Message = { ...pending, annotations: [{ plugin: "rag-docs", text: "Sources: a.md" }] };
    let state = conversationReducer(emptyConversation, { type: "loaded", messages: [user] });
    state = conversationReducer(state, ev({ type: "assistant_message", chat_id, message: annotated }));
    state = conversationReducer(state, ev({ type: "delta", chat_id, text: "Partial" }));
    const view = show(state);
    expect(screen.queryByRole("list", { name: "Notes from plugins" })).not.toBeInTheDocument();

    state = conversationReducer(state, ev({ type: "done", chat_id, message: { ...pending, content: "Done", status: "complete" } }));
    view.rerender(<MessageList conversation={state} onRegenerate={() => undefined} />);
    expect(screen.getByText("Done")).toBeInTheDocument();
    expect(screen.queryByRole("list", { name: "Notes from plugins" })).not.toBeInTheDocument();
  });

  it("gives a refused message back to the composer", () => {
    let state = conversationReducer(emptyConversation, { type: "sending", content: "Keep me" });
    state = conversationReducer(
      state,
      ev({ type: "error", chat_id, error: { code: "quota_exceeded", message: "daily quota spent" } }),
    );
    expect(state.restoreDraft).toBe("Keep me");
    expect(state.pendingUser).toBeNull();
    expect(state.live).toBeNull();
    expect(state.failure?.code).toBe("quota_exceeded");
  });

  it("keeps messages that arrived over the socket when an older list loads", () => {
    let state = conversationReducer(emptyConversation, ev({ type: "user_message", chat_id, message: user }));
    state = conversationReducer(state, ev({ type: "assistant_message", chat_id, message: pending }));
    state = conversationReducer(state, { type: "loaded", messages: [] });
    expect(state.messages.map((m) => m.id)).toEqual(["m1", "m2"]);
    expect(state.live?.messageId).toBe("m2");
  });
});
