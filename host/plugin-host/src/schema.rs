//! The configuration schema of a plugin: the small part of JSON Schema a
//! manifest may use under `[config]`, and the check of saved values
//! against it.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Map, Value};

const MAX_FIELDS: usize = 100;

/// The settings a technician can give a plugin.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConfigSchema {
    fields: BTreeMap<String, Field>,
    description: Option<String>,
}

/// One setting.
#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    kind: Kind,
    description: Option<String>,
    default: Option<Value>,
    allowed: Option<Vec<Value>>,
    minimum: Option<f64>,
    maximum: Option<f64>,
    max_length: Option<u64>,
    required: bool,
    secret: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    String,
    Number,
    Integer,
    Boolean,
    StringArray,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::String => "string",
            Kind::Number => "number",
            Kind::Integer => "integer",
            Kind::Boolean => "boolean",
            Kind::StringArray => "array",
        }
    }
}

impl ConfigSchema {
    /// Reads the `[config]` table of a manifest. Errors name the field
    /// (`config.properties.email.type: ...`).
    pub fn from_toml(table: &toml::Table) -> Result<ConfigSchema, String> {
        let mut schema = ConfigSchema::default();
        let mut required: Vec<String> = Vec::new();
        for (key, value) in table {
            match key.as_str() {
                "type" => {
                    if value.as_str() != Some("object") {
                        return Err("`config.type` must be \"object\"".into());
                    }
                }
                "description" => {
                    schema.description = Some(
                        value
                            .as_str()
                            .ok_or("`config.description` must be a string")?
                            .to_string(),
                    );
                }
                "required" => {
                    let list = value
                        .as_array()
                        .ok_or("`config.required` must be an array of field names")?;
                    for item in list {
                        let name = item
                            .as_str()
                            .ok_or("`config.required` must be an array of field names")?;
                        required.push(name.to_string());
                    }
                }
                "properties" => {
                    let props = value
                        .as_table()
                        .ok_or("`config.properties` must be a table")?;
                    if props.len() > MAX_FIELDS {
                        return Err(format!("`config.properties`: more than {MAX_FIELDS} fields"));
                    }
                    for (name, def) in props {
                        check_field_name(name)?;
                        let def = def.as_table().ok_or_else(|| {
                            format!("`config.properties.{name}` must be a table")
                        })?;
                        schema
                            .fields
                            .insert(name.clone(), Field::from_toml(name, def)?);
                    }
                }
                other => {
                    return Err(format!(
                        "`config.{other}` is not supported (use type, description, properties, required)"
                    ))
                }
            }
        }
        for name in required {
            match schema.fields.get_mut(&name) {
                Some(field) => field.required = true,
                None => {
                    return Err(format!(
                        "`config.required` names `{name}`, which is not in `config.properties`"
                    ))
                }
            }
        }
        Ok(schema)
    }

    /// Whether the plugin has no settings.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// Names of the fields marked `secret = true`.
    pub fn secret_fields(&self) -> Vec<String> {
        self.fields
            .iter()
            .filter(|(_, f)| f.secret)
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// Checks saved settings and fills in defaults. `null` and `{}` mean
    /// "nothing set"; a field set to `null` is unset. Missing required
    /// fields are a problem only when `require` is set (a plugin may be
    /// installed before it is configured, not turned on). Every problem is
    /// reported as `field: problem`.
    pub fn apply(&self, value: &Value, require: bool) -> Result<Map<String, Value>, Vec<String>> {
        let empty = Map::new();
        let given = match value {
            Value::Null => &empty,
            Value::Object(map) => map,
            _ => return Err(vec!["config: must be a JSON object".into()]),
        };
        let mut problems = Vec::new();
        let mut out = Map::new();
        for (key, v) in given {
            let Some(field) = self.fields.get(key) else {
                problems.push(format!("{key}: not a setting of this plugin"));
                continue;
            };
            if v.is_null() {
                continue;
            }
            match field.check(v) {
                Ok(v) => {
                    out.insert(key.clone(), v);
                }
                Err(p) => problems.push(format!("{key}: {p}")),
            }
        }
        for (name, field) in &self.fields {
            if out.contains_key(name) || given.get(name).is_some_and(|v| !v.is_null()) {
                continue;
            }
            if let Some(default) = &field.default {
                out.insert(name.clone(), default.clone());
            } else if field.required && require {
                problems.push(format!("{name}: is required"));
            }
        }
        if problems.is_empty() {
            Ok(out)
        } else {
            Err(problems)
        }
    }

    /// The schema as JSON Schema, for forms: an object with one property
    /// per field (secret ones marked `"secret": true`) and `required`.
    pub fn to_json_schema(&self) -> Value {
        let mut properties = Map::new();
        let mut required = Vec::new();
        for (name, field) in &self.fields {
            let mut p = Map::new();
            match field.kind {
                Kind::StringArray => {
                    p.insert("type".into(), Value::from("array"));
                    p.insert("items".into(), serde_json::json!({"type": "string"}));
                }
                kind => {
                    p.insert("type".into(), Value::from(kind.name()));
                }
            }
            let optional = [
                ("description", field.description.clone().map(Value::from)),
                ("default", field.default.clone()),
                ("enum", field.allowed.clone().map(Value::from)),
                ("minimum", field.minimum.map(Value::from)),
                ("maximum", field.maximum.map(Value::from)),
                ("maxLength", field.max_length.map(Value::from)),
            ];
            for (key, value) in optional {
                if let Some(value) = value {
                    p.insert(key.into(), value);
                }
            }
            if field.secret {
                p.insert("secret".into(), Value::Bool(true));
            }
            if field.required {
                required.push(Value::from(name.clone()));
            }
            properties.insert(name.clone(), Value::Object(p));
        }
        let mut schema = Map::new();
        schema.insert("type".into(), Value::from("object"));
        if let Some(description) = &self.description {
            schema.insert("description".into(), Value::from(description.clone()));
        }
        schema.insert("properties".into(), Value::Object(properties));
        schema.insert("required".into(), Value::Array(required));
        Value::Object(schema)
    }
}

fn check_field_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`config.properties.{name}`: a field name is 1-64 characters of letters, digits, `-` and `_`"
        ))
    }
}

fn to_json(value: &toml::Value) -> Option<Value> {
    Some(match value {
        toml::Value::String(s) => Value::String(s.clone()),
        toml::Value::Integer(i) => Value::from(*i),
        toml::Value::Float(f) => Value::from(serde_json::Number::from_f64(*f)?),
        toml::Value::Boolean(b) => Value::Bool(*b),
        toml::Value::Array(items) => {
            Value::Array(items.iter().map(to_json).collect::<Option<_>>()?)
        }
        toml::Value::Table(t) => Value::Object(
            t.iter()
                .map(|(k, v)| Some((k.clone(), to_json(v)?)))
                .collect::<Option<_>>()?,
        ),
        toml::Value::Datetime(_) => return None,
    })
}

impl Field {
    fn from_toml(name: &str, def: &toml::Table) -> Result<Field, String> {
        let at = |key: &str| format!("`config.properties.{name}.{key}`");
        let kind = match def.get("type").and_then(toml::Value::as_str) {
            Some("string") => Kind::String,
            Some("number") => Kind::Number,
            Some("integer") => Kind::Integer,
            Some("boolean") => Kind::Boolean,
            Some("array") => Kind::StringArray,
            Some(other) => {
                return Err(format!(
                    "{}: `{other}` is not one of string, number, integer, boolean, array",
                    at("type")
                ))
            }
            None => return Err(format!("{} is required", at("type"))),
        };
        let mut field = Field {
            kind,
            description: None,
            default: None,
            allowed: None,
            minimum: None,
            maximum: None,
            max_length: None,
            required: false,
            secret: false,
        };
        for (key, value) in def {
            match key.as_str() {
                "type" => {}
                "description" => {
                    field.description =
                        Some(value.as_str().ok_or(format!("{} must be a string", at(key)))?.into());
                }
                "secret" => {
                    field.secret = value
                        .as_bool()
                        .ok_or(format!("{} must be true or false", at(key)))?;
                }
                "minimum" | "maximum" => {
                    if !matches!(kind, Kind::Number | Kind::Integer) {
                        return Err(format!("{} applies only to numbers", at(key)));
                    }
                    let n = match value {
                        toml::Value::Integer(i) => *i as f64,
                        toml::Value::Float(f) if f.is_finite() => *f,
                        _ => return Err(format!("{} must be a number", at(key))),
                    };
                    if key == "minimum" {
                        field.minimum = Some(n);
                    } else {
                        field.maximum = Some(n);
                    }
                }
                "maxLength" => {
                    if !matches!(kind, Kind::String | Kind::StringArray) {
                        return Err(format!("{} applies only to strings", at(key)));
                    }
                    let n = value
                        .as_integer()
                        .filter(|n| *n >= 0)
                        .ok_or(format!("{} must be a whole number ≥ 0", at(key)))?;
                    field.max_length = Some(n as u64);
                }
                "items" => {
                    let item_type = value
                        .as_table()
                        .and_then(|t| (t.len() == 1).then(|| t.get("type")).flatten())
                        .and_then(toml::Value::as_str);
                    if kind != Kind::StringArray || item_type != Some("string") {
                        return Err(format!(
                            "{}: only arrays of strings are supported (`items = {{ type = \"string\" }}`)",
                            at(key)
                        ));
                    }
                }
                "enum" | "default" => {}
                other => {
                    return Err(format!(
                        "{} is not supported (use type, description, default, enum, minimum, maximum, maxLength, secret)",
                        at(other)
                    ))
                }
            }
        }
        if let (Some(min), Some(max)) = (field.minimum, field.maximum) {
            if min > max {
                return Err(format!("{} is above its maximum", at("minimum")));
            }
        }
        if let Some(list) = def.get("enum") {
            let items = list
                .as_array()
                .filter(|a| !a.is_empty())
                .ok_or(format!("{} must be a non-empty array", at("enum")))?;
            let mut allowed = Vec::new();
            for item in items {
                let v =
                    to_json(item).ok_or(format!("{} holds an unsupported value", at("enum")))?;
                let v = field
                    .check_scalar(&v)
                    .map_err(|p| format!("{}: {v} {p}", at("enum")))?;
                allowed.push(v);
            }
            field.allowed = Some(allowed);
        }
        if let Some(default) = def.get("default") {
            let v =
                to_json(default).ok_or(format!("{} holds an unsupported value", at("default")))?;
            field.default = Some(
                field
                    .check(&v)
                    .map_err(|p| format!("{}: {p}", at("default")))?,
            );
        }
        Ok(field)
    }

    /// Checks one value (a string array item by item).
    fn check(&self, v: &Value) -> Result<Value, String> {
        if self.kind == Kind::StringArray {
            let items = v.as_array().ok_or("must be an array of strings")?;
            let mut out = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                out.push(
                    self.check_scalar(item)
                        .and_then(|item| self.check_allowed(item))
                        .map_err(|p| format!("item {i} {p}"))?,
                );
            }
            return Ok(Value::Array(out));
        }
        self.check_scalar(v).and_then(|v| self.check_allowed(v))
    }

    fn check_allowed(&self, v: Value) -> Result<Value, String> {
        match &self.allowed {
            Some(allowed) if !allowed.contains(&v) => Err(format!(
                "must be one of {}",
                allowed
                    .iter()
                    .map(Value::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
            _ => Ok(v),
        }
    }

    /// Type and range of a single value (for arrays: of one item).
    fn check_scalar(&self, v: &Value) -> Result<Value, String> {
        match self.kind {
            Kind::String | Kind::StringArray => {
                let s = v.as_str().ok_or("must be a string")?;
                if let Some(max) = self.max_length {
                    if s.chars().count() as u64 > max {
                        return Err(format!("must be at most {max} characters"));
                    }
                }
                Ok(v.clone())
            }
            Kind::Boolean => v
                .as_bool()
                .map(Value::Bool)
                .ok_or_else(|| "must be true or false".into()),
            Kind::Number | Kind::Integer => {
                let n = v
                    .as_f64()
                    .ok_or_else(|| format!("must be a {}", self.kind.name()))?;
                let out = if self.kind == Kind::Integer {
                    if let Some(i) = v.as_i64() {
                        Value::from(i)
                    } else if n.fract() == 0.0 && n.abs() < 9.0e15 {
                        Value::from(n as i64)
                    } else {
                        return Err("must be a whole number".into());
                    }
                } else {
                    v.clone()
                };
                if let Some(min) = self.minimum {
                    if n < min {
                        return Err(format!("must be at least {min}"));
                    }
                }
                if let Some(max) = self.maximum {
                    if n > max {
                        return Err(format!("must be at most {max}"));
                    }
                }
                Ok(out)
            }
        }
    }
}

/// Written out as the JSON Schema object it stands for, so a UI can build
/// a form from it.
impl Serialize for ConfigSchema {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut props = Map::new();
        for (name, f) in &self.fields {
            let mut p = Map::new();
            p.insert("type".into(), f.kind.name().into());
            if f.kind == Kind::StringArray {
                p.insert("items".into(), serde_json::json!({ "type": "string" }));
            }
            if let Some(d) = &f.description {
                p.insert("description".into(), d.clone().into());
            }
            if let Some(d) = &f.default {
                p.insert("default".into(), d.clone());
            }
            if let Some(a) = &f.allowed {
                p.insert("enum".into(), Value::Array(a.clone()));
            }
            if let Some(n) = f.minimum {
                p.insert("minimum".into(), n.into());
            }
            if let Some(n) = f.maximum {
                p.insert("maximum".into(), n.into());
            }
            if let Some(n) = f.max_length {
                p.insert("maxLength".into(), n.into());
            }
            if f.secret {
                p.insert("secret".into(), true.into());
            }
            props.insert(name.clone(), Value::Object(p));
        }
        let required: Vec<&String> = self
            .fields
            .iter()
            .filter(|(_, f)| f.required)
            .map(|(n, _)| n)
            .collect();
        let mut out = Map::new();
        out.insert("type".into(), "object".into());
        if let Some(d) = &self.description {
            out.insert("description".into(), d.clone().into());
        }
        out.insert("properties".into(), Value::Object(props));
        out.insert("required".into(), serde_json::json!(required));
        Value::Object(out).serialize(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema(text: &str) -> Result<ConfigSchema, String> {
        let table: toml::Table = toml::from_str(text).unwrap();
        ConfigSchema::from_toml(&table)
    }

    const EXAMPLE: &str = r#"
required = ["token"]
[properties.email]
type = "boolean"
default = true
[properties.mask]
type = "string"
maxLength = 8
default = "[x]"
[properties.level]
type = "string"
enum = ["beginner", "expert"]
[properties.top-k]
type = "integer"
minimum = 1
maximum = 20
default = 4
[properties.threshold]
type = "number"
minimum = 0
maximum = 1
[properties.tags]
type = "array"
items = { type = "string" }
maxLength = 3
[properties.token]
type = "string"
secret = true
"#;

    #[test]
    fn applies_defaults_and_keeps_given_values() {
        let s = schema(EXAMPLE).unwrap();
        let out = s.apply(&json!({"token": "t", "top-k": 7.0}), true).unwrap();
        assert_eq!(
            Value::Object(out),
            json!({"email": true, "mask": "[x]", "top-k": 7, "token": "t"})
        );
        assert_eq!(s.secret_fields(), vec!["token".to_string()]);
    }

    #[test]
    fn reports_every_problem_by_field() {
        let s = schema(EXAMPLE).unwrap();
        let problems = s
            .apply(
                &json!({
                    "email": "yes",
                    "mask": "far too long",
                    "level": "novice",
                    "top-k": 0,
                    "threshold": 1.5,
                    "tags": ["abcd"],
                    "colour": "red",
                }),
                true,
            )
            .unwrap_err();
        let want = [
            "email: must be true or false",
            "mask: must be at most 8 characters",
            "level: must be one of \"beginner\", \"expert\"",
            "top-k: must be at least 1",
            "threshold: must be at most 1",
            "tags: item 0 must be at most 3 characters",
            "colour: not a setting of this plugin",
            "token: is required",
        ];
        for w in want {
            assert!(
                problems.iter().any(|p| p == w),
                "missing {w:?} in {problems:?}"
            );
        }
        assert_eq!(problems.len(), want.len(), "{problems:?}");
        assert_eq!(
            s.apply(&json!([1]), true).unwrap_err(),
            vec!["config: must be a JSON object".to_string()]
        );
        assert_eq!(
            s.apply(&json!({"token": "t", "top-k": 2.5}), true)
                .unwrap_err(),
            vec!["top-k: must be a whole number".to_string()]
        );
    }

    #[test]
    fn null_unsets_a_field() {
        let s = schema(EXAMPLE).unwrap();
        let out = s.apply(&json!({"token": "t", "mask": null}), true).unwrap();
        assert_eq!(out["mask"], json!("[x]"));
        assert!(schema("")
            .unwrap()
            .apply(&Value::Null, true)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn required_fields_may_wait_until_the_plugin_is_turned_on() {
        let s = schema(EXAMPLE).unwrap();
        assert!(s.apply(&json!({}), false).is_ok());
        assert_eq!(
            s.apply(&json!({}), true).unwrap_err(),
            vec!["token: is required".to_string()]
        );
    }

    #[test]
    fn refuses_a_bad_schema() {
        let cases = [
            (
                "[properties.a]\ntype = \"object\"",
                "`config.properties.a.type`",
            ),
            (
                "[properties.a]\ndefault = 1",
                "`config.properties.a.type` is required",
            ),
            (
                "[properties.a]\ntype = \"boolean\"\ndefault = 1",
                "`config.properties.a.default`: must be true or false",
            ),
            (
                "[properties.a]\ntype = \"string\"\npattern = \"x\"",
                "`config.properties.a.pattern` is not supported",
            ),
            (
                "[properties.a]\ntype = \"string\"\nminimum = 1",
                "applies only to numbers",
            ),
            (
                "[properties.a]\ntype = \"string\"\nenum = [1]",
                "`config.properties.a.enum`",
            ),
            (
                "[properties.a]\ntype = \"array\"\nitems = { type = \"integer\" }",
                "only arrays of strings",
            ),
            ("required = [\"b\"]", "names `b`"),
            (
                "additionalProperties = false",
                "`config.additionalProperties` is not supported",
            ),
            ("[properties.\"a b\"]\ntype = \"string\"", "field name"),
        ];
        for (text, want) in cases {
            let e = schema(text).unwrap_err();
            assert!(e.contains(want), "{text}: {e}");
        }
    }

    #[test]
    fn serializes_as_json_schema() {
        let s = schema(EXAMPLE).unwrap();
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["type"], "object");
        assert_eq!(v["required"], json!(["token"]));
        assert_eq!(v["properties"]["tags"]["items"]["type"], "string");
        assert_eq!(v["properties"]["token"]["secret"], true);
    }
}
