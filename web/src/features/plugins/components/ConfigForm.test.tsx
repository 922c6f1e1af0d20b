import { afterEach, describe, expect, it, vi } from "vitest";
import { screen } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { ConfigForm } from "./ConfigForm";
import { json, makePlugin, renderWithPlugin } from "../utils/fixtures";
import type { PluginView } from "../api/plugins";

const fetchMock = vi.hoisted(() => {
  const mock = vi.fn<typeof fetch>();
  globalThis.fetch = mock;
  return mock;
});

const schema = {
  type: "object",
  properties: {
    "api-key": { type: "string", secret: true, description: "The search service's key" },
    engine: { type: "string", enum: ["duck", "brave"], default: "duck" },
    "max-results": { type: "integer", minimum: 1, maximum: 20, default: 5, description: "Results per prompt" },
    safe: { type: "boolean", default: true, description: "Filter adult results" },
    blocked: { type: "array", items: { type: "string" }, description: "Sites never used" },
    label: { type: "string", maxLength: 40 },
  },
  required: ["api-key"],
};

function plugin(overrides: Parameters<typeof makePlugin>[0] = {}) {
  return makePlugin({
    config_schema: schema,
    config: { engine: "brave", "max-results": 5, safe: true, blocked: ["a.example", "b.example"] },
    secrets: [{ name: "api-key", set: true }],
    ...overrides,
  });
}

function setup(p: PluginView = plugin()) {
  renderWithPlugin(p, (current) => <ConfigForm plugin={current} />);
  return { save: screen.getByRole("button", { name: "Save configuration" }) };
}

async function sentBody(call = 0): Promise<Record<string, unknown>> {
  const request = fetchMock.mock.calls[call][0] as Request;
  expect(request.method).toBe("PUT");
  expect(new URL(request.url).pathname).toBe("/api/plugins/web-search/config");
  return (await request.json()) as Record<string, unknown>;
}

describe("ConfigForm", () => {
  afterEach(() => fetchMock.mockReset());

  it("builds a control for each kind of setting from the schema", () => {
    setup();
    const key = screen.getByLabelText(/api-key/);
    expect(key).toHaveAttribute("type", "password");
    expect(key).toHaveAttribute("autocomplete", "new-password");
    expect(key).toHaveValue("");
    expect(key).toHaveAccessibleDescription(/The search service's key.*Leave this empty to keep it/);
    expect(screen.getByText("saved")).toBeInTheDocument();

    const engine = screen.getByLabelText("engine");
    expect(engine.tagName).toBe("SELECT");
    expect(engine).toHaveValue("brave");

    const max = screen.getByLabelText("max-results");
    expect(max).toHaveAttribute("type", "number");
    expect(max).toHaveValue(5);
    expect(max).toHaveAccessibleDescription(/From 1 to 20.*A whole number.*Default: 5/);

    expect(screen.getByRole("checkbox", { name: "safe" })).toBeChecked();
    expect(screen.getByLabelText("blocked")).toHaveValue("a.example\nb.example");
    expect(screen.getByLabelText("label")).toHaveAttribute("maxlength", "40");
  });

  it("keeps a saved secret when its box is left empty, and replaces it when typed into", async () => {
    // The server answers with what it saved; the secret's value never comes back.
    fetchMock.mockImplementation(async (input) => {
      const sent = (await (input as Request).clone().json()) as Record<string, unknown>;
      const { "api-key": _key, ...config } = sent;
      return json(plugin({ config: { ...config, label: undefined } }));
    });
    const { save } = setup();
    await userEvent.clear(screen.getByLabelText("max-results"));
    await userEvent.type(screen.getByLabelText("max-results"), "8");
    await userEvent.click(save);
    expect(await screen.findByText("Configuration saved.")).toBeInTheDocument();
    expect(await sentBody()).toEqual({
      "api-key": null,
      engine: "brave",
      "max-results": 8,
      safe: true,
      blocked: ["a.example", "b.example"],
      label: null,
    });

    await userEvent.type(screen.getByLabelText(/api-key/), "sk-new-key");
    await userEvent.click(save);
    await vi.waitFor(() => expect(fetchMock).toHaveBeenCalledTimes(2));
    expect((await sentBody(1))["api-key"]).toBe("sk-new-key");
    // Saved: the box is empty again and the value is not shown anywhere.
    await vi.waitFor(() => expect(screen.getByLabelText(/api-key/)).toHaveValue(""));
    expect(screen.queryByDisplayValue("sk-new-key")).not.toBeInTheDocument();
  });

  it("says when a secret has no saved value yet", () => {
    setup(plugin({ secrets: [{ name: "api-key", set: false }] }));
    expect(screen.queryByText("saved")).not.toBeInTheDocument();
    expect(screen.getByLabelText(/api-key/)).toHaveAccessibleDescription(/No value is saved yet/);
    expect(screen.getByText("(required)")).toBeInTheDocument();
  });

  it("shows the server's validation messages under the fields they are about", async () => {
    fetchMock.mockImplementation(async () =>
      json(
        {
          code: "validation_failed",
          message: "the request is not valid",
          details: [
            {
              field: "config",
              message: 'max-results: must be at most 20; engine: must be one of "duck", "brave"; extra: not a setting of this plugin',
            },
          ],
        },
        422,
      ),
    );
    const { save } = setup();
    await userEvent.clear(screen.getByLabelText("max-results"));
    await userEvent.type(screen.getByLabelText("max-results"), "50");
    await userEvent.click(save);

    expect(await screen.findByText("must be at most 20")).toBeInTheDocument();
    const max = screen.getByLabelText("max-results");
    expect(max).toHaveAttribute("aria-invalid", "true");
    expect(max).toHaveAccessibleDescription(/must be at most 20/);
    expect(screen.getByLabelText("engine")).toHaveAccessibleDescription(/must be one of "duck", "brave"/);
    // What names no field of the form is still shown.
    expect(screen.getByText("extra: not a setting of this plugin")).toBeInTheDocument();
    expect(screen.getByText("Corral did not save it: 2 fields need attention.")).toBeInTheDocument();
    expect(screen.getByLabelText("label")).not.toHaveAttribute("aria-invalid");
  });

  it("asks for a whole number before sending anything", async () => {
    const { save } = setup();
    await userEvent.clear(screen.getByLabelText("max-results"));
    await userEvent.type(screen.getByLabelText("max-results"), "2.5");
    await userEvent.click(save);
    expect(await screen.findByText("Enter a whole number.")).toBeInTheDocument();
    expect(fetchMock).not.toHaveBeenCalled();
  });

  it("says so when the plugin has no settings", () => {
    renderWithPlugin(makePlugin(), (p) => <ConfigForm plugin={p} />);
    expect(screen.getByText("This plugin has no settings.")).toBeInTheDocument();
    expect(screen.queryByRole("button", { name: "Save configuration" })).not.toBeInTheDocument();
  });
});
