//! Rights and roles: what a caller may do.
//!
//! Every route of the HTTP API requires one [`Right`] (declared with the route, see the
//! `api` crate). A caller (an API key or a JWT) carries roles; a role is a named set of
//! rights: the built-in ones ([`BUILTIN_ROLES`]) and custom ones from configuration
//! (`[auth.roles]`), resolved by a [`RoleBook`]. The three original key scopes (`admin`,
//! `client`, `internal`) are built-in roles of the same names, so keys made with them keep
//! their meaning.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::Problems;

macro_rules! rights {
    ($($variant:ident => $name:literal: $doc:literal,)*) => {
        /// A named permission, written `resource:action`.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u8)]
        pub enum Right {
            $(#[doc = $doc] $variant,)*
        }

        impl Right {
            /// Every right, in declaration order.
            pub const ALL: &'static [Right] = &[$(Right::$variant,)*];

            /// The right's name (`experiments:read`, …).
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Right::$variant => $name,)*
                }
            }

            /// What the right allows, in words.
            pub const fn description(self) -> &'static str {
                match self {
                    $(Right::$variant => $doc,)*
                }
            }
        }
    };
}

rights! {
    ExperimentsRead => "experiments:read": "Read experiment definitions and list them.",
    ExperimentsWrite => "experiments:write": "Create and edit experiments, change their status, set QA overrides.",
    ExperimentsDecide => "experiments:decide": "Declare a winner by hand (`POST …/winner`, `policy.override_variant`).",
    EnvironmentsRead => "environments:read": "Read environments and their audiences.",
    EnvironmentsWrite => "environments:write": "Create environments; create, change and delete audiences.",
    ResultsRead => "results:read": "Read winners, results and time series; subscribe to pushes.",
    AssignmentsRead => "assignments:read": "Get subjects' assignments.",
    EventsWrite => "events:write": "Send events.",
    JobsRead => "jobs:read": "Read the jobs and their run records.",
    JobsRun => "jobs:run": "Trigger jobs.",
    WebhooksManage => "webhooks:manage": "Manage webhook endpoints and their deliveries.",
    KeysManage => "keys:manage": "Create, list and revoke API keys.",
    AuditRead => "audit:read": "Read experiments' audit logs.",
    ScopeAny => "scope:any": "Act in another environment or organization than the caller's (`environment` / `organization` parameters).",
}

impl Right {
    /// The right named `name`.
    pub fn parse(name: &str) -> Option<Right> {
        Right::ALL.iter().copied().find(|r| r.as_str() == name)
    }

    const fn bit(self) -> u32 {
        1 << (self as u8)
    }
}

impl fmt::Display for Right {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Right {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Right {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        Right::parse(&name)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown right '{name}'")))
    }
}

/// A set of rights.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Rights(u32);

impl Rights {
    /// No rights.
    pub const NONE: Rights = Rights(0);

    /// Every right.
    pub fn all() -> Rights {
        Rights::of(Right::ALL)
    }

    /// The set of `rights`.
    pub fn of(rights: &[Right]) -> Rights {
        Rights(rights.iter().fold(0, |bits, r| bits | r.bit()))
    }

    pub fn contains(self, right: Right) -> bool {
        self.0 & right.bit() != 0
    }

    /// Both sets together.
    pub fn union(self, other: Rights) -> Rights {
        Rights(self.0 | other.0)
    }

    /// The rights of the set, in declaration order.
    pub fn iter(self) -> impl Iterator<Item = Right> {
        Right::ALL
            .iter()
            .copied()
            .filter(move |r| self.contains(*r))
    }
}

/// The built-in roles and their rights.
///
/// - `viewer`: reads experiments, environments, results, job runs and audit logs;
/// - `experimenter`: a viewer who also edits experiments and declares winners;
/// - `operator`: a viewer who also runs jobs and manages webhook endpoints;
/// - `admin`: every right;
/// - `client` (an app): assignments, events, winners and results in its own scope;
/// - `internal` (a cron operator): runs jobs and reads their records.
pub const BUILTIN_ROLES: &[(&str, &[Right])] = &[
    ("viewer", VIEWER),
    ("experimenter", EXPERIMENTER),
    ("operator", OPERATOR),
    ("admin", Right::ALL),
    ("client", CLIENT),
    ("internal", &[Right::JobsRead, Right::JobsRun]),
];

const VIEWER: &[Right] = &[
    Right::ExperimentsRead,
    Right::EnvironmentsRead,
    Right::ResultsRead,
    Right::JobsRead,
    Right::AuditRead,
];

const EXPERIMENTER: &[Right] = &[
    Right::ExperimentsRead,
    Right::EnvironmentsRead,
    Right::ResultsRead,
    Right::JobsRead,
    Right::AuditRead,
    Right::ExperimentsWrite,
    Right::ExperimentsDecide,
];

const OPERATOR: &[Right] = &[
    Right::ExperimentsRead,
    Right::EnvironmentsRead,
    Right::ResultsRead,
    Right::JobsRead,
    Right::AuditRead,
    Right::JobsRun,
    Right::WebhooksManage,
];

const CLIENT: &[Right] = &[
    Right::AssignmentsRead,
    Right::EventsWrite,
    Right::ResultsRead,
];

/// Role names resolved to rights: the built-in roles and the configured custom ones.
#[derive(Debug, Clone)]
pub struct RoleBook {
    roles: HashMap<String, Rights>,
}

impl Default for RoleBook {
    fn default() -> Self {
        Self {
            roles: BUILTIN_ROLES
                .iter()
                .map(|(name, rights)| ((*name).to_owned(), Rights::of(rights)))
                .collect(),
        }
    }
}

impl RoleBook {
    /// The built-in roles plus `custom` (role name → right names). Every problem is listed
    /// under `field`: a custom role may not reuse a built-in name, must name rights that
    /// exist, and at least one.
    pub fn with_custom(
        custom: &BTreeMap<String, Vec<String>>,
        field: &str,
    ) -> Result<Self, Problems> {
        let mut book = RoleBook::default();
        let mut problems = Problems::new();
        for (name, rights) in custom {
            let at = format!("{field}.{name}");
            if book.roles.contains_key(name) {
                problems.push(&at, "is a built-in role; choose another name");
                continue;
            }
            crate::validation::check_key(&mut problems, &at, name);
            if rights.is_empty() {
                problems.push(&at, "give at least one right");
            }
            let mut set = Rights::NONE;
            for right in rights {
                match Right::parse(right) {
                    Some(r) => set = set.union(Rights::of(&[r])),
                    None => problems.push(
                        &at,
                        format!("unknown right '{right}' (known: {})", right_names()),
                    ),
                }
            }
            book.roles.insert(name.clone(), set);
        }
        if problems.is_empty() {
            Ok(book)
        } else {
            Err(problems)
        }
    }

    /// The rights of `role`, if it exists.
    pub fn rights_of(&self, role: &str) -> Option<Rights> {
        self.roles.get(role).copied()
    }

    /// The union of the rights of every known role of `roles` (unknown names add nothing).
    pub fn resolve<'a>(&self, roles: impl IntoIterator<Item = &'a str>) -> Rights {
        roles
            .into_iter()
            .filter_map(|r| self.rights_of(r))
            .fold(Rights::NONE, Rights::union)
    }

    /// Every role name, sorted.
    pub fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.roles.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }

    /// The roles that hold `right`, sorted.
    pub fn holders(&self, right: Right) -> Vec<&str> {
        let mut names: Vec<&str> = self
            .roles
            .iter()
            .filter(|(_, set)| set.contains(right))
            .map(|(name, _)| name.as_str())
            .collect();
        names.sort_unstable();
        names
    }
}

/// Every right's name, comma-separated (for error messages).
pub fn right_names() -> String {
    Right::ALL
        .iter()
        .map(|r| r.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_right_parses_from_its_own_name_and_nothing_else() {
        for r in Right::ALL {
            assert_eq!(Right::parse(r.as_str()), Some(*r));
        }
        assert_eq!(Right::parse("experiments:delete"), None);
        assert_eq!(Right::parse("EXPERIMENTS:READ"), None);
        assert!(Right::ALL.len() <= 32, "Rights is a u32 bit set");
    }

    #[test]
    fn the_original_scopes_keep_their_meaning_as_roles() {
        let book = RoleBook::default();
        assert_eq!(book.rights_of("admin"), Some(Rights::all()));
        let client = book.rights_of("client").unwrap();
        assert!(client.contains(Right::AssignmentsRead) && client.contains(Right::EventsWrite));
        assert!(!client.contains(Right::ExperimentsRead));
        assert!(!client.contains(Right::ScopeAny));
        let internal = book.rights_of("internal").unwrap();
        assert_eq!(
            internal.iter().collect::<Vec<_>>(),
            [Right::JobsRead, Right::JobsRun]
        );
    }

    #[test]
    fn a_viewer_holds_no_right_that_changes_anything() {
        let viewer = RoleBook::default().rights_of("viewer").unwrap();
        for r in viewer.iter() {
            assert!(
                r.as_str().ends_with(":read"),
                "viewer holds {r}, which is not a read"
            );
        }
    }

    #[test]
    fn custom_roles_resolve_and_bad_ones_are_all_reported() {
        let mut custom = BTreeMap::new();
        custom.insert(
            "analyst".to_owned(),
            vec!["results:read".to_owned(), "experiments:read".to_owned()],
        );
        let book = RoleBook::with_custom(&custom, "auth.roles").unwrap();
        let analyst = book.rights_of("analyst").unwrap();
        assert_eq!(
            analyst.iter().collect::<Vec<_>>(),
            [Right::ExperimentsRead, Right::ResultsRead]
        );
        assert_eq!(
            book.resolve(["analyst", "client", "nobody"]),
            analyst.union(book.rights_of("client").unwrap())
        );
        assert_eq!(
            book.holders(Right::JobsRun),
            ["admin", "internal", "operator"]
        );

        custom.insert("admin".to_owned(), vec!["results:read".to_owned()]);
        custom.insert("empty".to_owned(), vec![]);
        custom.insert("typo".to_owned(), vec!["result:read".to_owned()]);
        let problems = RoleBook::with_custom(&custom, "auth.roles").unwrap_err();
        let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(
            fields,
            ["auth.roles.admin", "auth.roles.empty", "auth.roles.typo"]
        );
    }
}
