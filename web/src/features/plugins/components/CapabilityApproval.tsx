import { useId, useState } from "react";
import { useTranslation } from "react-i18next";
import { ErrorMessage } from "@/components/ErrorMessage";
import { ApiError } from "@/lib/api";
import { useUpdatePlugin, type PluginChanges, type PluginView } from "../api/plugins";

/** The host imports Corral lends plugins; each needs a technician's approval. */
export const knownCapabilities = ["log", "kv", "config", "generate", "embed", "http"] as const;

const sameSet = (a: string[], b: string[]) => a.length === b.length && a.every((x) => b.includes(x));

/** One line on what approving a capability lets the plugin do. */
export function useCapabilityText() {
  const { t } = useTranslation("plugins");
  return (capability: string, plugin?: PluginView) =>
    (knownCapabilities as readonly string[]).includes(capability)
      ? t(`capabilities.explain.${capability}`, { kb: plugin?.limits?.kv_kb ?? "?" })
      : t("capabilities.explain.unknown");
}

/**
 * A declared host (as the server writes it: `api.example.com`,
 * `*.example.com`, `[2001:db8::1]:8080`, `host:*`) split into its name
 * and its port, so each can be said in words.
 */
export function splitHost(host: string): { name: string; port: string | null } {
  const bracket = host.lastIndexOf("]");
  const colon = host.lastIndexOf(":");
  // An IPv6 address keeps its colons inside the brackets.
  if (colon > bracket && (bracket >= 0 || host.indexOf(":") === colon)) {
    return { name: host.slice(0, colon), port: host.slice(colon + 1) };
  }
  return { name: host, port: null };
}

/** What a declared host lets requests reach, in a sentence. */
export function useHostText() {
  const { t } = useTranslation("plugins");
  return (host: string) => {
    const { name, port } = splitHost(host);
    const ports =
      port === null ? t("hosts.ports.standard") : port === "*" ? t("hosts.ports.any") : t("hosts.ports.one", { port });
    return name.startsWith("*.")
      ? t("hosts.subdomains", { domain: name.slice(2), ports })
      : t("hosts.exact", { host: name, ports });
  };
}

/** What is approved: capabilities, the hosts outgoing HTTP may reach, and the private network. */
type Approvals = { capabilities: string[]; hosts: string[]; privateNetwork: boolean };

const savedApprovals = (plugin: PluginView): Approvals => ({
  capabilities: plugin.approved,
  hosts: plugin.approved_hosts,
  privateNetwork: plugin.private_network,
});

const sameApprovals = (a: Approvals, b: Approvals) =>
  sameSet(a.capabilities, b.capabilities) && sameSet(a.hosts, b.hosts) && a.privateNetwork === b.privateNetwork;

const toggle = (list: string[], item: string, on: boolean) =>
  on ? [...list.filter((x) => x !== item), item] : list.filter((x) => x !== item);

function Hint({ children }: { children: string }) {
  return <p className="mt-3 text-sm text-amber-900 dark:text-amber-200">{children}</p>;
}

/**
 * What the plugin asks for, each with a checkbox: a capability that is not
 * approved fails when the plugin calls it, and nothing else changes. A
 * plugin that declares hosts for outgoing HTTP also gets a checkbox per
 * host and one for the private network; all of it is saved together.
 */
export function CapabilityApproval({ plugin }: { plugin: PluginView }) {
  const { t } = useTranslation("plugins");
  const id = useId();
  const explain = useCapabilityText();
  const describeHost = useHostText();
  const update = useUpdatePlugin(plugin.id);
  const saved = savedApprovals(plugin);
  const [picked, setPicked] = useState<Approvals>(saved);
  const [done, setDone] = useState(false);
  const [last, setLast] = useState(saved);
  // Approvals saved elsewhere (or cut by an upgrade) replace what was ticked here.
  if (!sameApprovals(last, saved)) {
    setLast(saved);
    setPicked(saved);
  }
  const declaresHosts = plugin.http_hosts.length > 0;
  const dirty = !sameApprovals(picked, saved);
  const missing = plugin.capabilities.filter((c) => !plugin.approved.includes(c));
  const httpPicked = picked.capabilities.includes("http");
  const hostsError = update.error instanceof ApiError ? update.error.fields.approved_hosts : undefined;
  const change = (next: (old: Approvals) => Approvals) => {
    setDone(false);
    setPicked(next);
  };

  if (plugin.capabilities.length === 0) {
    return <p className="text-sm muted">{t("capabilities.none")}</p>;
  }

  return (
    <form
      onSubmit={(e) => {
        e.preventDefault();
        setDone(false);
        // In the manifest's order, so the saved lists read like the request.
        const changes: PluginChanges = {
          approved: plugin.capabilities.filter((c) => picked.capabilities.includes(c)),
        };
        if (declaresHosts) {
          changes.approved_hosts = plugin.http_hosts.filter((h) => picked.hosts.includes(h));
          changes.private_network = picked.privateNetwork;
        }
        update.mutate(changes, { onSuccess: () => setDone(true) });
      }}
    >
      <fieldset>
        <legend className="sr-only">{t("capabilities.legend", { name: plugin.name })}</legend>
        <ul className="flex flex-col gap-3">
          {plugin.capabilities.map((capability) => (
            <li key={capability} className="flex items-start gap-3">
              <input
                id={`${id}-${capability}`}
                type="checkbox"
                className="mt-1 size-4 accent-brand-700"
                checked={picked.capabilities.includes(capability)}
                aria-describedby={`${id}-${capability}-hint`}
                onChange={(e) => {
                  const on = e.target.checked;
                  change((old) => ({ ...old, capabilities: toggle(old.capabilities, capability, on) }));
                }}
              />
              <div className="min-w-0">
                <label htmlFor={`${id}-${capability}`} className="font-mono text-sm font-medium">
                  {capability}
                </label>
                <p id={`${id}-${capability}-hint`} className="text-sm muted">
                  {explain(capability, plugin)}
                </p>
              </div>
            </li>
          ))}
        </ul>
      </fieldset>

      {declaresHosts && (
        <>
          <fieldset
            className="mt-5"
            aria-describedby={`${id}-hosts-intro${hostsError ? ` ${id}-hosts-error` : ""}`}
          >
            <legend className="text-sm font-semibold">{t("hosts.legend")}</legend>
            <p id={`${id}-hosts-intro`} className="mb-3 text-sm muted">
              {t("hosts.intro")}
            </p>
            <ul className="flex flex-col gap-3">
              {plugin.http_hosts.map((host, index) => (
                <li key={host} className="flex items-start gap-3">
                  <input
                    id={`${id}-host-${index}`}
                    type="checkbox"
                    className="mt-1 size-4 accent-brand-700"
                    checked={picked.hosts.includes(host)}
                    aria-describedby={`${id}-host-${index}-hint`}
                    onChange={(e) => {
                      const on = e.target.checked;
                      change((old) => ({ ...old, hosts: toggle(old.hosts, host, on) }));
                    }}
                  />
                  <div className="min-w-0">
                    <label htmlFor={`${id}-host-${index}`} className="break-all font-mono text-sm font-medium">
                      {host}
                    </label>
                    <p id={`${id}-host-${index}-hint`} className="text-sm muted">
                      {describeHost(host)}
                    </p>
                  </div>
                </li>
              ))}
            </ul>
            {hostsError && (
              <p id={`${id}-hosts-error`} className="mt-2 text-sm text-red-700 dark:text-red-400">
                {hostsError}
              </p>
            )}
          </fieldset>

          <div className="mt-5 flex items-start gap-3 rounded-md border border-amber-300 p-3 dark:border-amber-800">
            <input
              id={`${id}-private`}
              type="checkbox"
              className="mt-1 size-4 accent-brand-700"
              checked={picked.privateNetwork}
              aria-describedby={`${id}-private-hint`}
              onChange={(e) => {
                const on = e.target.checked;
                change((old) => ({ ...old, privateNetwork: on }));
              }}
            />
            <div className="min-w-0">
              <label htmlFor={`${id}-private`} className="text-sm font-medium">
                {t("hosts.privateNetwork")}
              </label>
              <p id={`${id}-private-hint`} className="text-sm text-amber-900 dark:text-amber-200">
                <span aria-hidden="true">⚠ </span>
                {t("hosts.privateNetworkHint")}
              </p>
            </div>
          </div>

          {picked.hosts.length > 0 && !httpPicked && <Hint>{t("hosts.withoutHttp")}</Hint>}
          {httpPicked && picked.hosts.length === 0 && <Hint>{t("hosts.httpWithoutHosts")}</Hint>}
        </>
      )}

      {missing.length > 0 && plugin.enabled && <Hint>{t("capabilities.missing", { list: missing.join(", ") })}</Hint>}
      <div className="mt-3">
        <ErrorMessage error={update.error} />
      </div>
      <div className="mt-3 flex flex-wrap items-center gap-3">
        <button type="submit" className="btn-primary" disabled={!dirty || update.isPending}>
          {update.isPending ? t("actions.saving") : t("capabilities.save")}
        </button>
        <button
          type="button"
          className="btn-secondary"
          disabled={!dirty || update.isPending}
          onClick={() => setPicked(saved)}
        >
          {t("actions.undo")}
        </button>
        <p role="status" aria-live="polite" className="text-sm">
          {dirty ? t("unsaved") : done ? t("capabilities.saved") : ""}
        </p>
      </div>
    </form>
  );
}
