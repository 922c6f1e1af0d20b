import { describe, expect, it } from "vitest";
import { QueryClient } from "@tanstack/react-query";
import { applyModelEvent } from "./events";
import { modelKeys, type ModelView } from "./models";

const model = (over: Partial<ModelView> = {}): ModelView => ({
  id: "m1",
  name: "gemma",
  backend: "llama",
  kind: "chat",
  description: "",
  status: "downloading",
  usable: false,
  context_length: 0,
  created_at: "2026-01-01T00:00:00Z",
  updated_at: "2026-01-01T00:00:00Z",
  ...over,
});

const frame = (event: string, data: object) => ({ event, data: JSON.stringify({ type: event, ...data }) });

function cache() {
  const client = new QueryClient({ defaultOptions: { queries: { retry: false } } });
  client.setQueryData(modelKeys.list(), [model(), model({ id: "m2", name: "other", status: "ready" })]);
  client.setQueryData(modelKeys.one("m1"), model());
  return client;
}

describe("applyModelEvent", () => {
  it("puts download progress into the list and the detail", () => {
    const client = cache();
    applyModelEvent(
      client,
      frame("model_download", { model_id: "m1", bytes: 100, total: 400, rate: 50, eta_secs: 6 }),
    );
    const list = client.getQueryData<ModelView[]>(modelKeys.list())!;
    expect(list[0].progress).toMatchObject({ bytes: 100, total: 400, rate: 50, eta_secs: 6, active: true });
    expect(list[1].progress).toBeUndefined();
    expect(client.getQueryData<ModelView>(modelKeys.one("m1"))!.progress?.bytes).toBe(100);
  });

  it("marks a failed model with its reason and drops the bar", () => {
    const client = cache();
    applyModelEvent(client, frame("model_download", { model_id: "m1", bytes: 1, total: 2, rate: 1 }));
    applyModelEvent(client, frame("model_status", { model_id: "m1", status: "failed", error: "404 Not Found" }));
    const one = client.getQueryData<ModelView>(modelKeys.one("m1"))!;
    expect(one).toMatchObject({ status: "failed", error: "404 Not Found", progress: null });
  });

  it("removes a deleted model and says when the stream ends", () => {
    const client = cache();
    expect(applyModelEvent(client, frame("model_deleted", { model_id: "m1" }))).toBe(true);
    expect(client.getQueryData<ModelView[]>(modelKeys.list())!.map((m) => m.id)).toEqual(["m2"]);
    expect(client.getQueryData(modelKeys.one("m1"))).toBeUndefined();
    expect(applyModelEvent(client, frame("shutting_down", {}))).toBe(false);
  });

  it("ignores data it cannot read", () => {
    const client = cache();
    expect(applyModelEvent(client, { event: "model_status", data: "{not json" })).toBe(true);
    expect(client.getQueryData<ModelView[]>(modelKeys.list())).toHaveLength(2);
  });
});
