import type { ReactNode } from "react";
import { Navigate, useLocation } from "react-router";
import { useTranslation } from "react-i18next";
import { useAuth } from "@/lib/auth";
import { can, type Capability } from "@/lib/roles";
import { Spinner } from "@/components/Spinner";

/** Sends visitors without a session to the sign-in page, and back after. */
export function RequireAuth({ children }: { children: ReactNode }) {
  const { state } = useAuth();
  const location = useLocation();
  if (state.status === "loading") return <Spinner />;
  if (state.status === "signed-out") {
    const next = location.pathname + location.search;
    return (
      <Navigate
        to={`/sign-in?next=${encodeURIComponent(next)}`}
        replace
        state={{ reason: state.reason }}
      />
    );
  }
  return <>{children}</>;
}

/** A page the role may not open says so; the server refuses it anyway. */
export function RequireCapability({ capability, children }: { capability: Capability; children: ReactNode }) {
  const { state } = useAuth();
  if (state.status !== "signed-in") return null;
  if (!can[capability](state.user.role)) return <NotAllowed />;
  return <>{children}</>;
}

export function NotAllowed() {
  const { t } = useTranslation();
  const { state } = useAuth();
  const role = state.status === "signed-in" ? t(`roles.${state.user.role}`) : "";
  return (
    <section className="mx-auto max-w-lg p-8 text-center" aria-labelledby="not-allowed">
      <h1 id="not-allowed" className="mb-2 text-2xl font-semibold">
        {t("pages.notAllowedTitle")}
      </h1>
      <p className="muted">{t("pages.notAllowedBody", { role })}</p>
      <a href="/chat" className="btn-primary mt-6">
        {t("pages.goHome")}
      </a>
    </section>
  );
}

export function NotFound() {
  const { t } = useTranslation();
  return (
    <section className="mx-auto max-w-lg p-8 text-center">
      <h1 className="mb-2 text-2xl font-semibold">{t("pages.notFoundTitle")}</h1>
      <p className="muted">{t("pages.notFoundBody")}</p>
      <a href="/chat" className="btn-primary mt-6">
        {t("pages.goHome")}
      </a>
    </section>
  );
}
