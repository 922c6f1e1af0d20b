export type Theme = "light" | "dark" | "system";

const KEY = "corral.theme";

export function savedTheme(): Theme {
  const value = localStorage.getItem(KEY);
  return value === "light" || value === "dark" ? value : "system";
}

/** Puts the `dark` class on <html> for the chosen or the system theme. */
export function applyTheme(theme: Theme = savedTheme()): void {
  const dark =
    theme === "dark" ||
    (theme === "system" && window.matchMedia?.("(prefers-color-scheme: dark)").matches);
  document.documentElement.classList.toggle("dark", dark);
}

export function setTheme(theme: Theme): void {
  if (theme === "system") localStorage.removeItem(KEY);
  else localStorage.setItem(KEY, theme);
  applyTheme(theme);
}

export function watchSystemTheme(): void {
  window
    .matchMedia?.("(prefers-color-scheme: dark)")
    .addEventListener("change", () => applyTheme());
}
