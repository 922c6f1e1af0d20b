import { describe, expect, it } from "vitest";
import type { ModelView } from "../api/models";
import { fallbackList, nameFromSource, toChanges, toNewModel, type ModelFormValues } from "./ModelForm";

const model: ModelView = {
  id: "m1",
  name: "gemma",
  backend: "llama",
  kind: "chat",
  description: "small",
  status: "ready",
  usable: true,
  context_length: 0,
  slots: 4,
  threads: 0,
  source: "https://example.com/gemma.gguf",
  sha256: null,
  chat_template: null,
  sampling: { temperature: 0.8, top_k: 40, stop: ["</s>"] } as never,
  access: { everyone: true, roles: [], users: [] },
  created_at: "2026-01-01T00:00:00Z",
  updated_at: "2026-01-01T00:00:00Z",
};

const values = (over: Partial<ModelFormValues> = {}): ModelFormValues => ({
  source: "https://example.com/gemma.gguf",
  upstream_model: "",
  api_key: "",
  tls_fingerprint: "",
  fallbacks: "",
  replicas: "",
  node: "",
  name: "gemma",
  backend: "llama",
  kind: "chat",
  sha256: "",
  description: "small",
  context_length: "",
  slots: "4",
  threads: "",
  chat_template: "",
  sampling: { temperature: "0.8", top_p: "", top_k: "40", min_p: "", repeat_penalty: "", max_tokens: "", seed: "" },
  access: { everyone: true, roles: [], users: [] },
  ...over,
});

describe("toChanges", () => {
  it("sends nothing when nothing changed", () => {
    expect(toChanges(model, values())).toEqual({});
  });

  it("places a model on a node and brings it back with an empty name", () => {
    expect(toChanges(model, values({ node: "gpu-1" }))).toEqual({ node: "gpu-1" });
    const placed = { ...model, node: "gpu-1" };
    expect(toChanges(placed, values({ node: "gpu-1" }))).toEqual({});
    expect(toChanges(placed, values({ node: "" }))).toEqual({ node: "" });
  });

  it("sends only the changed fields", () => {
    expect(
      toChanges(model, values({ description: "tiny", slots: "8", access: { everyone: false, roles: ["admin"], users: ["u1"] } })),
    ).toEqual({ description: "tiny", slots: 8, access: { everyone: false, roles: ["admin"], users: ["u1"] } });
  });

  it("keeps sampling settings the form does not show", () => {
    const changes = toChanges(
      model,
      values({ sampling: { ...values().sampling, temperature: "0.2", top_k: "" } }),
    );
    expect(changes).toEqual({ sampling: { temperature: 0.2, stop: ["</s>"] } });
  });
});

describe("nameFromSource", () => {
  it("takes the file name without .gguf", () => {
    expect(nameFromSource("https://huggingface.co/o/r/resolve/main/gemma-3-270m-it-Q4_K_M.gguf?download=1")).toBe(
      "gemma-3-270m-it-Q4_K_M",
    );
    expect(nameFromSource("/srv/models/all-MiniLM-L6-v2/")).toBe("all-MiniLM-L6-v2");
    expect(nameFromSource("/srv/models/my model (v2).gguf")).toBe("my-model-v2");
  });
});

const remote: ModelView = {
  ...model,
  id: "r1",
  name: "gpt",
  backend: "openai",
  source: "https://api.example.com/v1",
  upstream_model: "gpt-4o-mini",
  api_key_set: true,
  fallbacks: ["gemma"],
};

/** The form as `remote` fills it. */
const remoteForm = () =>
  values({
    backend: "openai",
    source: "https://api.example.com/v1",
    name: "gpt",
    upstream_model: "gpt-4o-mini",
    fallbacks: "gemma",
  });

describe("remote models", () => {
  it("sends the upstream fields and none of a file's", () => {
    const sent = toNewModel(
      values({
        backend: "openai",
        source: "https://api.example.com/v1",
        name: "gpt",
        upstream_model: " gpt-4o-mini ",
        api_key: "sk-1",
        fallbacks: "gemma, small ,",
        sha256: "ab".repeat(32),
        threads: "4",
        chat_template: "{{ x }}",
        node: "gpu-1",
      }),
    );
    expect(sent).toMatchObject({
      backend: "openai",
      upstream_model: "gpt-4o-mini",
      api_key: "sk-1",
      fallbacks: ["gemma", "small"],
    });
    expect(sent).not.toHaveProperty("sha256");
    expect(sent).not.toHaveProperty("threads");
    expect(sent).not.toHaveProperty("chat_template");
    expect(sent).not.toHaveProperty("node");
  });

  it("places a new model file on the chosen node, or on this host", () => {
    expect(toNewModel(values({ node: "gpu-1" })).node).toBe("gpu-1");
    expect(toNewModel(values()).node).toBeNull();
  });

  it("never sends upstream fields for a model file", () => {
    const sent = toNewModel(values({ upstream_model: "x", api_key: "sk-1", tls_fingerprint: "AB".repeat(32) }));
    expect(sent).not.toHaveProperty("api_key");
    expect(sent).not.toHaveProperty("tls_fingerprint");
    expect(sent).not.toHaveProperty("upstream_model");
    expect(sent.fallbacks).toBeNull();
  });

  it("keeps the stored key unless a new one is typed", () => {
    const form = remoteForm();
    expect(toChanges(remote, form)).toEqual({});
    expect(toChanges(remote, { ...form, api_key: "sk-new" })).toEqual({ api_key: "sk-new" });
    expect(toChanges(remote, { ...form, fallbacks: "" })).toEqual({ fallbacks: [] });
  });

  it("pins a certificate, keeps it however it is written, and drops it with an empty field", () => {
    const pinned = { ...remote, tls_fingerprint: Array(32).fill("AB").join(":") };
    const form = remoteForm();
    expect(toNewModel({ ...form, tls_fingerprint: " " + "ab".repeat(32) + " " }).tls_fingerprint).toBe("ab".repeat(32));
    expect(toNewModel(form).tls_fingerprint).toBeNull();
    expect(toChanges(pinned, { ...form, tls_fingerprint: "ab".repeat(32) })).toEqual({});
    expect(toChanges(pinned, { ...form, tls_fingerprint: "" })).toEqual({ tls_fingerprint: "" });
    expect(toChanges(pinned, { ...form, tls_fingerprint: "CD".repeat(32), api_key: "sk-again" })).toEqual({
      tls_fingerprint: "CD".repeat(32),
      api_key: "sk-again",
    });
  });

  it("sends replicas apart from fallbacks, and clears them with an empty field", () => {
    const sent = toNewModel(values({ replicas: "gemma-b, gemma-c", fallbacks: "gpt" }));
    expect(sent).toMatchObject({ replicas: ["gemma-b", "gemma-c"], fallbacks: ["gpt"] });
    expect(toNewModel(values()).replicas).toBeNull();
    const spread = { ...model, replicas: ["gemma-b"] };
    expect(toChanges(spread, values({ replicas: "gemma-b" }))).toEqual({});
    expect(toChanges(spread, values({ replicas: "gemma-b, gemma-c" }))).toEqual({ replicas: ["gemma-b", "gemma-c"] });
    expect(toChanges(spread, values({ replicas: "" }))).toEqual({ replicas: [] });
  });

  it("splits fallbacks on commas", () => {
    expect(fallbackList(" a, b,,c ")).toEqual(["a", "b", "c"]);
    expect(fallbackList("")).toEqual([]);
  });
});
