//! The GrowthBook SDK payload: Verdict's live experiments as GrowthBook features, so that a
//! GrowthBook SDK evaluates them locally and puts every subject in the variant Verdict's
//! assignment API would.
//!
//! One feature per experiment, keyed by the experiment key, whose `defaultValue` is the
//! control's config (what a subject outside the experiment sees) and whose one rule is:
//!
//! - for a running experiment, an experiment rule: `key`, `seed` (the salt), `hashVersion`,
//!   `hashAttribute` (the unit, [`hash_attribute`]), `coverage`, `weights`, and the bucket
//!   `ranges` Verdict computed from them (so the SDK does not recompute them), `variations`
//!   (the variants' configs), `meta` (the variant keys and names), `namespace` as
//!   `[id, start, end]`, and `condition` ([`condition`]: the experiment's targeting, and its
//!   audience's, in GrowthBook's condition syntax);
//! - for an experiment with a decided winner, a `force` rule with the winner's config
//!   (everyone gets it).
//!
//! Paused experiments are left out (an SDK cannot know whom Verdict already assigned, and a
//! paused experiment takes no new subject: the SDK serves the default, the control).

use serde::Serialize;
use serde_json::{Map, Value, json};
use time::OffsetDateTime;

use crate::experiment::{Experiment, Unit};
use crate::namespace::Namespace;
use crate::status::Status;
use crate::targeting::{Condition, Operator, Targeting};

/// The body of GrowthBook's `GET /api/features/{client_key}`.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Payload {
    pub status: u16,
    pub features: Map<String, Value>,
    /// When the newest of the live experiments it was made from last changed (RFC 3339).
    #[serde(with = "time::serde::rfc3339")]
    pub date_updated: OffsetDateTime,
}

/// An experiment as the payload needs it: its definition and the rules of the audience it
/// names (`None` when it names none; a named audience that does not exist matches nobody,
/// as on the assignment path: pass [`Targeting::nobody`]).
#[derive(Debug, Clone, Copy)]
pub struct SdkExperiment<'a> {
    pub experiment: &'a Experiment,
    pub audience: Option<&'a Targeting>,
}

/// The payload of `experiments`, in their order (the first of two with one key wins, as on
/// the assignment path, where an organization's own experiment hides a global one). Its
/// date is the newest change of any of them; without any, a fixed date (the Unix epoch), so
/// that an empty payload stays the same.
#[must_use]
pub fn payload<'a>(experiments: impl IntoIterator<Item = SdkExperiment<'a>>) -> Payload {
    let mut features = Map::new();
    let mut date_updated = None::<OffsetDateTime>;
    for item in experiments {
        let e = item.experiment;
        // Left-out experiments count too: pausing one changes the payload.
        date_updated = Some(date_updated.map_or(e.updated_at, |d| d.max(e.updated_at)));
        if features.contains_key(&e.key) {
            continue;
        }
        if let Some(feature) = feature(item) {
            features.insert(e.key.clone(), feature);
        }
    }
    Payload {
        status: 200,
        features,
        date_updated: date_updated.unwrap_or(OffsetDateTime::UNIX_EPOCH),
    }
}

/// Whether SDKs evaluate `e`, so that it has a feature in the payload: running, or paused or
/// completed with a winner (everyone gets the winner). A draft, an archived experiment, and a
/// paused or completed one without a winner have none.
#[must_use]
pub fn in_payload(e: &Experiment) -> bool {
    match e.status {
        Status::Running => true,
        Status::Paused | Status::Completed => e.winner.is_some(),
        Status::Draft | Status::Archived => false,
    }
}

/// The feature of one experiment; `None` for one an SDK should not evaluate
/// ([`in_payload`]).
#[must_use]
pub fn feature(item: SdkExperiment<'_>) -> Option<Value> {
    let e = item.experiment;
    if !in_payload(e) {
        return None;
    }
    let control = &e.variants[e.control_index()];
    let winner = e.winner.as_ref().and_then(|w| e.variant(&w.variant));
    let rule = match winner {
        Some(w) => json!({"id": format!("{}-winner", e.key), "force": w.config}),
        None => experiment_rule(item),
    };
    Some(json!({"defaultValue": control.config, "rules": [rule]}))
}

fn experiment_rule(item: SdkExperiment<'_>) -> Value {
    let e = item.experiment;
    let mut rule = json!({
        "id": e.key,
        "key": e.key,
        "seed": e.assignment.salt,
        "hashVersion": e.assignment.hash_version,
        "hashAttribute": hash_attribute(e),
        "coverage": e.coverage,
        "weights": e.weights(),
        "ranges": e.bucket_ranges().iter().map(|&(s, t)| [s, t]).collect::<Vec<_>>(),
        "variations": e.variants.iter().map(|v| &v.config).collect::<Vec<_>>(),
        "meta": e.variants.iter().map(|v| json!({"key": v.key, "name": v.name})).collect::<Vec<_>>(),
    });
    if let Some(Namespace { id, start, end }) = &e.namespace {
        rule["namespace"] = json!([id, start, end]);
    }
    let conditions: Vec<Value> = item
        .audience
        .into_iter()
        .chain(std::iter::once(&e.targeting))
        .filter_map(condition)
        .collect();
    if let Some(c) = all_of(conditions) {
        rule["condition"] = c;
    }
    rule
}

/// The SDK attribute an experiment hashes (GrowthBook's `hashAttribute`): `id` for the
/// `subject_id` unit (GrowthBook's default), the unit's own name for `anon_id`, `user_id`
/// and `org_id`, and the named attribute for `custom`.
#[must_use]
pub fn hash_attribute(e: &Experiment) -> &str {
    match e.assignment.unit() {
        Unit::SubjectId => "id",
        Unit::Custom => e.assignment.unit_attribute.as_deref().unwrap_or("id"),
        unit => unit.as_str(),
    }
}

/// Verdict targeting as a GrowthBook condition; `None` when it matches everyone.
///
/// Rules are OR-ed (`$or`), a rule's conditions AND-ed (`$and`). Operators: `eq` → `$in: [v]`
/// and `neq` → `$nin: [v]` (an array attribute matches when any element does, as in
/// Verdict), `in` → `$in`, `notIn` → `$nin`, `gt`/`gte`/`lt`/`lte` → `$gt`/`$gte`/`$lt`/
/// `$lte`, `exists` → `$exists`, `contains` → an element equal to it (`$elemMatch`) or the
/// text (a `$regex` matching it literally). GrowthBook compares strictly by type where
/// Verdict compares a numeric string with a number as numbers: an SDK agrees with Verdict
/// when the attributes it is given have the types the conditions use.
#[must_use]
pub fn condition(targeting: &Targeting) -> Option<Value> {
    if targeting.is_empty() {
        return None;
    }
    let rules: Vec<Value> = targeting
        .rules
        .iter()
        .map(|r| all_of(r.conditions.iter().map(operator_condition).collect()).unwrap_or(json!({})))
        .collect();
    Some(match <[Value; 1]>::try_from(rules) {
        Ok([one]) => one,
        Err(rules) => json!({"$or": rules}),
    })
}

/// `$and` of several conditions, the one itself, or `None`.
fn all_of(conditions: Vec<Value>) -> Option<Value> {
    match <[Value; 1]>::try_from(conditions) {
        Ok([one]) => Some(one),
        Err(none) if none.is_empty() => None,
        Err(many) => Some(json!({"$and": many})),
    }
}

fn operator_condition(c: &Condition) -> Value {
    let v = c.value.clone().unwrap_or(Value::Null);
    let attr = &c.attribute;
    let on_attribute = |op: Value| {
        let mut m = Map::new();
        m.insert(attr.clone(), op);
        Value::Object(m)
    };
    match c.operator {
        Operator::Eq => on_attribute(json!({"$in": [v]})),
        Operator::Neq => on_attribute(json!({"$nin": [v]})),
        Operator::In => on_attribute(json!({"$in": v})),
        Operator::NotIn => on_attribute(json!({"$nin": v})),
        Operator::Gt => on_attribute(json!({"$gt": v})),
        Operator::Gte => on_attribute(json!({"$gte": v})),
        Operator::Lt => on_attribute(json!({"$lt": v})),
        Operator::Lte => on_attribute(json!({"$lte": v})),
        Operator::Exists => on_attribute(json!({"$exists": v.as_bool().unwrap_or(true)})),
        Operator::Contains => {
            let text = match &v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            json!({"$or": [
                on_attribute(json!({"$elemMatch": {"$eq": v}})),
                on_attribute(json!({"$regex": regex_literal(&text)})),
            ]})
        }
    }
}

/// `text` as a regular expression matching exactly it (JavaScript and Python syntax alike).
fn regex_literal(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for ch in text.chars() {
        if "\\^$.|?*+()[]{}".contains(ch) {
            out.push('\\');
        }
        out.push(ch);
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::experiment::{ExperimentInput, PolicyMode, Provided, Winner};
    use crate::scope::Scope;

    fn running(input: Value) -> Experiment {
        let mut e = serde_json::from_value::<ExperimentInput>(input)
            .unwrap()
            .into_experiment(
                Scope::default(),
                Provided {
                    id: "exp_1".into(),
                    salt: "salt-1".into(),
                    now: OffsetDateTime::UNIX_EPOCH,
                },
            )
            .unwrap();
        e.status = Status::Running;
        e
    }

    #[test]
    fn a_running_experiment_is_one_experiment_rule() {
        let e = running(json!({
            "key": "checkout", "coverage": 0.5,
            "variants": [{"key": "a", "weight": 0.25, "config": {"c": 1}},
                         {"key": "b", "weight": 0.75, "config": {"c": 2}}],
            "namespace": {"id": "pay", "start": 0.0, "end": 0.5},
            "assignment": {"hash_version": 1},
            "targeting": [{"conditions": [{"attribute": "country", "operator": "eq", "value": "US"}]}]
        }));
        let f = feature(SdkExperiment {
            experiment: &e,
            audience: None,
        })
        .unwrap();
        assert_eq!(
            f,
            json!({"defaultValue": {"c": 1}, "rules": [{
                "id": "checkout", "key": "checkout", "seed": "salt-1", "hashVersion": 1,
                "hashAttribute": "id", "coverage": 0.5, "weights": [0.25, 0.75],
                "ranges": [[0.0, 0.125], [0.25, 0.625]],
                "variations": [{"c": 1}, {"c": 2}],
                "meta": [{"key": "a", "name": "a"}, {"key": "b", "name": "b"}],
                "namespace": ["pay", 0.0, 0.5],
                "condition": {"country": {"$in": ["US"]}}
            }]})
        );
    }

    #[test]
    fn a_decided_winner_is_forced_and_paused_or_draft_experiments_are_left_out() {
        let mut e = running(json!({"key": "k", "variants": [
            {"key": "a", "config": "A"}, {"key": "b", "config": "B"}]}));
        e.winner = Some(Winner {
            variant: "b".into(),
            decided_at: OffsetDateTime::UNIX_EPOCH,
            source: PolicyMode::Manual,
            details: Value::Null,
        });
        e.status = Status::Completed;
        let item = SdkExperiment {
            experiment: &e,
            audience: None,
        };
        assert_eq!(
            feature(item),
            Some(json!({"defaultValue": "A", "rules": [{"id": "k-winner", "force": "B"}]}))
        );
        e.winner = None;
        for status in [Status::Paused, Status::Draft, Status::Completed] {
            e.status = status;
            let item = SdkExperiment {
                experiment: &e,
                audience: None,
            };
            assert_eq!(feature(item), None, "{status:?}");
        }
    }

    #[test]
    fn targeting_and_audience_become_one_condition() {
        let e = running(json!({"key": "k", "variants": [{"key": "a"}, {"key": "b"}],
        "targeting": [
            {"conditions": [{"attribute": "age", "operator": "gte", "value": 18},
                            {"attribute": "plan", "operator": "in", "value": ["pro", "team"]}]},
            {"conditions": [{"attribute": "beta", "operator": "exists"}]}
        ]}));
        let audience: Targeting = serde_json::from_value(json!([
            {"conditions": [{"attribute": "email", "operator": "contains", "value": "@acme.io"}]}
        ]))
        .unwrap();
        let f = feature(SdkExperiment {
            experiment: &e,
            audience: Some(&audience),
        })
        .unwrap();
        assert_eq!(
            f["rules"][0]["condition"],
            json!({"$and": [
                {"$or": [{"email": {"$elemMatch": {"$eq": "@acme.io"}}},
                         {"email": {"$regex": "@acme\\.io"}}]},
                {"$or": [
                    {"$and": [{"age": {"$gte": 18}}, {"plan": {"$in": ["pro", "team"]}}]},
                    {"beta": {"$exists": true}}
                ]}
            ]})
        );
    }

    #[test]
    fn the_first_experiment_of_a_key_wins_and_the_date_is_the_newest_change() {
        let mut own = running(json!({"key": "k", "variants": [
            {"key": "a", "config": 1}, {"key": "b", "config": 2}]}));
        own.updated_at = OffsetDateTime::UNIX_EPOCH + time::Duration::days(2);
        let mut global = own.clone();
        global.variants[0].config = json!(3);
        global.updated_at = OffsetDateTime::UNIX_EPOCH + time::Duration::days(9);
        let p = payload([&own, &global].map(|e| SdkExperiment {
            experiment: e,
            audience: None,
        }));
        assert_eq!(p.features.len(), 1);
        assert_eq!(p.features["k"]["defaultValue"], json!(1));
        assert_eq!(p.date_updated, global.updated_at);
    }
}
