//! Targeting rules: an OR of rules, each an AND of conditions on request attributes.
//!
//! Attributes arrive as JSON (a `POST` body) or as strings (query `attr.age=30`), so
//! comparisons are deliberately loose where a person would expect them to be: a numeric
//! string compares as a number against a number, `"true"` equals `true`. A missing attribute
//! fails every positive operator and satisfies `neq` / `notIn`, as in GrowthBook.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::validation::Problems;

/// Request attributes used for targeting (`country`, `plan`, `age`, …).
pub type Attributes = Map<String, Value>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Operator {
    #[serde(rename = "eq")]
    Eq,
    #[serde(rename = "neq")]
    Neq,
    #[serde(rename = "in")]
    In,
    #[serde(rename = "notIn")]
    NotIn,
    #[serde(rename = "contains")]
    Contains,
    #[serde(rename = "gt")]
    Gt,
    #[serde(rename = "gte")]
    Gte,
    #[serde(rename = "lt")]
    Lt,
    #[serde(rename = "lte")]
    Lte,
    #[serde(rename = "exists")]
    Exists,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Condition {
    pub attribute: String,
    pub operator: Operator,
    /// The operand; optional only for `exists` (defaults to `true`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<Value>,
}

/// All conditions must hold.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub conditions: Vec<Condition>,
}

/// Any rule may hold; no rules means everyone matches.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Targeting {
    pub rules: Vec<Rule>,
}

impl Targeting {
    /// Rules no subject matches (what a named audience that does not exist stands for).
    pub fn nobody() -> Self {
        let on = |value| Condition {
            attribute: "id".to_owned(),
            operator: Operator::Exists,
            value: Some(Value::Bool(value)),
        };
        Self {
            rules: vec![Rule {
                conditions: vec![on(true), on(false)],
            }],
        }
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    pub fn matches(&self, attrs: &Attributes) -> bool {
        self.rules.is_empty() || self.rules.iter().any(|r| r.matches(attrs))
    }

    /// Report every malformed condition under `field` (e.g. `targeting`).
    pub fn check(&self, problems: &mut Problems, field: &str) {
        for (i, rule) in self.rules.iter().enumerate() {
            if rule.conditions.is_empty() {
                problems.push(format!("{field}[{i}].conditions"), "must not be empty");
            }
            for (j, c) in rule.conditions.iter().enumerate() {
                c.check(problems, &format!("{field}[{i}].conditions[{j}]"));
            }
        }
    }
}

impl Rule {
    pub fn matches(&self, attrs: &Attributes) -> bool {
        self.conditions.iter().all(|c| c.matches(attrs))
    }
}

impl Condition {
    fn check(&self, problems: &mut Problems, field: &str) {
        if self.attribute.trim().is_empty() {
            problems.push(format!("{field}.attribute"), "must not be empty");
        }
        let value_field = format!("{field}.value");
        match (self.operator, &self.value) {
            (Operator::Exists, None | Some(Value::Bool(_))) => {}
            (Operator::Exists, Some(_)) => problems.push(value_field, "must be true or false"),
            (_, None) => problems.push(value_field, "is required for this operator"),
            (Operator::In | Operator::NotIn, Some(Value::Array(_))) => {}
            (Operator::In | Operator::NotIn, Some(_)) => {
                problems.push(value_field, "must be an array")
            }
            (Operator::Gt | Operator::Gte | Operator::Lt | Operator::Lte, Some(v)) => {
                if !matches!(v, Value::Number(_) | Value::String(_)) {
                    problems.push(value_field, "must be a number or a string");
                }
            }
            (Operator::Eq | Operator::Neq | Operator::Contains, Some(v)) => {
                if matches!(v, Value::Object(_) | Value::Array(_)) {
                    problems.push(value_field, "must be a string, number, boolean or null");
                }
            }
        }
    }

    pub fn matches(&self, attrs: &Attributes) -> bool {
        let actual = attrs.get(&self.attribute).filter(|v| !v.is_null());
        let Some(actual) = actual else {
            return match self.operator {
                Operator::Neq | Operator::NotIn => true,
                Operator::Exists => self.value.as_ref().and_then(Value::as_bool) == Some(false),
                _ => false,
            };
        };
        let expected = self.value.as_ref().unwrap_or(&Value::Null);
        match self.operator {
            Operator::Exists => expected.as_bool().unwrap_or(true),
            Operator::Eq => any_element(actual, |a| loose_eq(a, expected)),
            Operator::Neq => !any_element(actual, |a| loose_eq(a, expected)),
            Operator::In => in_list(actual, expected),
            Operator::NotIn => !in_list(actual, expected),
            Operator::Contains => match actual {
                Value::Array(items) => items.iter().any(|a| loose_eq(a, expected)),
                Value::String(s) => scalar_text(expected).is_some_and(|e| s.contains(&*e)),
                _ => false,
            },
            Operator::Gt => compare(actual, expected).is_some_and(|o| o.is_gt()),
            Operator::Gte => compare(actual, expected).is_some_and(|o| o.is_ge()),
            Operator::Lt => compare(actual, expected).is_some_and(|o| o.is_lt()),
            Operator::Lte => compare(actual, expected).is_some_and(|o| o.is_le()),
        }
    }
}

/// An array attribute matches when any of its elements does.
fn any_element(actual: &Value, f: impl Fn(&Value) -> bool) -> bool {
    match actual {
        Value::Array(items) => items.iter().any(f),
        v => f(v),
    }
}

fn in_list(actual: &Value, list: &Value) -> bool {
    let Value::Array(list) = list else {
        return false;
    };
    any_element(actual, |a| list.iter().any(|e| loose_eq(a, e)))
}

fn as_number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok().filter(|x| x.is_finite()),
        _ => None,
    }
}

fn scalar_text(v: &Value) -> Option<std::borrow::Cow<'_, str>> {
    match v {
        Value::String(s) => Some(s.as_str().into()),
        Value::Number(n) => Some(n.to_string().into()),
        Value::Bool(b) => Some(b.to_string().into()),
        _ => None,
    }
}

fn loose_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(_), _) | (_, Value::Number(_)) => match (as_number(a), as_number(b)) {
            (Some(x), Some(y)) => x == y,
            _ => false,
        },
        (Value::Bool(x), Value::String(s)) | (Value::String(s), Value::Bool(x)) => {
            s.parse::<bool>().ok() == Some(*x)
        }
        _ => a == b,
    }
}

fn compare(a: &Value, b: &Value) -> Option<std::cmp::Ordering> {
    if let (Some(x), Some(y)) = (as_number(a), as_number(b))
        && (matches!(a, Value::Number(_)) || matches!(b, Value::Number(_)))
    {
        return x.partial_cmp(&y);
    }
    match (a, b) {
        (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

/// `Targeting` is `#[serde(transparent)]`: its schema is the array of rules, not an object.
#[cfg(feature = "openapi")]
mod schema {
    use std::borrow::Cow;

    use utoipa::openapi::schema::{ArrayBuilder, Schema};
    use utoipa::openapi::{Ref, RefOr};
    use utoipa::{PartialSchema, ToSchema};

    use super::{Rule, Targeting};

    impl PartialSchema for Targeting {
        fn schema() -> RefOr<Schema> {
            ArrayBuilder::new()
                .items(Ref::from_schema_name(Rule::name()))
                .description(Some(
                    "Rules, OR-ed: a subject matches when any rule matches (an empty list \
                     matches everyone). A rule matches when all its conditions hold.",
                ))
                .into()
        }
    }

    impl ToSchema for Targeting {
        fn name() -> Cow<'static, str> {
            Cow::Borrowed("Targeting")
        }

        fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
            schemas.push((Rule::name().into_owned(), Rule::schema()));
            <Rule as ToSchema>::schemas(schemas);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn attrs(v: Value) -> Attributes {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn nobody_matches_no_subject() {
        let nobody = Targeting::nobody();
        for a in [
            json!({}),
            json!({"id": "u1"}),
            json!({"id": null, "country": "US"}),
        ] {
            assert!(!nobody.matches(&attrs(a.clone())), "{a}");
        }
    }

    fn cond(attribute: &str, operator: Operator, value: Option<Value>) -> Condition {
        Condition {
            attribute: attribute.into(),
            operator,
            value,
        }
    }

    fn single(c: Condition) -> Targeting {
        Targeting {
            rules: vec![Rule {
                conditions: vec![c],
            }],
        }
    }

    #[test]
    fn no_rules_match_everyone() {
        assert!(Targeting::default().matches(&Attributes::new()));
    }

    #[test]
    fn each_operator_behaves_as_documented() {
        let a = attrs(json!({"country": "US", "age": "30", "plan": ["pro", "beta"], "vip": true}));
        let cases = [
            (cond("country", Operator::Eq, Some(json!("US"))), true),
            (cond("country", Operator::Eq, Some(json!("FR"))), false),
            (cond("country", Operator::Neq, Some(json!("FR"))), true),
            (
                cond("country", Operator::In, Some(json!(["FR", "US"]))),
                true,
            ),
            (
                cond("country", Operator::NotIn, Some(json!(["FR", "US"]))),
                false,
            ),
            (cond("plan", Operator::Contains, Some(json!("beta"))), true),
            (cond("country", Operator::Contains, Some(json!("U"))), true),
            (cond("age", Operator::Gt, Some(json!(29))), true),
            (cond("age", Operator::Gte, Some(json!(30))), true),
            (cond("age", Operator::Lt, Some(json!(30))), false),
            (cond("age", Operator::Lte, Some(json!(30.0))), true),
            (cond("age", Operator::Eq, Some(json!(30))), true),
            (cond("vip", Operator::Eq, Some(json!("true"))), true),
            (cond("vip", Operator::Exists, None), true),
            (cond("missing", Operator::Exists, None), false),
            (cond("missing", Operator::Exists, Some(json!(false))), true),
            (cond("missing", Operator::Eq, Some(json!("x"))), false),
            (cond("missing", Operator::Neq, Some(json!("x"))), true),
            (cond("missing", Operator::NotIn, Some(json!(["x"]))), true),
            (cond("missing", Operator::Gt, Some(json!(1))), false),
            (cond("plan", Operator::In, Some(json!(["pro"]))), true),
        ];
        for (c, expected) in cases {
            assert_eq!(single(c.clone()).matches(&a), expected, "{c:?}");
        }
    }

    #[test]
    fn rules_are_or_ed_and_conditions_and_ed() {
        let t: Targeting = serde_json::from_value(json!([
            {"conditions": [
                {"attribute": "country", "operator": "eq", "value": "US"},
                {"attribute": "age", "operator": "gte", "value": 18}
            ]},
            {"conditions": [{"attribute": "plan", "operator": "eq", "value": "pro"}]}
        ]))
        .unwrap();
        assert!(t.matches(&attrs(json!({"country": "US", "age": 20}))));
        assert!(!t.matches(&attrs(json!({"country": "US", "age": 17}))));
        assert!(t.matches(&attrs(json!({"plan": "pro"}))));
        assert!(!t.matches(&attrs(json!({"country": "FR", "age": 40}))));
    }

    #[test]
    fn malformed_conditions_are_all_reported() {
        let t = Targeting {
            rules: vec![
                Rule { conditions: vec![] },
                Rule {
                    conditions: vec![
                        cond("", Operator::Eq, Some(json!(1))),
                        cond("a", Operator::In, Some(json!("x"))),
                        cond("b", Operator::Gt, None),
                        cond("c", Operator::Exists, Some(json!(3))),
                    ],
                },
            ],
        };
        let mut p = Problems::new();
        t.check(&mut p, "targeting");
        for field in [
            "targeting[0].conditions",
            "targeting[1].conditions[0].attribute",
            "targeting[1].conditions[1].value",
            "targeting[1].conditions[2].value",
            "targeting[1].conditions[3].value",
        ] {
            assert!(p.mentions(field), "{field} missing from {p}");
        }
        assert_eq!(p.len(), 5);
    }

    #[test]
    fn unknown_operators_are_refused_at_parse_time() {
        let r: Result<Condition, _> =
            serde_json::from_value(json!({"attribute": "a", "operator": "regex", "value": "x"}));
        assert!(r.is_err());
    }
}
