import { createContext, useCallback, useContext, useEffect, useMemo, useRef, useState } from "react";
import type { ReactNode } from "react";
import { useQueryClient } from "@tanstack/react-query";
import { api, unwrap } from "./api";
import {
  acceptTokens,
  broadcast,
  endSession,
  hasWebLocks,
  logoutPending,
  mayHaveSession,
  onAccountChange,
  onBroadcast,
  onSessionEnd,
  onUser,
  refreshSession,
  setLogoutPending,
  type EndReason,
  type UserView,
} from "./session";

type AuthState =
  | { status: "loading" }
  | { status: "signed-out"; reason?: EndReason }
  | { status: "signed-in"; user: UserView };

type AuthContextValue = {
  state: AuthState;
  signIn(username: string, password: string): Promise<void>;
  register(username: string, password: string, displayName?: string): Promise<void>;
  signOut(): Promise<void>;
};

const AuthContext = createContext<AuthContextValue | null>(null);

export function AuthProvider({ children }: { children: ReactNode }) {
  const queryClient = useQueryClient();
  const [state, setState] = useState<AuthState>({ status: "loading" });
  // A sign-out left over from the last load: a sign-in waits for it, lest
  // its answer clear the new sign-in's cookie.
  const leftover = useRef<Promise<void>>(Promise.resolve());

  useEffect(() => {
    let active = true;
    // Another account signed in (here or in another tab): nothing cached for
    // the previous one may show.
    const stopAccount = onAccountChange(() => queryClient.clear());
    const stopUser = onUser((user) => active && setState({ status: "signed-in", user }));
    const stopEnd = onSessionEnd((reason) => {
      if (!active) return;
      queryClient.clear();
      setState({ status: "signed-out", reason });
    });
    // Another tab signed out: the server has revoked this sign-in too.
    // Another tab signed in: pick up the new cookie. Without Web Locks the
    // tabs could not take turns safely, so this one waits for its next 401.
    const stopBroadcast = onBroadcast((message) => {
      if (message.type === "signed-out") endSession("signed-out");
      if (message.type === "signed-in" && hasWebLocks()) {
        void refreshSession().catch(() => undefined);
      }
    });
    if (logoutPending()) {
      // The last sign-out never reached the server: send it now, before
      // anything else, and stay signed out.
      setState({ status: "signed-out" });
      leftover.current = sendSignOut().then((reached) => setLogoutPending(!reached));
    } else if (!mayHaveSession()) {
      setState({ status: "signed-out" });
    } else {
      refreshSession()
        .then((tokens) => {
          if (active && !tokens) setState({ status: "signed-out" });
        })
        .catch(() => active && setState({ status: "signed-out" }));
    }
    return () => {
      active = false;
      stopAccount();
      stopUser();
      stopEnd();
      stopBroadcast();
    };
  }, [queryClient]);

  const signIn = useCallback(async (username: string, password: string) => {
    await leftover.current;
    const tokens = unwrap(
      await api.POST("/api/auth/login", { body: { username, password, refresh_cookie: true } }),
    );
    // The new cookie replaced the one a failed sign-out left behind.
    setLogoutPending(false);
    acceptTokens(tokens);
    broadcast({ type: "signed-in" });
  }, []);

  const register = useCallback(
    async (username: string, password: string, displayName?: string) => {
      await leftover.current;
      const tokens = unwrap(
        await api.POST("/api/auth/register", {
          body: { username, password, display_name: displayName || null, refresh_cookie: true },
        }),
      );
      setLogoutPending(false);
      acceptTokens(tokens);
      broadcast({ type: "signed-in" });
    },
    [],
  );

  const signOut = useCallback(async () => {
    setLogoutPending(!(await sendSignOut()));
    broadcast({ type: "signed-out" });
    endSession("signed-out");
  }, []);

  const value = useMemo(
    () => ({ state, signIn, register, signOut }),
    [state, signIn, register, signOut],
  );
  return <AuthContext.Provider value={value}>{children}</AuthContext.Provider>;
}

/**
 * Sends a sign-out; whether Corral answered it. Its own answers count, even
 * errors (it clears the cookie then too); no answer, or a proxy's saying
 * Corral is unreachable (502 to 504), leaves it to be sent again.
 */
async function sendSignOut(): Promise<boolean> {
  return api.POST("/api/auth/logout", { body: {} }).then(
    ({ response }) => ![502, 503, 504].includes(response.status),
    () => false,
  );
}

export function useAuth(): AuthContextValue {
  const value = useContext(AuthContext);
  if (!value) throw new Error("useAuth outside AuthProvider");
  return value;
}

/** The signed-in account; only for pages behind `RequireAuth`. */
export function useUser(): UserView {
  const { state } = useAuth();
  if (state.status !== "signed-in") throw new Error("useUser without a signed-in account");
  return state.user;
}
