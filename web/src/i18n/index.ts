// All text goes through i18next. Each feature keeps its own namespace in
// `features/<feature>/locales/{en,ro}.json`; shared words live in `common`.

import i18n from "i18next";
import { initReactI18next } from "react-i18next";

import commonEn from "./en/common.json";
import commonRo from "./ro/common.json";
import authEn from "@/features/auth/locales/en.json";
import authRo from "@/features/auth/locales/ro.json";
import chatEn from "@/features/chat/locales/en.json";
import chatRo from "@/features/chat/locales/ro.json";
import ticketsEn from "@/features/tickets/locales/en.json";
import ticketsRo from "@/features/tickets/locales/ro.json";
import accountEn from "@/features/account/locales/en.json";
import accountRo from "@/features/account/locales/ro.json";
import adminEn from "@/features/admin/locales/en.json";
import adminRo from "@/features/admin/locales/ro.json";
import modelsEn from "@/features/models/locales/en.json";
import modelsRo from "@/features/models/locales/ro.json";
import pluginsEn from "@/features/plugins/locales/en.json";
import pluginsRo from "@/features/plugins/locales/ro.json";

export const languages = { en: "English", ro: "Română" } as const;
export type Language = keyof typeof languages;

const KEY = "corral.language";

function initialLanguage(): Language {
  const saved = typeof localStorage !== "undefined" ? localStorage.getItem(KEY) : null;
  if (saved === "en" || saved === "ro") return saved;
  const browser = typeof navigator !== "undefined" ? navigator.language.slice(0, 2) : "en";
  return browser === "ro" ? "ro" : "en";
}

void i18n.use(initReactI18next).init({
  resources: {
    en: {
      common: commonEn,
      auth: authEn,
      chat: chatEn,
      tickets: ticketsEn,
      account: accountEn,
      admin: adminEn,
      models: modelsEn,
      plugins: pluginsEn,
    },
    ro: {
      common: commonRo,
      auth: authRo,
      chat: chatRo,
      tickets: ticketsRo,
      account: accountRo,
      admin: adminRo,
      models: modelsRo,
      plugins: pluginsRo,
    },
  },
  lng: initialLanguage(),
  fallbackLng: "en",
  defaultNS: "common",
  ns: ["common", "auth", "chat", "tickets", "account", "admin", "models", "plugins"],
  interpolation: { escapeValue: false },
  returnNull: false,
});

document.documentElement.lang = i18n.language;
i18n.on("languageChanged", (lng) => {
  document.documentElement.lang = lng;
});

export function setLanguage(language: Language): void {
  localStorage.setItem(KEY, language);
  void i18n.changeLanguage(language);
}

export default i18n;
