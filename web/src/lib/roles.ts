import type { Schemas } from "./api";

export type Role = Schemas["Role"];

/** What each role may open; the server enforces the same rules. */
export const can = {
  chat: (_role: Role) => true,
  /** Users, audit log, settings, quotas, dashboard, all tickets. */
  staff: (role: Role) => role === "admin" || role === "technician",
  /** Add, edit, delete, load and unload models; inference status. */
  technician: (role: Role) => role === "technician",
};

export type Capability = keyof typeof can;
