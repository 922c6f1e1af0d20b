import { useEffect } from "react";
import { useQueryClient, type QueryClient } from "@tanstack/react-query";
import { authorizedFetch, type Schemas } from "@/lib/api";
import { modelKeys, removeModel, type DownloadProgress, type ModelView } from "./models";
import { readSse, type SseFrame } from "./sse";

export type ModelEvent = Schemas["Event"];

function patchModel(queryClient: QueryClient, id: string, patch: (m: ModelView) => ModelView) {
  queryClient.setQueryData<ModelView>(modelKeys.one(id), (old) => (old ? patch(old) : old));
  queryClient.setQueryData<ModelView[]>(modelKeys.list(), (old) =>
    old?.map((m) => (m.id === id ? patch(m) : m)),
  );
}

/**
 * Applies one event to the query cache, so the list, the detail page and
 * the progress bars show it without asking the server again. Returns
 * `false` when the stream is ending (`shutting_down`).
 */
export function applyModelEvent(queryClient: QueryClient, frame: SseFrame): boolean {
  if (frame.event === "lagged") {
    // Some events were missed: what the server says now is the truth.
    void queryClient.invalidateQueries({ queryKey: modelKeys.all });
    return true;
  }
  let event: ModelEvent;
  try {
    event = JSON.parse(frame.data) as ModelEvent;
  } catch {
    return true;
  }
  switch (event.type) {
    case "model_download": {
      const progress = (old?: DownloadProgress | null): DownloadProgress => ({
        model_id: event.model_id,
        status: "downloading",
        active: true,
        error: null,
        ...old,
        bytes: event.bytes,
        total: event.total,
        rate: event.rate,
        eta_secs: event.eta_secs,
      });
      queryClient.setQueryData<DownloadProgress>(modelKeys.progress(event.model_id), (old) =>
        progress(old),
      );
      patchModel(queryClient, event.model_id, (m) => ({
        ...m,
        status: "downloading",
        progress: progress(m.progress),
      }));
      return true;
    }
    case "model_status": {
      const known = queryClient
        .getQueryData<ModelView[]>(modelKeys.list())
        ?.some((m) => m.id === event.model_id);
      patchModel(queryClient, event.model_id, (m) => ({
        ...m,
        status: event.status,
        error: event.error ?? null,
        progress: event.status === "downloading" ? m.progress : null,
      }));
      if (event.status !== "downloading") {
        queryClient.removeQueries({ queryKey: modelKeys.progress(event.model_id) });
      }
      // Size, file and usability change with the status; a model added in
      // another tab is not in the list yet.
      void queryClient.invalidateQueries({ queryKey: known ? modelKeys.one(event.model_id) : modelKeys.all });
      if (event.status !== "downloading") void queryClient.invalidateQueries({ queryKey: modelKeys.list() });
      return true;
    }
    case "model_deleted":
      removeModel(queryClient, event.model_id);
      return true;
    case "shutting_down":
      return false;
    default:
      return true;
  }
}

const MIN_DELAY = 1_000;
const MAX_DELAY = 30_000;

/**
 * Listens to `/api/events` while mounted and `enabled` (technicians only;
 * the server refuses everyone else). The stream needs the bearer token, so
 * it is a fetch read by hand rather than an EventSource. When it ends or
 * fails it reconnects, waiting longer after each failure.
 */
export function useModelEvents(enabled: boolean) {
  const queryClient = useQueryClient();
  useEffect(() => {
    if (!enabled) return;
    const abort = new AbortController();
    let timer: ReturnType<typeof setTimeout> | undefined;
    let delay = MIN_DELAY;
    let first = true;

    const connect = async () => {
      try {
        const response = await authorizedFetch("/api/events", {
          headers: { Accept: "text/event-stream" },
          signal: abort.signal,
        });
        if (response.status === 401 || response.status === 403) return;
        if (!response.ok || !response.body) throw new Error(`events answered ${response.status}`);
        delay = MIN_DELAY;
        // Whatever happened while disconnected is only in the server's state.
        if (!first) void queryClient.invalidateQueries({ queryKey: modelKeys.all });
        first = false;
        for await (const frame of readSse(response.body, abort.signal)) {
          applyModelEvent(queryClient, frame);
        }
      } catch {
        // Network errors and aborts alike: retry below unless unmounted.
      }
      if (abort.signal.aborted) return;
      first = false;
      timer = setTimeout(() => void connect(), delay);
      delay = Math.min(MAX_DELAY, delay * 2);
    };
    void connect();
    return () => {
      abort.abort();
      clearTimeout(timer);
    };
  }, [enabled, queryClient]);
}
