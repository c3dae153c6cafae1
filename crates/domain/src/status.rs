//! The experiment status machine.
//!
//! `draft → running ⇄ paused`, `running | paused → completed`, any → `archived`.
//! Asking for the status an experiment already has is not an error: it is a no-op that the
//! API reports as `"changed": false`, which is what makes activation idempotent.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Draft,
    Running,
    Paused,
    Completed,
    Archived,
}

/// What applying a requested status to the current one means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Already in the requested status: nothing to write.
    Unchanged,
    /// A real transition `from → to`, to be applied as a compare-and-set on `from`.
    Change { from: Status, to: Status },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot move from {from} to {to}; allowed from {from}: {}", list(.allowed))]
pub struct TransitionError {
    pub from: Status,
    pub to: Status,
    pub allowed: &'static [Status],
}

fn list(allowed: &[Status]) -> String {
    if allowed.is_empty() {
        return "none".to_owned();
    }
    allowed
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

impl Status {
    pub const ALL: [Status; 5] = [
        Status::Draft,
        Status::Running,
        Status::Paused,
        Status::Completed,
        Status::Archived,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Draft => "draft",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Completed => "completed",
            Status::Archived => "archived",
        }
    }

    pub fn parse(s: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// The statuses reachable from `self` in one step.
    pub fn allowed_next(self) -> &'static [Status] {
        use Status::*;
        match self {
            Draft => &[Running, Archived],
            Running => &[Paused, Completed, Archived],
            Paused => &[Running, Completed, Archived],
            Completed => &[Archived],
            Archived => &[],
        }
    }

    /// Decide what moving to `to` means from `self`.
    pub fn transition_to(self, to: Status) -> Result<Transition, TransitionError> {
        if self == to {
            Ok(Transition::Unchanged)
        } else if self.allowed_next().contains(&to) {
            Ok(Transition::Change { from: self, to })
        } else {
            Err(TransitionError {
                from: self,
                to,
                allowed: self.allowed_next(),
            })
        }
    }

    /// Whether new subjects may be assigned in this status.
    pub fn assigns_new_subjects(self) -> bool {
        self == Status::Running
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Status::*;

    #[test]
    fn the_documented_transitions_are_allowed() {
        for (from, to) in [
            (Draft, Running),
            (Running, Paused),
            (Paused, Running),
            (Running, Completed),
            (Paused, Completed),
            (Draft, Archived),
            (Running, Archived),
            (Paused, Archived),
            (Completed, Archived),
        ] {
            assert_eq!(from.transition_to(to), Ok(Transition::Change { from, to }));
        }
    }

    #[test]
    fn other_transitions_are_refused_listing_the_allowed_ones() {
        let err = Draft.transition_to(Paused).unwrap_err();
        assert_eq!(err.allowed, &[Running, Archived]);
        assert_eq!(
            err.to_string(),
            "cannot move from draft to paused; allowed from draft: running, archived"
        );
        assert!(Completed.transition_to(Running).is_err());
        assert!(Archived.transition_to(Draft).is_err());
        assert!(Draft.transition_to(Completed).is_err());
        assert!(
            Archived
                .transition_to(Running)
                .unwrap_err()
                .to_string()
                .ends_with("none")
        );
    }

    #[test]
    fn asking_for_the_current_status_is_a_no_op() {
        for s in Status::ALL {
            assert_eq!(s.transition_to(s), Ok(Transition::Unchanged));
        }
    }

    #[test]
    fn status_names_round_trip() {
        for s in Status::ALL {
            assert_eq!(Status::parse(s.as_str()), Some(s));
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        assert_eq!(Status::parse("live"), None);
    }
}
