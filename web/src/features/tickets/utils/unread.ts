// The API keeps no read state, so each account remembers in this browser
// the `updated_at` every ticket had when it last opened it.

const MAX_ENTRIES = 500;

type Seen = Record<string, string>;

const storageKey = (userId: string) => `corral.tickets.seen.${userId}`;

function load(userId: string): Seen {
  try {
    const raw = localStorage.getItem(storageKey(userId));
    const parsed: unknown = raw ? JSON.parse(raw) : {};
    return parsed && typeof parsed === "object" ? (parsed as Seen) : {};
  } catch {
    return {};
  }
}

/** Remembers that `userId` has seen the ticket as it was at `updatedAt`. */
export function markSeen(userId: string, ticketId: string, updatedAt: string): void {
  const seen = load(userId);
  if (seen[ticketId] && Date.parse(seen[ticketId]) >= Date.parse(updatedAt)) return;
  seen[ticketId] = updatedAt;
  let entries = Object.entries(seen);
  if (entries.length > MAX_ENTRIES) {
    entries = entries.sort((a, b) => Date.parse(b[1]) - Date.parse(a[1])).slice(0, MAX_ENTRIES);
  }
  try {
    localStorage.setItem(storageKey(userId), JSON.stringify(Object.fromEntries(entries)));
  } catch {
    // A full or disabled storage only costs the unread markers.
  }
}

/**
 * Whether the ticket changed since `userId` last opened it. A ticket the
 * account opened itself and nobody touched since is not news to it.
 */
export function isUnread(
  userId: string,
  ticket: { id: string; owner_id: string; created_at: string; updated_at: string },
  seen: Seen = load(userId),
): boolean {
  const mark = seen[ticket.id];
  if (mark) return Date.parse(ticket.updated_at) > Date.parse(mark);
  return !(ticket.owner_id === userId && ticket.updated_at === ticket.created_at);
}

export function seenTickets(userId: string): Seen {
  return load(userId);
}
