import { describe, expect, it } from "vitest";
import { render, screen } from "@testing-library/react";
import { pluginState, StateBadge, StoppedWarning } from "./PluginState";
import { makePlugin } from "../utils/fixtures";

describe("plugin state", () => {
  it("is active only when it runs, and the host's switch-off wins over the technician's switch", () => {
    expect(pluginState({ enabled: true, active: true, disabled_reason: null })).toBe("active");
    expect(pluginState({ enabled: false, active: false, disabled_reason: null })).toBe("off");
    expect(pluginState({ enabled: true, active: false, disabled_reason: null })).toBe("idle");
    expect(pluginState({ enabled: true, active: false, disabled_reason: "5 failures in a row" })).toBe("stopped");
    expect(pluginState({ enabled: false, active: false, disabled_reason: "no longer loads" })).toBe("stopped");
  });

  it.each([
    [{ enabled: true, active: true }, "Active"],
    [{ enabled: false, active: false }, "Off"],
    [{ enabled: true, active: false }, "On, not running"],
    [{ enabled: true, active: false, disabled_reason: "trapped" }, "Turned off by Corral"],
  ])("%o reads %s", (state, text) => {
    render(<StateBadge plugin={{ disabled_reason: null, ...state }} />);
    expect(screen.getByText(text)).toBeInTheDocument();
  });

  it("warns with the reason when Corral turned the plugin off", () => {
    render(
      <StoppedWarning
        plugin={makePlugin({
          enabled: true,
          disabled_reason: "failed 5 times in a row; last: out of time after 100 ms",
        })}
      />,
    );
    expect(screen.getByText("Corral turned this plugin off")).toBeInTheDocument();
    expect(screen.getByText("Reason: failed 5 times in a row; last: out of time after 100 ms")).toBeInTheDocument();
  });

  it("warns of nothing for a plugin that runs or was switched off by a technician", () => {
    const { container } = render(<StoppedWarning plugin={makePlugin({ enabled: false })} />);
    expect(container).toBeEmptyDOMElement();
  });
});
