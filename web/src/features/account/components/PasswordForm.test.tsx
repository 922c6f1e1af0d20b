import { afterEach, describe, expect, it, vi } from "vitest";
import { render, screen } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { QueryClient, QueryClientProvider } from "@tanstack/react-query";
import { PasswordForm } from "./PasswordForm";

const fetchMock = vi.hoisted(() => {
  const mock = vi.fn<typeof fetch>();
  globalThis.fetch = mock;
  return mock;
});

function setup() {
  render(
    <QueryClientProvider client={new QueryClient({ defaultOptions: { mutations: { retry: false } } })}>
      <PasswordForm username="bob" />
    </QueryClientProvider>,
  );
  return {
    current: screen.getByLabelText("Current password"),
    next: screen.getByLabelText("New password", { exact: true }),
    repeat: screen.getByLabelText("Repeat new password"),
    submit: screen.getByRole("button", { name: "Change password" }),
  };
}

describe("PasswordForm", () => {
  afterEach(() => fetchMock.mockReset());

  it("says so when the two new passwords differ, without asking the server", async () => {
    const form = setup();
    await userEvent.type(form.current, "old-password");
    await userEvent.type(form.next, "new-password-1");
    await userEvent.type(form.repeat, "new-password-2");
    await userEvent.click(form.submit);
    expect(await screen.findByText("The two new passwords are not the same.")).toBeInTheDocument();
    expect(fetchMock).not.toHaveBeenCalled();
  });

  it("points at the current password when the server refuses it", async () => {
    fetchMock.mockResolvedValue(
      new Response(
        JSON.stringify({
          code: "validation_failed",
          message: "the request is not valid",
          details: [{ field: "current_password", message: "is not the current password" }],
        }),
        { status: 422, headers: { "Content-Type": "application/json" } },
      ),
    );
    const form = setup();
    await userEvent.type(form.current, "wrong-password");
    await userEvent.type(form.next, "new-password-1");
    await userEvent.type(form.repeat, "new-password-1");
    await userEvent.click(form.submit);
    expect(await screen.findByText("This is not your current password.")).toBeInTheDocument();
    expect(form.current).toHaveAttribute("aria-invalid", "true");
    const request = fetchMock.mock.calls[0][0] as Request;
    expect(await request.json()).toEqual({
      current_password: "wrong-password",
      new_password: "new-password-1",
      refresh_cookie: true,
    });
  });
});
