import { Suspense, useState } from "react";
import { NavLink, Outlet, useLocation } from "react-router";
import { useTranslation } from "react-i18next";
import { useUser } from "@/lib/auth";
import { can, type Capability } from "@/lib/roles";
import { Spinner } from "@/components/Spinner";
import { UserMenu } from "./UserMenu";

const links: { to: string; label: string; capability: Capability }[] = [
  { to: "/chat", label: "nav.chat", capability: "chat" },
  { to: "/tickets", label: "nav.tickets", capability: "chat" },
  { to: "/admin/stats", label: "nav.stats", capability: "staff" },
  { to: "/admin/users", label: "nav.users", capability: "staff" },
  { to: "/admin/quotas", label: "nav.quotas", capability: "staff" },
  { to: "/admin/settings", label: "nav.settings", capability: "staff" },
  { to: "/admin/audit", label: "nav.audit", capability: "staff" },
  { to: "/models", label: "nav.models", capability: "staff" },
  { to: "/inference", label: "nav.inference", capability: "technician" },
  { to: "/plugins", label: "nav.plugins", capability: "technician" },
];

/** The frame of every signed-in page: header, menu by role, content. */
export function Layout() {
  const { t } = useTranslation();
  const user = useUser();
  const [menuOpen, setMenuOpen] = useState(false);
  const location = useLocation();
  const visible = links.filter((l) => can[l.capability](user.role));
  const navClass = ({ isActive }: { isActive: boolean }) =>
    `block rounded-md px-3 py-1.5 text-sm font-medium ${
      isActive
        ? "bg-brand-50 text-brand-800 dark:bg-slate-800 dark:text-brand-100"
        : "text-slate-700 hover:bg-slate-100 dark:text-slate-300 dark:hover:bg-slate-800"
    }`;

  return (
    <div className="flex h-dvh flex-col">
      <a href="#main" className="sr-only focus:not-sr-only focus:absolute focus:left-2 focus:top-2 focus:z-50 btn-primary">
        {t("nav.skipToContent")}
      </a>
      <header className="flex items-center gap-3 border-b border-slate-200 px-3 py-2 dark:border-slate-800">
        <button
          type="button"
          className="btn-ghost lg:hidden"
          aria-expanded={menuOpen}
          aria-controls="main-nav"
          aria-label={menuOpen ? t("nav.closeMenu") : t("nav.openMenu")}
          onClick={() => setMenuOpen((v) => !v)}
        >
          <span aria-hidden="true">☰</span>
        </button>
        <NavLink to="/chat" className="flex items-center gap-2 font-semibold">
          <img src="/favicon.svg" alt="" className="size-6" />
          {t("appName")}
        </NavLink>
        <nav
          id="main-nav"
          aria-label={t("nav.main")}
          className={`${menuOpen ? "block" : "hidden"} absolute inset-x-0 top-12 z-20 border-b border-slate-200 bg-white p-2 dark:border-slate-800 dark:bg-slate-950 lg:static lg:block lg:border-0 lg:bg-transparent lg:p-0`}
        >
          <ul className="flex flex-col gap-1 lg:flex-row">
            {visible.map((link) => (
              <li key={link.to}>
                <NavLink to={link.to} className={navClass} onClick={() => setMenuOpen(false)}>
                  {t(link.label)}
                </NavLink>
              </li>
            ))}
          </ul>
        </nav>
        <div className="ml-auto">
          <UserMenu />
        </div>
      </header>
      <main id="main" className="min-h-0 flex-1 overflow-auto" key={location.pathname.split("/")[1]}>
        <Suspense fallback={<Spinner />}>
          <Outlet />
        </Suspense>
      </main>
    </div>
  );
}
