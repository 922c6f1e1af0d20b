import { useEffect, useRef, useState } from "react";
import { Link } from "react-router";
import { useTranslation } from "react-i18next";
import { useAuth, useUser } from "@/lib/auth";
import { savedTheme, setTheme, type Theme } from "@/lib/theme";
import { languages, setLanguage, type Language } from "@/i18n";

export function UserMenu() {
  const { t, i18n } = useTranslation();
  const user = useUser();
  const { signOut } = useAuth();
  const [open, setOpen] = useState(false);
  const [theme, setThemeState] = useState<Theme>(savedTheme());
  const ref = useRef<HTMLDivElement>(null);

  useEffect(() => {
    if (!open) return;
    const onKey = (e: KeyboardEvent) => e.key === "Escape" && setOpen(false);
    const onClick = (e: MouseEvent) => {
      if (!ref.current?.contains(e.target as Node)) setOpen(false);
    };
    document.addEventListener("keydown", onKey);
    document.addEventListener("mousedown", onClick);
    return () => {
      document.removeEventListener("keydown", onKey);
      document.removeEventListener("mousedown", onClick);
    };
  }, [open]);

  const name = user.display_name || user.username;
  return (
    <div className="relative" ref={ref}>
      <button
        type="button"
        className="btn-ghost"
        aria-expanded={open}
        aria-controls="user-menu"
        onClick={() => setOpen((v) => !v)}
      >
        <span className="sr-only">{t("userMenu.label")}</span>
        <span
          aria-hidden="true"
          className="flex size-7 items-center justify-center rounded-full bg-brand-700 text-xs font-bold text-white"
        >
          {name.slice(0, 1).toUpperCase()}
        </span>
        <span className="sr-only max-w-32 truncate sm:not-sr-only">{name}</span>
      </button>
      {open && (
        <div
          id="user-menu"
          className="absolute right-0 z-30 mt-2 w-64 rounded-lg border border-slate-200 bg-white p-3 shadow-lg dark:border-slate-700 dark:bg-slate-900"
        >
          <p className="mb-2 text-sm">
            <span className="font-medium">{name}</span>{" "}
            <span className="badge">{t(`roles.${user.role}`)}</span>
          </p>
          <Link to="/account" className="btn-ghost mb-2 w-full justify-start" onClick={() => setOpen(false)}>
            {t("nav.account")}
          </Link>
          <label className="label" htmlFor="theme-select">
            {t("userMenu.theme")}
          </label>
          <select
            id="theme-select"
            className="input mb-2"
            value={theme}
            onChange={(e) => {
              const value = e.target.value as Theme;
              setTheme(value);
              setThemeState(value);
            }}
          >
            <option value="system">{t("userMenu.themeSystem")}</option>
            <option value="light">{t("userMenu.themeLight")}</option>
            <option value="dark">{t("userMenu.themeDark")}</option>
          </select>
          <label className="label" htmlFor="language-select">
            {t("userMenu.language")}
          </label>
          <select
            id="language-select"
            className="input mb-3"
            value={i18n.language}
            onChange={(e) => setLanguage(e.target.value as Language)}
          >
            {Object.entries(languages).map(([code, label]) => (
              <option key={code} value={code}>
                {label}
              </option>
            ))}
          </select>
          <button type="button" className="btn-secondary w-full" onClick={() => void signOut()}>
            {t("userMenu.signOut")}
          </button>
        </div>
      )}
    </div>
  );
}
