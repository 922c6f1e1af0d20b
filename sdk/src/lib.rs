//! What Corral's host and its extensions share: the roles an account can
//! have, the JSON body of every error the REST API returns, and the backend
//! interface ([`backend`]) with its C ABI ([`abi`]) and chat templates
//! ([`chat_template`]).

pub mod abi;
pub mod backend;
pub mod chat_template;
pub mod text;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// What an account may do. See the role table in Corral's README.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Chats, own history, own tickets, own usage.
    User,
    /// A user who also manages users and sees platform statistics, all
    /// tickets and the audit log.
    Admin,
    /// An admin who also manages models, plugins and backends.
    Technician,
}

impl Role {
    /// Every role, lowest first.
    pub const ALL: [Role; 3] = [Role::User, Role::Admin, Role::Technician];

    /// Admins and technicians: the staff who answer tickets.
    pub fn is_staff(self) -> bool {
        matches!(self, Role::Admin | Role::Technician)
    }

    /// The name used in JSON and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Admin => "admin",
            Role::Technician => "technician",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "user" => Ok(Role::User),
            "admin" => Ok(Role::Admin),
            "technician" => Ok(Role::Technician),
            other => Err(format!(
                "unknown role `{other}`: expected user, admin or technician"
            )),
        }
    }
}

/// The body of every error response of the REST API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({
    "code": "validation_failed",
    "message": "the request is not valid",
    "details": [{"field": "username", "message": "must be 3 to 32 characters"}]
}))]
pub struct ErrorBody {
    /// Stable machine-readable code, e.g. `not_found`, `validation_failed`.
    pub code: String,
    /// What went wrong, for people.
    pub message: String,
    /// One entry per invalid field, for validation errors.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<FieldError>,
}

/// One invalid field of a request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct FieldError {
    /// The field's name as it appears in the request.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_names_round_trip() {
        for role in Role::ALL {
            assert_eq!(role.as_str().parse::<Role>(), Ok(role));
            let json = serde_json::to_string(&role).unwrap();
            assert_eq!(json, format!("\"{role}\""));
        }
        assert!("root".parse::<Role>().is_err());
    }
}
