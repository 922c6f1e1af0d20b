import type { ReactNode } from "react";
import { useTranslation } from "react-i18next";
import { NavLink } from "react-router";
import { PageHeader } from "@/components/PageHeader";

const tabs = [
  { to: "/account", label: "nav.profile" },
  { to: "/account/keys", label: "nav.keys" },
  { to: "/account/usage", label: "nav.usage" },
] as const;

/** The account pages' shared frame: the tabs between them, then the page. */
export function AccountFrame({ title, children }: { title: string; children: ReactNode }) {
  const { t } = useTranslation("account");
  return (
    <div className="mx-auto max-w-4xl p-4 sm:p-6">
      <nav aria-label={t("nav.label")} className="mb-5 border-b border-slate-200 dark:border-slate-700">
        <ul className="-mb-px flex gap-1 overflow-x-auto">
          {tabs.map((tab) => (
            <li key={tab.to}>
              <NavLink
                to={tab.to}
                end
                className={({ isActive }) =>
                  `inline-block whitespace-nowrap border-b-2 px-3 py-2 text-sm font-medium ${
                    isActive
                      ? "border-brand-700 text-brand-800 dark:border-brand-500 dark:text-brand-100"
                      : "border-transparent text-slate-700 hover:border-slate-300 hover:text-slate-900 dark:text-slate-300 dark:hover:text-white"
                  }`
                }
              >
                {t(tab.label)}
              </NavLink>
            </li>
          ))}
        </ul>
      </nav>
      <PageHeader title={title} />
      {children}
    </div>
  );
}
