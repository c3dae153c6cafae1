//! Experiments: create, read, list, edit, lifecycle, manual winner, QA overrides, audit.
//!
//! Every change goes through the store's atomic operations (optimistic versions, status
//! compare-and-set, winner with its outbox messages) and drops this process's cached
//! definitions, so the next assignment sees it; status and winner changes are announced
//! through the cache to every replica.

use rand::RngCore;
use serde::{Deserialize, Serialize};
use serde_json::json;
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};
use verdict_domain::assignment::subject_key;
use verdict_domain::experiment::{Provided, VariantInput, variants_from_input};
use verdict_domain::status::Transition;
use verdict_domain::{
    Breakdown, Experiment, ExperimentInput, Metric, MetricThreshold, Namespace, PolicyMode,
    Problems, RetentionOverride, Right, Scope, Status, Targeting, Winner, WinnerPolicy,
};
use verdict_store::{
    AuditEntry, Deletion, ExperimentFilter, StatusChange, StoreError, WinnerChange,
};

use crate::auth::{Caller, ScopeParams};
use crate::error::{AppError, ErrorCode};
use crate::pages::{PageParams, Paginated};
use crate::publishing::{Changed, PublishOutcome};
use crate::{App, now};

/// Fields an update may change; `version` is the one the client read.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExperimentPatch {
    pub version: u64,
    pub name: Option<String>,
    pub description: Option<String>,
    pub coverage: Option<f64>,
    pub targeting: Option<Targeting>,
    /// `null` removes the audience.
    #[serde(default, deserialize_with = "double_option")]
    pub audience: Option<Option<String>>,
    /// Its slice of a namespace; `null` takes it out of its namespace. Subjects already
    /// assigned keep their variant.
    #[serde(default, deserialize_with = "double_option")]
    pub namespace: Option<Option<Namespace>>,
    pub primary_metric: Option<Metric>,
    pub secondary_metrics: Option<Vec<Metric>>,
    pub guardrail_metrics: Option<Vec<Metric>>,
    #[serde(default, deserialize_with = "double_option")]
    pub exposure_event: Option<Option<String>>,
    /// Replaces every threshold (`[]` removes them); a changed threshold starts afresh.
    pub thresholds: Option<Vec<MetricThreshold>>,
    /// Only while a draft (an event dimension is recorded as events are rolled up).
    /// `null` removes it.
    #[serde(default, deserialize_with = "double_option")]
    pub breakdown: Option<Option<Breakdown>>,
    pub policy: Option<WinnerPolicy>,
    pub retention: Option<RetentionOverride>,
    /// Only while a draft; running experiments use `PUT …/variants`.
    pub variants: Option<Vec<VariantInput>>,
    /// When the draft starts by itself (RFC 3339); only while a draft. `null` removes it.
    #[serde(default, deserialize_with = "double_option_time")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub start_at: Option<Option<OffsetDateTime>>,
    /// When it completes by itself (RFC 3339, in the future). `null` removes it.
    #[serde(default, deserialize_with = "double_option_time")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub ends_at: Option<Option<OffsetDateTime>>,
    /// Days after its start when it completes by itself. `null` removes it.
    #[serde(default, deserialize_with = "double_option")]
    pub evaluation_period_days: Option<Option<u32>>,
}

fn double_option<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

fn double_option_time<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Option<OffsetDateTime>>, D::Error> {
    time::serde::rfc3339::option::deserialize(d).map(Some)
}

impl ExperimentPatch {
    /// `current` with the patch applied (not yet validated); problems of the patch itself
    /// go to `problems`.
    fn apply(self, mut next: Experiment, problems: &mut Problems) -> Experiment {
        fn set<T>(slot: &mut T, value: Option<T>) {
            if let Some(v) = value {
                *slot = v;
            }
        }
        next.version = self.version;
        next.updated_at = now();
        let coverage_given = self.coverage.is_some();
        set(&mut next.name, self.name);
        set(&mut next.description, self.description);
        set(&mut next.coverage, self.coverage);
        set(&mut next.targeting, self.targeting);
        set(&mut next.audience, self.audience);
        set(&mut next.namespace, self.namespace);
        set(&mut next.primary_metric, self.primary_metric);
        set(&mut next.secondary_metrics, self.secondary_metrics);
        set(&mut next.guardrail_metrics, self.guardrail_metrics);
        set(&mut next.exposure_event, self.exposure_event);
        set(&mut next.thresholds, self.thresholds);
        set(&mut next.breakdown, self.breakdown);
        set(&mut next.policy, self.policy);
        set(&mut next.retention, self.retention);
        let at = next.updated_at;
        next.reschedule(
            self.start_at,
            self.ends_at,
            self.evaluation_period_days,
            at,
            problems,
        );
        if let Some(v) = self.variants {
            next.replace_variants(variants_from_input(v, problems), coverage_given);
        }
        next
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VariantsUpdate {
    pub version: u64,
    pub variants: Vec<VariantInput>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StatusRequest {
    /// The status to move to.
    #[schema(value_type = Status)]
    pub status: String,
}

/// The outcome of a status change. Idempotent: already in the status → `changed: false`.
#[derive(Debug, Serialize, ToSchema)]
pub struct StatusChangeResult {
    pub changed: bool,
    pub experiment: Experiment,
}

/// `DELETE /v1/experiments/{key}`'s query.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DeleteQuery {
    /// Act in this environment instead of the caller's (right `scope:any`).
    pub environment: Option<String>,
    /// Act in this organization instead of the caller's (right `scope:any`).
    pub organization: Option<String>,
    /// Also delete a running or paused experiment (one that is serving subjects).
    #[serde(default)]
    pub force: bool,
}

/// A deleted experiment: its definition is gone, its data is being removed.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeletedExperiment {
    /// Its id: `GET /v1/audit?subject=experiment:<id>` reads its audit log, deletion included.
    pub id: String,
    pub key: String,
    /// Its status when deleted.
    pub status: Status,
    #[serde(with = "time::serde::rfc3339")]
    pub deleted_at: OffsetDateTime,
    /// Its raw events, rollups, assignments, QA overrides and evaluation state are removed
    /// by the retention job, in bounded batches (`retention.batch_size`).
    pub purge: &'static str,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WinnerOverride {
    pub variant: String,
    /// Also complete a running or paused experiment (default true).
    #[serde(default = "yes")]
    pub complete: bool,
    #[serde(default)]
    pub reason: Option<String>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ForcedVariant {
    pub variant: String,
}

/// A QA override: `subject_id` always sees `variant`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ForcedAssignment {
    /// The experiment key.
    pub experiment: String,
    pub subject_id: String,
    pub variant: String,
}

/// The most QA overrides [`App::forced_variants`] lists.
pub const MAX_FORCED_LISTED: usize = 500;

/// An experiment's QA overrides, by subject.
#[derive(Debug, Serialize, ToSchema)]
pub struct ForcedList {
    pub data: Vec<ForcedAssignment>,
}

/// The experiment list's query.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    /// List this environment instead of the caller's (right `scope:any`).
    pub environment: Option<String>,
    /// List this organization instead of the caller's (right `scope:any`).
    pub organization: Option<String>,
    /// Only experiments in this status.
    #[param(value_type = Option<Status>)]
    pub status: Option<String>,
    /// Only experiments whose key or name contains this (ASCII letters compared without
    /// case; at most 200 characters).
    pub search: Option<String>,
    /// Page number, from 1 (default 1; give with `page_size`).
    #[param(minimum = 1)]
    pub page: Option<u32>,
    /// Items per page, 1 to 100 (default 20; give with `page`).
    #[param(minimum = 1, maximum = 100)]
    pub page_size: Option<u32>,
}

/// The longest `search` an experiment list takes.
const MAX_SEARCH_LEN: usize = 200;

/// A scoped, paged list's query (the audit log).
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ScopedPageParams {
    /// Act in this environment instead of the caller's (right `scope:any`).
    pub environment: Option<String>,
    /// Act in this organization instead of the caller's (right `scope:any`).
    pub organization: Option<String>,
    /// Page number, from 1 (default 1; give with `page_size`).
    #[param(minimum = 1)]
    pub page: Option<u32>,
    /// Items per page, 1 to 100 (default 20; give with `page`).
    #[param(minimum = 1, maximum = 100)]
    pub page_size: Option<u32>,
}

impl ScopedPageParams {
    fn split(self) -> (ScopeParams, PageParams) {
        (
            ScopeParams {
                environment: self.environment,
                organization: self.organization,
            },
            PageParams {
                page: self.page,
                page_size: self.page_size,
            },
        )
    }
}

fn parse_status(s: &str) -> Option<Status> {
    Status::parse(s)
}

const STATUSES: &str = "one of draft, running, paused, completed, archived";

fn random_salt() -> String {
    let mut b = [0u8; 8];
    rand::rng().fill_bytes(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl App {
    /// The experiment of `scope` whose key or id is `key`, or `experiment_not_found`.
    /// The experiment `key` (or id) as `scope` sees it: its own, else for an organization
    /// the environment's global one ([`visible_experiment`]).
    pub(crate) async fn find(&self, scope: &Scope, key: &str) -> Result<Experiment, AppError> {
        visible_experiment(&*self.0.store, scope, key)
            .await?
            .ok_or_else(|| AppError::experiment_not_found(key))
    }

    /// The experiment `key` (or id) of exactly `scope`: what a change may touch. An
    /// organization reads the environment's global experiments but does not change them.
    async fn find_own(&self, scope: &Scope, key: &str) -> Result<Experiment, AppError> {
        self.0
            .store
            .get_experiment(scope, key)
            .await?
            .ok_or_else(|| AppError::experiment_not_found(key))
    }

    /// The experiment `key` as the caller sees it (its organization's, else global).
    pub async fn experiment(
        &self,
        caller: &Caller,
        scope: &ScopeParams,
        key: &str,
    ) -> Result<Experiment, AppError> {
        self.find(&caller.scope(scope)?, key).await
    }

    /// The experiment `key` of exactly the caller's scope, for a change.
    async fn own_experiment(
        &self,
        caller: &Caller,
        scope: &ScopeParams,
        key: &str,
    ) -> Result<Experiment, AppError> {
        self.find_own(&caller.scope(scope)?, key).await
    }

    /// Create a draft: every invalid field at once; `experiment_exists` when the key is taken.
    pub async fn create_experiment(
        &self,
        caller: &Caller,
        scope: &ScopeParams,
        input: ExperimentInput,
    ) -> Result<Changed<Experiment>, AppError> {
        let scope = caller.scope(scope)?;
        if input.policy.override_variant.is_some() {
            caller.require(Right::ExperimentsDecide)?;
        }
        let store = &self.0.store;
        if store.get_environment(&scope.environment).await?.is_none() {
            return Err(AppError::new(
                ErrorCode::EnvironmentNotFound,
                format!("no environment '{}'; create it first", scope.environment),
            ));
        }
        let provided = Provided {
            id: uuid::Uuid::now_v7().to_string(),
            salt: random_salt(),
            now: now(),
        };
        let experiment = input
            .into_experiment(scope, provided)
            .map_err(AppError::validation)?;
        self.check_audience_exists(&experiment).await?;
        match store.create_experiment(&experiment, caller.actor()).await {
            Ok(()) => {
                self.0.experiments.clear();
                let created = self.apply_override(caller, experiment).await?;
                let publish = self
                    .publish_change(None, Some(&created), "experiment.created", caller.actor())
                    .await;
                Ok(Changed {
                    value: created,
                    publish,
                })
            }
            Err(StoreError::Conflict(msg)) => Err(AppError::new(ErrorCode::ExperimentExists, msg)),
            Err(e) => Err(e.into()),
        }
    }

    async fn check_audience_exists(&self, e: &Experiment) -> Result<(), AppError> {
        if let Some(a) = &e.audience
            && self
                .0
                .store
                .get_audience(&e.scope.environment, a)
                .await?
                .is_none()
        {
            return Err(AppError::invalid_field(
                "audience",
                format!("no audience '{a}' in environment '{}'", e.scope.environment),
            ));
        }
        Ok(())
    }

    /// A page of the experiments the caller's scope sees, optionally of one status: an
    /// organization's own and the environment's global ones (both when their keys clash;
    /// each has its id).
    pub async fn list_experiments(
        &self,
        caller: &Caller,
        params: ListParams,
    ) -> Result<Paginated<Experiment>, AppError> {
        let page = PageParams {
            page: params.page,
            page_size: params.page_size,
        }
        .to_request()?;
        let status = match params.status.as_deref() {
            None => None,
            Some(s) => Some(parse_status(s).ok_or_else(|| {
                AppError::invalid_query("status", format!("unknown status '{s}'; {STATUSES}"))
            })?),
        };
        let search = params
            .search
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned);
        if search
            .as_ref()
            .is_some_and(|s| s.chars().count() > MAX_SEARCH_LEN)
        {
            return Err(AppError::invalid_query(
                "search",
                format!("must be at most {MAX_SEARCH_LEN} characters"),
            ));
        }
        let named_organization = params.organization.is_some();
        let scope = caller.scope(&ScopeParams {
            environment: params.environment,
            organization: params.organization,
        })?;
        // An organization sees its own experiments and the environment's global ones; a
        // global caller sees the global ones, and with `scope:any` (naming no organization)
        // every organization's too.
        let organization = match scope.organization {
            Some(org) => Some(Some(org)),
            None if caller.holds(Right::ScopeAny) && !named_organization => None,
            None => Some(None),
        };
        let filter = ExperimentFilter {
            environment: Some(scope.environment),
            with_global: matches!(organization, Some(Some(_))),
            organization,
            status,
            text: search,
        };
        let found = self.0.store.list_experiments(&filter, page).await?;
        Ok(Paginated::of(found, page))
    }

    /// Apply `patch` (optimistic on its `version`); variants only while a draft.
    pub async fn update_experiment(
        &self,
        caller: &Caller,
        scope: &ScopeParams,
        key: &str,
        patch: ExperimentPatch,
    ) -> Result<Changed<Experiment>, AppError> {
        let current = self.own_experiment(caller, scope, key).await?;
        if patch.variants.is_some() && current.status != Status::Draft {
            return Err(AppError::new(
                ErrorCode::ExperimentRunning,
                "variants of a started experiment change only through PUT /v1/experiments/{key}/variants",
            ));
        }
        if patch.breakdown.is_some() && current.status != Status::Draft {
            return Err(AppError::new(
                ErrorCode::ExperimentRunning,
                "the breakdown of a started experiment cannot change: its segments are \
                 recorded as its events are rolled up",
            ));
        }
        let before = current.clone();
        let overridden = current.policy.override_variant.clone();
        let mut problems = Problems::new();
        let next = patch.apply(current, &mut problems);
        if next.policy.override_variant.is_some() && next.policy.override_variant != overridden {
            caller.require(Right::ExperimentsDecide)?;
        }
        let saved = self.save(next, problems, caller.actor()).await?;
        let saved = self.apply_override(caller, saved).await?;
        let publish = self
            .publish_change(
                Some(&before),
                Some(&saved),
                "experiment.updated",
                caller.actor(),
            )
            .await;
        Ok(Changed {
            value: saved,
            publish,
        })
    }

    /// `policy.override_variant` decides: when it names a variant that is not already the
    /// winner, the experiment gets that winner through the manual-winner path (audited,
    /// completing a running or paused experiment, snapshot, webhook, push), as
    /// `POST …/winner` does.
    async fn apply_override(
        &self,
        caller: &Caller,
        experiment: Experiment,
    ) -> Result<Experiment, AppError> {
        let Some(variant) = experiment.policy.override_variant.clone() else {
            return Ok(experiment);
        };
        if experiment.winner.as_ref().map(|w| w.variant.as_str()) == Some(variant.as_str()) {
            return Ok(experiment);
        }
        let change = WinnerChange {
            experiment_id: experiment.id.clone(),
            winner: Winner {
                variant,
                decided_at: now(),
                source: PolicyMode::Manual,
                details: json!({"reason": "policy.override_variant", "by": caller.actor()}),
            },
            complete: true,
            actor: caller.actor().to_owned(),
            expected_version: Some(experiment.version),
        };
        let updated = self.0.store.set_winner(&change).await?;
        self.announce(&experiment, &updated).await;
        Ok(updated)
    }

    /// Replace variants and weights (or explicit ranges, whose total width becomes the
    /// coverage) in any status. Stored assignments are untouched (sticky); once started, no
    /// variant may be removed (subjects may hold it).
    pub async fn put_variants(
        &self,
        caller: &Caller,
        scope: &ScopeParams,
        key: &str,
        body: VariantsUpdate,
    ) -> Result<Changed<Experiment>, AppError> {
        let current = self.own_experiment(caller, scope, key).await?;
        let before = current.clone();
        let mut problems = Problems::new();
        let variants = variants_from_input(body.variants, &mut problems);
        if current.started_at.is_some() {
            for old in &current.variants {
                if !variants.iter().any(|v| v.key == old.key) {
                    problems.push(
                        "variants",
                        format!(
                            "variant '{}' may hold assigned subjects and cannot be removed",
                            old.key
                        ),
                    );
                }
            }
        }
        let mut next = current;
        next.replace_variants(variants, false);
        next.version = body.version;
        next.updated_at = now();
        let saved = self.save(next, problems, caller.actor()).await?;
        let publish = self
            .publish_change(
                Some(&before),
                Some(&saved),
                "experiment.variants_changed",
                caller.actor(),
            )
            .await;
        Ok(Changed {
            value: saved,
            publish,
        })
    }

    /// Validate and store an edited experiment (optimistic on `version`); `problems` already
    /// found in the request are reported with the experiment's own.
    async fn save(
        &self,
        next: Experiment,
        mut problems: Problems,
        actor: &str,
    ) -> Result<Experiment, AppError> {
        for problem in next.check() {
            problems.push(problem.field, problem.message);
        }
        if !problems.is_empty() {
            return Err(AppError::validation(problems));
        }
        self.check_audience_exists(&next).await?;
        let saved = match self.0.store.update_experiment(&next, actor).await {
            Ok(e) => e,
            Err(StoreError::Conflict(msg)) => {
                return Err(AppError::new(ErrorCode::ExperimentExists, msg));
            }
            Err(StoreError::NotFound) => return Err(AppError::experiment_not_found(&next.key)),
            Err(e) => return Err(e.into()),
        };
        self.0.experiments.clear();
        Ok(saved)
    }

    /// Move an experiment to the status named `to` (see [`App::transition`]).
    pub async fn set_status(
        &self,
        caller: &Caller,
        scope: &ScopeParams,
        key: &str,
        to: &str,
    ) -> Result<Changed<StatusChangeResult>, AppError> {
        let to = parse_status(to).ok_or_else(|| {
            AppError::new(ErrorCode::InvalidBody, format!("unknown status '{to}'"))
                .with_details(vec![json!({"field": "status", "message": STATUSES})])
        })?;
        self.transition(caller, scope, key, to).await
    }

    /// Move an experiment to `to`. Idempotent: already there → `changed: false`. Concurrent
    /// callers race on the store's compare-and-set; exactly one transitions, the others
    /// re-read and answer `changed: false` (or the refusal the new status implies).
    pub async fn transition(
        &self,
        caller: &Caller,
        scope: &ScopeParams,
        key: &str,
        to: Status,
    ) -> Result<Changed<StatusChangeResult>, AppError> {
        let scope = caller.scope(scope)?;
        for _ in 0..3 {
            let current = self.find_own(&scope, key).await?;
            let change = match current.status.transition_to(to) {
                Ok(Transition::Unchanged) => {
                    return Ok(Changed {
                        value: StatusChangeResult {
                            changed: false,
                            experiment: current,
                        },
                        publish: PublishOutcome::default(),
                    });
                }
                Ok(Transition::Change { from, to }) => StatusChange {
                    experiment_id: current.id.clone(),
                    from,
                    to,
                    at: now(),
                    actor: caller.actor().to_owned(),
                },
                Err(e) => {
                    return Err(AppError::new(ErrorCode::InvalidTransition, e.to_string())
                        .with_details(vec![json!({
                            "from": e.from, "to": e.to, "allowed": e.allowed
                        })]));
                }
            };
            if let Some(updated) = self.0.store.transition_status(&change).await? {
                self.announce(&current, &updated).await;
                let publish = self
                    .publish_change(
                        Some(&current),
                        Some(&updated),
                        "experiment.status_changed",
                        caller.actor(),
                    )
                    .await;
                return Ok(Changed {
                    value: StatusChangeResult {
                        changed: true,
                        experiment: updated,
                    },
                    publish,
                });
            }
            // Lost the race: re-read and decide again.
        }
        Err(AppError::new(
            ErrorCode::VersionConflict,
            "the experiment keeps changing; retry",
        ))
    }

    /// Delete an experiment (audited): refused while it serves subjects (running or
    /// paused) unless `force`. Its key is free at once; its data is purged by the retention
    /// job. A change meanwhile (another caller started it, say) is a version conflict.
    pub async fn delete_experiment(
        &self,
        caller: &Caller,
        key: &str,
        query: DeleteQuery,
    ) -> Result<Changed<DeletedExperiment>, AppError> {
        let scope = ScopeParams {
            environment: query.environment.clone(),
            organization: query.organization.clone(),
        };
        let e = self.own_experiment(caller, &scope, key).await?;
        if matches!(e.status, Status::Running | Status::Paused) && !query.force {
            return Err(AppError::new(
                ErrorCode::ExperimentRunning,
                format!(
                    "experiment '{}' is {} and serving subjects: complete it first, or delete \
                     with force=true",
                    e.key,
                    e.status.as_str()
                ),
            ));
        }
        let deletion = Deletion {
            experiment_id: e.id.clone(),
            version: e.version,
            at: now(),
            actor: caller.actor().to_owned(),
            details: json!({"key": e.key, "status": e.status, "forced": query.force}),
        };
        if !self.0.store.delete_experiment(&deletion).await? {
            return Err(AppError::new(
                ErrorCode::VersionConflict,
                "the experiment changed while it was being deleted; read it and retry",
            ));
        }
        self.0.experiments.clear();
        let cache = self.0.snapshots.cache();
        if let Err(err) = verdict_cache::Cache::invalidate(cache, &e.scope.environment, &e.id).await
        {
            tracing::warn!(experiment = %e.key, error = %verdict_domain::ErrorChain(&err), "cannot drop a deleted experiment's winner snapshot");
        }
        let publish = self
            .publish_change(Some(&e), None, "experiment.deleted", caller.actor())
            .await;
        Ok(Changed {
            value: DeletedExperiment {
                id: e.id,
                key: e.key,
                status: e.status,
                deleted_at: deletion.at,
                purge: "queued",
            },
            publish,
        })
    }

    /// Drop cached definitions and tell every replica (snapshot written, change published).
    async fn announce(&self, before: &Experiment, after: &Experiment) {
        self.0.experiments.clear();
        verdict_cache::announce(self.0.snapshots.cache(), before, after).await;
    }

    /// Declare a winner by hand (audited); by default also completes the experiment.
    pub async fn override_winner(
        &self,
        caller: &Caller,
        scope: &ScopeParams,
        key: &str,
        body: WinnerOverride,
    ) -> Result<Changed<Experiment>, AppError> {
        let e = self.own_experiment(caller, scope, key).await?;
        check_variant(&e, &body.variant)?;
        let change = WinnerChange {
            experiment_id: e.id.clone(),
            winner: Winner {
                variant: body.variant,
                decided_at: now(),
                source: PolicyMode::Manual,
                details: json!({"reason": body.reason, "by": caller.actor()}),
            },
            complete: body.complete,
            actor: caller.actor().to_owned(),
            expected_version: None,
        };
        let updated = self.0.store.set_winner(&change).await?;
        self.announce(&e, &updated).await;
        let publish = self
            .publish_change(
                Some(&e),
                Some(&updated),
                "experiment.winner_changed",
                caller.actor(),
            )
            .await;
        Ok(Changed {
            value: updated,
            publish,
        })
    }

    /// Always serve `variant` to `subject` (a QA override, audited). In a global
    /// experiment seen by an organization, the override is for that organization's subject.
    pub async fn force_variant(
        &self,
        caller: &Caller,
        scope: &ScopeParams,
        key: &str,
        subject: &str,
        body: ForcedVariant,
    ) -> Result<ForcedAssignment, AppError> {
        let scope = caller.scope(scope)?;
        let e = self.find(&scope, key).await?;
        crate::assignments::check_subject(subject)?;
        check_variant(&e, &body.variant)?;
        let subject_key = subject_key(scope.organization.as_deref(), subject);
        self.0
            .store
            .set_forced_variant(&e.id, &subject_key, Some(&body.variant), caller.actor())
            .await?;
        self.0.experiments.clear();
        Ok(ForcedAssignment {
            experiment: e.key,
            subject_id: subject.to_owned(),
            variant: body.variant,
        })
    }

    /// Remove a QA override (none is fine).
    pub async fn unforce_variant(
        &self,
        caller: &Caller,
        scope: &ScopeParams,
        key: &str,
        subject: &str,
    ) -> Result<(), AppError> {
        let scope = caller.scope(scope)?;
        let e = self.find(&scope, key).await?;
        let subject_key = subject_key(scope.organization.as_deref(), subject);
        self.0
            .store
            .set_forced_variant(&e.id, &subject_key, None, caller.actor())
            .await?;
        self.0.experiments.clear();
        Ok(())
    }

    /// The experiment's QA overrides the caller's scope owns (an organization's own
    /// subjects, without their organization prefix), by subject, at most
    /// [`MAX_FORCED_LISTED`].
    pub async fn forced_variants(
        &self,
        caller: &Caller,
        scope: &ScopeParams,
        key: &str,
    ) -> Result<ForcedList, AppError> {
        let scope = caller.scope(scope)?;
        let e = self.find(&scope, key).await?;
        let stored = self
            .0
            .store
            .forced_variants(&e.id, MAX_FORCED_LISTED)
            .await?;
        let prefix = scope.organization.as_deref().map(|org| format!("{org}:"));
        let data = stored
            .into_iter()
            .filter_map(|(subject, variant)| {
                let subject = match &prefix {
                    Some(p) => subject.strip_prefix(p.as_str())?.to_owned(),
                    None => subject,
                };
                Some(ForcedAssignment {
                    experiment: e.key.clone(),
                    subject_id: subject,
                    variant,
                })
            })
            .collect();
        Ok(ForcedList { data })
    }

    /// A page of an experiment's audit log, newest first.
    pub async fn audit(
        &self,
        caller: &Caller,
        key: &str,
        params: ScopedPageParams,
    ) -> Result<Paginated<AuditEntry>, AppError> {
        let (scope, page) = params.split();
        let page = page.to_request()?;
        let e = self.find(&caller.scope(&scope)?, key).await?;
        Ok(Paginated::of(
            self.0.store.list_audit(&e.id, page).await?,
            page,
        ))
    }
}

fn check_variant(e: &Experiment, variant: &str) -> Result<(), AppError> {
    match e.variant(variant) {
        Some(_) => Ok(()),
        None => Err(AppError::new(
            ErrorCode::VariantNotFound,
            format!("'{variant}' is not a variant of '{}'", e.key),
        )),
    }
}

/// The experiment `key` (or id) as `scope` sees it: the scope's own; for an organization
/// without one of that key, the environment's global experiment of that key or id. So an
/// organization's own experiment wins a key clash, and the global one stays reachable by
/// its id.
pub(crate) async fn visible_experiment(
    store: &dyn verdict_store::ExperimentStore,
    scope: &Scope,
    key: &str,
) -> Result<Option<Experiment>, AppError> {
    if let Some(own) = store.get_experiment(scope, key).await? {
        return Ok(Some(own));
    }
    if scope.organization.is_none() {
        return Ok(None);
    }
    let global = Scope::global(scope.environment.clone());
    Ok(store.get_experiment(&global, key).await?)
}
