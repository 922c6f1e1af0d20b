// A plugin's configuration schema (the small part of JSON Schema a
// manifest may use) turned into form fields, form values turned back into
// the JSON object the server checks, and the server's problems matched to
// the fields they are about.

export type FieldKind = "string" | "number" | "integer" | "boolean" | "strings";

export type ConfigField = {
  name: string;
  kind: FieldKind;
  description?: string;
  default?: unknown;
  /** `enum`: the allowed values (for a list of strings, of each item). */
  options?: (string | number)[];
  minimum?: number;
  maximum?: number;
  maxLength?: number;
  required: boolean;
  /** Never shown again once saved; left empty, the saved value is kept. */
  secret: boolean;
};

/** What a form control holds: text, a checkbox, or the ticked items of a list. */
export type FieldValue = string | boolean | string[];
export type FormValues = Record<string, FieldValue>;

const kinds: Record<string, FieldKind> = {
  string: "string",
  number: "number",
  integer: "integer",
  boolean: "boolean",
  array: "strings",
};

const isRecord = (v: unknown): v is Record<string, unknown> =>
  typeof v === "object" && v !== null && !Array.isArray(v);

const finite = (v: unknown) => (typeof v === "number" && Number.isFinite(v) ? v : undefined);

/** The fields of a schema in the order the server lists them (by name). */
export function configFields(schema: unknown): ConfigField[] {
  if (!isRecord(schema) || !isRecord(schema.properties)) return [];
  const required = new Set(Array.isArray(schema.required) ? schema.required.filter((r) => typeof r === "string") : []);
  const fields: ConfigField[] = [];
  for (const [name, raw] of Object.entries(schema.properties)) {
    if (!isRecord(raw)) continue;
    const kind = kinds[String(raw.type)];
    if (!kind) continue;
    const options = Array.isArray(raw.enum)
      ? raw.enum.filter((o): o is string | number => typeof o === "string" || typeof o === "number")
      : undefined;
    fields.push({
      name,
      kind,
      description: typeof raw.description === "string" ? raw.description : undefined,
      default: raw.default,
      options: options?.length && kind !== "boolean" ? options : undefined,
      minimum: finite(raw.minimum),
      maximum: finite(raw.maximum),
      maxLength: finite(raw.maxLength),
      required: required.has(name),
      secret: raw.secret === true,
    });
  }
  return fields;
}

/** The schema's own description, if it has one. */
export function schemaDescription(schema: unknown): string | undefined {
  return isRecord(schema) && typeof schema.description === "string" ? schema.description : undefined;
}

/** The form's starting values from the saved configuration (secrets always start empty). */
export function initialValues(fields: ConfigField[], config: unknown): FormValues {
  const saved = isRecord(config) ? config : {};
  const values: FormValues = {};
  for (const field of fields) {
    const value = saved[field.name] ?? (field.secret ? undefined : field.default);
    if (field.secret) {
      values[field.name] = "";
    } else if (field.kind === "boolean") {
      values[field.name] = value === true;
    } else if (field.kind === "strings") {
      const items = Array.isArray(value) ? value.map(String) : [];
      values[field.name] = field.options ? items : items.join("\n");
    } else {
      values[field.name] = value == null ? "" : String(value);
    }
  }
  return values;
}

export type Converted = {
  config: Record<string, unknown>;
  /** Problems found before asking the server, by field; message keys of the `plugins` namespace. */
  errors: Record<string, { key: string; values?: Record<string, unknown> }>;
};

/**
 * The JSON object to save. An empty text box unsets its field (the
 * default applies), and an empty secret is sent as `null`, which keeps the
 * saved value.
 */
export function toConfig(fields: ConfigField[], values: FormValues): Converted {
  const config: Record<string, unknown> = {};
  const errors: Converted["errors"] = {};
  for (const field of fields) {
    const value = values[field.name];
    if (field.kind === "boolean" && !field.secret) {
      config[field.name] = value === true;
      continue;
    }
    if (field.kind === "strings" && !field.secret) {
      config[field.name] = Array.isArray(value)
        ? value
        : String(value ?? "")
            .split("\n")
            .map((line) => line.trim())
            .filter((line) => line !== "");
      continue;
    }
    const text = typeof value === "string" ? value : "";
    if (text.trim() === "") {
      config[field.name] = null;
      continue;
    }
    if (field.options) {
      config[field.name] = field.options.find((o) => String(o) === text) ?? text;
    } else if (field.kind === "number" || field.kind === "integer") {
      const n = Number(text.trim());
      if (!Number.isFinite(n)) errors[field.name] = { key: "config.errors.number" };
      else if (field.kind === "integer" && !Number.isInteger(n)) errors[field.name] = { key: "config.errors.integer" };
      else config[field.name] = n;
    } else if (field.kind === "strings") {
      config[field.name] = text
        .split("\n")
        .map((line) => line.trim())
        .filter((line) => line !== "");
    } else if (field.kind === "boolean") {
      config[field.name] = text.trim() === "true";
    } else {
      config[field.name] = text;
    }
  }
  return { config, errors };
}

/**
 * Splits the server's "name: problem; other: problem" into problems by
 * field; what names no field of the form stays in `other`.
 */
export function problemsByField(
  message: string,
  names: string[],
): { fields: Record<string, string>; other: string[] } {
  const fields: Record<string, string> = {};
  const other: string[] = [];
  const known = new Set(names);
  for (const part of message.split(/;\s+(?=[A-Za-z0-9_-]+: )/)) {
    const match = /^([A-Za-z0-9_-]+): ([\s\S]*)$/.exec(part.trim());
    if (match && known.has(match[1])) {
      fields[match[1]] = fields[match[1]] ? `${fields[match[1]]}; ${match[2]}` : match[2];
    } else if (part.trim()) {
      other.push(part.trim());
    }
  }
  return { fields, other };
}
