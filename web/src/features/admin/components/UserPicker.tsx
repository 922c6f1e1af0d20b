import { useId, useState } from "react";
import { useTranslation } from "react-i18next";
import { useUserSearch } from "../api/users";
import type { UserView } from "../api/users";
import { useDebounced } from "../utils/useDebounced";
import { MAX_SEARCH_CHARS } from "@/lib/api";

/**
 * Finds an account by typing part of its name; the matches are buttons,
 * so keyboard and screen reader users pick one the same way as others.
 */
export function UserPicker({
  label,
  onPick,
  exclude = [],
}: {
  label: string;
  onPick: (user: UserView) => void;
  exclude?: string[];
}) {
  const { t } = useTranslation("admin");
  const id = useId();
  const [text, setText] = useState("");
  const q = useDebounced(text.trim(), 250);
  const search = useUserSearch(q);
  const matches = (search.data?.items ?? []).filter((u) => !exclude.includes(u.id));
  const show = q.length > 0;
  return (
    <div>
      <label htmlFor={id} className="label">
        {label}
      </label>
      <input
        id={id}
        type="search"
        maxLength={MAX_SEARCH_CHARS}
        className="input"
        autoComplete="off"
        value={text}
        placeholder={t("picker.placeholder")}
        onChange={(e) => setText(e.target.value)}
      />
      {show && (
        <div aria-live="polite" className="mt-2">
          {search.isPending ? (
            <p className="text-sm muted">{t("common:state.loading")}</p>
          ) : matches.length === 0 ? (
            <p className="text-sm muted">{t("picker.none")}</p>
          ) : (
            <ul className="flex flex-wrap gap-2" aria-label={t("picker.results")}>
              {matches.map((user) => (
                <li key={user.id}>
                  <button
                    type="button"
                    className="btn-secondary"
                    aria-label={t("picker.pick", { username: user.username })}
                    onClick={() => {
                      onPick(user);
                      setText("");
                    }}
                  >
                    {user.username}
                    {user.display_name && user.display_name !== user.username && (
                      <span className="muted">({user.display_name})</span>
                    )}
                  </button>
                </li>
              ))}
            </ul>
          )}
        </div>
      )}
    </div>
  );
}
