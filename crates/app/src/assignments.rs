//! Assignment: which variant a subject sees, with its config (SPEC §3), and the in-process
//! caches that keep the hot path off the store (experiment definitions for a second;
//! stored assignments, which never change, until evicted).

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use utoipa::ToSchema;
use verdict_domain::assignment::{self, MAX_SUBJECT_LEN, Reason, SubjectState};
use verdict_domain::experiment::Unit;
use verdict_domain::targeting::Attributes;
use verdict_domain::{Assignment, Experiment, Problems, Scope, Status};
use verdict_store::{Exposure, SubjectRecord};

use crate::auth::{Caller, ScopeParams};
use crate::error::AppError;
use crate::{App, Inner, now};

/// What a subject sees in one experiment. Always carries a usable config.
// Borrowed from the (cached) experiment and serialized straight from it: answering a
// request copies no part of the experiment.
#[derive(Debug, Clone, Serialize, PartialEq, ToSchema)]
pub struct AssignmentView<'a> {
    /// The experiment key.
    #[schema(value_type = String)]
    pub experiment: &'a str,
    /// The variant key.
    #[schema(value_type = String)]
    pub variant: &'a str,
    /// The variant's config.
    #[schema(value_type = Value)]
    pub config: &'a Value,
    #[serde(with = "time::serde::rfc3339::option")]
    pub assigned_at: Option<OffsetDateTime>,
    pub in_experiment: bool,
    pub reason: Reason,
    /// The decided winner's variant key, if any.
    #[schema(value_type = Option<String>)]
    pub winner: Option<&'a str>,
}

/// A subject id is 1 to [`MAX_SUBJECT_LEN`] bytes wherever it is given.
pub(crate) fn check_subject(subject: &str) -> Result<(), AppError> {
    if subject.is_empty() {
        Err(AppError::invalid_field("subject_id", "is required"))
    } else if subject.len() > MAX_SUBJECT_LEN {
        Err(AppError::invalid_field(
            "subject_id",
            "must be at most 256 bytes",
        ))
    } else {
        Ok(())
    }
}

/// Decide and, for new eligible subjects, store the assignment (SPEC §3).
///
/// Store reads are avoided where they cannot change the answer: once a winner is decided
/// the subject's state does not matter; a stored assignment this process has seen is still
/// the subject's (assignments never change) unless the experiment has QA overrides; and a
/// subject not seen here is first taken for a new one: when that decision stores an
/// assignment, the store's get-or-create says whether one existed after all (then the
/// decision is made again with it). Only a subject that would not be stored, or an
/// experiment with overrides, needs the subject's state read first.
async fn assign<'a>(
    state: &Inner,
    live_experiment: &'a LiveExperiment,
    organization: Option<&str>,
    subject: &str,
    attributes: &Attributes,
) -> Result<AssignmentView<'a>, AppError> {
    check_subject(subject)?;
    let experiment = &live_experiment.experiment;
    let subject_key = assignment::subject_key(organization, subject);
    let mut known = if experiment.winner.is_some() {
        Some(Known::default())
    } else if live_experiment.has_forced {
        None
    } else {
        state
            .assignments
            .get(&experiment.id, &subject_key)
            .map(|stored| Known {
                stored: Some(stored),
                forced: None,
            })
    };
    if known.is_none() && !live_experiment.has_forced {
        let fresh = Known::default();
        let decision = decide_for(state, experiment, subject, attributes, &fresh).await?;
        if decision.create {
            let (kept, created) =
                store_new(state, experiment, &subject_key, attributes, &decision).await?;
            if created {
                return Ok(view(experiment, &decision, None, Some(&kept)));
            }
            known = Some(Known {
                stored: Some((Arc::from(kept.variant), kept.assigned_at)),
                forced: None,
            });
        }
    }
    let record = match known {
        Some(record) => record,
        None => {
            let record = state
                .store
                .subject_state(&experiment.id, &subject_key)
                .await?;
            if let Some(a) = &record.assignment {
                state.assignments.put(a);
            }
            record.into()
        }
    };
    let decision = decide_for(state, experiment, subject, attributes, &record).await?;
    let created = match decision.create {
        true => Some(
            store_new(state, experiment, &subject_key, attributes, &decision)
                .await?
                .0,
        ),
        false => None,
    };
    Ok(view(
        experiment,
        &decision,
        stored_for(experiment, &record).map(|(_, at)| at),
        created.as_ref(),
    ))
}

/// What the assignment path knows of a subject: its stored assignment (variant key, when
/// assigned; from the cache or the store) and its QA override.
#[derive(Debug, Default)]
struct Known {
    stored: Option<(Arc<str>, OffsetDateTime)>,
    forced: Option<String>,
}

impl From<SubjectRecord> for Known {
    fn from(record: SubjectRecord) -> Self {
        Self {
            stored: record
                .assignment
                .map(|a| (Arc::from(a.variant), a.assigned_at)),
            forced: record.forced,
        }
    }
}

/// The stored assignment that counts: none when the experiment is not live or a QA
/// override applies.
fn stored_for<'a>(experiment: &Experiment, known: &'a Known) -> Option<(&'a str, OffsetDateTime)> {
    let live = matches!(experiment.status, Status::Running | Status::Paused);
    known
        .stored
        .as_ref()
        .filter(|_| live && known.forced.is_none())
        .map(|(variant, at)| (&**variant, *at))
}

/// The rules of the audience `key` of `environment`; one that does not exist (deleted)
/// matches nobody rather than everybody.
pub(crate) async fn audience_rules(
    state: &Inner,
    environment: &str,
    key: &str,
) -> Result<verdict_domain::Targeting, AppError> {
    Ok(state
        .store
        .get_audience(environment, key)
        .await?
        .map_or_else(verdict_domain::Targeting::nobody, |a| a.rules))
}

/// [`assignment::decide`] for a subject of whom `known` is known, with the experiment's
/// audience read when it matters (a subject without a stored assignment).
async fn decide_for(
    state: &Inner,
    experiment: &Experiment,
    subject: &str,
    attributes: &Attributes,
    known: &Known,
) -> Result<assignment::Decision, AppError> {
    let stored = stored_for(experiment, known);
    let audience = match (&experiment.audience, stored.is_some()) {
        (Some(key), false) => {
            Some(audience_rules(state, &experiment.scope.environment, key).await?)
        }
        _ => None,
    };
    Ok(assignment::decide(
        experiment,
        audience.as_ref(),
        subject,
        attributes,
        SubjectState {
            stored: stored.map(|(variant, _)| variant),
            forced: known.forced.as_deref(),
        },
    ))
}

/// Store the decided variant unless the subject has an assignment; the stored one, and
/// whether this made it.
///
/// With `assignment.auto_exposure`, the subject's exposure is recorded too, before the
/// assignment is cached and answered: under an id derived from the subject, so that it is
/// stored once however often this runs (a retry after a failure, another replica, a
/// process that has not cached the subject yet), at the assignment's time.
async fn store_new(
    state: &Inner,
    experiment: &Experiment,
    subject_key: &str,
    attributes: &Attributes,
    decision: &assignment::Decision,
) -> Result<(Assignment, bool), AppError> {
    let assignment = Assignment {
        experiment_id: experiment.id.clone(),
        subject: subject_key.to_owned(),
        variant: experiment.variants[decision.variant].key.clone(),
        assigned_at: now(),
        context: experiment.assignment.context_of(attributes),
    };
    let (kept, created) = if experiment.assignment.auto_exposure {
        let digest = Sha256::digest(subject_key.as_bytes());
        let exposure = Exposure {
            event_id: format!("auto-exposure-{}", hex::encode(&digest[..16])),
            event: experiment.exposure_event_name().to_owned(),
            received_at: now(),
        };
        state
            .store
            .get_or_create_exposed_assignment(&assignment, &exposure)
            .await?
    } else {
        state.store.get_or_create_assignment(&assignment).await?
    };
    state.assignments.put(&kept);
    Ok((kept, created))
}

/// What a request that does not identify the experiment's subject is served: the winner
/// when one is decided, else the control, outside the experiment.
fn unidentified(experiment: &Experiment) -> AssignmentView<'_> {
    let winner = experiment
        .winner
        .as_ref()
        .and_then(|w| experiment.variant(&w.variant));
    let variant = winner.unwrap_or(&experiment.variants[experiment.control_index()]);
    AssignmentView {
        experiment: &experiment.key,
        variant: &variant.key,
        config: &variant.config,
        assigned_at: None,
        in_experiment: false,
        reason: if winner.is_some() {
            Reason::Winner
        } else {
            Reason::Unidentified
        },
        winner: winner.map(|w| w.key.as_str()),
    }
}

/// The answer: the decided variant, or what was stored when this request stored one
/// (another request may have stored this subject first: what is stored wins).
fn view<'a>(
    experiment: &'a Experiment,
    decision: &assignment::Decision,
    stored_at: Option<OffsetDateTime>,
    created: Option<&Assignment>,
) -> AssignmentView<'a> {
    let mut variant = &experiment.variants[decision.variant];
    let mut assigned_at = stored_at;
    if let Some(kept) = created {
        if let Some(v) = experiment.variant(&kept.variant) {
            variant = v;
        }
        assigned_at = Some(kept.assigned_at);
    }
    AssignmentView {
        experiment: &experiment.key,
        variant: &variant.key,
        config: &variant.config,
        assigned_at: if decision.in_experiment {
            assigned_at
        } else {
            None
        },
        in_experiment: decision.in_experiment,
        reason: decision.reason,
        winner: experiment.winner.as_ref().map(|w| w.variant.as_str()),
    }
}

/// Every live experiment's assignment for one subject.
#[derive(Debug, Serialize, ToSchema)]
pub struct SubjectAssignments<'a> {
    /// The request's `subject_id`, if it gave one.
    #[schema(value_type = Option<String>)]
    pub subject_id: Option<&'a str>,
    pub assignments: Vec<AssignmentView<'a>>,
}

/// Who an assignment is for. Each experiment takes the identity its `assignment.unit`
/// names (`subject_id` by default; `anon_id`, `user_id`, `org_id`, or the attribute of a
/// `custom` unit), else `subject_id`. Each id is 1 to 256 bytes.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AssignmentRequest {
    /// The subject, for experiments whose unit is `subject_id` (and any other when the
    /// request does not carry that unit's id).
    #[serde(default)]
    pub subject_id: Option<String>,
    /// An anonymous visitor's id, for unit `anon_id` (also the `x-anon-id` header).
    #[serde(default)]
    pub anon_id: Option<String>,
    /// A signed-in user's id, for unit `user_id` (default: the subject of the caller's JWT).
    #[serde(default)]
    pub user_id: Option<String>,
    /// An organization's id, for unit `org_id` (default: the organization the request acts
    /// in).
    #[serde(default)]
    pub org_id: Option<String>,
    /// Targeting attributes: any JSON values by name.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub attributes: Attributes,
}

impl AssignmentRequest {
    /// A request for `subject_id` without attributes.
    pub fn subject(subject_id: impl Into<String>) -> Self {
        Self {
            subject_id: Some(subject_id.into()),
            anon_id: None,
            user_id: None,
            org_id: None,
            attributes: Attributes::new(),
        }
    }

    /// Take the `x-anon-id` header's value as `anon_id` unless the request gives one.
    pub fn with_anon_header(mut self, header: Option<String>) -> Self {
        if self.anon_id.is_none() {
            self.anon_id = header;
        }
        self
    }

    /// The request's ids, with the caller's JWT subject; every id given must be 1 to
    /// [`MAX_SUBJECT_LEN`] bytes (each bad one is listed), whether or not an experiment
    /// uses it.
    pub fn ids<'r>(&'r self, caller_user: Option<&'r str>) -> Result<SubjectIds<'r>, AppError> {
        let mut problems = Problems::new();
        for (field, id) in [
            ("subject_id", &self.subject_id),
            ("anon_id", &self.anon_id),
            ("user_id", &self.user_id),
            ("org_id", &self.org_id),
        ] {
            match id.as_deref() {
                Some("") => problems.push(field, "must not be empty"),
                Some(id) if id.len() > MAX_SUBJECT_LEN => {
                    problems.push(field, "must be at most 256 bytes")
                }
                _ => {}
            }
        }
        if !problems.is_empty() {
            return Err(AppError::validation(problems));
        }
        Ok(SubjectIds {
            subject_id: self.subject_id.as_deref(),
            anon_id: self.anon_id.as_deref(),
            user_id: self.user_id.as_deref().or(caller_user),
            org_id: self.org_id.as_deref(),
        })
    }
}

/// The identities a request carries, one per [`Unit`].
#[derive(Debug, Clone, Copy, Default)]
pub struct SubjectIds<'r> {
    pub subject_id: Option<&'r str>,
    pub anon_id: Option<&'r str>,
    pub user_id: Option<&'r str>,
    pub org_id: Option<&'r str>,
}

impl<'r> SubjectIds<'r> {
    /// Whether the request carries any id at all.
    fn is_empty(&self) -> bool {
        self.subject_id.is_none()
            && self.anon_id.is_none()
            && self.user_id.is_none()
            && self.org_id.is_none()
    }

    /// The subject `experiment` is assigned for: the id of its unit, else `subject_id`
    /// (so experiments stored before units were honoured, all `subject_id`, and clients
    /// that always send `subject_id` keep their subjects). A missing one is
    /// `validation_failed` naming where the unit's id comes from.
    fn subject_of<'a>(
        &self,
        experiment: &Experiment,
        organization: Option<&'a str>,
        attributes: &'a Attributes,
    ) -> Result<Cow<'a, str>, AppError>
    where
        'r: 'a,
    {
        let settings = &experiment.assignment;
        let own: Option<Cow<'a, str>> = match settings.unit() {
            Unit::SubjectId => None,
            Unit::AnonId => self.anon_id.map(Cow::Borrowed),
            Unit::UserId => self.user_id.map(Cow::Borrowed),
            Unit::OrgId => self.org_id.or(organization).map(Cow::Borrowed),
            Unit::Custom => settings
                .unit_attribute
                .as_deref()
                .and_then(|name| attributes.get(name))
                .and_then(|v| match v {
                    Value::String(s) => Some(Cow::Borrowed(s.as_str())),
                    Value::Number(n) => Some(Cow::Owned(n.to_string())),
                    _ => None,
                }),
        };
        if let Some(subject) = own.or(self.subject_id.map(Cow::Borrowed)) {
            return Ok(subject);
        }
        let (field, from) = match settings.unit() {
            Unit::SubjectId => ("subject_id", "give subject_id"),
            Unit::AnonId => (
                "anon_id",
                "this experiment's unit is anon_id: give the x-anon-id header or anon_id \
                 (or subject_id)",
            ),
            Unit::UserId => (
                "user_id",
                "this experiment's unit is user_id: give user_id, authenticate with the \
                 user's JWT, or give subject_id",
            ),
            Unit::OrgId => (
                "org_id",
                "this experiment's unit is org_id: give org_id, act in an organization, or \
                 give subject_id",
            ),
            Unit::Custom => (
                "attributes",
                "this experiment's unit is custom: give its unit attribute (a string or \
                 number) among the attributes, or subject_id",
            ),
        };
        Err(AppError::invalid_field(
            field,
            format!("is required: {from}"),
        ))
    }
}

/// The experiment an assignment names and the scope it was asked in (whose organization
/// qualifies the subject): hold it while the answer of [`App::assign`] is serialized.
#[derive(Debug)]
pub struct Target {
    pub experiment: Arc<LiveExperiment>,
    pub scope: Scope,
    /// The caller's JWT subject (the `user_id` unit's default).
    pub user: Option<String>,
}

/// The live experiments a scope sees and the scope, for [`App::assign_all`].
#[derive(Debug)]
pub struct LiveTargets {
    pub experiments: LiveList,
    pub scope: Scope,
    /// The caller's JWT subject (the `user_id` unit's default).
    pub user: Option<String>,
}

impl App {
    /// Which variant `subject` sees in the target experiment, with its config (SPEC §3); a
    /// new eligible subject is stored (sticky). The answer borrows from `target`, which
    /// [`App::assignment_target`] gives.
    pub async fn assign<'a>(
        &self,
        target: &'a Target,
        request: &AssignmentRequest,
    ) -> Result<AssignmentView<'a>, AppError> {
        let organization = target.scope.organization.as_deref();
        let subject = request.ids(target.user.as_deref())?.subject_of(
            &target.experiment.experiment,
            organization,
            &request.attributes,
        )?;
        assign(
            &self.0,
            &target.experiment,
            organization,
            &subject,
            &request.attributes,
        )
        .await
    }

    /// The experiment an assignment names, as the caller's scope sees it (its
    /// organization's own, else the environment's global one).
    pub async fn assignment_target(
        &self,
        caller: &Caller,
        scope: &ScopeParams,
        key: &str,
    ) -> Result<Target, AppError> {
        let scope = caller.scope(scope)?;
        let experiment = self.0.experiments.get(&self.0, &scope, key).await?;
        Ok(Target {
            experiment,
            scope,
            user: caller.token_subject().map(str::to_owned),
        })
    }

    /// The live experiments the caller's scope sees, for [`App::assign_all`].
    pub async fn live_experiments(
        &self,
        caller: &Caller,
        scope: &ScopeParams,
    ) -> Result<LiveTargets, AppError> {
        let scope = caller.scope(scope)?;
        let experiments = self.0.experiments.live(&self.0, &scope).await?;
        Ok(LiveTargets {
            experiments,
            scope,
            user: caller.token_subject().map(str::to_owned),
        })
    }

    /// `subject` in every experiment of `live` (running; paused, serving stored
    /// assignments only; completed with a winner, serving the winner's config to everyone).
    pub async fn assign_all<'a>(
        &self,
        live: &'a LiveTargets,
        request: &'a AssignmentRequest,
    ) -> Result<SubjectAssignments<'a>, AppError> {
        let ids = request.ids(live.user.as_deref())?;
        if ids.is_empty() {
            return Err(AppError::invalid_field(
                "subject_id",
                "is required: give subject_id, anon_id (or x-anon-id), user_id or org_id",
            ));
        }
        let organization = live.scope.organization.as_deref();
        let mut assignments = Vec::with_capacity(live.experiments.len());
        for experiment in live.experiments.iter() {
            let e = &experiment.experiment;
            // An experiment whose unit the request does not identify (no signed-in user,
            // say) serves what an unknown subject sees, and stores nothing.
            let view = match ids.subject_of(e, organization, &request.attributes) {
                Ok(subject) => {
                    assign(
                        &self.0,
                        experiment,
                        organization,
                        &subject,
                        &request.attributes,
                    )
                    .await?
                }
                Err(_) => unidentified(e),
            };
            assignments.push(view);
        }
        Ok(SubjectAssignments {
            subject_id: request.subject_id.as_deref(),
            assignments,
        })
    }
}

/// An experiment as the hot paths use it: its definition, and whether any of its subjects
/// has a QA override (so the assignment path knows when it must look one up).
#[derive(Debug)]
pub struct LiveExperiment {
    pub experiment: Experiment,
    pub has_forced: bool,
}

impl LiveExperiment {
    pub async fn load(state: &Inner, experiment: Experiment) -> Result<Self, AppError> {
        let has_forced = state.store.has_forced_variants(&experiment.id).await?;
        Ok(Self {
            experiment,
            has_forced,
        })
    }
}

/// A short-lived in-process cache of experiment definitions for the hot read paths
/// (assignment, events). Writes through this process invalidate at once; the TTL bounds
/// how stale another replica's change (including a QA override) can be.
#[derive(Debug, Default)]
pub struct ExperimentCache {
    /// By scope, then by the key (or id) asked for: looked up without allocating.
    entries: std::sync::Mutex<HashMap<Scope, HashMap<String, Fetched>>>,
    /// By scope: its live experiments, in [`live_experiments`] order.
    live: std::sync::Mutex<HashMap<Scope, (LiveList, std::time::Instant)>>,
}

/// A cached experiment and when it was read from the store.
type Fetched = (Arc<LiveExperiment>, std::time::Instant);

/// A scope's live experiments.
pub type LiveList = Arc<[Arc<LiveExperiment>]>;

/// Scopes (or keys) a cache holds before it starts over: bounds memory against callers
/// naming many scopes or keys that do not exist.
const EXPERIMENT_CACHE_MAX: usize = 10_000;

const EXPERIMENT_CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(1);

impl ExperimentCache {
    pub async fn get(
        &self,
        state: &Inner,
        scope: &Scope,
        key: &str,
    ) -> Result<Arc<LiveExperiment>, AppError> {
        {
            let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((e, at)) = entries.get(scope).and_then(|keys| keys.get(key))
                && at.elapsed() < EXPERIMENT_CACHE_TTL
            {
                return Ok(e.clone());
            }
        }
        let found = crate::experiments::visible_experiment(&*state.store, scope, key)
            .await?
            .ok_or_else(|| AppError::experiment_not_found(key))?;
        let e = Arc::new(LiveExperiment::load(state, found).await?);
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.values().map(HashMap::len).sum::<usize>() > EXPERIMENT_CACHE_MAX {
            entries.clear();
        }
        entries
            .entry(scope.clone())
            .or_default()
            .insert(key.to_owned(), (e.clone(), std::time::Instant::now()));
        Ok(e)
    }

    /// The scope's live experiments (`POST /v1/assignments`), read from the
    /// store at most once per TTL.
    pub async fn live(&self, state: &Inner, scope: &Scope) -> Result<LiveList, AppError> {
        {
            let live = self.live.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((list, at)) = live.get(scope)
                && at.elapsed() < EXPERIMENT_CACHE_TTL
            {
                return Ok(list.clone());
            }
        }
        let mut list = Vec::new();
        for experiment in verdict_publish::scope_experiments(&*state.store, scope).await? {
            list.push(Arc::new(LiveExperiment::load(state, experiment).await?));
        }
        let list = LiveList::from(list);
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        if live.len() > EXPERIMENT_CACHE_MAX {
            live.clear();
        }
        live.insert(scope.clone(), (list.clone(), std::time::Instant::now()));
        Ok(list)
    }

    pub fn clear(&self) {
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        self.live.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

/// Stored assignments this process has read or made, so that repeat subjects are answered
/// without a store read. A stored assignment never changes (the first one is kept
/// forever), so an entry is never stale; the cache only bounds the memory it takes
/// (`server.assignment_cache_mb`, weighed by [`EntryBytes`]; S3-FIFO eviction: one-off
/// subjects do not push out the ones that come back).
#[derive(Debug)]
pub struct AssignmentCache {
    entries: quick_cache::sync::Cache<CacheKey, CacheValue, EntryBytes>,
}

type CacheKey = (String, String);
type CacheValue = (Arc<str>, OffsetDateTime);

/// What one entry of [`AssignmentCache`] costs in memory, in bytes: the entry itself, its
/// slot in the cache's table (an estimate of quick_cache's per-entry bookkeeping), and the
/// heap bytes of its two ids and its variant key.
#[derive(Debug, Clone, Copy)]
pub struct EntryBytes;

/// The fixed part of [`EntryBytes`]: the entry's inline size plus about 48 bytes of table
/// slot, hash and eviction metadata, plus the variant's reference-count header.
const ENTRY_OVERHEAD: usize = std::mem::size_of::<(CacheKey, CacheValue)>() + 48 + 16;

impl quick_cache::Weighter<CacheKey, CacheValue> for EntryBytes {
    fn weight(&self, key: &CacheKey, value: &CacheValue) -> u64 {
        (ENTRY_OVERHEAD + key.0.capacity() + key.1.capacity() + value.0.len()) as u64
    }
}

/// Entries of this size are what the cache's table is first sized for (the budget in bytes
/// is the bound; this only avoids growing the table step by step).
const TYPICAL_ENTRY_BYTES: u64 = 200;

impl AssignmentCache {
    /// A cache holding at most `bytes` of entries (as [`EntryBytes`] weighs them).
    pub fn with_budget(bytes: u64) -> Self {
        let bytes = bytes.max(1);
        let items = usize::try_from(bytes / TYPICAL_ENTRY_BYTES)
            .unwrap_or(usize::MAX)
            .max(1);
        Self {
            entries: quick_cache::sync::Cache::with_weighter(items, bytes, EntryBytes),
        }
    }

    /// The bytes the entries take, as [`EntryBytes`] weighs them (at most the budget).
    pub fn weight(&self) -> u64 {
        self.entries.weight()
    }

    /// How many entries are held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no entry is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// A borrowed `(experiment_id, subject)` key: hashes like the owned tuple.
#[derive(Hash)]
struct KeyRef<'a>(&'a str, &'a str);

impl quick_cache::Equivalent<(String, String)> for KeyRef<'_> {
    fn equivalent(&self, key: &(String, String)) -> bool {
        self.0 == key.0 && self.1 == key.1
    }
}

impl AssignmentCache {
    /// The subject's stored variant key and when it was assigned.
    pub fn get(&self, experiment_id: &str, subject: &str) -> Option<(Arc<str>, OffsetDateTime)> {
        self.entries.get(&KeyRef(experiment_id, subject))
    }

    pub fn put(&self, a: &Assignment) {
        self.entries.insert(
            (a.experiment_id.clone(), a.subject.clone()),
            (Arc::from(a.variant.as_str()), a.assigned_at),
        );
    }
}

#[cfg(test)]
mod cache_tests {
    use super::*;

    fn assignment(experiment: &str, subject: &str, variant: &str) -> Assignment {
        Assignment {
            experiment_id: experiment.into(),
            subject: subject.into(),
            variant: variant.into(),
            assigned_at: OffsetDateTime::UNIX_EPOCH,
            context: None,
        }
    }

    #[test]
    fn assignments_are_found_by_experiment_and_subject() {
        let cache = AssignmentCache::with_budget(1 << 20);
        assert_eq!(cache.get("e1", "alice"), None);
        cache.put(&assignment("e1", "alice", "treatment"));
        assert_eq!(
            cache.get("e1", "alice"),
            Some((Arc::from("treatment"), OffsetDateTime::UNIX_EPOCH))
        );
        // Neither part of the key alone matches; a key split differently is another key.
        assert_eq!(cache.get("e2", "alice"), None);
        assert_eq!(cache.get("e1", "bob"), None);
        cache.put(&assignment("ab", "c", "x"));
        assert_eq!(cache.get("a", "bc"), None);
    }

    #[test]
    fn the_cache_keeps_within_its_memory_budget_however_many_subjects_pass() {
        let budget = 1 << 20;
        let cache = AssignmentCache::with_budget(budget);
        let experiment = "exp_0190a1b2c3d4e5f6a7b8c9d0e1f2a3b4";
        for i in 0..100_000 {
            cache.put(&assignment(experiment, &format!("user-{i}"), "treatment"));
        }
        assert!(cache.weight() <= budget, "{} > {budget}", cache.weight());
        // Entries weigh between these (subject ids of 6 to 10 bytes, variant of 9).
        let lightest = ENTRY_OVERHEAD + experiment.len() + "user-0".len() + 9;
        let heaviest = ENTRY_OVERHEAD + experiment.len() + "user-99999".len() + 9;
        let (most, least) = (budget as usize / lightest, budget as usize / heaviest);
        assert!(
            cache.len() <= most && cache.len() > least / 2,
            "{} entries of {lightest}..={heaviest} bytes in {budget} bytes",
            cache.len()
        );
        // A subject that keeps coming back stays while one-off subjects pass through.
        cache.put(&assignment(experiment, "regular", "control"));
        for i in 100_000..200_000 {
            assert!(cache.get(experiment, "regular").is_some(), "evicted at {i}");
            cache.put(&assignment(experiment, &format!("user-{i}"), "treatment"));
        }
    }
}
