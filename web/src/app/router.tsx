import { lazy } from "react";
import type { ReactNode } from "react";
import { createBrowserRouter, Navigate } from "react-router";
import { Layout } from "./Layout";
import { NotFound, RequireAuth, RequireCapability } from "./guards";
import type { Capability } from "@/lib/roles";
import SignInPage from "@/features/auth/routes/SignInPage";
import RegisterPage from "@/features/auth/routes/RegisterPage";

// Each feature's pages load on first visit, so the chat page does not carry
// the dashboard's charts or the model manager.
const ChatPage = lazy(() => import("@/features/chat/routes/ChatPage"));
const TicketsPage = lazy(() => import("@/features/tickets/routes/TicketsPage"));
const TicketPage = lazy(() => import("@/features/tickets/routes/TicketPage"));
const NewTicketPage = lazy(() => import("@/features/tickets/routes/NewTicketPage"));
const AccountPage = lazy(() => import("@/features/account/routes/AccountPage"));
const KeysPage = lazy(() => import("@/features/account/routes/KeysPage"));
const UsagePage = lazy(() => import("@/features/account/routes/UsagePage"));
const UsersPage = lazy(() => import("@/features/admin/routes/UsersPage"));
const AuditPage = lazy(() => import("@/features/admin/routes/AuditPage"));
const SettingsPage = lazy(() => import("@/features/admin/routes/SettingsPage"));
const QuotasPage = lazy(() => import("@/features/admin/routes/QuotasPage"));
const StatsPage = lazy(() => import("@/features/admin/routes/StatsPage"));
const ModelsPage = lazy(() => import("@/features/models/routes/ModelsPage"));
const ModelPage = lazy(() => import("@/features/models/routes/ModelPage"));
const InferencePage = lazy(() => import("@/features/models/routes/InferencePage"));
const PluginsPage = lazy(() => import("@/features/plugins/routes/PluginsPage"));
const PluginPage = lazy(() => import("@/features/plugins/routes/PluginPage"));

const only = (capability: Capability, page: ReactNode) => (
  <RequireCapability capability={capability}>{page}</RequireCapability>
);

export const router = createBrowserRouter([
  { path: "/sign-in", element: <SignInPage /> },
  { path: "/register", element: <RegisterPage /> },
  {
    element: (
      <RequireAuth>
        <Layout />
      </RequireAuth>
    ),
    children: [
      { index: true, element: <Navigate to="/chat" replace /> },
      { path: "chat", element: <ChatPage /> },
      { path: "chat/:chatId", element: <ChatPage /> },
      { path: "tickets", element: <TicketsPage /> },
      { path: "tickets/new", element: <NewTicketPage /> },
      { path: "tickets/:ticketId", element: <TicketPage /> },
      { path: "account", element: <AccountPage /> },
      { path: "account/keys", element: <KeysPage /> },
      { path: "account/usage", element: <UsagePage /> },
      { path: "admin/users", element: only("staff", <UsersPage />) },
      { path: "admin/audit", element: only("staff", <AuditPage />) },
      { path: "admin/settings", element: only("staff", <SettingsPage />) },
      { path: "admin/quotas", element: only("staff", <QuotasPage />) },
      { path: "admin/stats", element: only("staff", <StatsPage />) },
      { path: "models", element: only("staff", <ModelsPage />) },
      { path: "models/:modelId", element: only("staff", <ModelPage />) },
      { path: "inference", element: only("technician", <InferencePage />) },
      { path: "plugins", element: only("technician", <PluginsPage />) },
      { path: "plugins/:pluginId", element: only("technician", <PluginPage />) },
      { path: "*", element: <NotFound /> },
    ],
  },
]);
